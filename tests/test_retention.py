"""Retention: which events leave the store and when, in small batches, and the file stops growing.

Time moves by an injected clock: nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.events import Event
from relay.loading import load_config
from relay.metrics import Metrics
from relay.retention import Purger, retention_policy
from relay.store.base import AttemptResult, DeliveryState, RetentionPolicy
from relay.store.sqlite import SqliteStore
from tests.conftest import ConfigWriter, StartRelay
from tests.receiver import wait_until
from tests.stores import AnyStore, open_test_store, side_fetch
from tests.test_store import Clock

DAY_S = 86_400.0
WEEK = RetentionPolicy(delivered_s=7 * DAY_S, dead_s=30 * DAY_S)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(store_kind: str, tmp_path: Path, clock: Clock) -> AsyncIterator[AnyStore]:
    async with open_test_store(store_kind, tmp_path, clock) as store:
        yield store


@pytest.fixture
async def sqlite_store(tmp_path: Path, clock: Clock) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "relay.db", clock, busy_timeout_ms=50)
    await store.open()
    yield store
    await store.close()


def arrived(clock: Clock, event_id: str, body: bytes = b"{}") -> Event:
    return Event("src", event_id, "t", clock.now, body, {}, {})


async def settle(store: AnyStore, target: str, state: DeliveryState, count: int = 1) -> None:
    claimed = await store.claim(target, count, lease_s=30)
    assert len(claimed) == count
    await store.record([AttemptResult(d.id, state, status=200) for d in claimed])


async def stored_ids(store: AnyStore) -> set[str]:
    records = await store.deliveries(limit=10_000)
    return {r.event_id for r in records}


# -- the rule -----------------------------------------------------------------------------------


def test_an_event_expires_when_its_last_delivery_has_been_settled_long_enough() -> None:
    assert WEEK.expires_at(0.0, [("delivered", 10.0)]) == 10.0 + 7 * DAY_S
    assert WEEK.expires_at(0.0, [("dead", 10.0)]) == 10.0 + 30 * DAY_S
    assert WEEK.expires_at(0.0, [("delivered", 50.0), ("dead", 10.0)]) == 10.0 + 30 * DAY_S
    assert WEEK.expires_at(0.0, [("delivered", 10.0), ("pending", 5.0)]) is None
    assert WEEK.expires_at(3.0, []) == 3.0 + 7 * DAY_S  # no route matched: kept for dedup
    short_dead = RetentionPolicy(delivered_s=7 * DAY_S, dead_s=DAY_S)
    assert short_dead.expires_at(0.0, [("dead", 10.0)]) == 10.0 + DAY_S
    assert short_dead.shortest_s == DAY_S


# -- the store ----------------------------------------------------------------------------------


async def test_purge_deletes_settled_events_past_retention_and_keeps_the_rest(
    store: AnyStore, clock: Clock
) -> None:
    await store.ingest(arrived(clock, "delivered"), ["a"])
    await settle(store, "a", "delivered")
    await store.ingest(arrived(clock, "dead"), ["b"])
    await settle(store, "b", "dead")
    await store.ingest(arrived(clock, "pending"), ["c"])
    await store.ingest(arrived(clock, "unrouted"), [])
    await store.ingest(arrived(clock, "mixed"), ["a", "b"])
    await settle(store, "a", "delivered")
    await settle(store, "b", "dead")

    clock.now += 7 * DAY_S - 1
    assert await store.purge(WEEK) == 0
    clock.now += 2
    assert await store.purge(WEEK) == 2  # delivered and unrouted
    assert await stored_ids(store) == {"dead", "pending", "mixed"}
    counts = await store.counts()
    assert counts == {"events": 3, "pending": 1, "delivered": 1, "dead": 2}

    clock.now += 30 * DAY_S
    assert await store.purge(WEEK) == 2  # dead and mixed: pending stays while it is pending
    assert await stored_ids(store) == {"pending"}
    assert await store.purge(WEEK) == 0


async def test_a_repeat_of_a_purged_event_is_accepted_as_new(store: AnyStore, clock: Clock) -> None:
    await store.ingest(arrived(clock, "e1"), ["a"])
    await settle(store, "a", "delivered")
    assert (await store.ingest(arrived(clock, "e1"), ["a"])).duplicate
    clock.now += 8 * DAY_S
    assert await store.purge(WEEK) == 1
    again = await store.ingest(arrived(clock, "e1"), ["a"])
    assert (again.duplicate, again.deliveries) == (False, 1)


async def test_a_dead_delivery_can_be_replayed_until_it_is_purged(
    store: AnyStore, clock: Clock
) -> None:
    await store.ingest(arrived(clock, "e1"), ["a"])
    await settle(store, "a", "dead")
    clock.now += 29 * DAY_S
    assert await store.purge(WEEK) == 0
    assert await store.replay() == 1
    clock.now += 60 * DAY_S
    assert await store.purge(WEEK) == 0  # pending again: kept however old
    (replayed,) = await store.claim("a", 1, lease_s=30)
    assert replayed.event.id == "e1"


async def test_a_pass_deletes_a_few_hundred_events_per_transaction(
    store: AnyStore, clock: Clock
) -> None:
    await asyncio.gather(*(store.ingest(arrived(clock, f"e{i}"), []) for i in range(1_000)))
    clock.now += 8 * DAY_S
    before = store.commits
    assert await store.purge(WEEK, batch_events=100) == 1_000
    assert store.commits - before == 11  # ten full batches, and one that finds the end
    assert (await store.counts())["events"] == 0


async def test_events_kept_by_one_pass_are_purged_by_a_later_one(
    store: AnyStore, clock: Clock
) -> None:
    """A pass resumes where the last stopped, but never past an event that may go by then."""
    await store.ingest(arrived(clock, "dead"), ["b"])
    await settle(store, "b", "dead")
    for i in range(30):
        await store.ingest(arrived(clock, f"d{i}"), ["a"])
        await settle(store, "a", "delivered")
    clock.now += 8 * DAY_S
    assert await store.purge(WEEK, batch_events=7) == 30
    clock.now += 21 * DAY_S
    await store.ingest(arrived(clock, "late"), ["a"])
    await settle(store, "a", "delivered")
    assert await store.purge(WEEK, batch_events=7) == 0
    clock.now += 2 * DAY_S  # the dead one is past 30 days; late is not yet past 7
    assert await store.purge(WEEK, batch_events=7) == 1
    assert await stored_ids(store) == {"late"}
    clock.now += 7 * DAY_S
    assert await store.purge(WEEK, batch_events=7) == 1
    assert (await store.counts())["events"] == 0


async def test_a_pass_starts_where_the_last_stopped_until_a_kept_event_may_go(
    store: AnyStore, clock: Clock
) -> None:
    for i in range(30):
        await store.ingest(arrived(clock, f"dead{i}"), ["b"])
        await settle(store, "b", "dead")
    clock.now += 8 * DAY_S
    before = store.commits
    assert await store.purge(WEEK, batch_events=7) == 0
    assert store.commits - before == 5  # read all 30 (a batch finds the end)
    clock.now += DAY_S
    before = store.commits
    assert await store.purge(WEEK, batch_events=7) == 0
    assert store.commits - before == 1  # not again
    clock.now += 30 * DAY_S
    assert await store.purge(WEEK, batch_events=7) == 30


async def test_an_event_numbered_after_a_purge_emptied_the_table_is_purged_too(
    store: AnyStore, clock: Clock
) -> None:
    """SQLite numbers a new row after the newest left, reusing purged numbers."""
    for i in range(20):
        await store.ingest(arrived(clock, f"old{i}"), [])
    clock.now += 8 * DAY_S
    assert await store.purge(WEEK) == 20
    await store.ingest(arrived(clock, "new"), [])
    clock.now += 8 * DAY_S
    assert await store.purge(WEEK) == 1


async def test_with_retention_the_file_stops_growing_under_steady_load(
    sqlite_store: SqliteStore, clock: Clock
) -> None:
    store = sqlite_store
    """A day's events per round, settled; retention keeps a week: pages freed are reused."""
    body = b'{"data": "%s"}' % (b"y" * 700)
    page_counts, freelists = [], []
    for day in range(20):
        for batch in range(4):
            events = [arrived(clock, f"d{day}-{batch}-{i}", body) for i in range(50)]
            await asyncio.gather(*(store.ingest(e, ["a"]) for e in events))
            await settle(store, "a", "delivered", count=50)
        clock.now += DAY_S
        await store.purge(WEEK)
        page_counts.append(_pragma(store, "page_count"))
        freelists.append(_pragma(store, "freelist_count"))
    assert (await store.counts())["events"] == 6 * 200  # the last six days
    assert max(freelists) > 0  # purges freed pages ...
    steady = page_counts[7:]  # from the day the first events went
    assert max(steady) <= steady[0] * 1.02, page_counts  # ... that later days filled again


def _pragma(store: SqliteStore, name: str) -> int:
    with sqlite3.connect(store.path) as db:
        value: int = db.execute(f"PRAGMA {name}").fetchone()[0]
    return value


# -- config and the timer -----------------------------------------------------------------------


def test_retention_defaults_to_a_week_for_delivered_and_30_days_for_dead(
    write_config: ConfigWriter,
) -> None:
    config = load_config(write_config("sources: {}\n"))
    assert retention_policy(config.retention) == WEEK
    custom = load_config(write_config("retention: {delivered: 36h}\n"))
    assert retention_policy(custom.retention) == RetentionPolicy(1.5 * DAY_S, 30 * DAY_S)


async def test_the_daemon_purges_on_a_timer_and_says_how_many(
    write_config: ConfigWriter, start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    config = """\
retention: {delivered: 1d, dead: 2d}
sources:
  app: {path: /hooks/app}
targets:
  out: {kind: console}
routes:
  - types: [routed]
    targets: [out]
"""
    clock = Clock()
    relay = await start_relay(write_config(config), clock=clock, purge_interval_s=0.01)
    for i in range(5):
        response = await relay.post("/hooks/app", {"id": f"e{i}", "type": "routed"})
        assert response.status == 202
    assert (await relay.post("/hooks/app", {"id": "u", "type": "other"})).status == 202
    await relay.wait_for_state("delivered", 5)
    caplog.set_level(logging.INFO, "relay.retention")
    clock.now += DAY_S + 1

    async def remaining() -> int:
        return (await relay.counts())["events"]

    for _ in range(500):
        if await remaining() == 0:
            break
        await asyncio.sleep(0.01)
    assert await remaining() == 0
    purge_lines = [r.message for r in caplog.records if r.name == "relay.retention"]
    assert purge_lines == [
        "retention: purged 6 settled event(s) (retention: delivered 1d, dead 2d)"
    ]
    metrics = await (await relay.admin.get("/metrics")).text()
    assert "relay_store_purged_events_total 6.0" in metrics
    assert (await relay.post("/hooks/app", {"id": "e0", "type": "routed"})).status == 202


async def test_a_purger_whose_store_fails_says_so_and_tries_again(
    sqlite_store: SqliteStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    store = sqlite_store
    await store.ingest(arrived(clock, "e1"), [])
    purger = Purger(store, WEEK, Metrics(), interval_s=0.01)
    blocker = sqlite3.connect(store.path, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    clock.now += 8 * DAY_S
    purger.start()
    try:
        await wait_until(
            lambda: any("retention: purge stopped" in r.message for r in caplog.records),
            5,
            lambda: "a warning from the purger",
        )
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await wait_until(lambda: _count_events(store) == 0, 5, lambda: "the purge after the lock")
    await purger.stop()


def _count_events(store: SqliteStore) -> int:
    with sqlite3.connect(store.path) as db:
        count: int = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return count


async def test_each_pass_purges_exactly_what_the_rule_lets_go(
    store: AnyStore, clock: Clock
) -> None:
    """Random ingests, outcomes, replays and passes (seeded) against the rule applied to every
    event the store holds: a pass leaves exactly the events whose time has not come."""
    rng = random.Random(9)
    retention = RetentionPolicy(delivered_s=5.0, dead_s=11.0)
    for step in range(300):
        action = rng.random()
        if action < 0.4:
            targets = rng.sample(["a", "b", "c"], rng.randint(0, 2))
            await store.ingest(arrived(clock, f"e{step}"), targets)
        elif action < 0.7:
            target = rng.choice(["a", "b", "c"])
            state: DeliveryState = rng.choice(["delivered", "dead"])
            for delivery in await store.claim(target, rng.randint(1, 3), lease_s=0.5):
                await store.record([AttemptResult(delivery.id, state)])
        elif action < 0.75:
            await store.replay()
        elif action < 0.95:
            clock.now += rng.uniform(0.0, 3.0)
        else:
            expected = await _survivors(store, retention, clock.now)
            await store.purge(retention, batch_events=rng.randint(1, 8))
            assert await _event_ids(store) == expected, f"step {step}"


async def _survivors(store: AnyStore, retention: RetentionPolicy, now: float) -> set[str]:
    events = await side_fetch(store, "SELECT pk, event_id, received_at FROM events")
    deliveries: dict[int, list[tuple[DeliveryState, float]]] = {}
    for event_pk, state, updated_at in await side_fetch(
        store, "SELECT event_pk, state, updated_at FROM deliveries"
    ):
        deliveries.setdefault(event_pk, []).append((state, updated_at))
    kept = set()
    for pk, event_id, received_at in events:
        expiry = retention.expires_at(received_at, deliveries.get(pk, []))
        if expiry is None or expiry > now:
            kept.add(event_id)
    return kept


async def _event_ids(store: AnyStore) -> set[str]:
    return {row[0] for row in await side_fetch(store, "SELECT event_id FROM events")}
