"""Target control: pause and resume (by an operator, or by a 410 Gone answer), `relay targets`.

The store's rules first, then relay on real sockets with an injected clock, then the CLI
against a store a running relay uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from relay.app import DAEMON, DISPATCHER, Daemon
from relay.cli import main
from relay.events import Delivery, Event, Failed, Gone
from relay.store.base import AttemptResult, TargetActivity, TargetPause, TargetStatus
from relay.store.sqlite import SqliteStore
from relay.targets.http import classify_http
from relay.targetstatus import TargetRow, format_targets, target_rows, targets_json
from tests.clock import FakeClock, wake
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.process import RelayProcess, free_port, post_event, relay_config
from tests.receiver import Receiver, Reply, wait_until
from tests.stores import AnyStore, open_test_store

# -- the store ----------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(store_kind: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[AnyStore]:
    async with open_test_store(store_kind, tmp_path, clock) as store:
        yield store


def event(event_id: str) -> Event:
    return Event("src", event_id, "t", 1_000.0, b"{}", {}, {})


async def test_a_paused_target_is_claimed_for_by_no_one(store: AnyStore, clock: FakeClock) -> None:
    await store.ingest(event("e1"), ["t", "u"])
    first = await store.pause_target("t", "deploy")
    assert first == TargetPause(clock.now, "deploy")
    assert await store.claim("t", 10, 30) == []
    assert await store.next_due_at("t") is None
    assert len(await store.claim("u", 10, 30)) == 1  # other targets go on

    clock.advance(5)
    assert await store.pause_target("t", "another reason") == first  # the first pause stays
    assert await store.target_pause("t") == first
    assert await store.resume_target("t") == first
    assert await store.resume_target("t") is None
    assert [d.event.id for d in await store.claim("t", 10, 30)] == ["e1"]


async def test_time_spent_paused_moves_each_retry_window_on(
    store: AnyStore, clock: FakeClock
) -> None:
    await store.ingest(event("e1"), ["t"])
    await store.ingest(event("e2"), ["t"])
    (first,) = await store.claim("t", 1, 30)  # e1 attempted once; e2 never
    await store.record([AttemptResult(first.id, "pending", clock.now + 1, 503, "busy")])
    await store.pause_target("t", "deploy")
    clock.advance(3600)
    await store.resume_target("t")
    e1, e2 = await store.claim("t", 10, 30)
    assert (e1.attempt, e1.first_attempt_at) == (2, first.first_attempt_at + 3600)
    assert (e2.attempt, e2.first_attempt_at) == (1, clock.now)


async def test_statuses_count_each_targets_backlog_and_keep_its_activity(
    store: AnyStore, clock: FakeClock
) -> None:
    await store.ingest(event("e1"), ["t", "u"])
    clock.advance(10)
    await store.ingest(event("e2"), ["t"])
    (u1,) = await store.claim("u", 10, 30)
    await store.record([AttemptResult(u1.id, "dead", status=400, error="HTTP 400")])
    await store.note_activity("t", TargetActivity(last_success_at=5.0))
    await store.note_activity("t", TargetActivity(last_error_at=7.0, last_error="HTTP 503"))
    await store.pause_target("gone", "old target")
    assert await store.target_statuses() == [
        TargetStatus("gone", TargetPause(clock.now, "old target"), 0, 0, None, TargetActivity()),
        TargetStatus("t", None, 2, 0, 1_000.0, TargetActivity(5.0, 7.0, "HTTP 503")),
        TargetStatus("u", None, 0, 1, None, TargetActivity()),
    ]


# -- classifying --------------------------------------------------------------------------------


def test_410_is_gone_with_the_start_of_the_answer_unless_on_gone_is_dead() -> None:
    answer = "this endpoint was removed\n"
    reason = "HTTP 410 Gone: this endpoint was removed"
    assert classify_http(410, answer, None, 0.0) == Gone(reason, 410)
    assert classify_http(410, answer, None, 0.0, on_gone="dead") == Failed(reason, 410)


# -- relay on real sockets ------------------------------------------------------------------------

RETRY = "{initial: 1s, multiplier: 1, max_interval: 1s, max_elapsed: 10s}"


def config(url: str, extra: str = "", concurrency: int = 1) -> str:
    return f"""\
store: "sqlite:///relay.db"
sources:
  app: {{path: /hooks/app}}
targets:
  out:
    kind: http
    url: "{url}/in"
    headers: {{Authorization: "Bearer s3cr3t-token-value"}}
    concurrency: {concurrency}
    retry: {RETRY}
{extra}
routes:
  - targets: [out]
"""


def daemon_of(relay: Relay) -> Daemon:
    app = relay.client.app
    assert app is not None
    daemon: Daemon = app[DAEMON]
    return daemon


async def post(relay: Relay, *event_ids: str) -> None:
    for event_id in event_ids:
        response = await relay.post("/hooks/app", {"id": event_id, "type": "t"})
        assert response.status == 202


def relay_targets(*args: str) -> int:
    return main(["targets", *args])


async def test_410_pauses_the_target_and_resume_delivers_the_kept_deliveries(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = write_config(config(receiver.url))
    relay = await start_relay(path)
    receiver.default = Reply(410, "endpoint removed \x1b[2J for Bearer s3cr3t-token-value")
    with caplog.at_level(logging.WARNING, logger="relay.delivery"):
        await post(relay, "e1", "e2")
        records = await relay.wait_for_deliveries(
            lambda rs: any(r.last_status == 410 for r in rs), "the 410 recorded"
        )
    (gone,) = [r for r in records if r.last_status == 410]
    reason = "HTTP 410 Gone: endpoint removed \\x1b[2J for [redacted]"
    assert (gone.event_id, gone.state, gone.attempts, gone.last_error) == (
        "e1",
        "pending",
        1,
        reason,
    )
    pause = await relay.store.target_pause("out")
    assert pause is not None
    assert pause.reason == reason
    assert (
        f"target out answered {reason}: paused; its deliveries wait in the store until"
        " `relay targets resume out`"
    ) in caplog.text
    # The pause is in the store before the 410 is recorded: nothing is claimed after it.
    await post(relay, "e3")
    records = await relay.store.deliveries()
    assert [(r.event_id, r.state, r.attempts) for r in records] == [
        ("e3", "pending", 0),
        ("e2", "pending", 0),
        ("e1", "pending", 1),
    ]
    assert len(receiver.received) == 1

    await activity_stored(relay, "out")  # the worker writes it at least once a second
    assert await asyncio.to_thread(relay_targets, "-c", str(path)) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split()[:4] == ["out", "paused", "3", "0"]  # ages follow the wall clock
    assert table[1].endswith(f" ago: {reason}")
    assert table[2].startswith("out paused ")
    assert table[2].endswith(f"{reason}; relay targets resume out sends its 3 pending deliveries")

    receiver.default = Reply(200)
    assert await asyncio.to_thread(relay_targets, "resume", "out", "-c", str(path)) == 0
    assert capsys.readouterr().out.startswith("out is resumed (it was paused since ")
    await relay.wait_for_state("delivered", count=3)  # within a second: the worker looks
    first_again = next(r for r in receiver.received[1:] if r.headers["Relay-Event-Id"] == "e1")
    assert first_again.headers["Relay-Attempt"] == "2"
    assert await relay.store.target_pause("out") is None


async def activity_stored(relay: Relay, target: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while True:
        statuses = {status.name: status for status in await relay.store.target_statuses()}
        if target in statuses and statuses[target].activity != TargetActivity():
            return
        assert loop.time() < deadline, f"no activity of {target} stored: {statuses}"
        await asyncio.sleep(0.01)


async def test_on_gone_dead_makes_the_delivery_dead_and_keeps_the_target_active(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start_relay(write_config(config(receiver.url, "    on_gone: dead")))
    receiver.script = [Reply(410, "bye")]
    await post(relay, "e1", "e2")
    (dead,) = await relay.wait_for_state("dead")
    assert (dead.event_id, dead.last_error) == ("e1", "HTTP 410 Gone: bye")
    (delivered,) = await relay.wait_for_state("delivered")
    assert delivered.event_id == "e2"
    assert await relay.store.target_pause("out") is None


async def test_a_retrying_delivery_keeps_its_whole_window_across_a_long_pause(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    """max_elapsed is 10s; the target is paused for an hour while e1 retries. After the
    resume e1 fails again and is retried, not dead: the pause did not count."""
    clock = FakeClock()
    path = write_config(config(receiver.url))
    relay = await start_relay(path, clock=clock, rng=lambda: 1.0)
    receiver.default = Reply(503, "busy")
    await post(relay, "e1")
    await relay.wait_for_deliveries(
        lambda rs: rs[0].next_attempt_at == clock.now + 1, "the first failure recorded"
    )
    await relay.store.pause_target("out", "deploy")
    clock.advance(3600)
    await relay.store.resume_target("out")
    daemon_of(relay).dispatcher.check_state("out")  # type: ignore[union-attr]
    await relay.wait_for_deliveries(
        lambda rs: rs[0].attempts == 2 and rs[0].next_attempt_at == clock.now + 1,
        "the second failure recorded, with a retry scheduled",
    )
    receiver.default = Reply(200)
    clock.advance(1)
    wake(relay, "out")
    (delivered,) = await relay.wait_for_state("delivered")
    assert delivered.attempts == 3


async def test_a_paused_target_removed_and_configured_again_is_still_paused(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    path = write_config(config(receiver.url))
    relay = await start_relay(path)
    assert await asyncio.to_thread(relay_targets, "pause", "out", "-c", str(path)) == 0
    daemon = daemon_of(relay)
    write_config('store: "sqlite:///relay.db"\nsources:\n  app: {path: /hooks/app}\n')
    assert (await daemon.reload(path)).ok  # out is gone
    write_config(config(receiver.url))
    assert (await daemon.reload(path)).ok  # and back
    app = relay.client.app
    assert app is not None
    dispatcher = app[DISPATCHER]
    await wait_until(lambda: dispatcher.pauses.get("out") is not None, 5, lambda: "paused")
    await post(relay, "e1")
    (record,) = await relay.store.deliveries()
    assert (record.state, record.attempts) == ("pending", 0)
    assert receiver.received == []
    assert await asyncio.to_thread(relay_targets, "resume", "out", "-c", str(path)) == 0
    await relay.wait_for_state("delivered")


class CountingStore(SqliteStore):
    """The real store, counting the claims workers make."""

    claims = 0

    async def claim(self, target: str, limit: int, lease_s: float) -> list[Delivery]:
        CountingStore.claims += 1
        return await super().claim(target, limit, lease_s)


async def test_a_paused_target_costs_no_query_per_event(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events for a paused target wake its worker, which knows it is paused (it looks in the
    store once a second) and claims nothing."""
    monkeypatch.setattr("relay.store.sqlite.SqliteStore", CountingStore)
    path = write_config(config(receiver.url))
    relay = await start_relay(path)
    await relay.store.pause_target("out", "deploy")
    app = relay.client.app
    assert app is not None
    app[DISPATCHER].check_state("out")
    await wait_until(lambda: app[DISPATCHER].pauses["out"] is not None, 5, lambda: "paused")
    claims = CountingStore.claims
    await post(relay, *(f"e{i}" for i in range(20)))
    assert (await relay.counts())["pending"] == 20
    assert CountingStore.claims == claims
    assert receiver.received == []


def test_an_unknown_target_is_an_error_that_lists_the_targets(
    write_config: ConfigWriter, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(config("http://127.0.0.1:9"))
    assert relay_targets("pause", "nope", "-c", str(path)) == 1
    assert relay_targets("resume", "nope\n", "-c", str(path)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "relay targets: no target named 'nope'; targets: out",
        "relay targets: no target named 'nope\\n'; targets: out",
    ]
    assert relay_targets("pause", "out") == 1
    assert capsys.readouterr().err == "relay targets: -c/--config is required\n"


# -- the table ------------------------------------------------------------------------------------

NOW = 1_700_000_000.0


def test_the_table_shows_every_configured_target_and_removed_ones_that_hold_deliveries() -> None:
    statuses = [
        TargetStatus(
            "audit",
            TargetPause(NOW - 7260, "deploy\n"),
            12,
            1,
            NOW - 90,
            TargetActivity(NOW - 3 * 86400 - 7200, NOW - 30, "HTTP 503: " + "x" * 100),
        ),
        TargetStatus("history", None, 0, 0, None, TargetActivity(NOW - 5, None, None)),
        TargetStatus("old", None, 2, 0, NOW - 40, TargetActivity()),
    ]
    rows = target_rows(statuses, ["slack", "audit"])
    assert [(r.status.name, r.configured) for r in rows] == [
        ("slack", True),
        ("audit", True),
        ("old", False),
    ]
    redact = lambda text: text.replace("deploy", "[redacted]")  # noqa: E731
    heading, slack, audit_row, old, note = format_targets(rows, NOW, redact).splitlines()
    assert heading == (
        "TARGET                   STATE   PENDING  DEAD  OLDEST PENDING  LAST SUCCESS  LAST ERROR"
    )
    assert (
        slack == "slack                    active        0     0  -               never         -"
    )
    assert audit_row == (
        "audit                    paused       12     1  1m              3d 2h ago     30s ago:"
        " HTTP 503: " + "x" * 69 + "…"
    )
    assert old == "old (not in the config)  active        2     0  40s             never         -"
    assert note == (
        "audit paused 2h 1m ago, at 2023-11-14 20:12:20 UTC: [redacted]\\x0a; relay targets"
        " resume audit sends its 12 pending deliveries"
    )
    (audit,) = [row for row in targets_json(rows, NOW, redact) if row["target"] == "audit"]
    assert audit == {
        "target": "audit",
        "configured": True,
        "state": "paused",
        "paused_at": "2023-11-14T20:12:20+00:00",
        "paused_reason": "[redacted]\n",
        "pending": 12,
        "dead": 1,
        "oldest_pending_at": "2023-11-14T22:11:50+00:00",
        "oldest_pending_age_s": 90.0,
        "last_success_at": "2023-11-11T20:13:20+00:00",
        "last_error_at": "2023-11-14T22:12:50+00:00",
        "last_error": "HTTP 503: " + "x" * 100,
    }
    assert json.loads(json.dumps(audit)) == audit
    assert isinstance(rows[0], TargetRow)


# -- a real daemon, and the CLI beside it ---------------------------------------------------------


@pytest.mark.slow
async def test_pause_and_resume_from_the_cli_while_the_daemon_runs(
    tmp_path: Path, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    path = tmp_path / "relay.yaml"
    path.write_text(relay_config(port, receiver.url), encoding="utf-8")
    relay = RelayProcess(path, port, tmp_path / "relay.log")
    relay.start()
    try:
        await relay.wait_ready()
        pause = ["pause", "out", "--reason", "deploy", "-c", str(path)]
        assert await asyncio.to_thread(relay_targets, *pause) == 0
        assert capsys.readouterr().out == (
            "out is paused: relay claims nothing for it until it is resumed\n"
        )
        paused_line = "target out is paused (deploy)"
        await wait_until(lambda: paused_line in relay.output(), 5, relay.output)
        async with aiohttp.ClientSession() as session:
            assert await post_event(session, relay, "e1") == 202
        assert await asyncio.to_thread(relay_targets, "-c", str(path)) == 0
        _, row, note = capsys.readouterr().out.splitlines()
        assert row.split()[:4] == ["out", "paused", "1", "0"]
        assert note.endswith(": deploy; relay targets resume out sends its 1 pending deliveries")
        assert receiver.received == []

        assert await asyncio.to_thread(relay_targets, "resume", "out", "-c", str(path)) == 0
        (got,) = await receiver.wait_for(1)
        assert got.headers["Relay-Event-Id"] == "e1"
        resumed_line = "target out is resumed: delivering again"
        await wait_until(lambda: resumed_line in relay.output(), 5, relay.output)
    finally:
        relay.stop_now()
