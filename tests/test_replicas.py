"""Replicas on one PostgreSQL store: real `relay run` children, and relays in this process.

Two replicas started at once on an empty schema; events posted across both, one SIGKILLed
mid-way and restarted (every acknowledged event delivered; sent twice only what the killed
one had in flight); both replicas' connections terminated mid-stream; dedup across
replicas; one send rate for a target across replicas; a replica woken by another's NOTIFY
rather than by its poll.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay import delivery
from tests.conftest import ConfigWriter, StartRelay
from tests.pg import Postgres, postgres, with_query
from tests.process import (
    RelayProcess,
    TimedReceiver,
    event_ids,
    free_port,
    post_event,
    relay_config,
)
from tests.receiver import Receiver, wait_until

CONCURRENCY = 4
MakeReplica = Callable[..., RelayProcess]


@pytest.fixture
async def pg() -> AsyncIterator[Postgres]:
    async with postgres() as pg:
        yield pg


@pytest.fixture
async def store_url(pg: Postgres) -> str:
    """A schema of the test's own, not created: the replicas make it."""
    name = await pg.new_schema()
    await pg.execute(f'DROP SCHEMA "{name}"')  # dropped again at the end, if made
    return with_query(pg.url, schema=name)


@pytest.fixture
def replicas(tmp_path: Path, store_url: str) -> Iterator[MakeReplica]:
    made: list[RelayProcess] = []

    def make(target_url: str, name: str, **options: Any) -> RelayProcess:
        port = free_port()
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            relay_config(port, target_url, concurrency=CONCURRENCY, store_url=store_url, **options)
        )
        process = RelayProcess(config, port, tmp_path / f"{name}.log")
        made.append(process)
        return process

    yield make
    for process in made:
        process.stop_now()


async def start_together(*replicas: RelayProcess) -> None:
    for replica in replicas:
        replica.start()
    await asyncio.gather(*(replica.wait_ready() for replica in replicas))


def outputs(*replicas: RelayProcess) -> str:
    return "".join(replica.output() for replica in replicas)


@pytest.mark.slow
async def test_a_replica_killed_mid_way_loses_no_acknowledged_event(
    replicas: MakeReplica, receiver: Receiver
) -> None:
    """Posts alternate between two replicas started at once on an empty schema; one is
    SIGKILLed while both deliver, posting goes on to the other, the killed one restarts.
    Every acknowledged event is delivered; only what the killed one had claimed and not
    recorded (at most its concurrency) may arrive twice, once it restarts and releases them."""
    first, second = replicas(receiver.url, "first"), replicas(receiver.url, "second")
    await start_together(first, second)
    acked: set[str] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post_to(replica: RelayProcess, prefix: str, count: int) -> None:
            for i in range(count):
                event_id = f"{prefix}-{i}"
                if await post_event(session, replica, event_id) == 202:
                    acked.add(event_id)

        await asyncio.gather(post_to(first, "a", 150), post_to(second, "b", 150))
        killing = asyncio.gather(post_to(first, "c", 150), post_to(second, "d", 150))
        await wait_until(lambda: len(acked) >= 400, 20, lambda: f"{len(acked)} acknowledged")
        await first.kill()
        await killing
        assert len(acked) >= 400
        first.start()  # same host and port: it releases the leases its killed run held
        await first.wait_ready()
        await asyncio.gather(post_to(first, "e", 50), post_to(second, "f", 50))
    await wait_until(
        lambda: set(event_ids(receiver)) >= acked,
        90,
        lambda: f"{len(acked - set(event_ids(receiver)))} not delivered" + outputs(first, second),
    )
    sent = Counter(event_ids(receiver))
    twice = {event_id for event_id, count in sent.items() if count > 1}
    assert len(twice) <= CONCURRENCY, f"sent twice: {sorted(twice)}"
    assert set(sent) - acked <= {f"c-{i}" for i in range(150)}  # cut off by the kill


@pytest.mark.slow
async def test_connections_terminated_mid_stream_lose_no_acknowledged_event(
    replicas: MakeReplica, receiver: Receiver, pg: Postgres
) -> None:
    """Both replicas' backends are terminated again and again while events are posted across
    them; a sender posts each event until it is acknowledged (a 503 is retried, a 200 says a
    lost answer's commit went through). Every event is delivered, each claimed one whose
    answer or result was lost once its lease runs out."""
    first, second = replicas(receiver.url, "first"), replicas(receiver.url, "second")
    await start_together(first, second)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def sender(replica: RelayProcess, prefix: str) -> None:
            for i in range(60):
                for _ in range(200):  # bounded: a 503 is retried a while, then it fails
                    status = await post_event(session, replica, f"{prefix}-{i}")
                    if status in (200, 202):
                        break
                    assert status == 503, status
                    await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"{prefix}-{i} never acknowledged")

        async def terminator() -> int:
            ended = 0
            for _ in range(6):
                ended += await pg.terminate_relay_backends()
                await asyncio.sleep(0.1)
            return ended

        *_, ended = await asyncio.gather(sender(first, "a"), sender(second, "b"), terminator())
    assert ended > 0
    posted = {f"{prefix}-{i}" for prefix in "ab" for i in range(60)}
    await wait_until(
        lambda: set(event_ids(receiver)) >= posted,
        90,
        lambda: f"{len(posted - set(event_ids(receiver)))} not delivered" + outputs(first, second),
    )
    assert set(event_ids(receiver)) == posted


async def test_an_event_posted_to_both_replicas_is_delivered_once(
    replicas: MakeReplica, receiver: Receiver
) -> None:
    first, second = replicas(receiver.url, "first"), replicas(receiver.url, "second")
    await start_together(first, second)
    statuses: list[int | None] = []
    async with aiohttp.ClientSession() as session:
        for i in range(30):
            statuses += await asyncio.gather(
                post_event(session, first, f"e{i}"), post_event(session, second, f"e{i}")
            )
    assert sorted(statuses, key=str) == sorted([200] * 30 + [202] * 30, key=str)
    await receiver.wait_for(30)
    await asyncio.sleep(0)  # a duplicate send would arrive with the others: none must
    assert sorted(Counter(event_ids(receiver)).values()) == [1] * 30


@pytest.mark.slow
async def test_a_rate_limit_holds_for_the_target_across_replicas(
    replicas: MakeReplica,
) -> None:
    """5/s on two replicas: counted at the receiver, no second holds more than a few over 5
    (each replica alone would send 5/s, together 10/s)."""
    receiver = TimedReceiver()
    await receiver.start()
    try:
        first = replicas(receiver.url, "first", max_per_second=5)
        second = replicas(receiver.url, "second", max_per_second=5)
        await start_together(first, second)
        async with aiohttp.ClientSession() as session:
            for i in range(20):
                await post_event(session, first if i % 2 else second, f"e{i}")
        await receiver.wait_for(20, timeout_s=30)
    finally:
        await receiver.stop()
    arrivals = sorted(receiver.arrivals)
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 7, f"{busiest} sends within one second: {arrivals}"
    assert arrivals[-1] - arrivals[0] >= 19 * 0.2 * 0.8  # 20 sends at 5/s take ~3.8 s


async def test_a_replica_is_woken_by_anothers_event_not_by_its_poll(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replica that stores the event claims nothing (it is stopping); the other one,
    whose poll would not come for a minute, delivers it on the NOTIFY."""
    monkeypatch.setattr(delivery, "POLL_INTERVAL_S", 60.0)
    config = f"""\
store: "{store_url}"
sources:
  app: {{path: /hooks/app}}
targets:
  out: {{kind: http, url: "{receiver.url}/in"}}
routes:
  - targets: [out]
"""
    (tmp_path / "other").mkdir()
    other_config = tmp_path / "other" / "relay.yaml"
    other_config.write_text(config, encoding="utf-8")
    delivering = await start_relay(other_config)
    # Its worker has looked for work and is waiting out its poll once it has delivered this.
    assert (await delivering.post("/hooks/app", {"id": "warm"})).status == 202
    await delivering.wait_for_state("delivered")
    storing = await start_relay(write_config(config))
    assert storing.daemon.dispatcher is not None
    storing.daemon.dispatcher.begin_shutdown()
    assert (await storing.post("/hooks/app", {"id": "e1"})).status == 202
    await receiver.wait_for(2, timeout_s=10)
    await delivering.wait_for_state("delivered", count=2)
    assert [r.body for r in receiver.received] == [b'{"id": "warm"}', b'{"id": "e1"}']
