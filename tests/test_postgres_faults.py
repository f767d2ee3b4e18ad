"""relay on a PostgreSQL store that goes away: through a TCP proxy that is cut, answers that
are lost after the commit, and backends terminated (`pg_terminate_backend`) mid-stream.

Ingest answers 503 while no commit is possible, never 2xx, and 2xx again by itself once the
server is back; a delivery claimed before the loss stays leased and is delivered after.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.clock import FakeClock, wake
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.pg import Postgres, TcpProxy, host_port, postgres, with_query
from tests.receiver import Receiver, Reply, wait_until


@pytest.fixture
async def pg() -> AsyncIterator[Postgres]:
    async with postgres() as pg:
        yield pg


@pytest.fixture
async def proxy(pg: Postgres) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(*host_port(pg.base_url))
    await proxy.start()
    yield proxy
    await proxy.close()


async def start(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    store_url: str,
    target_url: str,
    **options: Any,
) -> Relay:
    config = f"""\
store: "{store_url}"
sources:
  app: {{path: /hooks/app}}
targets:
  out:
    kind: http
    url: "{target_url}"
routes:
  - targets: [out]
"""
    return await start_relay(write_config(config), **options)


async def via_proxy(pg: Postgres, proxy: TcpProxy) -> str:
    return with_query(pg.url_via("127.0.0.1", proxy.port), schema=await pg.new_schema())


async def post(relay: Relay, event_id: str) -> int:
    return (await relay.post("/hooks/app", {"id": event_id})).status


async def test_ingest_answers_503_while_the_server_is_unreachable_and_202_once_it_is_back(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    pg: Postgres,
    proxy: TcpProxy,
    receiver: Receiver,
) -> None:
    relay = await start(write_config, start_relay, await via_proxy(pg, proxy), receiver.url)
    assert await post(relay, "before") == 202
    await relay.wait_for_state("delivered")  # a claim cut off would wait for its lease
    await proxy.cut()
    statuses = [await post(relay, f"during-{i}") for i in range(3)]
    assert statuses == [503, 503, 503]
    await proxy.restore()
    assert await retry_until_stored(relay, "after") == 202
    await receiver.wait_for(2, timeout_s=10)
    assert sorted(r.body for r in receiver.received) == [b'{"id": "after"}', b'{"id": "before"}']
    counts = await relay.counts()
    assert counts["events"] == 2  # nothing refused was stored


async def test_an_answer_lost_after_the_commit_is_a_503_and_the_retry_a_duplicate(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    pg: Postgres,
    proxy: TcpProxy,
    receiver: Receiver,
) -> None:
    """The event's statement committed but its answer is lost with the connection: relay
    cannot know that and must not say 2xx; the sender's retry finds it stored (once)."""
    relay = await start(write_config, start_relay, await via_proxy(pg, proxy), receiver.url)
    assert await post(relay, "warm") == 202
    await relay.wait_for_state("delivered")
    proxy.drop_answers_to(b"lost-answer")
    assert await post(relay, "lost-answer") == 503
    assert proxy.dropped_answers == 1
    assert await retry_until_stored(relay, "lost-answer") == 200  # a duplicate: it was stored
    assert (await relay.counts())["events"] == 2
    await receiver.wait_for(2, timeout_s=10)
    assert len([r for r in receiver.received if r.body == b'{"id": "lost-answer"}']) == 1


async def test_backends_terminated_mid_stream_lose_no_acknowledged_event(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    pg: Postgres,
    receiver: Receiver,
) -> None:
    """Four senders post while relay's backends are terminated again and again: every event
    is answered 202 or 503 (never a 2xx for what was not stored), a refused one stores on a
    retry, and every acknowledged event is delivered, the claims whose answers were lost once
    their leases run out."""
    clock = FakeClock()
    store_url = with_query(pg.url, schema=await pg.new_schema())
    relay = await start(write_config, start_relay, store_url, receiver.url, clock=clock)
    acknowledged: set[str] = set()
    refused: list[str] = []

    async def sender(worker: int) -> None:
        for i in range(40):
            event_id = f"w{worker}-{i}"
            status = await post(relay, event_id)
            assert status in (202, 503), status
            (acknowledged.add if status == 202 else refused.append)(event_id)

    async def terminator() -> None:
        for _ in range(8):
            await pg.terminate_relay_backends()
            await asyncio.sleep(0.02)

    await asyncio.gather(*(sender(w) for w in range(4)), terminator())
    for event_id in refused:  # the senders retry what was refused
        status = await retry_until_stored(relay, event_id)
        assert status in (200, 202)  # 200: a commit whose answer was lost is a duplicate now
        acknowledged.add(event_id)
    assert len(acknowledged) == 160
    wanted = {b'{"id": "%s"}' % e.encode() for e in acknowledged}
    lease_s = relay.daemon.dispatcher.targets["out"].lease_s if relay.daemon.dispatcher else 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while not wanted <= {r.body for r in receiver.received}:
        assert loop.time() < deadline, f"{len(receiver.received)} of {len(wanted)} delivered"
        clock.advance(lease_s + 1)  # leases of claims whose answers were lost run out
        wake(relay, "out")
        await asyncio.sleep(0.1)


async def retry_until_stored(relay: Relay, event_id: str, timeout_s: float = 10.0) -> int:
    """Post `event_id` until it is not refused with 503, as a sender retries; the status."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (status := await post(relay, event_id)) == 503:
        assert loop.time() < deadline, f"{event_id} still refused"
        await asyncio.sleep(0.05)
    return status


async def test_a_delivery_claimed_before_the_loss_stays_leased_and_goes_after_the_lease(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    pg: Postgres,
    proxy: TcpProxy,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store is gone while the attempt is in flight: its result cannot be recorded (nor
    its lease dropped), so the delivery stays leased, and once the lease runs out it is sent
    again: at least once."""
    clock = FakeClock()
    release = asyncio.Event()
    receiver.script = [Reply(hold=release), Reply()]
    relay = await start(
        write_config, start_relay, await via_proxy(pg, proxy), receiver.url, clock=clock
    )
    assert await post(relay, "in-flight") == 202
    await receiver.wait_for(1)
    await proxy.cut()
    release.set()  # answered 200, but relay cannot record it
    await wait_until(
        lambda: any("cannot record the result" in r.getMessage() for r in caplog.records)
    )
    await proxy.restore()
    dispatcher = relay.daemon.dispatcher
    assert dispatcher is not None
    clock.advance(dispatcher.targets["out"].lease_s + 1)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while len(receiver.received) < 2:
        assert loop.time() < deadline, "the leased delivery was not sent again"
        wake(relay, "out")
        await asyncio.sleep(0.05)
    (record,) = await relay.wait_for_state("delivered", timeout_s=10)
    assert record.attempts == 2
