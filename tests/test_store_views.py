"""Listing deliveries by filter, in both stores: the same answer as filtering every row, page
by page; and in the SQLite store, read from indexes: a filter that matches a few old rows
among many reads about as many rows as it returns."""

from __future__ import annotations

import fnmatch
import random
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from relay.store.base import EVERY_DELIVERY, DeliveryFilter, DeliveryState
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore
from relay.store.sqlite_targets import DELIVERED_SINCE
from relay.store.views import MAX_KINDS
from tests.stores import AnyStore, open_test_store
from tests.test_store import Clock

SOURCES = ("shop", "crm", "flags")
TARGETS = ("audit", "slack", "wh")
STATES: tuple[DeliveryState, ...] = ("pending", "delivered", "dead")
START = 1_000_000.0


def kinds_of(source: str) -> list[str]:
    """`flags` has more types than the listing walks one by one (MAX_KINDS)."""
    if source == "flags":
        return [f"flag:{n}" for n in range(MAX_KINDS + 6)]
    return ["order.paid", "order.refunded", "CASE_OPENED", "CASE_CLOSED"]


EventRow = tuple[str, str, str, float, list[tuple[str, str]]]


def populate(path: Path, rows: list[EventRow]) -> None:
    """Events (source, id, type, received_at) and their deliveries (target, state), in order,
    written straight into relay's schema."""
    db = sqlite3.connect(path)
    with db:
        for source, event_id, event_type, received_at, deliveries in rows:
            pk = db.execute(
                "INSERT INTO events (source, event_id, type, received_at, body, headers)"
                " VALUES (?, ?, ?, ?, x'7b7d', '{}')",
                (source, event_id, event_type, received_at),
            ).lastrowid
            db.executemany(
                "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at,"
                " attempts) VALUES (?, ?, ?, ?, ?, 1)",
                [(pk, target, state, received_at, received_at) for target, state in deliveries],
            )
    db.close()


async def open_store(path: Path) -> SqliteStore:
    store = SqliteStore(path, Clock())
    await store.open()
    return store


async def populate_postgres(store: PostgresStore, rows: list[EventRow]) -> None:
    """`populate`, in the PostgreSQL store's schema."""
    conn = await asyncpg.connect(**store.connect_options())
    try:
        async with conn.transaction():
            for source, event_id, event_type, received_at, deliveries in rows:
                pk = await conn.fetchval(
                    "INSERT INTO events (source, event_id, type, received_at, body, headers)"
                    " VALUES ($1, $2, $3, $4, '{}', '{}') RETURNING pk",
                    source,
                    event_id,
                    event_type,
                    received_at,
                )
                await conn.executemany(
                    "INSERT INTO deliveries (event_pk, target, state, next_attempt_at,"
                    " updated_at, attempts) VALUES ($1, $2, $3, $4, $4, 1)",
                    [(pk, target, state, received_at) for target, state in deliveries],
                )
    finally:
        await conn.close()


@pytest.fixture
async def mixed(store_kind: str, tmp_path: Path) -> AsyncIterator[AnyStore]:
    """300 events from three sources, one to three deliveries each, in every state."""
    rng = random.Random(11)
    rows: list[EventRow] = []
    for n in range(300):
        source = rng.choice(SOURCES)
        if n >= 150:  # the same id as an earlier event, of another source
            source = rng.choice([s for s in SOURCES if s != rows[n - 150][0]])
        targets = rng.sample(TARGETS, rng.randint(1, 3))
        deliveries: list[tuple[str, str]] = [(target, rng.choice(STATES)) for target in targets]
        rows.append((source, f"e{n % 150}", rng.choice(kinds_of(source)), START + n, deliveries))
    async with open_test_store(store_kind, tmp_path, Clock()) as store:
        if isinstance(store, SqliteStore):
            populate(store.path, rows)
        else:
            await populate_postgres(store, rows)
        yield store


async def every_row(store: AnyStore) -> list[tuple[Any, ...]]:
    """Every delivery with its event's fields, newest first, as a filter would check them."""
    records = await store.deliveries(limit=10_000)
    return [
        (r.id, r.state, r.target, r.source, r.event_type, r.event_id, r.received_at)
        for r in records
    ]


def expected(
    rows: list[tuple[Any, ...]], state: DeliveryState | None, where: DeliveryFilter
) -> list[int]:
    """What the filter means, checked row by row."""

    def keep(row: tuple[Any, ...]) -> bool:
        delivery_id, row_state, target, source, event_type, event_id, received_at = row
        checks = [
            state is None or row_state == state,
            where.target is None or target == where.target,
            where.source is None or source == where.source,
            where.type_glob is None or fnmatch.fnmatchcase(event_type, where.type_glob),
            where.event_id is None or event_id == where.event_id,
            where.since is None or received_at >= where.since,
            where.until is None or received_at < where.until,
            where.delivery_ids is None or delivery_id in where.delivery_ids,
        ]
        return all(checks)

    return [row[0] for row in rows if keep(row)]


def random_filter(rng: random.Random) -> tuple[DeliveryState | None, DeliveryFilter]:
    source = rng.choice([None, *SOURCES])
    globs = ["CASE_*", "order.paid", "*.*", "flag:1?", "flag:*", "[Co]*", "[!o]*", "nothing*"]
    options: dict[str, Callable[[], Any]] = {
        "target": lambda: rng.choice(TARGETS),
        "type_glob": lambda: rng.choice(globs),
        "event_id": lambda: f"e{rng.randrange(160)}",
        "since": lambda: START + rng.randrange(320),
        "until": lambda: START + rng.randrange(320),
        "delivery_ids": lambda: frozenset(rng.sample(range(1, 700), 40)),
    }
    chosen = {name: make() for name, make in options.items() if rng.random() < 0.3}
    return rng.choice([None, *STATES]), DeliveryFilter(source=source, **chosen)


async def test_every_filter_and_combination_lists_what_it_means_newest_first(
    mixed: AnyStore,
) -> None:
    rows = await every_row(mixed)
    rng = random.Random(5)
    for _ in range(300):
        state, where = random_filter(rng)
        limit = rng.choice([1, 7, 50, 10_000])
        got = [r.id for r in await mixed.deliveries(state, limit, where=where)]
        assert got == expected(rows, state, where)[:limit], (state, where, limit)


async def test_pages_continue_after_the_last_id_until_every_match_was_listed_once(
    mixed: AnyStore,
) -> None:
    rows = await every_row(mixed)
    rng = random.Random(8)
    for _ in range(60):
        state, where = random_filter(rng)
        pages: list[int] = []
        before_id = None
        while True:
            page = await mixed.deliveries(state, 9, where=where, before_id=before_id)
            pages += [r.id for r in page]
            if len(page) < 9:
                break
            before_id = page[-1].id
        assert pages == expected(rows, state, where), (state, where)


async def test_a_listing_shows_the_events_source_type_and_arrival(mixed: AnyStore) -> None:
    (record,) = await mixed.deliveries(limit=1)
    detail = await mixed.delivery(record.id)
    assert detail is not None
    event = detail.event
    assert (record.source, record.event_id, record.event_type) == (
        event.source,
        event.event_id,
        event.type,
    )
    assert record.received_at == event.received_at == START + 299


# -- read from indexes ------------------------------------------------------------------------

BIG = 20_000  # deliveries among which three old ones match
RARE_FILTERS: list[tuple[DeliveryState | None, DeliveryFilter]] = [
    ("dead", EVERY_DELIVERY),
    (None, DeliveryFilter(target="rare")),
    (None, DeliveryFilter(source="rare")),
    (None, DeliveryFilter(type_glob="RARE_*")),
    (None, DeliveryFilter(type_glob="RARE_ONE")),
    (None, DeliveryFilter(event_id="rare-1")),
    ("dead", DeliveryFilter(source="rare", target="rare")),
    (None, DeliveryFilter(delivery_ids=frozenset({1, 2, 3}))),
]


@pytest.fixture
async def big(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """Three rare deliveries (dead, of source, type and target `rare`) first, then BIG common
    ones; then three recent ones, for `since`."""
    path = tmp_path / "relay.db"
    await (await open_store(path)).close()
    rare = [("rare", f"rare-{n}", "RARE_ONE", START + n, [("rare", "dead")]) for n in range(3)]
    common = [
        ("shop", f"e{n}", "order.paid", START + 10 + n, [("audit", "delivered")])
        for n in range(BIG)
    ]
    recent = [
        ("shop", f"new-{n}", "order.paid", START + 10 * BIG + n, [("audit", "pending")])
        for n in range(3)
    ]
    populate(path, rare + common + recent)
    store = await open_store(path)
    yield store
    await store.close()


def count_steps(store: SqliteStore) -> Callable[[], int]:
    """SQLite virtual machine instructions run from now on: a scan of every delivery runs
    several per row."""
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    store._connection().set_progress_handler(step, 1)
    return lambda: steps[0]


@pytest.mark.parametrize(("state", "where"), RARE_FILTERS)
async def test_a_rare_match_among_many_rows_reads_few_of_them(
    big: SqliteStore, state: DeliveryState | None, where: DeliveryFilter
) -> None:
    steps = count_steps(big)
    records = await big.deliveries(state, 50, where=where)
    assert steps() < BIG / 4, f"{steps()} steps for {len(records)} rows"
    expected_count = 1 if where.event_id is not None else 3
    assert len(records) == expected_count
    assert all(r.source == "rare" for r in records)


async def test_since_bounds_the_walk_to_the_events_received_since(big: SqliteStore) -> None:
    steps = count_steps(big)
    since = DeliveryFilter(since=START + 10 * BIG)
    records = await big.deliveries(None, 50, where=since)
    assert [r.event_id for r in records] == ["new-2", "new-1", "new-0"]
    assert steps() < BIG / 4
    newer = replace(since, source="shop", type_glob="order.*")
    assert [r.event_id for r in await big.deliveries(None, 50, where=newer)] == [
        "new-2",
        "new-1",
        "new-0",
    ]
    assert steps() < BIG / 2
    assert await big.deliveries(None, 50, where=DeliveryFilter(since=START + 20 * BIG)) == []


async def test_until_bounds_the_walk_to_the_events_received_before(big: SqliteStore) -> None:
    steps = count_steps(big)
    until = DeliveryFilter(until=START + 10)  # before the common ones: the three rare ones
    records = await big.deliveries(None, 50, where=until)
    assert [r.event_id for r in records] == ["rare-2", "rare-1", "rare-0"]
    assert steps() < BIG / 4
    window = DeliveryFilter(since=START + 1, until=START + 3)
    assert [r.event_id for r in await big.deliveries(None, 50, where=window)] == [
        "rare-2",
        "rare-1",
    ]
    assert await big.deliveries(None, 50, where=DeliveryFilter(until=START)) == []
    everything = await big.deliveries(None, 10, where=DeliveryFilter(until=START + 20 * BIG))
    assert [r.event_id for r in everything[:1]] == ["new-2"]


async def test_delivered_since_counts_each_targets_recent_deliveries_from_its_index(
    big: SqliteStore,
) -> None:
    """The console's deliveries per minute: the delivered ones settled since a time."""
    assert await big.delivered_since(START + 10 + BIG - 5) == {"audit": 5}
    assert await big.delivered_since(0) == {"audit": BIG}
    assert await big.delivered_since(START + 20 * BIG) == {}
    db = big._connection()
    sql = "SELECT target, COUNT(*) FROM deliveries INDEXED BY deliveries_delivered"
    plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {DELIVERED_SINCE}", (0,))]
    assert plan[0].startswith("SEARCH deliveries USING COVERING INDEX deliveries_delivered"), plan
    assert DELIVERED_SINCE.startswith(sql)


async def test_the_plans_sort_nothing_and_scan_no_table_whole(big: SqliteStore) -> None:
    """EXPLAIN QUERY PLAN of every statement a filtered listing runs."""
    db = big._connection()
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    bounded: list[tuple[DeliveryState | None, DeliveryFilter]] = [
        ("pending", DeliveryFilter(since=START)),
        (None, DeliveryFilter(until=START + 5)),
    ]
    for state, where in [*RARE_FILTERS, *bounded]:
        await big.deliveries(state, 50, where=where, before_id=BIG)
    db.set_trace_callback(None)
    assert statements
    for sql in statements:
        plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
        for step in plan:
            whole_table = step.startswith("SCAN") and "INDEX" not in step
            assert not whole_table, (sql, plan)
            if "event_id" not in sql:  # an event id finds one event per source: few to sort
                assert "TEMP B-TREE" not in step, (sql, plan)
