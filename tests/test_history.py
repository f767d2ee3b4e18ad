"""The attempt history: every attempt is stored with its time, duration, status, error, the
start of the target's answer and its Retry-After, secrets cut out and control characters
escaped; retention takes the history with its event."""

from __future__ import annotations

import sqlite3
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from relay.events import Delivered, Failed, Outcome, Retry
from relay.history import RESPONSE_PREVIEW_BYTES, note_attempt, response_preview
from relay.redaction import NOTHING_TO_REDACT, Redactor
from relay.store.base import (
    AttemptRecord,
    AttemptResult,
    DeliveryDetail,
    DeliveryFilter,
    DeliveryRecord,
    RetentionPolicy,
)
from relay.store.schema import MIGRATIONS
from relay.store.sqlite import SqliteStore
from tests.clock import FakeClock, wake
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Receiver, Reply
from tests.stores import open_test_store, side_fetch
from tests.test_store import Clock, event

TOKEN = "tok-5e4d3c2b1a"


async def start(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    clock: FakeClock | None = None,
) -> Relay:
    config = f"""\
        store: "sqlite:///relay.db"
        sources:
          app: {{path: /hooks/app}}
        targets:
          out:
            kind: http
            url: "{receiver.url}/in"
            headers: {{Authorization: "Bearer ${{HISTORY_TOKEN}}"}}
            retry: {{initial: 10ms, max_interval: 20ms, max_elapsed: 1m, max_attempts: 3}}
        routes:
          - targets: [out]
        """
    options = {} if clock is None else {"clock": clock}
    return await start_relay(write_config(textwrap.dedent(config)), **options)


def recorded(attempts: int, status: int) -> Callable[[list[DeliveryRecord]], bool]:
    """The only delivery has made `attempts` attempts, the last answered `status`."""
    return lambda records: (records[0].attempts, records[0].last_status) == (attempts, status)


async def history(relay: Relay, delivery_id: int) -> list[AttemptRecord]:
    detail = await relay.store.delivery(delivery_id)
    assert detail is not None
    return detail.attempts


@pytest.fixture(autouse=True)
def history_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HISTORY_TOKEN", TOKEN)


async def test_a_delivered_attempt_is_stored_with_its_time_duration_status_and_answer(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    clock = FakeClock()
    relay = await start(write_config, start_relay, receiver, clock)
    receiver.default = Reply(status=201, body='{"accepted": true}', hang_s=0.05)
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    (record,) = await relay.wait_for_state("delivered")
    (attempt,) = await history(relay, record.id)
    assert attempt.number == 1
    assert attempt.started_at == clock.now  # relay's clock, as every time it keeps
    assert attempt.duration_s is not None
    assert attempt.duration_s >= 0.05  # the answer took at least that long
    assert (attempt.result, attempt.status, attempt.error) == ("delivered", 201, None)
    assert (attempt.response, attempt.retry_after) == ('{"accepted": true}', None)


async def test_retried_and_dead_attempts_keep_status_error_answer_and_retry_after(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    clock = FakeClock()
    relay = await start(write_config, start_relay, receiver, clock)
    receiver.script = [
        Reply(status=503, body="busy", headers={"Retry-After": "7"}),
        Reply(
            status=429, body="slow down", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}
        ),
    ]
    receiver.default = Reply(status=500, body="broken")
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    for attempts, status, wait_s in [(1, 503, 7), (2, 429, 1)]:  # then a date long past
        await relay.wait_for_deliveries(recorded(attempts, status), f"attempt {attempts}")
        clock.advance(wait_s)
        wake(relay, "out")
    (record,) = await relay.wait_for_state("dead")
    first, second, third = await history(relay, record.id)
    assert [a.number for a in (first, second, third)] == [1, 2, 3]
    assert [a.result for a in (first, second, third)] == ["retry", "retry", "dead"]
    assert [a.status for a in (first, second, third)] == [503, 429, 500]
    assert [a.response for a in (first, second, third)] == ["busy", "slow down", "broken"]
    assert [a.retry_after for a in (first, second, third)] == [
        "7",
        "Wed, 21 Oct 2015 07:28:00 GMT",
        None,
    ]
    assert first.error == "HTTP 503: busy"
    assert third.error == "HTTP 500: broken; gave up after 3 attempts (max_attempts)"
    assert [a.started_at for a in (first, second, third)] == [
        clock.now - 8,
        clock.now - 1,
        clock.now,
    ]


async def test_the_answer_is_kept_to_its_first_2_kb_with_secrets_and_controls_made_safe(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver, FakeClock())
    # The target echoes the credential across the end of the first 2 KB, after escape
    # sequences (7 bytes of UTF-8 before the x's).
    head = "\x1b[2J\u202e" + "x" * (RESPONSE_PREVIEW_BYTES - 7 - 12)
    body = head + f"Bearer {TOKEN} and more after it"
    receiver.default = Reply(status=400, body=body, headers={"Retry-After": f"in {TOKEN}"})
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    (record,) = await relay.wait_for_state("dead")
    (attempt,) = await history(relay, record.id)
    # The first 2 KB hold "Bearer tok-5": cut first, that start of the token would stay.
    # Redacted first, "Bearer <token>" (the header's value) is cut out whole.
    escaped_head = "\\x1b[2J\\u202e" + "x" * (RESPONSE_PREVIEW_BYTES - 7 - 12)
    assert attempt.response == escaped_head + "[redacted] a…"
    assert attempt.retry_after == "in [redacted]"
    assert attempt.error is not None
    assert TOKEN not in attempt.error


def test_a_preview_is_cut_at_2_kb_of_utf_8_never_inside_a_character() -> None:
    assert response_preview("é" * 2000, NOTHING_TO_REDACT) == "é" * 1024 + "…"
    assert response_preview("a" + "é" * 2000, NOTHING_TO_REDACT) == "a" + "é" * 1023 + "…"
    assert response_preview("short\n", NOTHING_TO_REDACT) == "short\\x0a"
    assert response_preview("x" * RESPONSE_PREVIEW_BYTES, NOTHING_TO_REDACT) == "x" * 2048


def test_a_secret_longer_than_the_preview_is_still_cut_out_whole() -> None:
    secret = "s" * 3000
    redact = Redactor([secret])
    assert response_preview("ab" + secret, redact) == "ab[redacted]"


def test_the_duration_is_the_targets_own_else_the_workers() -> None:
    outcomes: list[Outcome] = [
        Delivered(200, duration_s=0.25),
        Retry("HTTP 503"),
        Failed("bad", duration_s=0.5),
    ]
    results = [AttemptResult(1, "delivered"), AttemptResult(2, "pending"), AttemptResult(3, "dead")]
    for result, outcome in zip(results, outcomes, strict=True):
        note_attempt(result, 4, outcome, 1000.0, 0.75, NOTHING_TO_REDACT)
    assert [(r.attempt, r.started_at, r.duration_s) for r in results] == [
        (4, 1000.0, 0.25),
        (4, 1000.0, 0.75),
        (4, 1000.0, 0.5),
    ]


async def test_a_connection_error_is_an_attempt_with_no_status_or_answer(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver)
    await receiver.stop()  # nothing listens on its port now
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    (record,) = await relay.wait_for_state("dead")
    attempts = await history(relay, record.id)
    assert [(a.result, a.status, a.response) for a in attempts] == [
        ("retry", None, None),
        ("retry", None, None),
        ("dead", None, None),
    ]
    assert all(a.error is not None and a.error.startswith("connection error") for a in attempts)
    assert all(a.duration_s is not None for a in attempts)


async def test_a_warehouse_batch_records_one_attempt_per_delivery_with_the_writes_duration(
    write_config: ConfigWriter, start_relay: StartRelay, tmp_path: Path
) -> None:
    config = """\
        store: "sqlite:///relay.db"
        sources:
          app: {path: /hooks/app}
        targets:
          wh:
            kind: warehouse
            url: "duckdb:///wh.duckdb"
            table: rows
            create_table: true
            key: [id]
            batch: {max_rows: 10, max_wait: 50ms}
            columns:
              id: {value: "event.id"}
              n: {value: "event.data.n", type: bigint}
        routes:
          - targets: [wh]
        """
    relay = await start_relay(write_config(textwrap.dedent(config)))
    for i, n in enumerate([1, 2, "not a number"]):
        event = {"id": f"e{i}", "type": "t", "data": {"n": n}}
        assert (await relay.post("/hooks/app", event)).status == 202
    records = await relay.wait_for_deliveries(
        lambda rs: len(rs) == 3 and all(r.state != "pending" for r in rs), "3 settled"
    )
    by_event = {r.event_id: r for r in records}
    for event_id, result in [("e0", "delivered"), ("e1", "delivered"), ("e2", "dead")]:
        (attempt,) = await history(relay, by_event[event_id].id)
        assert attempt.result == result
        assert attempt.duration_s is not None
        assert attempt.response is None
    (failed,) = await history(relay, by_event["e2"].id)
    assert failed.error is not None
    assert "not a number" in failed.error


async def test_retention_purges_the_attempts_with_their_event(
    store_kind: str, tmp_path: Path
) -> None:
    clock = Clock()
    async with open_test_store(store_kind, tmp_path, clock) as store:
        await store.ingest(event("old"), ["a"])
        (claimed,) = await store.claim("a", 1, lease_s=30)
        await store.record([AttemptResult(claimed.id, "delivered", status=200, attempt=1)])
        clock.now += 8 * 86_400
        await store.ingest(event("new"), ["a"])
        (kept,) = await store.claim("a", 1, lease_s=30)
        await store.record(
            [AttemptResult(kept.id, "dead", status=500, error="HTTP 500", attempt=1)]
        )
        assert await store.purge(RetentionPolicy(delivered_s=7 * 86_400, dead_s=30 * 86_400)) == 1
        rows = await side_fetch(store, "SELECT delivery_id, result FROM attempts")
        assert rows == [(kept.id, "dead")]
        assert await store.delivery(claimed.id) is None
        detail = await store.delivery(kept.id)
        assert isinstance(detail, DeliveryDetail)
        assert [(a.number, a.result, a.status, a.error) for a in detail.attempts] == [
            (1, "dead", 500, "HTTP 500")
        ]


async def test_a_delivery_shows_its_event_as_stored_with_where_its_data_is(
    store_kind: str, tmp_path: Path
) -> None:
    """What the console renders a request from: the event's bytes, headers and `data_key`."""
    async with open_test_store(store_kind, tmp_path, Clock()) as store:
        enveloped = replace(event("e1"), data_key="data", created_at=999.5)
        await store.ingest(enveloped, ["a"])
        (record,) = await store.deliveries(limit=1)
        detail = await store.delivery(record.id)
        assert isinstance(detail, DeliveryDetail)
        shown = detail.event
        assert (shown.body, shown.headers) == (enveloped.body, {"h": "v"})
        assert (shown.data_key, shown.created_at) == ("data", 999.5)


async def test_a_store_from_before_the_history_is_migrated_and_its_deliveries_listed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relay.db"
    history_at = next(i for i, step in enumerate(MIGRATIONS) if "CREATE TABLE attempts" in step)
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:history_at]:
        db.executescript(script)
    db.execute(f"PRAGMA user_version = {history_at}")
    db.execute(
        "INSERT INTO events (source, event_id, type, received_at, body, headers)"
        " VALUES ('src', 'old', 't', 1000.0, x'7b7d', '{}')"
    )
    db.execute(
        "INSERT INTO deliveries (event_pk, target, state, attempts, next_attempt_at, updated_at,"
        " last_status) VALUES (1, 'a', 'dead', 3, 1000.0, 1000.0, 500)"
    )
    db.commit()
    db.close()
    store = SqliteStore(path, Clock())
    await store.open()
    try:
        (record,) = await store.deliveries("dead", where=DeliveryFilter(target="a", source="src"))
        assert (record.event_id, record.attempts, record.last_status) == ("old", 3, 500)
        detail = await store.delivery(record.id)
        assert detail is not None
        assert detail.attempts == []  # made before relay kept them
    finally:
        await store.close()
