"""Both store implementations for the store's own tests: SQLite in the test's temp dir, and
PostgreSQL (RELAY_TEST_POSTGRES_URL, policy in tests/pg.py) in a schema of the test's own.

A module's `store` fixture opens `open_test_store(store_kind, ...)`; `store_kind` (conftest.py)
runs each test once per implementation. `side_sql` changes rows behind the store's back, as a
damaged disk or another process would.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg

from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from relay.store.url import PostgresUrl, parse_store_url
from tests.pg import postgres, with_query

STORE_KINDS = ("sqlite", "postgres")
AnyStore = SqliteStore | PostgresStore


@contextlib.asynccontextmanager
async def store_urls(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A store URL for this test (the PostgreSQL schema dropped at the end)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'relay.db'}"
        return
    async with postgres() as pg:
        schema = await pg.new_schema()
        yield with_query(pg.url, schema=schema)


@contextlib.asynccontextmanager
async def open_test_store(
    kind: str, tmp_path: Path, clock: Callable[[], float]
) -> AsyncIterator[AnyStore]:
    async with store_urls(kind, tmp_path) as url:
        store = make_store(url, clock)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


def make_store(url: str, clock: Callable[[], float]) -> AnyStore:
    parsed = parse_store_url(url)
    if isinstance(parsed, PostgresUrl):
        return PostgresStore(parsed, clock)
    return SqliteStore(parsed.path, clock)


async def side_sql(store: AnyStore, sql: str, *params: Any) -> None:
    """Run one statement on a connection of its own (`?` for each parameter)."""
    if isinstance(store, SqliteStore):
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as db:
            db.execute(sql, params)
        return
    for number in range(1, len(params) + 1):
        sql = sql.replace("?", f"${number}", 1)
    conn = await asyncpg.connect(**store.connect_options())
    try:
        await conn.execute(sql, *params)
    finally:
        await conn.close()


async def side_fetch(store: AnyStore, sql: str) -> list[tuple[Any, ...]]:
    """The rows of one query, read on a connection of its own."""
    if isinstance(store, SqliteStore):
        with contextlib.closing(sqlite3.connect(store.path)) as db:
            return [tuple(row) for row in db.execute(sql)]
    conn = await asyncpg.connect(**store.connect_options())
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()
