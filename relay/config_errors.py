"""Pydantic's validation errors as an operator reads them: the YAML path and what to fix.

Pydantic locates an error in its own terms (union tags such as `targets.x.http.url`, keys as
`[key]`) and words it for programmers (`Input should be ...`); this turns each one into the
path as written in the file and a message in the config's own words, with a suggestion for a
misspelt key. Values are echoed only for fields that cannot hold a secret.
"""

from __future__ import annotations

import difflib
import re
import types
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from relay.config import Config
from relay.fields import SECRET_LIST_TAG, SECRET_TAG, yaml_key, yaml_kind
from relay.shared_config import SIGN_SCHEMES
from relay.sources import SCHEMES
from relay.targets import TARGET_KINDS

Loc = tuple[str | int, ...]
Problem = tuple[str, str]  # (yaml path, message)


def format_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text or "(top level)"


def strip_tags(loc: Loc) -> Loc:
    """Drop the discriminator tags pydantic inserts (`targets.x.http.url` → `targets.x.url`)."""
    parts = [p for p in loc if p not in (SECRET_TAG, SECRET_LIST_TAG)]
    if len(parts) > 3 and parts[0] == "sources" and parts[2] == "verify":
        if parts[3] in SCHEMES:
            del parts[3]  # sources.NAME.verify.<scheme>
    elif len(parts) > 2 and parts[0] == "targets" and parts[2] in TARGET_KINDS:
        del parts[2]  # targets.NAME.<kind>
        if len(parts) > 3 and parts[2] == "sign" and parts[3] in SIGN_SCHEMES:
            del parts[3]  # targets.NAME.sign.<scheme>
    return tuple(parts)


_TYPE_MESSAGES = {
    "string_type": "must be a string",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
}
_NUMBER_LIMITS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_TAG_CHOICES: dict[str, tuple[str, ...]] = {"kind": tuple(TARGET_KINDS), "scheme": SIGN_SCHEMES}
_VERIFY_TAG_CHOICES: dict[str, tuple[str, ...]] = {"scheme": tuple(SCHEMES)}


def spell_keys(loc: Loc, tree: Any) -> Loc:
    """Each mapping key in `loc` as the file spells it, looked up in the YAML `tree`.

    pydantic writes a key that is not a string as an integer or as its repr, which would read
    as a list index (`targets[1]`) or as Python (`sources.datetime.date(2024, 1, 1)`).
    """
    spelt: list[str | int] = []
    node = tree
    for part in loc:
        child: Any = None
        if isinstance(node, dict):
            key = _key_for(node, part)
            if key is not _ABSENT:
                part, child = yaml_key(key), node[key]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            child = node[part]
        spelt.append(part)
        node = child
    return tuple(spelt)


_ABSENT = object()


def _key_for(mapping: dict[Any, Any], part: str | int) -> Any:
    """The key of `mapping` that pydantic wrote as `part`, or _ABSENT."""
    for key in mapping:
        if key == part and type(key) is type(part):
            return key
    for key in mapping:
        if not isinstance(key, str) and part in (key, repr(key), str(key)):
            return key
    return _ABSENT


def describe(error: ErrorDetails, tree: Any = None) -> Problem:
    """One pydantic error as (YAML path, what to fix); `tree` is the YAML that was validated."""
    raw_loc = tuple(error["loc"])
    loc = spell_keys(strip_tags(raw_loc), tree)
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx", {})
    if loc and loc[-1] == "[key]":
        # A mapping key (a name) failed: point at the key itself.
        loc = (*loc[:-2], yaml_key(loc[-2])) if len(loc) > 1 else loc[:-1]
        if kind == "string_type":
            return format_loc(loc), f"name must be a string, got {yaml_kind(value)}; quote it"
    if kind in ("extra_forbidden", "invalid_key"):  # invalid_key: a key that is no string
        message = _unknown_key(str(raw_loc[-1]), _fields_at(raw_loc[:-1]))
    elif kind == "missing":
        message = "missing required key"
    elif kind in ("union_tag_invalid", "union_tag_not_found"):
        field = str(ctx.get("discriminator", "")).strip("'")
        loc = (*loc, field)
        tag_choices = _VERIFY_TAG_CHOICES if loc[:1] == ("sources",) else _TAG_CHOICES
        tags = ", ".join(tag_choices.get(field, ()))
        if kind == "union_tag_not_found":
            message = f"missing required key; expected one of: {tags}"
        else:
            message = f'unknown {field} "{ctx.get("tag")}"; expected one of: {tags}'
    elif kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        expected = f"one of: {', '.join(choices)}" if len(choices) > 1 else "".join(choices)
        message = f"unknown {loc[-1] if loc else 'value'} {_show(value)}; expected {expected}"
    elif kind in _TYPE_MESSAGES:
        message = f"{_TYPE_MESSAGES[kind]}, got {yaml_kind(value)}"
    elif kind in _NUMBER_LIMITS:
        message = f"{_must(error['msg'])}, got {_show(value)}"
    else:
        message = _must(error["msg"].removeprefix("Value error, "))
    return format_loc(loc), message


def _must(text: str) -> str:
    return text.replace("Input should be ", "must be ", 1)


def _unknown_key(key: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    if close:
        return f'unknown key (did you mean "{close[0]}"?)'
    if allowed:
        return f"unknown key; valid keys here: {', '.join(allowed)}"
    return "unknown key"


def _show(value: object) -> str:
    """A scalar as YAML spells it; only for fields that cannot hold a secret."""
    if isinstance(value, str):
        return f'"{value}"'
    if value is None or isinstance(value, bool):
        return yaml_key(value)
    if isinstance(value, int | float):
        return str(value)
    return yaml_kind(value)


def _fields_at(loc: Loc) -> list[str]:
    """The keys the model at pydantic location `loc` (tags included) accepts."""
    node: Any = Config
    for part in loc:
        node = _child(node, part)
    model = _unwrap(node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if origin in (Union, types.UnionType):
            options = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(options) == 1:
                annotation = options[0]
                continue
        return annotation


def _child(annotation: Any, part: str | int) -> Any:
    node = _unwrap(annotation)
    origin = get_origin(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        return field.annotation if field is not None else None
    if origin is dict:
        return get_args(node)[1]
    if origin is list:
        return get_args(node)[0]
    if origin in (Union, types.UnionType):
        for option in map(_unwrap, get_args(node)):
            if isinstance(option, type) and issubclass(option, BaseModel) and part in _tags(option):
                return option
    return None


def _tags(model: type[BaseModel]) -> Iterator[object]:
    for field in model.model_fields.values():
        if get_origin(field.annotation) is Literal:
            yield from get_args(field.annotation)
