"""Secrets never leave: configured credentials are cut out of logs, stored errors and output.

A target that echoes its request (the Authorization header, a signature) in an error answer
would otherwise put the credential into every log line and dead-letter reason about it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote

from relay import config
from relay.addresses import split_url
from relay.fields import SENSITIVE_HEADER, secret_values
from relay.targets import TargetConfig
from relay.targets.base import OutboundRequest
from relay.targets.slack import SlackTargetConfig

REDACTED = "[redacted]"
MIN_SECRET_CHARS = 4  # shorter values would cut ordinary words out of every message


class Redactor:
    """Replaces every configured secret, as written, JSON-escaped or percent-encoded."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for secret in secrets for form in _forms(secret)}
        forms = {form for form in forms if len(form) >= MIN_SECRET_CHARS}
        longest_first = sorted(forms, key=len, reverse=True)
        self._pattern = (
            re.compile("|".join(map(re.escape, longest_first))) if longest_first else None
        )
        # Text cut after this many characters past a point is redacted up to that point.
        self.longest_chars = len(longest_first[0]) if longest_first else 0

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)


NOTHING_TO_REDACT = Redactor(())


def _forms(secret: str) -> Iterator[str]:
    yield secret
    yield json.dumps(secret, ensure_ascii=False)[1:-1]
    yield json.dumps(secret)[1:-1]
    yield quote(secret, safe="")
    if secret.startswith("whsec_"):
        yield secret.removeprefix("whsec_")


def config_secrets(cfg: config.Config) -> list[str]:
    """Every credential the config holds.

    Verify and signing secrets; header values whose name says credential (Authorization,
    X-Api-Key, ...); a Slack webhook url, which is its own token; a database password; the
    admin token; and every `${VAR}` value in a target's headers or url, a secret or the store.
    """
    found: list[str] = list(cfg.credentials_from_env)
    if cfg.admin.token is not None:
        found.append(cfg.admin.token.get_secret_value())
    for source in cfg.sources.values():
        if source.verify is not None:
            found += secret_values(source.verify.secret)
    for target in cfg.targets.values():
        found += target.credentials()
    return found


def redact_request(
    request: OutboundRequest, redactor: Redactor, target: TargetConfig
) -> OutboundRequest:
    """A request to show: credential headers, values holding a secret, Slack's url path."""
    headers = {
        name: REDACTED if SENSITIVE_HEADER.search(name) or redactor(value) != value else value
        for name, value in request.headers.items()
    }
    url = request.url
    if isinstance(target, SlackTargetConfig):
        origin, _ = split_url(url)
        url = f"{origin}/{REDACTED}"
    return OutboundRequest(request.method, url, headers, request.body)


def redacted_config(cfg: config.Config, redactor: Redactor) -> dict[str, Any]:
    """The config as JSON, to show: secrets as `**********` (pydantic's `SecretStr`), the value
    of every credential header as [redacted], and every other credential (a Slack url, a
    database password, a `${VAR}` value in a target's url or headers) cut out wherever it is."""
    shown: dict[str, Any] = cfg.model_dump(mode="json")
    for target in shown["targets"].values():
        headers = target.get("headers")
        if isinstance(headers, dict):
            target["headers"] = {
                name: REDACTED if SENSITIVE_HEADER.search(name) else value
                for name, value in headers.items()
            }
    redacted: dict[str, Any] = redact_json(shown, redactor)
    return redacted


def redact_json(value: Any, redactor: Redactor) -> Any:
    """`value` with every string in it redacted; mapping keys (names) are kept as they are."""
    if isinstance(value, str):
        return redactor(value)
    if isinstance(value, dict):
        return {key: redact_json(item, redactor) for key, item in value.items()}
    if isinstance(value, list):
        return [redact_json(item, redactor) for item in value]
    return value
