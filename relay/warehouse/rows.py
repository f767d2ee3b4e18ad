"""Events become rows: column expressions evaluated, values converted to the column types.

Pure and synchronous. A value that cannot be converted fails that event only, with the column
named, before anything reaches the database.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2

from relay import jsoncodec
from relay.errors import RenderError
from relay.events import Event
from relay.filters import parse_time
from relay.targets.base import template_context

Expression = Callable[[Mapping[str, Any]], Any]
Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    type: str
    value: Expression


class RowMapper:
    def __init__(
        self,
        target_name: str,
        columns: Sequence[ColumnSpec],
        rows: Expression | None,
    ) -> None:
        self.target_name = target_name
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in columns)
        self._rows = rows

    def rows_for(self, event: Event) -> list[Row]:
        """One row, or one per item of the `rows` expression; RenderError names the column."""
        context = template_context(event, self.target_name)
        if self._rows is None:
            return [self._row(context)]
        items = self._rows(context)
        if isinstance(items, jinja2.Undefined) or not isinstance(items, list | tuple):
            raise RenderError(f"rows: must give a list, got {type(items).__name__}")
        return [self._row({**context, "row": item}) for item in items]

    def _row(self, context: Mapping[str, Any]) -> Row:
        values = []
        for column in self.columns:
            raw = column.value(context)
            try:
                values.append(convert(raw, column.type))
            except (TypeError, ValueError, ArithmeticError, jinja2.TemplateError) as exc:
                # Undefined names and out-of-range numbers or times fail this event at once.
                raise RenderError(f"columns.{column.name}: {exc}") from exc
        return tuple(values)


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
