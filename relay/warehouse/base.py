"""The writer contract and the SQL both writers share.

`write` takes a batch (one list of rows per delivery) and answers per delivery: None when its
rows are in (or were already: the key makes a redelivery a no-op), or the database's message
when they can never go in. Connection loss and server trouble raise WarehouseUnavailable, so
the whole batch is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from relay.warehouse.rows import Row


class WarehouseUnavailable(Exception):
    """The database cannot be reached or is not accepting work now: retry the batch."""


class Writer(Protocol):
    async def write(self, batch: Sequence[Sequence[Row]]) -> list[str | None]: ...

    async def close(self) -> None: ...


def quote(name: str) -> str:
    """A validated plain name (or schema.name), double-quoted for SQL."""
    return ".".join(f'"{part}"' for part in name.split("."))


def create_table_sql(
    table: str, columns: Sequence[tuple[str, str]], key: Sequence[str], types: dict[str, str]
) -> str:
    defs = [f"{quote(name)} {types[column_type]}" for name, column_type in columns]
    unique = ", ".join(quote(k) for k in key)
    return f"CREATE TABLE IF NOT EXISTS {quote(table)} ({', '.join(defs)}, UNIQUE ({unique}))"
