"""The delivery worker with a target that sends in batches (the warehouse's contract): groups of
at most `batch_size`, `concurrency` deliveries in flight, one recorded result per delivery.

The target here is a small recording double of the BatchTarget contract; the store is the real
SQLite store. tests/test_warehouse.py runs the same worker against the real warehouse target.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from relay.delivery import TargetWorker
from relay.events import Delivered, Delivery, Event, Failed, Outcome, Retry
from relay.metrics import Metrics
from relay.retry import RetryPolicy
from relay.shared_config import RetryConfig
from relay.store.base import DeliveryRecord
from relay.store.sqlite import SqliteStore
from relay.targets.base import BatchTarget, OutboundRequest
from tests.clock import FakeClock

WAIT_S = 10.0


class GroupTarget:
    """Holds every group until told to answer, so the test sees what is in flight at once."""

    name = "wh"
    concurrency = 7
    batch_size = 3
    lease_s = 30.0
    policy = RetryPolicy.from_config(RetryConfig())

    def __init__(self, answer: Callable[[Delivery], Outcome]) -> None:
        self.answer = answer
        self.groups: list[list[str]] = []
        self.in_flight = 0
        self.go = asyncio.Event()

    def preview(self, delivery: Delivery, now: float) -> OutboundRequest:
        raise NotImplementedError

    async def send(self, delivery: Delivery) -> Outcome:
        raise AssertionError("a batch target is handed groups, never single deliveries")

    async def send_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        self.groups.append([d.event.id for d in deliveries])
        self.in_flight += len(deliveries)
        await self.go.wait()
        self.in_flight -= len(deliveries)
        return [self.answer(d) for d in deliveries]

    async def close(self) -> None:
        return None


# relay's clock stands still: a retry the worker schedules never comes due during a test, so
# each delivery is handed to the target exactly once however slow the machine is.
CLOCK = FakeClock()


def event(event_id: str) -> Event:
    body = b'{"id": "%s"}' % event_id.encode()
    return Event("src", event_id, "t", CLOCK(), body, {"id": event_id})


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "relay.db", CLOCK)
    await store.open()
    yield store
    await store.close()


async def until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def settled(store: SqliteStore, count: int) -> dict[str, DeliveryRecord]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while True:
        records = await store.deliveries(limit=100)
        done = [r for r in records if r.state != "pending" or r.last_error]
        if len(done) == count:
            return {r.event_id: r for r in records}
        assert loop.time() < deadline, f"timed out: {records}"
        await asyncio.sleep(0.005)


def answer_by_name(delivery: Delivery) -> Outcome:
    if delivery.event.id.startswith("bad"):
        return Failed("columns.n: 'x' is not a bigint")
    if delivery.event.id.startswith("busy"):
        return Retry("PostgreSQL unreachable: TimeoutError")
    return Delivered()


async def test_groups_of_batch_size_fill_concurrency_and_each_result_is_recorded(
    store: SqliteStore,
) -> None:
    ids = ["ok-1", "bad-1", "ok-2", "busy-1", "ok-3", "ok-4", "ok-5", "ok-6", "ok-7", "ok-8"]
    for event_id in ids:
        await store.ingest(event(event_id), ["wh"])
    target = GroupTarget(answer_by_name)
    assert isinstance(target, BatchTarget)
    metrics = Metrics()
    worker = TargetWorker(target, store, metrics, CLOCK, random.random)
    worker.start()
    try:
        await until(lambda: target.in_flight == 7, "seven deliveries in flight")
        assert [len(group) for group in target.groups] == [3, 3, 1]  # concurrency is full
        target.go.set()
        records = await settled(store, len(ids))
    finally:
        await worker.stop(grace_s=WAIT_S)

    assert all(len(group) <= 3 for group in target.groups)
    assert sorted(i for group in target.groups for i in group) == sorted(ids)
    assert records["bad-1"].state == "dead"
    assert records["bad-1"].last_error == "columns.n: 'x' is not a bigint"
    assert records["busy-1"].state == "pending"
    assert records["busy-1"].last_error == "PostgreSQL unreachable: TimeoutError"
    assert {r.state for e, r in records.items() if e.startswith("ok")} == {"delivered"}
    exposed = metrics.exposition().decode()
    attempts = 'relay_delivery_attempts_total{class="%s",result="%s",target="wh"} %s'
    assert attempts % ("ok", "delivered", "8.0") in exposed
    assert attempts % ("permanent_error", "dead", "1.0") in exposed
    assert attempts % ("transient_error", "retry", "1.0") in exposed
    assert 'relay_deliveries_total{outcome="delivered",target="wh"} 8.0' in exposed
    assert 'relay_deliveries_total{outcome="dead",target="wh"} 1.0' in exposed
    assert 'relay_delivery_latency_seconds_count{target="wh"} 8.0' in exposed


async def test_a_batch_target_that_raises_has_its_whole_group_retried(store: SqliteStore) -> None:
    for event_id in ("a", "b"):
        await store.ingest(event(event_id), ["wh"])

    def broken(delivery: Delivery) -> Outcome:
        raise RuntimeError("bug")

    target = GroupTarget(broken)
    target.go.set()
    worker = TargetWorker(target, store, Metrics(), CLOCK, random.random)
    worker.start()
    try:
        records = await settled(store, 2)
    finally:
        await worker.stop(grace_s=WAIT_S)
    assert {r.state for r in records.values()} == {"pending"}
    assert {r.last_error for r in records.values()} == {"internal error: RuntimeError('bug')"}
