"""Chaos: the real daemon (`python -m relay run`) killed again and again under steady load with
a target that fails some of the time, and a target that is down for a while.

The contract: every event relay acknowledged with a 202 reaches the target at least once,
however often the process dies; a delivery keeps being retried within its bound, and one past
its bound is dead until an operator replays it.

Bounded: a fixed number of kills, posters that stop after a fixed number of events, and every
wait a poll with a deadline. Nothing asserts how long anything took by the wall clock; times
checked are relay's own, as it recorded them in the store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.process import (
    REPO_ROOT,
    RelayProcess,
    event_ids,
    free_port,
    post_event,
    relay_config,
    stored_deliveries,
)
from tests.receiver import Received, Receiver, Reply, wait_until

pytestmark = pytest.mark.slow

KILLS = 10
POSTERS = 4
POSTS_PER_S = 50  # each poster's: a few hundred events a second in all
MAX_POSTS = 2_000  # per poster: at 50/s, 40 s, past any run of this test
ACKS_PER_ROUND = 60  # acknowledged events between two kills
FAIL_EVERY = 4  # the target answers every fourth request 503
MAX_ELAPSED_S = 5  # the retry bound of the down-target test
CLI_TIMEOUT_S = 30.0


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "relay.yaml", free_port(), tmp_path / "relay.log")
    yield process
    process.stop_now()


def some(ids: set[str], shown: int = 20) -> str:
    listed = ", ".join(sorted(ids)[:shown])
    return f"{len(ids)} ({listed}{', ...' if len(ids) > shown else ''})"


class FlakyTarget:
    """A receiver that answers every FAIL_EVERY-th request 503 and counts, per event id, the
    requests it answered 200: more than one is a duplicate delivery."""

    def __init__(self, receiver: Receiver) -> None:
        self.requests = 0
        self.accepted: collections.Counter[str] = collections.Counter()
        receiver.reply_to = self.reply

    def reply(self, received: Received) -> Reply:
        self.requests += 1
        if self.requests % FAIL_EVERY == 0:
            return Reply(503, "flaky")
        headers = {name.lower(): value for name, value in received.headers.items()}
        self.accepted[headers.get("relay-event-id", "")] += 1
        return Reply(200)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.accepted.values())


async def post_steadily(
    session: aiohttp.ClientSession,
    relay: RelayProcess,
    poster: int,
    stop: asyncio.Event,
    posted: set[str],
    acked: set[str],
) -> None:
    """Post c<poster>-0, -1, ... at POSTS_PER_S whatever relay does (a post to a dead relay
    fails at once), until `stop` or MAX_POSTS."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for n in range(MAX_POSTS):
        if stop.is_set():
            return
        delay = started + n / POSTS_PER_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)  # the pace of the load, not a wait for anything
        event_id = f"c{poster}-{n}"
        posted.add(event_id)
        if await post_event(session, relay, event_id) == 202:
            acked.add(event_id)


async def progress(relay: RelayProcess, receiver: Receiver, acked: set[str], kill: int) -> None:
    """Wait until relay has acknowledged ACKS_PER_ROUND more events and delivered some."""
    acked_mark, received_mark = len(acked), len(receiver.received)
    await wait_until(
        lambda: (
            len(acked) >= acked_mark + ACKS_PER_ROUND and len(receiver.received) > received_mark
        ),
        20,
        lambda: (
            f"before kill {kill}: {len(acked) - acked_mark} more acknowledged,"
            f" {len(receiver.received) - received_mark} more delivered" + relay.output()
        ),
    )


async def test_every_acknowledged_event_is_delivered_across_ten_sigkills_under_load(
    relay: RelayProcess, receiver: Receiver
) -> None:
    target = FlakyTarget(receiver)
    relay.config.write_text(relay_config(relay.port, receiver.url, concurrency=8))
    relay.start()
    await relay.wait_ready()
    posted: set[str] = set()
    acked: set[str] = set()
    stop = asyncio.Event()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        posters = [
            asyncio.create_task(post_steadily(session, relay, n, stop, posted, acked))
            for n in range(POSTERS)
        ]
        try:
            for kill in range(KILLS):
                await progress(relay, receiver, acked, kill + 1)
                assert not any(task.done() for task in posters), "a poster ran out of events"
                await relay.kill()
                relay.start()
                await relay.wait_ready()
        finally:
            stop.set()
            await asyncio.gather(*posters, return_exceptions=True)

    await wait_until(
        lambda: acked <= set(target.accepted),
        30,
        lambda: (
            f"acknowledged, not delivered: {some(acked - set(target.accepted))}" + relay.output()
        ),
    )
    unknown = set(event_ids(receiver)) - posted
    assert not unknown, f"delivered events nobody posted: {some(unknown)}"
    assert relay.runs == KILLS + 1
    refused = target.requests // FAIL_EVERY
    print(
        f"\n{KILLS} SIGKILLs: {len(acked)} events acknowledged of {len(posted)} posted, all"
        f" delivered; {target.requests} requests to the target ({refused} answered 503),"
        f" {target.duplicates} duplicate deliveries"
    )


# -- a target down for a while -----------------------------------------------------------------


def attempts_of(db: Path) -> dict[str, tuple[str, float | None, list[tuple[float, str]]]]:
    """Per event id: its delivery's state, first attempt and attempts (started, result), as
    relay recorded them (relay's clock), read through a read-only connection."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as connection:
        deliveries = connection.execute(
            "SELECT d.id, e.event_id, d.state, d.first_attempt_at FROM deliveries d"
            " JOIN events e ON e.pk = d.event_pk"
        ).fetchall()
        attempts = connection.execute(
            "SELECT delivery_id, started_at, result FROM attempts ORDER BY id"
        ).fetchall()
    by_delivery: dict[int, list[tuple[float, str]]] = collections.defaultdict(list)
    for delivery_id, started_at, result in attempts:
        by_delivery[delivery_id].append((started_at, result))
    return {
        event_id: (state, first_at, by_delivery[delivery_id])
        for delivery_id, event_id, state, first_at in deliveries
    }


async def replay_dead(config: Path) -> str:
    """`relay deliveries replay --state dead` beside the running daemon; what it printed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "deliveries",
        "replay",
        "--state",
        "dead",
        "-c",
        str(config),
        cwd=config.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT_S)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


async def test_a_target_down_for_a_while_gets_every_event_within_its_bound_and_a_replayed_one(
    relay: RelayProcess, tmp_path: Path
) -> None:
    port = free_port()  # the target's: nobody listens there yet, it is down
    retry = f"{{initial: 50ms, max_interval: 200ms, max_elapsed: {MAX_ELAPSED_S}s}}"
    relay.config.write_text(relay_config(relay.port, f"http://127.0.0.1:{port}", retry=retry))
    db = tmp_path / "relay.db"
    relay.start()
    await relay.wait_ready()
    receiver = Receiver()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            early = {f"down-{n}" for n in range(50)}
            for event_id in sorted(early):
                assert await post_event(session, relay, event_id) == 202, relay.output()
            # Down: every delivery fails at least twice (connection refused) and is retried.
            await wait_until(
                lambda: all(d.attempts >= 2 for d in stored_deliveries(db)),
                MAX_ELAPSED_S / 2,
                lambda: f"each tried twice: {stored_deliveries(db)}" + relay.output(),
            )
            await receiver.start(port)  # and up again
            await wait_until(
                lambda: set(event_ids(receiver)) >= early,
                15,
                lambda: f"missing: {some(early - set(event_ids(receiver)))}" + relay.output(),
            )
            await wait_until(  # each result recorded too, which follows the receiver's answer
                lambda: all(state == "delivered" for state, _, _ in attempts_of(db).values()),
                10,
                lambda: f"recorded: {attempts_of(db)}" + relay.output(),
            )
            for event_id, (state, first_at, attempts) in attempts_of(db).items():
                assert state == "delivered", (event_id, state, attempts)
                assert first_at is not None
                *failed, (delivered_at, result) = attempts
                assert result == "delivered", (event_id, attempts)
                assert len(failed) >= 1, (event_id, attempts)
                assert all(result == "retry" for _, result in failed), (event_id, attempts)
                assert delivered_at <= first_at + MAX_ELAPSED_S, (event_id, first_at, attempts)

            # Down again, past the bound: the delivery is dead and stays undelivered.
            await receiver.stop()
            assert await post_event(session, relay, "late") == 202
            await wait_until(
                lambda: attempts_of(db)["late"][0] == "dead",
                MAX_ELAPSED_S + 15,
                lambda: f"late is dead: {attempts_of(db)['late']}" + relay.output(),
            )
            await receiver.start(port)
            assert await post_event(session, relay, "after") == 202
            await wait_until(lambda: "after" in event_ids(receiver), 10, relay.output)
            assert "late" not in event_ids(receiver)  # dead: not retried once the target is up

            printed = await replay_dead(relay.config)
            assert "1 dead deliveries are pending again" in printed, printed
            await wait_until(
                lambda: "late" in event_ids(receiver),
                10,
                lambda: f"late after the replay: {attempts_of(db)['late']}" + relay.output(),
            )
            await wait_until(lambda: attempts_of(db)["late"][0] == "delivered", 5, relay.output)
    finally:
        await receiver.stop()
