"""An embedded DuckDB file, for warehouses that need no server.

DuckDB is synchronous, so writes run in a thread, one at a time. The file is opened for each
batch and closed after it, so that a person can query it while relay runs (DuckDB lets one
process at a time hold a file). A batch is one `INSERT ... SELECT unnest(?), ...` with a list
per column: DuckDB's executemany runs a statement per row, about a hundred times slower.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import duckdb

from relay.warehouse.base import WarehouseUnavailable, create_table_sql, quote
from relay.warehouse.rows import Row

DUCKDB_TYPES = {
    "text": "VARCHAR",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "boolean": "BOOLEAN",
    "timestamptz": "TIMESTAMPTZ",
    "jsonb": "JSON",
}


def _unnest(column_type: str) -> str:
    """One column's list parameter as rows; JSON travels as text and is checked by the cast."""
    if column_type == "jsonb":
        return "unnest(?::VARCHAR[])::JSON"
    return f"unnest(?::{DUCKDB_TYPES[column_type]}[])"


class DuckdbWriter:
    def __init__(
        self,
        path: Path,
        table: str,
        columns: Sequence[tuple[str, str]],
        key: Sequence[str],
        create_table: bool,
    ) -> None:
        self._path = path
        self._create_sql = (
            create_table_sql(table, columns, key, DUCKDB_TYPES) if create_table else None
        )
        names = ", ".join(quote(name) for name, _ in columns)
        keys = ", ".join(quote(k) for k in key)
        self._insert_sql = (
            f"INSERT INTO {quote(table)} ({names})"
            f" SELECT {', '.join(_unnest(kind) for _, kind in columns)}"
            f" ON CONFLICT ({keys}) DO NOTHING"
        )
        # DuckDB 2.0's INSERT ... SELECT ... ON CONFLICT ignores a column the table lacks (the
        # value is dropped, silently); the same INSERT without ON CONFLICT and no rows refuses.
        nulls = ", ".join("NULL" for _ in columns)
        self._columns_check_sql = f"INSERT INTO {quote(table)} ({names}) SELECT {nulls} WHERE false"
        self._lock = asyncio.Lock()

    async def write(self, batch: Sequence[Sequence[Row]]) -> list[str | None]:
        async with self._lock:
            return await asyncio.to_thread(self._write_sync, batch)

    def _write_sync(self, batch: Sequence[Sequence[Row]]) -> list[str | None]:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            connection = duckdb.connect(str(self._path))
        except (duckdb.IOException, OSError) as exc:
            raise WarehouseUnavailable(f"DuckDB file {self._path.name}: {exc}") from exc
        try:
            if self._create_sql is not None:
                connection.execute(self._create_sql)
            try:
                connection.execute(self._columns_check_sql)
            except (duckdb.CatalogException, duckdb.BinderException) as exc:
                return [str(exc)] * len(batch)  # no such table or column: every delivery
            try:
                self._insert(connection, [row for rows in batch for row in rows])
                return [None] * len(batch)
            except duckdb.Error as exc:
                if len(batch) == 1:
                    return [str(exc)]
            results: list[str | None] = []
            for rows in batch:  # isolate the deliveries whose rows can never go in
                try:
                    self._insert(connection, rows)
                    results.append(None)
                except duckdb.Error as exc:
                    results.append(str(exc))
            return results
        finally:
            connection.close()

    def _insert(self, connection: duckdb.DuckDBPyConnection, rows: Sequence[Row]) -> None:
        """One statement (so one transaction) for all the rows: a list per column."""
        if rows:
            columns = [list(column) for column in zip(*rows, strict=True)]
            connection.execute(self._insert_sql, columns)

    async def close(self) -> None:
        return None
