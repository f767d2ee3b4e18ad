"""PostgreSQL (and what speaks its protocol) through asyncpg.

A batch is one statement, `INSERT ... SELECT ... FROM unnest($1::text[], ...) ON CONFLICT (key)
DO NOTHING`, with one array per column: a single round trip that PostgreSQL runs as one
transaction, so the next batch can be mapped while this one is written. Each value is cast to
the table's own column type, read when a connection is first used, so a column may be `uuid`,
`varchar(64)` or an enum where the config says `text`. When the batch fails for its data, each
delivery is written alone, so only the bad ones fail.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

import asyncpg

from relay.warehouse.base import WarehouseUnavailable, create_table_sql, quote
from relay.warehouse.rows import Row

PG_TYPES = {
    "text": "text",
    "bigint": "bigint",
    "double": "double precision",
    "boolean": "boolean",
    "timestamptz": "timestamptz",
    "jsonb": "jsonb",
}
# SQLSTATE classes that say "not now" rather than "never": connection exception, insufficient
# resources, operator intervention (shutdown, restart), transaction rollback (deadlock).
TRANSIENT_CLASSES = frozenset({"08", "53", "57", "40"})
SCHEMA_CLASS = "42"  # syntax error or access rule violation: a column's type, say


class SchemaProblem(Exception):
    """The table cannot take these columns (missing, or of a type no array can carry)."""


class PostgresWriter:
    def __init__(
        self,
        url: str,
        table: str,
        columns: Sequence[tuple[str, str]],
        key: Sequence[str],
        create_table: bool,
        timeout_s: float,
        concurrency: int = 1,
    ) -> None:
        self._url = url
        self._table = table
        self._column_types = list(columns)
        self._create_sql = create_table_sql(table, columns, key, PG_TYPES) if create_table else None
        self._timeout_s = timeout_s
        self._names = ", ".join(quote(name) for name, _ in columns)
        self._key = list(key)
        # One connection per batch written at once; None until first used or after a failure.
        self._idle: list[asyncpg.Connection | None] = [None] * concurrency
        self._busy: set[asyncpg.Connection] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._insert_sql: str | None = None  # built from the table's column types
        self._preparing = asyncio.Lock()  # one connection reads the table (and creates it)

    async def write(self, batch: Sequence[Sequence[Row]]) -> list[str | None]:
        async with self._slots:
            held = self._idle.pop()
            try:
                conn = held = await self._connect(held)
                self._busy.add(conn)
                try:
                    insert_sql = await self._insert_statement(conn)
                except SchemaProblem as exc:
                    return [str(exc)] * len(batch)  # every delivery, not retried
                return await self._write_batch(conn, insert_sql, batch)
            except asyncpg.PostgresError as exc:
                self._drop(held)
                held = None
                raise WarehouseUnavailable(f"PostgreSQL: {_message(exc)}") from exc
            except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
                self._drop(held)
                held = None
                raise WarehouseUnavailable(
                    f"PostgreSQL unreachable: {str(exc) or type(exc).__name__}"
                ) from exc
            finally:
                if held is not None:
                    self._busy.discard(held)
                self._idle.append(held)

    async def _write_batch(
        self, conn: asyncpg.Connection, insert_sql: str, batch: Sequence[Sequence[Row]]
    ) -> list[str | None]:
        try:
            await self._insert(conn, insert_sql, [row for rows in batch for row in rows])
            return [None] * len(batch)
        except asyncpg.PostgresError as exc:
            if _transient(exc):
                raise
            if _sqlstate(exc).startswith(SCHEMA_CLASS):
                self._insert_sql = None  # the table may be fixed by the next batch: read it again
            if len(batch) == 1:
                return [_message(exc)]
        results: list[str | None] = []
        for rows in batch:  # isolate the deliveries whose rows can never go in
            try:
                await self._insert(conn, insert_sql, rows)
                results.append(None)
            except asyncpg.PostgresError as exc:
                if _transient(exc):
                    raise
                results.append(_message(exc))
        return results

    async def _insert(self, conn: asyncpg.Connection, insert_sql: str, rows: Sequence[Row]) -> None:
        if rows:
            await conn.execute(insert_sql, *zip(*rows, strict=True), timeout=self._timeout_s)

    async def _insert_statement(self, conn: asyncpg.Connection) -> str:
        """The batch INSERT, cast to the table's column types (read again after a failure)."""
        async with self._preparing:
            if self._insert_sql is None:
                self._insert_sql = await self._read_table(conn)
            return self._insert_sql

    async def _read_table(self, conn: asyncpg.Connection) -> str:
        try:
            if self._create_sql is not None:
                await conn.execute(self._create_sql, timeout=self._timeout_s)
            probe = await conn.prepare(
                f"SELECT {self._names} FROM {quote(self._table)} LIMIT 0", timeout=self._timeout_s
            )
            attributes = probe.get_attributes()
            for attribute in attributes:
                if attribute.type.kind == "array":
                    raise SchemaProblem(
                        f'column "{attribute.name}" of relation "{self._table}" is an array'
                        f" ({attribute.type.name}); warehouse columns take one value each"
                    )
            table_types: list[str] = await conn.fetchval(
                "SELECT array_agg(format_type(type, NULL) ORDER BY n)"
                " FROM unnest($1::oid[]) WITH ORDINALITY AS t(type, n)",
                [attribute.type.oid for attribute in attributes],
                timeout=self._timeout_s,
            )
        except asyncpg.UniqueViolationError:
            raise  # another replica created the table at the same moment: try again
        except asyncpg.PostgresError as exc:
            if _transient(exc):
                raise
            raise SchemaProblem(_message(exc)) from exc
        return insert_sql(self._table, self._column_types, table_types, self._key)

    async def _connect(self, conn: asyncpg.Connection | None) -> asyncpg.Connection:
        if conn is not None and not conn.is_closed():
            return conn
        return await asyncpg.connect(
            self._url,
            timeout=self._timeout_s,  # to connect: asyncpg's default is 60s
            command_timeout=self._timeout_s,
            server_settings={"TimeZone": "UTC"},  # a `timestamp` column gets UTC wall time
        )

    def _drop(self, conn: asyncpg.Connection | None) -> None:
        """After a failure: the next batch starts on a fresh connection and reads the table
        again (it may have been changed or restored meanwhile)."""
        self._insert_sql = None
        if conn is not None:
            self._busy.discard(conn)
            if not conn.is_closed():
                conn.terminate()  # no goodbye round trip to a server that may not answer

    async def close(self) -> None:
        for conn in list(self._busy):  # writes still running were given their time: end them
            conn.terminate()
        idle, self._idle = self._idle, [None] * len(self._idle)
        for idle_conn in idle:
            if idle_conn is not None and not idle_conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(idle_conn.close(), self._timeout_s)


def insert_sql(
    table: str,
    columns: Sequence[tuple[str, str]],
    table_types: Sequence[str],
    key: Sequence[str],
) -> str:
    """One array per column, of the configured type (what relay's values are), each value then
    cast to the table's column type without its modifier: `varchar(8)` is checked by the
    insert, not cut short by the cast."""
    names = ", ".join(quote(name) for name, _ in columns)
    arrays = ", ".join(f"${n}::{PG_TYPES[kind]}[]" for n, (_, kind) in enumerate(columns, 1))
    aliases = ", ".join(f"v{n}" for n in range(1, len(columns) + 1))
    values = ", ".join(f"v{n}::{sql_type}" for n, sql_type in enumerate(table_types, 1))
    keys = ", ".join(quote(k) for k in key)
    return (
        f"INSERT INTO {quote(table)} ({names}) SELECT {values}"
        f" FROM unnest({arrays}) AS v({aliases}) ON CONFLICT ({keys}) DO NOTHING"
    )


def _transient(exc: asyncpg.PostgresError) -> bool:
    return _sqlstate(exc)[:2] in TRANSIENT_CLASSES


def _sqlstate(exc: asyncpg.PostgresError) -> str:
    return getattr(exc, "sqlstate", None) or ""


def _message(exc: asyncpg.PostgresError) -> str:
    text = exc.args[0] if exc.args else str(exc)  # str(exc) would add DETAIL a second time
    detail = getattr(exc, "detail", None)
    return f"{text} ({detail})" if detail else text
