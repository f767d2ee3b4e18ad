"""Durability of the real daemon: `python -m relay run` killed with SIGKILL, stopped with SIGTERM
or SIGINT, restarted on the same SQLite file, or started twice on it.

The contract under test: every event relay acknowledged with a 2xx reaches the target at least
once, whatever happens to the process afterwards; a retry schedule is kept in the store, not in
memory; a graceful stop finishes the sends in flight and leaves the rest for the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from relay.delivery import SHUTDOWN_GRACE_S
from tests.process import (
    RelayProcess,
    StoredDelivery,
    TimedReceiver,
    event_ids,
    free_port,
    post_event,
    post_until_refused,
    relay_config,
    stored_deliveries,
)
from tests.receiver import Receiver, Reply, wait_until
from tests.test_store_faults import write_garbage_in_the_middle, write_store

MakeRelay = Callable[..., RelayProcess]


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[MakeRelay]:
    """Write a config and make a RelayProcess for it; teardown SIGKILLs whatever still runs."""
    made: list[RelayProcess] = []

    def make(
        target_url: str, *, name: str = "relay", concurrency: int = 4, store: str = "relay.db"
    ) -> RelayProcess:
        port = free_port()
        config = tmp_path / f"{name}.yaml"
        config.write_text(relay_config(port, target_url, concurrency=concurrency, store=store))
        process = RelayProcess(config, port, tmp_path / f"{name}.log")
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop_now()


def some(ids: set[str], shown: int = 20) -> str:
    """A set of event ids for a message: how many, and the first few."""
    listed = ", ".join(sorted(ids)[:shown])
    return f"{len(ids)} ({listed}{', ...' if len(ids) > shown else ''})"


def by_event(deliveries: list[StoredDelivery]) -> dict[str, StoredDelivery]:
    return {delivery.event_id: delivery for delivery in deliveries}


async def stop_gracefully(relay: RelayProcess) -> None:
    relay.send_signal(signal.SIGTERM)
    code = await relay.wait_exit()
    assert code == 0, f"relay exited with {code} on SIGTERM" + relay.output()


async def accepts_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


# -- 1. SIGKILL and restart -------------------------------------------------------------------


@pytest.mark.slow
async def test_pending_retries_survive_sigkill(
    receiver: Receiver, relays: MakeRelay, tmp_path: Path
) -> None:
    """The receiver fails every attempt; relay is killed with retries scheduled in the store
    and with `concurrency` attempts in flight, leased for far longer than the test waits."""
    concurrency = 4
    receiver.default = Reply(500, "down")
    relay = relays(receiver.url, concurrency=concurrency)
    relay.start()
    await relay.wait_ready()
    posted = [f"evt-{i}" for i in range(20)]
    async with aiohttp.ClientSession() as session:
        statuses = {event_id: await post_event(session, relay, event_id) for event_id in posted}
    acked = {event_id for event_id, status in statuses.items() if status == 202}
    assert acked == set(posted), f"not all acknowledged: {statuses}" + relay.output()

    db = tmp_path / "relay.db"
    await wait_until(
        lambda: all(d.last_status == 500 for d in stored_deliveries(db)),
        10,
        lambda: f"every delivery failed once; store has {stored_deliveries(db)}" + relay.output(),
    )
    # The next attempts get no answer until after the kill: SIGKILL lands with them leased
    # (lease = timeout 5s + 30s).
    answer = asyncio.Event()
    receiver.script = [Reply(500, "stuck", hold=answer) for _ in range(concurrency)]

    def leased() -> list[StoredDelivery]:
        soon = time.time() + 20
        return [d for d in stored_deliveries(db) if d.lease_until > soon]

    try:
        await wait_until(
            lambda: not receiver.script and len(leased()) == concurrency,
            10,
            lambda: f"{concurrency} attempts in flight; store has {stored_deliveries(db)}",
        )
        await relay.kill()
    finally:
        answer.set()  # to connections the kill closed

    left = by_event(stored_deliveries(db))
    assert set(left) == acked, relay.output()
    for delivery in left.values():
        assert delivery.state == "pending", f"{delivery}" + relay.output()
        assert delivery.attempts >= 1, f"{delivery}" + relay.output()
    assert len(leased()) == concurrency

    receiver.default = Reply(200)
    mark = len(receiver.received)
    relay.start()
    await relay.wait_ready()
    await wait_until(
        lambda: set(event_ids(receiver, mark)) >= acked,
        15,
        lambda: (
            f"missing after restart: {some(acked - set(event_ids(receiver, mark)))}"
            + relay.output()
        ),
    )
    await wait_until(
        lambda: all(d.state == "delivered" for d in stored_deliveries(db)),
        5,
        lambda: f"store after restart: {stored_deliveries(db)}" + relay.output(),
    )
    assert f"released {concurrency} leases left by a previous run" in relay.output()
    async with aiohttp.ClientSession() as session:  # and the dedup record survived the kill
        assert await post_event(session, relay, "evt-0") == 200, relay.output()
    await stop_gracefully(relay)


@pytest.mark.slow
async def test_events_acknowledged_while_being_killed_are_delivered_after_restart(
    relays: MakeRelay, tmp_path: Path
) -> None:
    """Posters run flat out when SIGKILL lands; every 202 they got must be delivered later.

    The receiver is not running until after the restart, so nothing can be delivered by the
    first process: every acknowledged event has to come out of the store.
    """
    posters, max_posts, kill_after = 8, 2000, 200
    receiver = Receiver()
    receiver_port = free_port()
    relay = relays(f"http://127.0.0.1:{receiver_port}")
    relay.start()
    await relay.wait_ready()

    acked: set[str] = set()
    unacked: dict[str, int | None] = {}

    # Generous: a post the kill cuts off fails at once; one slow on a loaded machine must not.
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        tasks = [
            asyncio.create_task(post_until_refused(session, relay, n, max_posts, acked, unacked))
            for n in range(posters)
        ]
        try:
            await wait_until(
                lambda: len(acked) >= kill_after or all(t.done() for t in tasks),
                15,
                lambda: f"{len(acked)} acknowledged, refused: {unacked}" + relay.output(),
            )
            still_posting = sum(not task.done() for task in tasks)
            acked_before_kill = len(acked)
            await relay.kill()
            _, unfinished = await asyncio.wait(tasks, timeout=10)
            assert not unfinished, "posters did not notice the kill" + relay.output()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    assert still_posting == posters, f"refused before the kill: {unacked}" + relay.output()
    assert acked_before_kill >= kill_after
    assert all(status is None for status in unacked.values()), f"{unacked}" + relay.output()
    assert len(unacked) == posters  # each poster had a request cut off by the kill

    stored = {d.event_id for d in stored_deliveries(tmp_path / "relay.db")}
    assert acked <= stored, f"acknowledged, not stored: {some(acked - stored)}" + relay.output()

    await receiver.start(receiver_port)
    try:
        relay.start()
        await relay.wait_ready()
        await wait_until(
            lambda: set(event_ids(receiver)) >= acked,
            30,
            lambda: (
                f"acknowledged, not delivered: {some(acked - set(event_ids(receiver)))}"
                + relay.output()
            ),
        )
        unknown = set(event_ids(receiver)) - acked - set(unacked)
        assert not unknown, f"delivered events nobody posted: {some(unknown)}"
        await stop_gracefully(relay)
    finally:
        await receiver.stop()


# -- 2. retry schedules live in the store -----------------------------------------------------


RETRY_AFTER_S = 5


@pytest.mark.slow
async def test_retry_after_schedule_survives_sigkill(relays: MakeRelay, tmp_path: Path) -> None:
    receiver = TimedReceiver()
    # Long enough that the kill below lands before the retry is due, on a loaded machine too.
    receiver.script = [Reply(503, "busy", {"Retry-After": f"{RETRY_AFTER_S}"})]
    await receiver.start()
    try:
        relay = relays(receiver.url)
        relay.start()
        await relay.wait_ready()
        async with aiohttp.ClientSession() as session:
            assert await post_event(session, relay, "later") == 202, relay.output()
        await receiver.wait_for(1)

        db = tmp_path / "relay.db"
        await wait_until(
            lambda: [d.last_status for d in stored_deliveries(db)] == [503],
            5,
            lambda: f"the 503 recorded; store has {stored_deliveries(db)}" + relay.output(),
        )
        (scheduled,) = stored_deliveries(db)
        assert scheduled.state == "pending"
        assert scheduled.next_attempt_at >= receiver.arrivals[0] + RETRY_AFTER_S, f"{scheduled}"
        await relay.kill()
        assert len(receiver.received) == 1, "retried before Retry-After" + relay.output()

        relay.start()
        await relay.wait_ready()
        await receiver.wait_for(2, timeout_s=RETRY_AFTER_S + 15)
        retry = {name.lower(): value for name, value in receiver.received[1].headers.items()}
        assert retry["relay-event-id"] == "later"
        assert retry["relay-attempt"] == "2", "the attempt count was not kept"
        assert receiver.arrivals[1] >= scheduled.next_attempt_at, (
            f"retried at {receiver.arrivals[1]:.3f}, scheduled for"
            f" {scheduled.next_attempt_at:.3f}" + relay.output()
        )
        await wait_until(
            lambda: [d.state for d in stored_deliveries(db)] == ["delivered"],
            5,
            lambda: f"store after restart: {stored_deliveries(db)}" + relay.output(),
        )
        await stop_gracefully(relay)
    finally:
        await receiver.stop()


# -- 3. graceful shutdown ---------------------------------------------------------------------


@pytest.mark.slow
async def test_sigterm_finishes_the_send_in_flight_and_leaves_the_rest_pending(
    receiver: Receiver, relays: MakeRelay, tmp_path: Path
) -> None:
    answer = asyncio.Event()
    receiver.script = [Reply(200, "slow ok", hold=answer)]
    relay = relays(receiver.url, concurrency=1)
    relay.start()
    await relay.wait_ready()
    async with aiohttp.ClientSession() as session:
        for event_id in ("first", "second", "third"):
            assert await post_event(session, relay, event_id) == 202, relay.output()
    await receiver.wait_for(1)
    assert event_ids(receiver) == ["first"]  # in flight: the receiver holds it

    signalled = time.monotonic()
    relay.send_signal(signal.SIGTERM)
    try:
        for _ in range(500):
            if not await accepts_connections(relay.port) or time.monotonic() - signalled > 5:
                break
            await asyncio.sleep(0.01)
        assert not await accepts_connections(relay.port), "still accepting" + relay.output()
        assert relay.returncode() is None, "exited with a send in flight" + relay.output()
    finally:
        answer.set()  # the send in flight ends now

    code = await relay.wait_exit()
    took = time.monotonic() - signalled
    assert code == 0, f"exit code {code}" + relay.output()
    # Released well within the grace: a stop that waits out the whole grace fails here.
    assert took < SHUTDOWN_GRACE_S, f"took {took:.1f}s to stop" + relay.output()
    output = relay.output()
    assert "Traceback" not in output, output
    assert "stopped" in output, output

    left = by_event(stored_deliveries(tmp_path / "relay.db"))
    assert (left["first"].state, left["first"].last_status) == ("delivered", 200), output
    for event_id in ("second", "third"):
        assert (left[event_id].state, left[event_id].attempts) == ("pending", 0), output
    assert event_ids(receiver) == ["first"]

    relay.start()
    await relay.wait_ready()
    await receiver.wait_for(3)
    assert sorted(event_ids(receiver)) == ["first", "second", "third"], relay.output()
    await stop_gracefully(relay)


async def test_sigint_stops_cleanly_with_exit_0(receiver: Receiver, relays: MakeRelay) -> None:
    relay = relays(receiver.url)
    relay.start()
    await relay.wait_ready()
    async with aiohttp.ClientSession() as session:
        assert await post_event(session, relay, "one") == 202, relay.output()
    await receiver.wait_for(1)

    relay.send_signal(signal.SIGINT)
    code = await relay.wait_exit()
    output = relay.output()
    assert code == 0, f"exit code {code}" + output
    assert "stopped" in output, output
    assert "Traceback" not in output, output
    assert "KeyboardInterrupt" not in output, output


# -- 4. one daemon per SQLite file ------------------------------------------------------------


async def test_second_daemon_on_the_same_store_refuses_to_start(
    receiver: Receiver, relays: MakeRelay, tmp_path: Path
) -> None:
    first = relays(receiver.url, name="first")
    first.start()
    await first.wait_ready()
    second = relays(receiver.url, name="second")
    second.start()

    code = await second.wait_exit()
    output = second.output()
    assert code == 1, f"exit code {code}" + output
    db = tmp_path / "relay.db"
    assert f"cannot start: store {db} is in use by another relay process" in output, output
    assert "Traceback" not in output, output
    assert not await accepts_connections(second.port), "the refused daemon bound its port"

    # The first daemon did not notice: it still accepts and delivers.
    async with aiohttp.ClientSession() as session:
        assert await post_event(session, first, "after") == 202, first.output()
    await receiver.wait_for(1)
    assert event_ids(receiver) == ["after"]
    await stop_gracefully(first)


async def test_refused_daemon_prints_only_the_reason(receiver: Receiver, relays: MakeRelay) -> None:
    first = relays(receiver.url, name="first")
    first.start()
    await first.wait_ready()
    second = relays(receiver.url, name="second")
    second.start()
    assert await second.wait_exit() == 1, second.output()
    output = second.output()
    assert "Unclosed" not in output, output
    await stop_gracefully(first)


async def test_second_daemon_reaching_the_store_through_a_symlink_refuses_to_start(
    receiver: Receiver, relays: MakeRelay, tmp_path: Path
) -> None:
    (tmp_path / "data").mkdir()
    first = relays(receiver.url, name="first", store="data/relay.db")
    first.start()
    await first.wait_ready()
    alias = tmp_path / "alias.db"
    alias.symlink_to(tmp_path / "data" / "relay.db")
    second = relays(receiver.url, name="second", store=str(alias))
    second.start()
    with contextlib.suppress(AssertionError):  # raised when it exits instead of serving
        await second.wait_ready()
    code = second.returncode()
    assert code == 1, f"second daemon: exit code {code} (None: serving)" + second.output()
    await stop_gracefully(first)


# -- 5. the store file lost or corrupt --------------------------------------------------------


def lost_copies(directory: Path) -> list[Path]:
    return list(directory.glob("relay.db.lost-*"))


@pytest.mark.slow
async def test_a_store_file_deleted_under_relay_stops_it_and_its_events_survive_in_the_copy(
    relays: MakeRelay, tmp_path: Path
) -> None:
    """Posters run flat out when the file is deleted. The receiver is down during the first
    run: every event acknowledged, before or after the deletion, has to come out of the copy
    relay makes of the deleted file, once the operator moves it into place."""
    posters, max_posts, delete_after = 4, 2000, 100
    receiver = Receiver()
    receiver_port = free_port()
    relay = relays(f"http://127.0.0.1:{receiver_port}")
    relay.start()
    await relay.wait_ready()
    acked: set[str] = set()
    refused: dict[str, int | None] = {}

    db = tmp_path / "relay.db"
    failure = f"store {db} was deleted while relay was running"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        tasks = [
            asyncio.create_task(post_until_refused(session, relay, n, max_posts, acked, refused))
            for n in range(posters)
        ]
        try:
            await wait_until(lambda: len(acked) >= delete_after, 15, relay.output)
            db.unlink()
            await wait_until(lambda: failure in relay.output(), 5, relay.output)
            _, unfinished = await asyncio.wait(tasks, timeout=15)
            assert not unfinished, "posters still acknowledged" + relay.output()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    assert len(refused) == posters
    # Each poster's last request was refused: with 503 if relay had read it before it began to
    # shut down (most runs), else by the closed connection (aiohttp drops what arrives after).
    # tests/test_store_faults.py sees the 503 deterministically, in-process.
    assert set(refused.values()) <= {503, None}, f"{refused}" + relay.output()
    code = await relay.wait_exit()
    output = relay.output()
    assert code == 1, f"exit code {code}" + output
    assert output.count(failure) == 1, output
    assert "stopped because the store failed" in output, output
    assert "Traceback" not in output, output
    (copy,) = lost_copies(tmp_path)
    assert f"copied the lost store to {copy}" in output, output
    assert "removed relay.db-wal, the lost store's own" in output, output  # not replayed later

    copy.rename(db)  # what the failure line tells the operator to do
    await receiver.start(receiver_port)
    try:
        relay.start()
        await relay.wait_ready()
        await wait_until(
            lambda: set(event_ids(receiver)) >= acked,
            30,
            lambda: f"not delivered: {some(acked - set(event_ids(receiver)))}" + relay.output(),
        )
        unknown = set(event_ids(receiver)) - acked - set(refused)
        assert not unknown, f"delivered events nobody posted: {some(unknown)}"
        await stop_gracefully(relay)
    finally:
        await receiver.stop()


async def test_a_store_corrupted_on_disk_is_refused_at_start_and_nothing_is_acknowledged(
    receiver: Receiver, relays: MakeRelay, tmp_path: Path
) -> None:
    db = tmp_path / "relay.db"
    write_store(db, 5_000)  # ~6 MB: the garbage lands on pages well past the first
    write_garbage_in_the_middle(db)
    relay = relays(receiver.url)
    relay.start()
    code = await relay.wait_exit()
    output = relay.output()
    assert code == 1, f"exit code {code}" + output
    assert f"cannot start: store {db} is corrupt (" in output, output
    assert f'`sqlite3 {db} ".recover" | sqlite3 {db}.recovered`' in output, output
    assert output.count("is corrupt") == 1, output
    assert "Traceback" not in output, output
    assert not await accepts_connections(relay.port)
