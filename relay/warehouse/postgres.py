"""PostgreSQL (and what speaks its protocol) through asyncpg.

A batch is copied (binary COPY) into a per-connection staging table and moved into the target
with `INSERT ... SELECT ... ON CONFLICT (key) DO NOTHING`, in one transaction. When the batch
fails for its data, each delivery is written alone, so only the bad ones fail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
from asyncpg.pool import PoolConnectionProxy

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
STAGE = "relay_stage"
Connection = asyncpg.Connection | PoolConnectionProxy


class PostgresWriter:
    def __init__(
        self,
        url: str,
        table: str,
        columns: Sequence[tuple[str, str]],
        key: Sequence[str],
        create_table: bool,
        timeout_s: float,
    ) -> None:
        self._url = url
        self._table = table
        self._columns = [name for name, _ in columns]
        self._create_sql = create_table_sql(table, columns, key, PG_TYPES) if create_table else None
        self._timeout_s = timeout_s
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        names = ", ".join(quote(c) for c in self._columns)
        keys = ", ".join(quote(k) for k in key)
        # The configured columns' types only: no NOT NULL or defaults copied, so a constraint
        # fails in the INSERT and its message names the target table, not the staging one.
        self._stage_sql = (
            f"CREATE TEMP TABLE IF NOT EXISTS {STAGE} ON COMMIT DELETE ROWS"
            f" AS SELECT {names} FROM {quote(table)} WITH NO DATA"
        )
        self._move_sql = (
            f"INSERT INTO {quote(table)} ({names}) SELECT {names} FROM {STAGE}"
            f" ON CONFLICT ({keys}) DO NOTHING"
        )

    async def write(self, batch: Sequence[Sequence[Row]]) -> list[str | None]:
        try:
            pool = await self._connect()
            async with pool.acquire(timeout=self._timeout_s) as conn:
                return await self._write_batch(conn, batch)
        except asyncpg.PostgresError as exc:
            raise WarehouseUnavailable(f"PostgreSQL: {_message(exc)}") from exc
        except (OSError, TimeoutError, asyncpg.InterfaceError) as exc:
            raise WarehouseUnavailable(
                f"PostgreSQL unreachable: {str(exc) or type(exc).__name__}"
            ) from exc

    async def _write_batch(
        self, conn: Connection, batch: Sequence[Sequence[Row]]
    ) -> list[str | None]:
        try:
            await self._write_rows(conn, [row for rows in batch for row in rows])
            return [None] * len(batch)
        except asyncpg.PostgresError as exc:
            if _transient(exc):
                raise
            if len(batch) == 1:
                return [_message(exc)]
        results: list[str | None] = []
        for rows in batch:  # isolate the deliveries whose rows can never go in
            try:
                await self._write_rows(conn, rows)
                results.append(None)
            except asyncpg.PostgresError as exc:
                if _transient(exc):
                    raise
                results.append(_message(exc))
        return results

    async def _write_rows(self, conn: Connection, rows: Sequence[Row]) -> None:
        async with conn.transaction():
            await conn.execute(self._stage_sql)
            await conn.copy_records_to_table(
                STAGE, records=rows, columns=self._columns, timeout=self._timeout_s
            )
            await conn.execute(self._move_sql, timeout=self._timeout_s)

    async def _connect(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self._url,
                    min_size=1,
                    max_size=2,
                    timeout=self._timeout_s,  # to connect: asyncpg's default is 60s
                    command_timeout=self._timeout_s,
                )
                if self._create_sql is not None:
                    try:
                        await pool.execute(self._create_sql)
                    except BaseException:
                        await pool.close()
                        raise
                self._pool = pool
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def _transient(exc: asyncpg.PostgresError) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in TRANSIENT_CLASSES


def _message(exc: asyncpg.PostgresError) -> str:
    text = exc.args[0] if exc.args else str(exc)  # str(exc) would add DETAIL a second time
    detail = getattr(exc, "detail", None)
    return f"{text} ({detail})" if detail else text
