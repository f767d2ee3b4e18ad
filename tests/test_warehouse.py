"""The warehouse target against real databases: PostgreSQL (see tests/pg.py for the policy when
there is none) and DuckDB files in tmp_path.

Events go in through a running relay (real sockets), the test waits for the deliveries to be
delivered or dead, then reads the database directly. Faults are real too: a TCP proxy that is
cut, stalls, or swallows the answer to a batch that committed; backends ended with
pg_terminate_backend; a DuckDB file held open by another process. Nothing here waits on a
sleep: every wait polls a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import sys
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from relay.samples import sample
from relay.store.base import DeliveryRecord
from relay.targets.warehouse import WarehouseTargetConfig, open_writer
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.pg import Postgres, TcpProxy, host_port, postgres, unavailable

FAST_RETRY = {"initial": "20ms", "max_interval": "200ms", "max_elapsed": "30s"}
FAST_BATCH = {"max_rows": 100, "max_wait": "50ms"}
SETTLE_TIMEOUT_S = 15.0

Columns = dict[str, tuple[str, str]]  # name: (expression, type)


# -- the two databases behind one face -------------------------------------------------------


class Warehouse(ABC):
    kind: str
    url: str

    @abstractmethod
    def new_table(self) -> str: ...

    @abstractmethod
    async def execute(self, sql: str) -> None: ...

    @abstractmethod
    async def fetch(self, sql: str) -> list[tuple[Any, ...]]: ...

    async def count(self, table: str, what: str = "*") -> int:
        ((value,),) = await self.fetch(f"SELECT count({what}) FROM {table}")
        return int(value)


class PostgresWarehouse(Warehouse):
    kind = "postgres"

    def __init__(self, pg: Postgres) -> None:
        self.pg = pg
        self.url = pg.url

    def new_table(self) -> str:
        return self.pg.new_table()

    async def execute(self, sql: str) -> None:
        await self.pg.execute(sql)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return await self.pg.fetch(sql)


class DuckdbWarehouse(Warehouse):
    """Opened for each statement and closed again, as relay's writer does."""

    kind = "duckdb"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"duckdb:///{path}"
        self._tables = 0

    def new_table(self) -> str:
        self._tables += 1
        return f"events_{self._tables}"

    def _run(self, sql: str) -> list[tuple[Any, ...]]:
        connection = duckdb.connect(str(self.path))
        try:
            rows: list[tuple[Any, ...]] = connection.execute(sql).fetchall()
            return rows
        finally:
            connection.close()

    async def execute(self, sql: str) -> None:
        await asyncio.to_thread(self._run, sql)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(self._run, sql)


@pytest.fixture
async def pg() -> AsyncIterator[Postgres]:
    async with postgres() as helper:
        yield helper


@pytest.fixture(params=["postgres", "duckdb"])
async def warehouse(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Warehouse]:
    if request.param == "duckdb":
        yield DuckdbWarehouse(tmp_path / "warehouse.duckdb")
        return
    async with postgres() as helper:
        yield PostgresWarehouse(helper)


# -- relay with one warehouse target ---------------------------------------------------------


def target(
    url: str,
    table: str,
    columns: Columns,
    key: list[str],
    **options: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "warehouse",
        "url": url,
        "table": table,
        "columns": {
            name: {"value": value, "type": kind} for name, (value, kind) in columns.items()
        },
        "key": key,
        "create_table": True,
        "batch": FAST_BATCH,
        "timeout": "5s",
        "retry": FAST_RETRY,
    }
    spec.update(options)
    return spec


async def start(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    warehouse_target: dict[str, Any],
    **relay_options: Any,
) -> Relay:
    """relay with sources /hooks/app (generic) and /hooks/flagsmith, both routed to `wh`.

    The config is JSON (which is YAML), so Jinja's braces need no escaping here.
    """
    document = {
        "store": "sqlite:///relay.db",
        "sources": {
            "app": {"path": "/hooks/app"},
            "flagsmith": {"path": "/hooks/flagsmith", "sender": "flagsmith"},
        },
        "targets": {"wh": warehouse_target},
        "routes": [{"targets": ["wh"]}],
    }
    return await start_relay(write_config(json.dumps(document, indent=2)), **relay_options)


async def post_all(relay: Relay, path: str, bodies: Sequence[dict[str, Any] | bytes]) -> None:
    for body in bodies:
        response = await relay.post(path, body)
        assert response.status == 202, await response.text()


async def wait_for(
    relay: Relay,
    done: Callable[[list[DeliveryRecord]], bool],
    what: str,
    timeout_s: float = SETTLE_TIMEOUT_S,
) -> list[DeliveryRecord]:
    """Poll the store until `done(deliveries)`; fail at the deadline showing them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        records = await relay.store.deliveries(limit=10_000)
        if done(records):
            return records
        if loop.time() > deadline:
            shown = "\n".join(map(repr, records[:30]))
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}:\n{shown}")
        await asyncio.sleep(0.01)


async def settled(
    relay: Relay, count: int, timeout_s: float = SETTLE_TIMEOUT_S
) -> dict[str, DeliveryRecord]:
    """Wait until `count` deliveries exist and none is pending; by event id."""
    records = await wait_for(
        relay,
        lambda rs: len(rs) >= count and all(r.state != "pending" for r in rs),
        f"{count} deliveries delivered or dead",
        timeout_s,
    )
    return {r.event_id: r for r in records}


def states(records: dict[str, DeliveryRecord]) -> dict[str, str]:
    return {event_id: r.state for event_id, r in records.items()}


# -- 1. rows exactly as mapped ---------------------------------------------------------------

ALL_TYPES: Columns = {
    "event_id": ("event.id", "text"),
    "order_ref": ("event.data.order", "text"),
    "tag": ("event.data.tag", "text"),
    "amount": ("event.data.amount", "bigint"),
    "price": ("event.data.price", "double"),
    "paid": ("event.data.paid", "boolean"),
    "paid_at": ("event.data.at", "timestamptz"),
    "detail": ("event.data.detail", "jsonb"),
    "received_at": ("event.received_at", "timestamptz"),
}
PAID_AT = datetime(2026, 3, 1, 12, 34, 56, 789000, tzinfo=UTC)
COLUMN_TYPES = {
    "postgres": [
        "text",
        "text",
        "text",
        "bigint",
        "double precision",
        "boolean",
        "timestamp with time zone",
        "jsonb",
        "timestamp with time zone",
    ],
    "duckdb": [
        "VARCHAR",
        "VARCHAR",
        "VARCHAR",
        "BIGINT",
        "DOUBLE",
        "BOOLEAN",
        "TIMESTAMP WITH TIME ZONE",
        "JSON",
        "TIMESTAMP WITH TIME ZONE",
    ],
}


async def test_rows_are_written_exactly_as_mapped_with_all_six_types(
    warehouse: Warehouse, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    table = warehouse.new_table()
    relay = await start(
        write_config,
        start_relay,
        target(warehouse.url, table, ALL_TYPES, ["event_id"]),
    )
    detail = {"items": [{"sku": "a-1", "qty": 2}], "note": 'ünïcödé ✓ "quoted"', "n": None}
    array = [1, "two", 3.5, False]
    events = [
        {
            "id": "evt-1",
            "type": "order.paid",
            "data": {
                "order": "o-17",
                "tag": True,
                "amount": 12345,
                "price": 19.5,
                "paid": True,
                "at": "2026-03-01T12:34:56.789Z",
                "detail": detail,
            },
        },
        {  # the same kinds of values as strings, epoch milliseconds, a JSON array
            "id": "evt-2",
            "type": "order.paid",
            "data": {
                "order": "o-18",
                "tag": {"a": 1},
                "amount": "-9007199254740993",
                "price": "2.5e3",
                "paid": "FALSE",
                "at": 1772368496789,
                "detail": array,
            },
        },
        {  # JSON null is SQL NULL in every column type
            "id": "evt-3",
            "type": "order.paid",
            "data": {
                "order": None,
                "tag": 7,
                "amount": None,
                "price": None,
                "paid": None,
                "at": None,
                "detail": None,
            },
        },
    ]
    before = datetime.now(UTC).replace(microsecond=0)
    await post_all(relay, "/hooks/app", events)
    records = await settled(relay, 3)
    after = datetime.now(UTC)
    assert states(records) == {"evt-1": "delivered", "evt-2": "delivered", "evt-3": "delivered"}

    rows = await warehouse.fetch(f"SELECT * FROM {table} ORDER BY event_id")
    received = [row[-1] for row in rows]
    assert all(before <= at <= after for at in received), (before, received, after)
    got = [(*row[:7], json.loads(row[7]) if row[7] is not None else None) for row in rows]
    assert got == [
        ("evt-1", "o-17", "true", 12345, 19.5, True, PAID_AT, detail),
        ("evt-2", "o-18", '{"a":1}', -9007199254740993, 2500.0, False, PAID_AT, array),
        ("evt-3", None, "7", None, None, None, None, None),
    ]  # fmt: skip
    # Exact types, not just equal values: True is not 1, 19.5 is a float, times are aware.
    assert [type(v) for v in rows[0][:7]] == [str, str, str, int, float, bool, datetime]
    assert rows[0][6].utcoffset() is not None

    types = await warehouse.fetch(
        "SELECT data_type FROM information_schema.columns"
        f" WHERE table_name = '{table}' ORDER BY ordinal_position"
    )
    assert [t for (t,) in types] == COLUMN_TYPES[warehouse.kind]


async def test_schema_qualified_table_is_created_in_that_schema(
    pg: Postgres, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    schema = await pg.new_schema()
    table = pg.new_table(schema)
    columns: Columns = {"event_id": ("event.id", "text"), "n": ("event.payload.n", "bigint")}
    relay = await start(write_config, start_relay, target(pg.url, table, columns, ["event_id"]))
    await post_all(relay, "/hooks/app", [{"id": "s-1", "n": 1}, {"id": "s-2", "n": 2}])
    records = await settled(relay, 2)
    assert set(states(records).values()) == {"delivered"}
    assert await pg.fetch(f"SELECT * FROM {table} ORDER BY event_id") == [("s-1", 1), ("s-2", 2)]
    (found,) = await pg.fetch(
        "SELECT table_schema FROM information_schema.tables WHERE table_name = $1",
        table.split(".")[1],
    )
    assert found == (schema,)


# -- 2. one event, many rows -----------------------------------------------------------------

FLAG_COLUMNS: Columns = {
    "event_id": ("event.id", "text"),
    "identity": ("event.payload.identity", "text"),
    "feature": ("row.feature.name", "text"),
    "feature_id": ("row.feature.id", "bigint"),
    "enabled": ("row.enabled", "boolean"),
    "value": ("row.feature_state_value", "jsonb"),
    "segments": ("event.payload.segments | map(attribute='name') | list", "jsonb"),
    "feature_created": ("row.feature.created_date", "timestamptz"),
}


async def test_rows_expression_turns_one_flagsmith_event_into_one_row_per_flag(
    warehouse: Warehouse, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    table = warehouse.new_table()
    relay = await start(
        write_config,
        start_relay,
        target(
            warehouse.url, table, FLAG_COLUMNS, ["event_id", "feature"], rows="event.payload.flags"
        ),
    )
    identity = sample("flagsmith", "IDENTITY_FLAGS").payload
    one_flag = {**identity, "identity": "user_9", "flags": identity["flags"][:1]}
    no_flags = {**identity, "identity": "user_0", "flags": []}
    bodies = [json.dumps(p, sort_keys=True).encode() for p in (identity, one_flag, no_flags)]
    ids = [hashlib.sha256(body).hexdigest() for body in bodies]  # Flagsmith sends no id
    await post_all(relay, "/hooks/flagsmith", bodies)
    records = await settled(relay, 3)
    assert states(records) == dict.fromkeys(ids, "delivered")  # no rows is delivered too

    rows = await warehouse.fetch(
        "SELECT event_id, identity, feature, feature_id, enabled, value, segments,"
        f" feature_created FROM {table} ORDER BY identity, feature"
    )
    created_311 = datetime(2024, 10, 2, 14, 5, 11, 482913, tzinfo=UTC)
    created_298 = datetime(2024, 6, 18, 8, 22, 40, 117045, tzinfo=UTC)
    got = [
        (*row[:5], None if row[5] is None else json.loads(row[5]), json.loads(row[6]), row[7])
        for row in rows
    ]
    eu = ["eu_customers"]
    assert got == [
        (ids[0], "user_8213", "checkout_redesign", 311, True, "variant_a", eu, created_311),
        (ids[0], "user_8213", "holiday_banner", 298, False, None, eu, created_298),
        (ids[1], "user_9", "checkout_redesign", 311, True, "variant_a", eu, created_311),
    ]


# -- 3. the key makes a redelivery a no-op ---------------------------------------------------


async def test_redelivering_a_delivered_event_adds_no_row(
    warehouse: Warehouse,
    write_config: ConfigWriter,
    start_relay: StartRelay,
    tmp_path: Path,
) -> None:
    """Deliver, then set the deliveries pending again straight in relay's SQLite store (as a
    crash after the database's commit and before relay's record would leave them): relay
    writes the same rows again and the table does not change."""
    table = warehouse.new_table()
    columns: Columns = {
        "event_id": ("event.id", "text"),
        "line": ("row.n", "bigint"),
        "sku": ("row.sku", "text"),
    }
    relay = await start(
        write_config,
        start_relay,
        target(warehouse.url, table, columns, ["event_id", "line"], rows="event.data.lines"),
    )
    events = [
        {"id": "o-1", "data": {"lines": [{"n": 1, "sku": "a"}, {"n": 2, "sku": "b"}]}},
        {"id": "o-2", "data": {"lines": [{"n": 1, "sku": "c"}]}},
    ]
    await post_all(relay, "/hooks/app", events)
    first = await settled(relay, 2)
    assert states(first) == {"o-1": "delivered", "o-2": "delivered"}
    query = f"SELECT event_id, line, sku FROM {table} ORDER BY event_id, line"
    written = await warehouse.fetch(query)
    assert written == [("o-1", 1, "a"), ("o-1", 2, "b"), ("o-2", 1, "c")]

    with sqlite3.connect(tmp_path / "relay.db", timeout=10) as store:
        changed = store.execute(
            "UPDATE deliveries SET state = 'pending', next_attempt_at = 0, lease_until = 0"
        ).rowcount
    assert changed == 2
    again = await wait_for(
        relay,
        lambda rs: len(rs) == 2 and all(r.state == "delivered" and r.attempts == 2 for r in rs),
        "both deliveries delivered a second time",
    )
    assert all(r.last_error is None for r in again)
    assert await warehouse.fetch(query) == written


# -- 4. a bad row fails its event only -------------------------------------------------------

CHECKED_TABLE = (
    "CREATE TABLE {table} (event_id text NOT NULL UNIQUE,"
    " amount bigint CHECK (amount >= 0), note text NOT NULL)"
)
CHECKED_COLUMNS: Columns = {
    "event_id": ("event.id", "text"),
    "amount": ("event.data.amount", "bigint"),
    # A dict note is read one level down: fails while evaluating, naming the column.
    "note": ("event.data.note.x.y if event.data.note is mapping else event.data.note", "text"),
}
# What each database says about the two rows only it can refuse.
DATABASE_SAYS = {
    "postgres": {
        "bad-check": 'new row for relation "{table}" violates check constraint',
        "bad-null": 'null value in column "note" of relation "{table}" violates not-null',
    },
    "duckdb": {
        "bad-check": 'CHECK constraint failed on table "{table}"',
        "bad-null": "NOT NULL constraint failed: {table}.note",
    },
}


async def test_a_batch_with_bad_rows_writes_the_good_rows_and_fails_only_the_bad_events(
    warehouse: Warehouse, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    table = warehouse.new_table()
    await warehouse.execute(CHECKED_TABLE.format(table=table))
    # Six rows reach the database (the two conversion errors fail before it): one batch of 6.
    relay = await start(
        write_config,
        start_relay,
        target(
            warehouse.url,
            table,
            CHECKED_COLUMNS,
            ["event_id"],
            create_table=False,
            batch={"max_rows": 6, "max_wait": "2s"},
        ),
    )
    events: list[dict[str, Any]] = [
        {"id": "good-1", "data": {"amount": 1, "note": "ok"}},
        {"id": "bad-type", "data": {"amount": "abc", "note": "ok"}},
        {"id": "good-2", "data": {"amount": 2, "note": "ok"}},
        {"id": "bad-check", "data": {"amount": -5, "note": "ok"}},
        {"id": "good-3", "data": {"amount": 3, "note": "ok"}},
        {"id": "bad-null", "data": {"amount": 4, "note": None}},
        {"id": "good-4", "data": {"amount": 4, "note": "ok"}},
        {"id": "bad-missing", "data": {"amount": 5}},
        {"id": "bad-range", "data": {"amount": 2**63, "note": "ok"}},
        {"id": "bad-deep", "data": {"amount": 6, "note": {"no": "text"}}},
    ]
    await post_all(relay, "/hooks/app", events)
    records = await settled(relay, len(events))

    good = {f"good-{i}" for i in range(1, 5)}
    assert {e for e, r in records.items() if r.state == "delivered"} == good
    assert all(records[e].attempts == 1 for e in records), "nothing is retried"
    assert await warehouse.fetch(f"SELECT event_id, amount FROM {table} ORDER BY event_id") == [
        ("good-1", 1),
        ("good-2", 2),
        ("good-3", 3),
        ("good-4", 4),
    ]
    errors = {e: r.last_error or "" for e, r in records.items() if e not in good}
    assert errors["bad-type"] == "columns.amount: 'abc' is not a bigint"
    assert errors["bad-missing"] == "columns.note: 'dict object' has no attribute 'note'"
    assert errors["bad-range"] == "columns.amount: 9223372036854775808 is out of range for bigint"
    assert errors["bad-deep"] == "targets.wh.columns.note.value: 'dict object' has no attribute 'x'"
    for event_id, says in DATABASE_SAYS[warehouse.kind].items():
        assert says.format(table=table) in errors[event_id], errors[event_id]


async def test_the_writer_isolates_bad_deliveries_within_one_batch(warehouse: Warehouse) -> None:
    """The same, without relay around it: one `write` call is one batch, by construction."""
    table = warehouse.new_table()
    await warehouse.execute(CHECKED_TABLE.format(table=table))
    spec = WarehouseTargetConfig.model_validate(
        target(warehouse.url, table, CHECKED_COLUMNS, ["event_id"], create_table=False)
    )
    writer = open_writer(spec)
    try:
        results = await writer.write(
            [
                [("good-1", 1, "ok")],
                [("bad-check", -1, "ok")],
                [("good-2", 2, "ok"), ("good-3", 3, "ok")],
                [("bad-null", 4, None)],
                [("good-1", 1, "ok")],  # a redelivery of good-1 in the same batch
            ]
        )
        again = await writer.write([[("good-2", 2, "ok")], [("good-4", 4, "ok")]])
    finally:
        await writer.close()
    says = DATABASE_SAYS[warehouse.kind]
    assert results[0] is None
    assert results[1] is not None
    assert says["bad-check"].format(table=table) in results[1]
    assert results[2] is None
    assert results[3] is not None
    assert says["bad-null"].format(table=table) in results[3]
    assert results[4] is None
    assert again == [None, None]
    rows = await warehouse.fetch(f"SELECT event_id FROM {table} ORDER BY event_id")
    assert rows == [("good-1",), ("good-2",), ("good-3",), ("good-4",)]


# -- 5. PostgreSQL goes away mid-stream ------------------------------------------------------

COUNTED: Columns = {"event_id": ("event.id", "text"), "n": ("event.data.n", "bigint")}


async def exactly_once(pg: Postgres, table: str, expected: set[str]) -> None:
    rows = await pg.fetch(f"SELECT event_id, count(*) FROM {table} GROUP BY event_id")
    counts = dict(rows)
    missing, extra = expected - set(counts), set(counts) - expected
    assert (sorted(missing), sorted(extra)) == ([], []), "(missing, extra) event ids"
    assert set(counts.values()) == {1}


@pytest.fixture
async def proxy(pg: Postgres) -> AsyncIterator[TcpProxy]:
    server = TcpProxy(*host_port(pg.base_url))
    await server.start()
    yield server
    await server.close()


async def test_postgres_unreachable_mid_stream_is_retried_and_nothing_is_lost_or_doubled(
    pg: Postgres, proxy: TcpProxy, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    table = pg.new_table()
    relay = await start(
        write_config,
        start_relay,
        target(pg.url_via("127.0.0.1", proxy.port), table, COUNTED, ["event_id"]),
    )
    total = 150
    ids = [f"evt-{i:04d}" for i in range(total)]

    async def stream() -> None:
        for i, event_id in enumerate(ids):
            await post_all(relay, "/hooks/app", [{"id": event_id, "data": {"n": i}}])

    poster = asyncio.create_task(stream())
    try:
        # Cut while events are flowing: some delivered, more arriving, writes in progress.
        await wait_for(relay, lambda rs: sum(r.state == "delivered" for r in rs) >= 30, "30 in")
        await proxy.cut()
        failing = await wait_for(
            relay,
            lambda rs: sum(r.state == "pending" and r.attempts >= 2 for r in rs) >= 10,
            "10 deliveries failing and retried while PostgreSQL is unreachable",
        )
        errors = [r.last_error or "" for r in failing if r.state == "pending" and r.attempts >= 2]
        assert all("PostgreSQL" in error for error in errors), errors[:5]
        await proxy.restore()
        await poster
    finally:
        poster.cancel()
    records = await settled(relay, total)
    assert set(states(records).values()) == {"delivered"}
    assert sum(r.attempts > 1 for r in records.values()) >= 10
    await exactly_once(pg, table, set(ids))


async def test_a_commit_whose_answer_is_lost_is_retried_as_a_no_op(
    pg: Postgres, proxy: TcpProxy, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    """The database commits the batch, the connection dies before relay hears so: relay keeps
    the deliveries pending and writes them again later, which the key turns into a no-op."""
    table = pg.new_table()
    relay = await start(
        write_config,
        start_relay,
        target(
            pg.url_via("127.0.0.1", proxy.port),
            table,
            COUNTED,
            ["event_id"],
            batch={"max_rows": 5, "max_wait": "10s"},  # exactly one batch of the five
        ),
    )
    ids = {f"c-{i}" for i in range(5)}
    proxy.drop_answers_to(b"c-4", then_cut=True)  # the batch statement: it carries the rows
    await post_all(relay, "/hooks/app", [{"id": e, "data": {"n": 1}} for e in sorted(ids)])
    await wait_for(
        relay,
        lambda rs: len(rs) == 5 and all(r.state == "pending" and r.last_error for r in rs),
        "the five deliveries pending after the lost answer",
    )
    assert proxy.dropped_answers == 1
    # Committed in PostgreSQL, pending in relay: the window a crash would leave.
    await exactly_once(pg, table, ids)
    await proxy.restore()
    records = await settled(relay, 5)
    assert set(states(records).values()) == {"delivered"}
    assert all(r.attempts >= 2 for r in records.values())
    await exactly_once(pg, table, ids)


async def test_backends_terminated_mid_stream_are_retried_exactly_once(
    pg: Postgres, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    """pg_terminate_backend on relay's connections while they write, as a PostgreSQL
    restart (or a failover, or an idle-session killer) would end them."""
    table = pg.new_table()
    relay = await start(write_config, start_relay, target(pg.url, table, COUNTED, ["event_id"]))
    total = 200
    ids = [f"t-{i:04d}" for i in range(total)]

    async def stream() -> None:
        for i, event_id in enumerate(ids):
            await post_all(relay, "/hooks/app", [{"id": event_id, "data": {"n": i}}])

    poster = asyncio.create_task(stream())
    terminated = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SETTLE_TIMEOUT_S
    try:
        # Kill relay's backends whenever one is busy (in a statement or a transaction),
        # until the stream is over and at least one attempt has been failed that way.
        while True:
            terminated += await pg.terminate_relay_backends(busy_only=True)
            records = await relay.store.deliveries(limit=10_000)
            hit = any(r.attempts > 1 for r in records)
            if poster.done() and hit:
                break
            assert loop.time() < deadline, f"no write was interrupted ({terminated} terminated)"
        await poster
    finally:
        poster.cancel()
    records_by_id = await settled(relay, total)
    assert set(states(records_by_id).values()) == {"delivered"}
    retried = [r for r in records_by_id.values() if r.attempts > 1]
    assert terminated >= 1
    assert retried
    await exactly_once(pg, table, set(ids))


async def test_a_stalled_network_times_out_within_the_target_timeout_and_is_retried(
    pg: Postgres, proxy: TcpProxy, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    """Packets dropped (no reset, no refusal): connecting and writing each give up after the
    target's timeout and the deliveries are retried; once the network heals everything
    arrives, once."""
    table = pg.new_table()
    relay = await start(
        write_config,
        start_relay,
        target(pg.url_via("127.0.0.1", proxy.port), table, COUNTED, ["event_id"], timeout="500ms"),
    )
    proxy.stall()  # before relay's first connection: connecting must time out (not in 60s)
    await post_all(relay, "/hooks/app", [{"id": "p-0", "data": {"n": 0}}])
    (first,) = await wait_for(
        relay, lambda rs: rs[0].attempts >= 2, "p-0 retried after a connect timeout"
    )
    assert first.last_error == "PostgreSQL unreachable: TimeoutError"
    proxy.resume()
    await settled(relay, 1)

    proxy.stall()  # now with a connection established: the write must time out
    ids = {f"p-{i}" for i in range(6)}
    await post_all(
        relay, "/hooks/app", [{"id": e, "data": {"n": 1}} for e in sorted(ids - {"p-0"})]
    )
    await wait_for(
        relay,
        lambda rs: sum(r.state == "pending" and r.attempts >= 2 for r in rs) == 5,
        "the five deliveries retried while the connection is stalled",
    )
    proxy.resume()
    records = await settled(relay, 6)
    assert set(states(records).values()) == {"delivered"}
    await exactly_once(pg, table, ids)


# -- 6. a missing table ----------------------------------------------------------------------

MISSING_TABLE = {
    "postgres": 'relation "{table}" does not exist',
    "duckdb": "Table with name {table} does not exist",
}


async def test_a_missing_table_without_create_table_fails_each_delivery_with_the_message(
    warehouse: Warehouse, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    table = warehouse.new_table()  # never created
    relay = await start(
        write_config,
        start_relay,
        target(warehouse.url, table, COUNTED, ["event_id"], create_table=False),
    )
    await post_all(relay, "/hooks/app", [{"id": f"m-{i}", "data": {"n": i}} for i in range(3)])
    records = await settled(relay, 3)
    assert set(states(records).values()) == {"dead"}
    for record in records.values():
        assert record.attempts == 1
        assert MISSING_TABLE[warehouse.kind].format(table=table) in (record.last_error or "")


MISSING_COLUMN = {
    "postgres": 'column "n" does not exist',
    "duckdb": 'does not have a column with name "n"',
}


async def test_a_column_missing_from_the_table_fails_each_delivery_with_the_message(
    warehouse: Warehouse, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    table = warehouse.new_table()
    await warehouse.execute(f"CREATE TABLE {table} (event_id text UNIQUE)")
    relay = await start(
        write_config,
        start_relay,
        target(warehouse.url, table, COUNTED, ["event_id"], create_table=False),
    )
    await post_all(relay, "/hooks/app", [{"id": f"c-{i}", "data": {"n": i}} for i in range(2)])
    records = await settled(relay, 2)
    assert set(states(records).values()) == {"dead"}
    for record in records.values():
        assert MISSING_COLUMN[warehouse.kind] in (record.last_error or ""), record.last_error


# -- 7. DuckDB: the file is free between batches ---------------------------------------------

DUCKDB_CHILD = """
import sys, duckdb
connection = duckdb.connect(sys.argv[1], read_only=True)
print(connection.execute(sys.argv[2]).fetchall(), flush=True)
sys.stdin.readline()  # hold the file until told to let go
connection.close()
"""


class DuckdbReader:
    """Another process holding the DuckDB file open (as a person with the CLI would)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def open(cls, path: Path, sql: str) -> tuple[DuckdbReader, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            DUCKDB_CHILD,
            str(path),
            sql,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        return cls(proc), line.decode().strip()

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"\n")
        await self.proc.stdin.drain()
        output = await asyncio.wait_for(self.proc.communicate(), 30)
        assert self.proc.returncode == 0, output


async def test_duckdb_file_can_be_read_by_another_process_while_relay_runs(
    tmp_path: Path, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    path = tmp_path / "wh.duckdb"
    relay = await start(
        write_config, start_relay, target(f"duckdb:///{path}", "events", COUNTED, ["event_id"])
    )
    await post_all(relay, "/hooks/app", [{"id": "d-1", "data": {"n": 1}}])
    await settled(relay, 1)

    # relay closed the file after the batch: another process opens and reads it.
    reader, seen = await DuckdbReader.open(path, "SELECT event_id, n FROM events")
    assert seen == "[('d-1', 1)]"
    # While that process holds it, relay cannot write: the delivery waits and retries...
    await post_all(relay, "/hooks/app", [{"id": "d-2", "data": {"n": 2}}])
    blocked = await wait_for(
        relay,
        lambda rs: any(r.event_id == "d-2" and r.attempts >= 2 for r in rs),
        "d-2 retried while the file is held",
    )
    (d2,) = [r for r in blocked if r.event_id == "d-2"]
    assert d2.state == "pending"
    assert "DuckDB file wh.duckdb" in (d2.last_error or "")
    # ...and goes in once the file is let go.
    await reader.close()
    records = await settled(relay, 2)
    assert states(records) == {"d-1": "delivered", "d-2": "delivered"}
    reader, seen = await DuckdbReader.open(path, "SELECT event_id, n FROM events ORDER BY 1")
    await reader.close()
    assert seen == "[('d-1', 1), ('d-2', 2)]"


# -- the PostgreSQL policy itself ------------------------------------------------------------


def test_without_postgres_tests_skip_on_a_laptop_and_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL NOT AVAILABLE"):
        unavailable("postgresql://nowhere", "refused")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires PostgreSQL"):
        unavailable("postgresql://nowhere", "refused")


# -- batching --------------------------------------------------------------------------------


async def test_time_is_not_spent_waiting_for_max_wait_when_max_rows_is_reached(
    warehouse: Warehouse, write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    """A full batch is written at once: with max_wait an hour, the ten events settle within
    the test's deadline (seconds), so none waited for max_wait."""
    table = warehouse.new_table()
    relay = await start(
        write_config,
        start_relay,
        target(
            warehouse.url,
            table,
            COUNTED,
            ["event_id"],
            batch={"max_rows": 10, "max_wait": "1h"},
        ),
    )
    await post_all(relay, "/hooks/app", [{"id": f"f-{i}", "data": {"n": i}} for i in range(10)])
    records = await settled(relay, 10)
    assert set(states(records).values()) == {"delivered"}
    assert await warehouse.count(table) == 10
