"""The PostgreSQL writer against the real server: the table's own column types, columns it
cannot take, and batches written at once on separate connections.

The writer is driven directly (one `write` call is one batch); tests/test_warehouse.py covers
the same writer through a running relay, faults included.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from relay.targets.warehouse import WarehouseTargetConfig, open_writer
from relay.warehouse.base import Writer
from tests.pg import Postgres, postgres

WAIT_S = 10.0


@pytest.fixture
async def pg() -> AsyncIterator[Postgres]:
    async with postgres() as helper:
        yield helper


def writer_for(
    pg: Postgres, table: str, columns: dict[str, str], key: list[str], **options: Any
) -> Writer:
    spec = WarehouseTargetConfig.model_validate(
        {
            "kind": "warehouse",
            "url": pg.url,
            "table": table,
            "columns": {
                name: {"value": f"event.data.{name}", "type": t} for name, t in columns.items()
            },
            "key": key,
            "timeout": "5s",
            **options,
        }
    )
    return open_writer(spec)


async def test_values_are_cast_to_the_tables_own_column_types(pg: Postgres) -> None:
    """The config knows six types; the table may use others that take those values."""
    schema = await pg.new_schema()
    table = pg.new_table(schema)
    await pg.execute(f"CREATE TYPE {schema}.mood AS ENUM ('calm', 'upset')")
    await pg.execute(f"CREATE DOMAIN {schema}.positive AS bigint CHECK (VALUE > 0)")
    await pg.execute(
        f"CREATE TABLE {table} (id uuid PRIMARY KEY, code varchar(8), n integer,"
        f" amount numeric(12, 2), at timestamp, doc json, mood {schema}.mood,"
        f" size {schema}.positive)"
    )
    columns = {
        "id": "text",
        "code": "text",
        "n": "bigint",
        "amount": "double",
        "at": "timestamptz",
        "doc": "jsonb",
        "mood": "text",
        "size": "bigint",
    }
    writer = writer_for(pg, table, columns, ["id"])
    at = datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC)
    first = ("7f1c0d7e-7d5e-4a55-9a43-8f2b5b0c1e01", "AB-1", 42, 19.5, at, '{"a": [1]}', "calm", 3)
    too_long = ("7f1c0d7e-7d5e-4a55-9a43-8f2b5b0c1e02", "ABCDEFGHIJ", 1, 1.0, at, "{}", "calm", 1)
    not_positive = ("7f1c0d7e-7d5e-4a55-9a43-8f2b5b0c1e03", "C", 1, 1.0, at, "{}", "upset", 0)
    try:
        results = await writer.write([[first], [too_long], [not_positive]])
    finally:
        await writer.close()
    assert results[0] is None
    assert "character varying(8)" in (results[1] or "")
    assert "positive" in (results[2] or "")
    rows = await pg.fetch(f"SELECT id, code, n, amount, at, doc, mood::text, size FROM {table}")
    utc_wall_time = at.replace(tzinfo=None)  # relay's sessions run in UTC
    doc = '{"a": [1]}'
    assert rows == [(UUID(first[0]), "AB-1", 42, Decimal("19.50"), utc_wall_time, doc, "calm", 3)]


async def test_an_array_column_fails_every_delivery_with_a_message(pg: Postgres) -> None:
    table = pg.new_table()
    await pg.execute(f"CREATE TABLE {table} (id text UNIQUE, tags text[])")
    writer = writer_for(pg, table, {"id": "text", "tags": "text"}, ["id"])
    try:
        results = await writer.write([[("a", "x")], [("b", "y")]])
    finally:
        await writer.close()
    message = (
        f'column "tags" of relation "{table}" is an array (text[]);'
        " warehouse columns take one value each"
    )
    assert results == [message, message]
    assert await pg.count(table) == 0


async def test_two_batches_are_written_at_once_on_two_connections(pg: Postgres) -> None:
    """Batch A waits on a row lock (another transaction inserted its key and has not
    committed); batch B goes in meanwhile. With one batch at a time, B would wait behind A."""
    table = pg.new_table()
    await pg.execute(f"CREATE TABLE {table} (id text UNIQUE, n bigint)")
    writer = writer_for(pg, table, {"id": "text", "n": "bigint"}, ["id"])
    other = await asyncpg.connect(pg.base_url)
    try:
        blocker = other.transaction()
        await blocker.start()
        await other.execute(f"INSERT INTO {table} VALUES ('a-1', 0)")
        batch_a = asyncio.create_task(writer.write([[("a-1", 1)], [("a-2", 2)]]))
        await wait_until_blocked(pg)
        assert await asyncio.wait_for(writer.write([[("b-1", 3)]]), WAIT_S) == [None]
        assert not batch_a.done()
        await blocker.rollback()  # A's key is free again: A goes in
        assert await asyncio.wait_for(batch_a, WAIT_S) == [None, None]
    finally:
        await other.close()
        await writer.close()
    assert await pg.fetch(f"SELECT id, n FROM {table} ORDER BY id") == [
        ("a-1", 1),
        ("a-2", 2),
        ("b-1", 3),
    ]


async def wait_until_blocked(pg: Postgres) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not await pg.conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        " AND wait_event_type = 'Lock'",
        pg.application_name,
    ):
        assert loop.time() < deadline, "the first batch never waited on the lock"
        await asyncio.sleep(0.01)


def test_duckdb_takes_one_batch_at_a_time() -> None:
    base = {
        "kind": "warehouse",
        "url": "duckdb:///var/w.duckdb",
        "table": "t",
        "columns": {"id": {"value": "event.id"}},
        "key": ["id"],
    }
    assert WarehouseTargetConfig.model_validate(base).batches_at_once == 1
    postgres_target = {**base, "url": "postgresql://127.0.0.1/db"}
    assert WarehouseTargetConfig.model_validate(postgres_target).batches_at_once == 2
    with pytest.raises(ValueError, match="DuckDB writes one batch at a time"):
        WarehouseTargetConfig.model_validate({**base, "concurrency": 2})


async def test_non_finite_doubles_and_awkward_text_go_in_as_they_are(pg: Postgres) -> None:
    """NaN and infinities, quotes, backslashes, control characters and astral-plane text arrive
    as themselves; a NUL, which PostgreSQL text cannot hold, fails its own delivery alone."""
    table = pg.new_table()
    columns = {"id": "text", "x": "double", "note": "text", "doc": "jsonb"}
    writer = writer_for(pg, table, columns, ["id"], create_table=True)
    awkward = 'quote " backslash \\ newline \n tab \t ünï ✓ 😀'
    try:
        results = await writer.write(
            [
                [("nan", math.nan, awkward, '{"k": "\\"v\\""}')],
                [("inf", math.inf, "", "[]"), ("-inf", -math.inf, None, "null")],
                [("nul", 1.0, "a\x00b", None)],
                [("big", 1.7976931348623157e308, "x", '"text"')],
            ]
        )
    finally:
        await writer.close()
    assert results[:2] == [None, None]
    assert "0x00" in (results[2] or "")
    assert results[3] is None
    rows = await pg.fetch(f"SELECT id, x::text, note, doc::text FROM {table} ORDER BY id")
    assert rows == [
        ("-inf", "-Infinity", None, "null"),
        ("big", "1.7976931348623157e+308", "x", '"text"'),
        ("inf", "Infinity", "", "[]"),
        ("nan", "NaN", awkward, '{"k": "\\"v\\""}'),
    ]


async def test_a_table_fixed_while_relay_runs_is_read_again(pg: Postgres) -> None:
    """A column of a type the config's cannot become fails the batch; once the operator alters
    the table, the next batch reads the table again and goes in."""
    table = pg.new_table()
    await pg.execute(f"CREATE TABLE {table} (id text UNIQUE, n boolean)")
    writer = writer_for(pg, table, {"id": "text", "n": "bigint"}, ["id"])
    try:
        (refused,) = await writer.write([[("a", 1)]])
        assert "cannot cast type bigint to boolean" in (refused or "")
        await pg.execute(f"ALTER TABLE {table} ALTER COLUMN n TYPE bigint USING n::int")
        assert await writer.write([[("a", 1)]]) == [None]
    finally:
        await writer.close()
    assert await pg.fetch(f"SELECT id, n FROM {table}") == [("a", 1)]
