"""Values become what the database driver takes for a column type; None stays NULL.

Pure. A value that cannot be converted raises TypeError or ValueError, which the mapper turns
into a failure of that event, naming the column.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any

import jinja2
import orjson

from relay import jsoncodec
from relay.filters import parse_time


def convert(value: Any, column_type: str) -> Any:
    """The Python value the database driver takes for `column_type`; None stays NULL."""
    if value is None:
        return None
    kind = type(value)
    if kind is _NATIVE.get(column_type):  # already the column's type: the common case
        if kind is str:
            return _sendable(value)
        return _bigint(value) if kind is int else value
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises, naming what is missing
    converted = _CONVERTERS[column_type](value)
    return _sendable(converted) if isinstance(converted, str) else converted


def _sendable(text: str) -> str:
    if not text.isascii():
        text.encode()  # a lone surrogate (JSON "\ud800") cannot be sent: ValueError
    return text


def _text(value: Any) -> str:
    if isinstance(value, dict | list):
        return jsoncodec.dumps_compact(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def _bigint(value: Any) -> int:
    number = _integer(value)
    if not BIGINT_MIN <= number <= BIGINT_MAX:
        raise ValueError(f"{value!r} is out of range for bigint")
    return number


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a bigint")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    raise ValueError(f"{value!r} is not a bigint")


def _double(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a double")
    number = float(value)
    if math.isnan(number) and not isinstance(value, float):
        raise ValueError(f"{value!r} is not a double")
    return number


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError(f"{value!r} is not a boolean")


def _timestamptz(value: Any) -> datetime:
    return value if isinstance(value, datetime) else parse_time(value)


def _jsonb(value: Any) -> str:
    return jsoncodec.dumps_compact(value)


_NATIVE: dict[str, type] = {"text": str, "bigint": int, "double": float, "boolean": bool}
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "text": _text,
    "bigint": _bigint,
    "double": _double,
    "boolean": _boolean,
    "timestamptz": _timestamptz,
    "jsonb": _jsonb,
}


def converter(column_type: str) -> Callable[[Any], Any]:
    """`convert` for one column type, with the common case (already that type) inlined."""
    if column_type == "text":
        return lambda value: (
            value if type(value) is str and value.isascii() else convert(value, "text")
        )
    if column_type == "bigint":
        return lambda value: (
            value
            if type(value) is int and BIGINT_MIN <= value <= BIGINT_MAX
            else convert(value, "bigint")
        )
    if column_type == "timestamptz":
        return _to_timestamptz
    if column_type == "jsonb":
        return _to_jsonb
    native = _NATIVE[column_type]  # double, boolean
    return lambda value: value if type(value) is native else convert(value, column_type)


def _to_timestamptz(value: Any) -> Any:
    kind = type(value)
    if kind is int or kind is float:  # epoch seconds or milliseconds
        return parse_time(value)
    return convert(value, "timestamptz")


def _to_jsonb(value: Any) -> Any:
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()  # always valid UTF-8
    except TypeError:  # not plain JSON data: the general path decides, or explains
        return convert(value, "jsonb")
