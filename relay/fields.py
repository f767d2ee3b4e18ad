"""Field types of the config models: durations, secrets, header and SQL names, networks.

Each validates one value and fails with a message an operator can act on; `error` makes a
validation error whose text is used as is.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import date, datetime, timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    SecretStr,
    Tag,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from relay.allowlist import parse_networks
from relay.durations import EXAMPLES, format_duration, parse_duration
from relay.durations import PATTERN as DURATION_PATTERN

NUL_IN_PATH = "a file path cannot contain a NUL character (\\0)"
# Header names whose values are credentials: redacted wherever relay writes or shows them.
SENSITIVE_HEADER = re.compile(r"auth|token|secret|key|signature|cookie|password", re.I)

# An HTTP header name is an RFC 9110 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def error(kind: str, message: str) -> PydanticCustomError:
    """A validation error whose text is used as is (no `{placeholder}` formatting)."""
    return PydanticCustomError(kind, "{message}", {"message": message})


def _to_duration(value: object) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise error("duration", f"invalid duration {value}: add a unit (use e.g. {EXAMPLES})")
    if not isinstance(value, str):
        raise error("duration", f"must be a duration such as 15s, got {yaml_kind(value)}")
    try:
        duration = parse_duration(value)
    except ValueError as exc:
        raise error("duration", str(exc)) from None
    if duration <= timedelta(0):
        raise error("duration", f'invalid duration "{value}": must be more than 0')
    return duration


def _secret_not_empty(secret: SecretStr) -> SecretStr:
    if not secret.get_secret_value():
        raise error("secret", "must not be empty")
    return secret


def _header_name(name: str) -> str:
    if not _HEADER_NAME.fullmatch(name):
        raise error("header", f'invalid header name "{name}": use letters, digits and "-"')
    return name


Duration = Annotated[
    timedelta,
    BeforeValidator(_to_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema({"type": "string", "pattern": f"^{DURATION_PATTERN}$", "examples": ["15s"]}),
]


Secret = Annotated[SecretStr, AfterValidator(_secret_not_empty)]


HeaderName = Annotated[str, AfterValidator(_header_name)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def _whsec(secret: SecretStr) -> SecretStr:
    text = secret.get_secret_value()
    if not text.startswith("whsec_"):
        raise error("secret", "must start with whsec_ (Standard Webhooks secret)")
    try:
        key = base64.b64decode(text.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        raise error("secret", "must be whsec_ followed by base64") from None
    if not key:
        raise error("secret", "must not be empty after whsec_")
    return secret


WhsecSecret = Annotated[SecretStr, AfterValidator(_whsec)]


def _one_or_many(value: object) -> str:
    return SECRET_LIST_TAG if isinstance(value, list) else SECRET_TAG


# A list of secrets lets the receiving side rotate: any one of them verifies. The tags name
# the two shapes in error locations, where loading drops them.
SECRET_TAG, SECRET_LIST_TAG = "one secret", "list of secrets"


Secrets = Annotated[
    Annotated[Secret, Tag(SECRET_TAG)]
    | Annotated[list[Secret], Field(min_length=1), Tag(SECRET_LIST_TAG)],
    Discriminator(_one_or_many),
]


WhsecSecrets = Annotated[
    Annotated[WhsecSecret, Tag(SECRET_TAG)]
    | Annotated[list[WhsecSecret], Field(min_length=1), Tag(SECRET_LIST_TAG)],
    Discriminator(_one_or_many),
]


def secret_values(secrets: SecretStr | list[SecretStr]) -> list[str]:
    return [s.get_secret_value() for s in (secrets if isinstance(secrets, list) else [secrets])]


def _networks(items: list[str]) -> list[str]:
    try:
        parse_networks(items)
    except ValueError as exc:
        raise error("networks", str(exc)) from None
    return items


Networks = Annotated[list[str], AfterValidator(_networks)]


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _identifier(name: str) -> str:
    if not _IDENTIFIER.fullmatch(name):
        raise error("identifier", f'"{name}" is not a plain SQL name (letters, digits, "_")')
    return name


def table_name(name: str) -> str:
    for part in name.split("."):
        _identifier(part)
    if name.count(".") > 1:
        raise error("table", f'"{name}" must be TABLE or SCHEMA.TABLE')
    return name


Identifier = Annotated[str, AfterValidator(_identifier)]


def yaml_key(key: object) -> str:
    """A mapping key as the operator wrote it."""
    if key is None:
        return "null"
    if isinstance(key, bool):
        return str(key).lower()
    if isinstance(key, float) and not math.isfinite(key):
        return {"inf": ".inf", "-inf": "-.inf"}.get(str(key), ".nan")
    return str(key)


_KINDS: list[tuple[type, str]] = [
    (int, "an integer"),
    (float, "a number"),
    (str, "a string"),
    (list, "a list"),
    (dict, "a mapping"),
    (datetime, "a date and time"),  # before date: a datetime is a date
    (date, "a date"),
    (bytes, "binary data"),
    (set, "a set"),
]


def yaml_kind(value: object) -> str:
    """What YAML produced, by type only (never the value, which may be a secret)."""
    if value is None or isinstance(value, bool):
        return yaml_key(value)
    return next((name for cls, name in _KINDS if isinstance(value, cls)), type(value).__name__)
