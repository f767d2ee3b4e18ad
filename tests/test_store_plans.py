"""Every statement the SQLite store runs, planned against 200,000 deliveries: none reads the
deliveries, events or attempts tables whole, except the few listed in SCANS_ALLOWED (counts
an operator asked for, which read one covering index, and nothing per event or per claim).

The statements are the ones the store really runs: its connection's trace callback collects
them (with their parameters filled in) while the test calls every store method once, and each
is then planned with EXPLAIN QUERY PLAN on the same connection.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from relay.events import Event
from relay.store.base import (
    HELD_AT,
    AttemptResult,
    DeliveryFilter,
    RetentionPolicy,
    TargetActivity,
)
from relay.store.schema import migrate
from relay.store.sqlite import RELEASE_LEASES, SqliteStore
from tests.clock import START, FakeClock

pytestmark = pytest.mark.slow  # about 6 s: 200,000 rows written and copied

ROWS = 200_000
LEASED = 1_000
DAY_S = 86_400.0

# Statements that may read a whole table or index, by a piece of their text, and why.
SCANS_ALLOWED = {
    # `counts()`: how many events and deliveries of each state (tests, operators' checks).
    "SELECT COUNT(*) FROM events": "counts every event",
    "SELECT state, COUNT(*) FROM deliveries GROUP BY state": "counts every delivery",
    # Pending and dead per target (`relay targets`, the admin API, the gauges in a thread off
    # the event loop, the start-up note of targets no longer configured): each reads only the
    # partial index of its state, never a table row (tests/test_metrics.py).
    "COUNT(*) AS n, MIN(id) AS oldest": "counts the pending deliveries of every target",
    "INDEXED BY deliveries_dead": "counts the dead deliveries of every target",
}


def scans(plan: list[str]) -> list[str]:
    """The steps that read a store table (or one of its indexes) from end to end."""
    small = ("targets", "sqlite_master", "CONSTANT", "(subquery")  # a row per target, or one
    return [step for step in plan if step.startswith("SCAN ") and not step[5:].startswith(small)]


def rows(count: int, now: float) -> Iterator[tuple[int, str, float, float, str, str | None]]:
    """(pk, target, next_attempt_at, lease_until, state, order_key) of a realistic mix: most
    pending and not due for a day, some due, some leased, some held behind a key, the rest
    delivered or dead."""
    for pk in range(1, count + 1):
        kind = pk % 20
        if kind < 12:
            yield pk, "down", now + DAY_S, 0.0, "pending", None
        elif kind < 14:
            yield pk, "busy", now - 60, 0.0, "pending", None
        elif kind == 14:
            key = f"k{pk % 50}"
            yield pk, "keyed", HELD_AT, 0.0, "pending", key
        elif kind < 18:
            yield pk, "busy", now - 60, 0.0, "delivered", None
        else:
            yield pk, "down", now - 60, 0.0, "dead", None


def build(path: Path, count: int, now: float) -> None:
    """`count` events with one delivery each and an attempt per settled delivery, in one
    transaction (a second or two)."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        migrate(db)
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO events (pk, source, event_id, type, received_at, body, headers)"
            " VALUES (?, ?, ?, ?, ?, X'7B7D', '{}')",
            (
                (pk, f"s{pk % 3}", f"e{pk}", f"t{pk % 7}", now - count + pk)
                for pk in range(1, count + 1)
            ),
        )
        db.executemany(
            "INSERT INTO deliveries (id, event_pk, target, state, attempts, next_attempt_at,"
            " lease_until, updated_at, order_key) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?)",
            (
                (pk, pk, target, state, due, lease, now - 60, key)
                for pk, target, due, lease, state, key in rows(count, now)
            ),
        )
        db.execute(
            "INSERT INTO attempts (delivery_id, number, started_at, result)"
            " SELECT id, 1, updated_at, 'delivered' FROM deliveries WHERE state != 'pending'"
        )
        # Attempts in flight: the oldest due ones of the busy target.
        db.execute(
            "UPDATE deliveries SET lease_until = ? WHERE id IN (SELECT id FROM deliveries"
            " WHERE target = 'busy' AND state = 'pending' ORDER BY id LIMIT ?)",
            (now + 30, LEASED),
        )
        # Each key's oldest delivery is its head, due now.
        db.execute(
            "UPDATE deliveries SET next_attempt_at = ? WHERE id IN (SELECT MIN(id)"
            " FROM deliveries WHERE target = 'keyed' GROUP BY order_key)",
            (now - 60,),
        )
        db.execute("COMMIT")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("plans") / "relay.db"
    build(path, ROWS, START)
    return path


@pytest.fixture
async def store(built: Path, tmp_path: Path) -> AsyncIterator[SqliteStore]:
    path = tmp_path / "relay.db"
    with (
        contextlib.closing(sqlite3.connect(built)) as source,
        contextlib.closing(sqlite3.connect(path)) as copy,
    ):
        source.backup(copy)
    store = SqliteStore(path, FakeClock(START), file_check_interval_s=3600)
    await store.open(daemon=False)
    yield store
    await store.close()


def event(event_id: str) -> Event:
    body = b'{"id": "%s"}' % event_id.encode()
    return Event("s1", event_id, "t1", START, body, {"id": event_id}, {})


async def run_every_store_call(store: SqliteStore) -> None:
    """Each store method, as relay calls it, on the built store."""
    await store.ping()
    await store.ingest(event("new-1"), ["busy", "down"])
    await store.ingest(event("new-1"), ["busy", "down"])  # a duplicate
    await store.ingest(event("new-2"), ["keyed"], {"keyed": "k1"})
    for target in ("busy", "down", "keyed", "gone"):
        await store.next_due_at(target)
    busy = await store.claim("busy", 8, 30.0)
    keyed = await store.claim("keyed", 2, 30.0)
    assert len(busy) == 8, busy
    assert len(keyed) == 2, keyed
    await store.record(
        [
            AttemptResult(busy[0].id, "delivered", status=200, attempt=1),
            AttemptResult(busy[1].id, "pending", START + 60, 503, "busy", attempt=1),
            AttemptResult(busy[2].id, "dead", status=400, error="bad", attempt=1),
            AttemptResult(keyed[0].id, "delivered", status=200, attempt=1, keyed=True),
        ]
    )
    await store.release([d.id for d in busy[3:]])
    await store.forget_order_keys("keyed")
    await store.target_pause("down")
    await store.pause_target("down", "410 Gone")
    await store.claim("down", 8, 30.0)  # paused: nothing
    await store.resume_target("down")
    await store.note_activity("busy", TargetActivity(last_success_at=START))
    await store.target_statuses()
    await store.pending_by_target()
    await store.counts()
    await store.deliveries("dead", 20)
    await store.deliveries(None, 20, where=DeliveryFilter(target="down"), before_id=ROWS // 2)
    await store.delivery(busy[2].id)
    await store.replay([busy[2].id])
    await store.replay()
    await store.purge(RetentionPolicy(delivered_s=DAY_S / 2, dead_s=DAY_S / 2))


async def test_no_statement_reads_a_table_whole(store: SqliteStore) -> None:
    db = store._connection()
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    try:
        await run_every_store_call(store)
    finally:
        db.set_trace_callback(None)
    statements.append(RELEASE_LEASES)  # run as a daemon opens the store
    planned = {
        sql: [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
        for sql in dict.fromkeys(statements)
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE", "WITH"))
    }
    assert len(planned) > 30, list(planned)
    allowed_seen = set()
    for sql, plan in planned.items():
        allowed = [piece for piece in SCANS_ALLOWED if piece in sql]
        if allowed:
            allowed_seen.update(allowed)
            continue
        assert not scans(plan), f"{sql}\n" + "\n".join(plan)
    assert allowed_seen == set(SCANS_ALLOWED)


async def test_a_workers_queries_read_few_rows_with_a_large_backlog(store: SqliteStore) -> None:
    """Claims and next_due_at run on the event loop per event: a few hundred virtual machine
    steps each, where a walk over the pending deliveries or the leased ones (1,000 here) takes
    tens of thousands."""
    steps = [0]

    def step() -> int:
        steps[0] += 1
        return 0

    store._connection().set_progress_handler(step, 1)
    for target, expected in (("down", START + DAY_S), ("busy", START - 60), ("gone", None)):
        steps[0] = 0
        assert await store.next_due_at(target) == expected
        assert steps[0] < 500, (target, steps[0])
    steps[0] = 0
    assert len(await store.claim("busy", 4, 30.0)) == 4
    assert steps[0] < 2_000, steps[0]
