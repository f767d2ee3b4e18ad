"""Ordering by key: one delivery of a key at a time, in ingest order; other keys go on.

The store's rule first (only the oldest pending delivery of a key is claimed), then relay on
real sockets with `concurrency: 4`, interleaved keys and a head that fails, in relay's own
time (an injected clock) so that no test waits for a retry.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.app import DAEMON
from relay.cli import main
from relay.errors import ConfigError
from relay.events import Event
from relay.loading import load_config
from relay.ordering import MAX_KEY_CHARS, OrderKeys, key_text
from relay.render import TemplateCompiler
from relay.store.base import HELD_AT, AttemptResult, DeliveryRecord
from tests.clock import FakeClock, wake
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Received, Receiver, Reply, wait_until
from tests.stores import AnyStore, open_test_store, side_sql

# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("u-1", "u-1"),
        (42, "42"),
        (True, "true"),
        ({"org": 1}, '{"org":1}'),
        ("", ""),
        (None, None),
    ],
)
def test_a_key_is_stored_as_text(value: object, stored: str | None) -> None:
    assert key_text(value) == stored


def test_long_keys_and_keys_that_are_not_utf8_are_stored_as_their_hash() -> None:
    long_key = "x" * (MAX_KEY_CHARS + 1)
    assert key_text(long_key) == key_text(long_key)
    assert str(key_text(long_key)).startswith("sha256:")
    assert len(str(key_text(long_key))) == len("sha256:") + 64
    assert key_text("x" * (MAX_KEY_CHARS + 2)) != key_text(long_key)
    assert str(key_text("\ud800")).startswith("sha256:")  # SQLite text must be UTF-8
    assert str(key_text("a\0b")).startswith("sha256:")  # PostgreSQL text cannot hold NUL
    assert key_text("x" * MAX_KEY_CHARS) == "x" * MAX_KEY_CHARS


def order_keys(**sources: str) -> OrderKeys:
    compiler = TemplateCompiler(Path("templates"))
    return OrderKeys(
        {
            target: compiler.expression(source, "expression").named(f"targets.{target}.key")
            for target, source in sources.items()
        }
    )


def event(event_id: str, data: object = None) -> Event:
    payload = {"id": event_id, "data": data}
    body = json.dumps(payload).encode()
    return Event("src", event_id, "t", 1_000.0, body, payload, {}, data_key="data")


def test_keys_are_computed_for_ordered_targets_only() -> None:
    keys = order_keys(a="event.data.userId", b="event.type ~ '/' ~ target.name")
    assert keys.keys_for(event("e1", {"userId": 7}), ["a", "b", "c"]) == {"a": "7", "b": "t/b"}
    assert keys.keys_for(event("e1", {"userId": 7}), ["c"]) is None
    assert OrderKeys().keys_for(event("e1"), ["a"]) is None


def test_a_key_that_fails_or_is_null_leaves_the_delivery_unordered_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    keys = order_keys(a="event.data.userId")
    with caplog.at_level(logging.WARNING, logger="relay.ordering"):
        assert keys.keys_for(event("e1", {"other": 1}), ["a"]) is None
        assert keys.keys_for(event("e2", {"userId": None}), ["a"]) is None
    assert [r.getMessage() for r in caplog.records] == [
        "targets.a.key: dict object has no attribute 'userId'; event e1 of source src goes out"
        " without a key (unordered)",
        "targets.a.key: the key is null; event e2 of source src goes out without a key (unordered)",
    ]


# -- the store ----------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(store_kind: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[AnyStore]:
    async with open_test_store(store_kind, tmp_path, clock) as store:
        yield store


async def ingest(store: AnyStore, *events: tuple[str, str | None]) -> None:
    """(event id, key) pairs, in this order, to target `t`."""
    for event_id, key in events:
        keys = {"t": key} if key is not None else None
        await store.ingest(event(event_id), ["t"], keys)


async def claim_ids(store: AnyStore, limit: int = 10) -> list[str]:
    return [d.event.id for d in await store.claim("t", limit, lease_s=30)]


async def settle(store: AnyStore, event_id: str, state: str, retry_at: float = 0.0) -> None:
    (record,) = [r for r in await store.deliveries() if r.event_id == event_id]
    next_at = retry_at if state == "pending" else None
    await store.record(
        [AttemptResult(record.id, state, next_at, status=500, keyed=True)]  # type: ignore[arg-type]
    )


async def test_only_the_oldest_pending_delivery_of_each_key_is_claimed(
    store: AnyStore, clock: FakeClock
) -> None:
    await ingest(store, ("a1", "A"), ("a2", "A"), ("b1", "B"), ("n1", None), ("a3", "A"))
    assert await claim_ids(store) == ["a1", "b1", "n1"]
    await settle(store, "a1", "pending", retry_at=clock.now + 5)  # the head fails: retried
    clock.advance(1)
    assert await claim_ids(store) == []  # a2 waits for a1, which waits for its retry
    assert await store.next_due_at("t") == clock.now + 4
    clock.advance(4)
    assert await claim_ids(store) == ["a1"]
    await settle(store, "a1", "delivered")
    assert await claim_ids(store) == ["a2"]  # only now, and a3 still waits
    await settle(store, "a2", "dead")  # a dead head lets the next one go too
    assert await claim_ids(store) == ["a3"]


async def test_keys_order_per_target(store: AnyStore) -> None:
    await store.ingest(event("e1"), ["t", "u"], {"t": "A", "u": "A"})
    await store.ingest(event("e2"), ["t", "u"], {"t": "A", "u": "A"})
    assert [d.event.id for d in await store.claim("u", 10, 30)] == ["e1"]
    assert await claim_ids(store) == ["e1"]


async def test_a_replayed_delivery_waits_behind_the_pending_one_of_its_key(
    store: AnyStore,
) -> None:
    await ingest(store, ("a1", "A"), ("a2", "A"))
    assert await claim_ids(store) == ["a1"]
    await settle(store, "a1", "dead")
    assert await claim_ids(store) == ["a2"]  # in flight now
    a1 = next(r.id for r in await store.deliveries() if r.event_id == "a1")
    assert await store.replay([a1]) == 1
    assert await claim_ids(store) == []
    await settle(store, "a2", "delivered")
    assert await claim_ids(store) == ["a1"]


async def test_a_delivery_made_due_beside_an_older_one_of_its_key_still_waits(
    store: AnyStore, clock: FakeClock
) -> None:
    """The claim itself hands out only the oldest pending one of a key, whatever made the
    later one due (here an edit by hand, as a replay written elsewhere might)."""
    await ingest(store, ("a1", "A"), ("a2", "A"))
    await side_sql(
        store, "UPDATE deliveries SET next_attempt_at = ? WHERE order_key = 'A'", clock.now
    )
    assert await claim_ids(store) == ["a1"]
    assert await store.next_due_at("t") is None  # a1 is leased, a2 waits for it
    await settle(store, "a1", "delivered")
    assert await claim_ids(store) == ["a2"]


async def test_forgetting_the_keys_lets_the_held_deliveries_go_unordered(
    store: AnyStore,
) -> None:
    await ingest(store, ("a1", "A"), ("a2", "A"), ("a3", "A"))
    assert await claim_ids(store) == ["a1"]
    assert [is_due(r) for r in reversed(await store.deliveries())] == [True, False, False]
    assert await store.forget_order_keys("t") == 2
    assert await claim_ids(store) == ["a2", "a3"]


def is_due(record: DeliveryRecord) -> bool:
    return record.next_attempt_at < HELD_AT


# -- relay on real sockets ------------------------------------------------------------------------

RETRY = "{initial: 1s, multiplier: 1, max_interval: 1s, max_elapsed: 1h}"


def ordered_config(url: str, ordering: bool = True, concurrency: int = 4) -> str:
    key = '    ordering: {key: "event.data.userId"}\n' if ordering else ""
    return f"""\
store: "sqlite:///relay.db"
sources:
  app: {{path: /hooks/app}}
targets:
  out:
    kind: http
    url: "{url}/in"
    concurrency: {concurrency}
    retry: {RETRY}
{key}routes:
  - targets: [out]
"""


def event_id(received: Received) -> str:
    return received.headers["Relay-Event-Id"]


def arrivals(receiver: Receiver) -> list[str]:
    return [event_id(r) for r in receiver.received]


async def post_all(relay: Relay, *events: tuple[str, str | None]) -> None:
    """Post (event id, userId) in this order: that is the ingest order."""
    for eid, user in events:
        data: dict[str, Any] = {} if user is None else {"userId": user}
        response = await relay.post("/hooks/app", {"id": eid, "type": "t", "data": data})
        assert response.status == 202


async def delivery(relay: Relay, eid: str) -> DeliveryRecord:
    return next(r for r in await relay.store.deliveries(limit=1000) if r.event_id == eid)


async def test_same_key_goes_one_at_a_time_in_order_while_other_keys_go_on(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    config = write_config(ordered_config(receiver.url))
    relay = await start_relay(config, clock=clock, rng=lambda: 1.0)  # retries 1s apart
    b1_answer = asyncio.Event()
    head = {"a1": Reply(503, "busy")}  # a1 fails until the test says otherwise
    receiver.reply_to = lambda r: (
        head.get(event_id(r)) or (Reply(hold=b1_answer) if event_id(r) == "b1" else None)
    )
    with caplog.at_level(logging.WARNING, logger="relay.ordering"):
        await post_all(
            relay, ("a1", "A"), ("b1", "B"), ("a2", "A"), ("c1", "C"), ("a3", "A"), ("b2", "B")
        )
        await post_all(relay, ("n1", None))  # no key: unordered, and said so
    assert "event n1 of source app goes out without a key (unordered)" in caplog.text

    # a1 failed and b1 is in flight (held open): c1 and n1 go on, a2, a3 and b2 wait.
    await wait_until(
        lambda: {"a1", "b1", "c1", "n1"} <= set(arrivals(receiver)), 5, _seen(receiver)
    )
    await relay.wait_for_deliveries(failed(clock, "a1", 1), "a1's failure recorded")
    await relay.wait_for_state("delivered", count=2)  # c1 and n1
    assert sorted(arrivals(receiver)) == ["a1", "b1", "c1", "n1"]

    b1_answer.set()  # b1 delivered: b2 follows
    await wait_until(lambda: "b2" in arrivals(receiver), 5, _seen(receiver))

    clock.advance(1)  # a1's retry is due; it fails again and a2 still waits
    wake(relay, "out")
    await relay.wait_for_deliveries(failed(clock, "a1", 2), "a1's second failure recorded")
    assert "a2" not in arrivals(receiver)
    assert (await delivery(relay, "a2")).attempts == 0

    del head["a1"]  # the head succeeds: a2, then a3
    clock.advance(1)
    wake(relay, "out")
    await relay.wait_for_state("delivered", count=7)
    seen = arrivals(receiver)
    assert [e for e in seen if e.startswith("a")] == ["a1", "a1", "a1", "a2", "a3"]
    assert [e for e in seen if e.startswith("b")] == ["b1", "b2"]


def failed(clock: FakeClock, eid: str, attempts: int) -> Any:
    """Whether `eid`'s attempt number `attempts` failed and its retry is scheduled."""

    def done(records: list[DeliveryRecord]) -> bool:
        return any(
            r.event_id == eid and r.attempts == attempts and r.next_attempt_at > clock.now
            for r in records
        )

    return done


def _seen(receiver: Receiver) -> Any:
    return lambda: f"arrived: {arrivals(receiver)}"


async def test_a_head_that_goes_dead_lets_the_next_of_its_key_go(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start_relay(write_config(ordered_config(receiver.url)))
    receiver.reply_to = lambda r: Reply(400, "no such user") if event_id(r) == "a1" else None
    await post_all(relay, ("a1", "A"), ("a2", "A"))
    (dead,) = await relay.wait_for_state("dead")
    assert (dead.event_id, dead.last_error) == ("a1", "HTTP 400: no such user")
    (delivered,) = await relay.wait_for_state("delivered")
    assert delivered.event_id == "a2"
    assert arrivals(receiver) == ["a1", "a2"]


async def test_a_reload_without_ordering_lets_the_waiting_deliveries_go(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FakeClock()
    path = write_config(ordered_config(receiver.url))
    relay = await start_relay(path, clock=clock, rng=lambda: 1.0)
    receiver.reply_to = lambda r: Reply(503) if event_id(r) == "a1" else None
    await post_all(relay, ("a1", "A"), ("a2", "A"))
    await relay.wait_for_deliveries(failed(clock, "a1", 1), "a1's failure recorded")
    assert arrivals(receiver) == ["a1"]
    assert await asyncio.to_thread(main, ["deliveries", "-c", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "\tdue=after the older one of its key\t" in next(x for x in lines if "app/a2" in x)

    write_config(ordered_config(receiver.url, ordering=False))
    app = relay.client.app
    assert app is not None
    assert (await app[DAEMON].reload(path)).ok
    (delivered,) = await relay.wait_for_state("delivered")
    assert delivered.event_id == "a2"  # while a1 still waits for its retry
    assert (await delivery(relay, "a1")).state == "pending"


def test_ordering_on_a_warehouse_target_is_refused(write_config: ConfigWriter) -> None:
    path = write_config(
        """\
        targets:
          rows:
            kind: warehouse
            url: "duckdb:///w.duckdb"
            table: t
            columns: {id: {value: "event.id"}}
            key: [id]
            ordering: {key: "event.data.userId"}
          out:
            kind: http
            url: "http://127.0.0.1:9/in"
            ordering: {key: "event.data.userId ~"}
        """
    )
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == [
        "targets.rows.ordering: a warehouse target writes rows in batches, and a table keeps no"
        " order: remove ordering (order rows by a column such as received_at instead)",
        "targets.out.ordering.key: invalid expression: unexpected 'end of template'",
    ]
