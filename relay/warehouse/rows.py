"""Events become rows: column expressions evaluated, values converted to the column types.

Pure and synchronous. Two paths give the same rows. The reference path evaluates every column
in the full template context, as Jinja would. The fast path, for what most columns are, plain
paths such as `event.data.caseId` or `row.enabled`, reads each event field once and indexes
into it, with no context built unless some column needs Jinja. Whenever the fast path fails,
for whatever reason, the reference path runs, so every error comes from it: a value that
cannot be converted fails that event only, naming the column, before anything reaches the
database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from relay.errors import RenderError
from relay.events import TEMPLATE_FIELDS, Event, template_context
from relay.render import Expression
from relay.warehouse.convert import convert, converter

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    name: str
    type: str
    value: Expression

    @property
    def path(self) -> tuple[str, ...] | None:
        """When `value` is a plain path: its parts."""
        return self.value.path


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
        self.fast = FastRows(target_name, self.columns, rows)

    def rows_for(self, event: Event) -> list[Row]:
        """One row, or one per item of the `rows` expression; RenderError names the column."""
        try:
            return self.fast.rows_for(event)
        except Exception:  # the reference path raises the error to report, or agrees
            return self.checked_rows_for(event)

    def checked_rows_for(self, event: Event) -> list[Row]:
        """The reference: every expression evaluated in the full template context."""
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


# A column read by indexing: (which root, the keys below it, to the column type); the roots
# are the event fields the columns use, then the current `rows` item.
Cell = tuple[int, tuple[str, ...], Expression | None, Callable[[Any], Any]]


class FastRows:
    """The same rows as the reference path, or an exception of any kind."""

    def __init__(
        self,
        target_name: str,
        columns: Sequence[ColumnSpec],
        rows: Expression | None,
    ) -> None:
        self._target_name = target_name
        self._readers: list[Callable[[Event], Any]] = []
        self._root_index: dict[tuple[str, ...], int] = {}
        self._rows_cell = None if rows is None else self._cell(rows.path, rows, _same, False)
        self._cells = [
            self._cell(c.path, c.value, converter(c.type), rows is not None) for c in columns
        ]
        cells = [*self._cells, *([self._rows_cell] if self._rows_cell else [])]
        self._needs_context = any(expression is not None for _, _, expression, _ in cells)

    def _cell(
        self,
        path: tuple[str, ...] | None,
        expression: Expression | None,
        to_column: Callable[[Any], Any],
        row_allowed: bool,
    ) -> Cell:
        root_and_keys = _split(path, row_allowed)
        if root_and_keys is None:
            return (0, (), expression, to_column)
        root, keys = root_and_keys
        if root == ("row",):
            return (-1, keys, None, to_column)  # the item, appended after the event's fields
        if root not in self._root_index:
            self._root_index[root] = len(self._readers)
            self._readers.append(self._reader(root))
        return (self._root_index[root], keys, None, to_column)

    def _reader(self, root: tuple[str, ...]) -> Callable[[Event], Any]:
        if root == ("target",):
            target = {"name": self._target_name}
            return lambda event: target
        return TEMPLATE_FIELDS[root[1]]

    def rows_for(self, event: Event) -> list[Row]:
        roots = [read(event) for read in self._readers]
        context = template_context(event, self._target_name) if self._needs_context else None
        if self._rows_cell is None:
            return [self._row(self._cells, roots, context)]
        (items,) = self._row([self._rows_cell], roots, context)
        if type(items) is not list and type(items) is not tuple:
            raise TypeError("rows: not a list")
        rows = []
        for item in items:
            roots.append(item)
            item_context = None if context is None else {**context, "row": item}
            rows.append(self._row(self._cells, roots, item_context))
            roots.pop()
        return rows

    @staticmethod
    def _row(cells: list[Cell], roots: list[Any], context: Mapping[str, Any] | None) -> Row:
        values = []
        for index, keys, expression, to_column in cells:
            if expression is not None:
                value = expression(context)  # type: ignore[arg-type]  # built for such cells
            else:
                value = roots[index]
                for key in keys:
                    value = value[key]
            values.append(to_column(value))
        return tuple(values)


def _split(
    path: tuple[str, ...] | None, row_allowed: bool
) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """A plain path as (root, keys below it), or None when only Jinja can read it."""
    if path is None:
        return None
    if path[0] == "event" and len(path) > 1 and path[1] in TEMPLATE_FIELDS:
        return path[:2], path[2:]
    if path[0] == "target" or (path[0] == "row" and row_allowed):
        return path[:1], path[1:]
    return None


def _same(value: Any) -> Any:
    return value
