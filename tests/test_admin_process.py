"""The admin listener of a real `relay run`: both ports, and readiness while relay drains."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.process import RelayProcess, free_port, post_event, relay_config
from tests.receiver import Receiver, Reply

pytestmark = pytest.mark.slow


@pytest.fixture
def relay(tmp_path: Path, receiver: Receiver) -> Iterator[RelayProcess]:
    path = tmp_path / "relay.yaml"
    process = RelayProcess(path, free_port(), tmp_path / "relay.log", free_port())
    assert process.admin_port is not None
    path.write_text(relay_config(process.port, receiver.url, admin_port=process.admin_port))
    yield process
    process.stop_now()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as response:
        return response.status, json.loads(await response.read())


async def readiness_until(
    session: aiohttp.ClientSession, relay: RelayProcess, status: int, timeout_s: float = 10.0
) -> Any:
    """GET /readyz on the admin port until it answers `status` (the signal is handled by then);
    fail on the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        got, body = await get(session, f"{relay.admin_url}/readyz")
        if got == status:
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/readyz still {got} {body}" + relay.output())
        await asyncio.sleep(0.02)


async def test_relay_run_serves_ingest_and_admin_apart_and_is_not_ready_while_it_drains(
    relay: RelayProcess, receiver: Receiver
) -> None:
    hold = asyncio.Event()
    receiver.default = Reply(hold=hold)  # the delivery hangs until the test lets it answer
    relay.start()
    await relay.wait_ready()
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        assert await get(session, f"{relay.url}/metrics") == (
            404,
            {"error": "no source is configured at /metrics"},
        )
        assert (await get(session, f"{relay.url}/api/deliveries"))[0] == 404
        assert await get(session, f"{relay.admin_url}/readyz") == (200, {"status": "ready"})
        async with session.get(f"{relay.admin_url}/metrics") as response:
            assert response.status == 200
            assert "relay_inbound_requests_total" in await response.text()
        async with session.get(f"{relay.admin_url}/") as response:  # the console, installed
            assert response.status == 200
            assert "<h1>Targets</h1>" in await response.text()
        async with session.get(f"{relay.admin_url}/static/console.css") as response:
            assert response.status == 200

        assert await post_event(session, relay, "e1") == 202
        await receiver.wait_for(1, timeout_s=10)  # in flight, held
        status, listed = await get(session, f"{relay.admin_url}/api/deliveries?state=pending")
        assert status == 200
        assert [d["event_id"] for d in listed["deliveries"]] == ["e1"]

        relay.send_signal(signal.SIGTERM)
        readiness = await readiness_until(session, relay, 503)
        assert readiness == {"status": "not ready", "reasons": ["relay is shutting down"]}
        assert relay.returncode() is None  # still draining: the delivery is held
        hold.set()
    assert await relay.wait_exit() == 0, relay.output()
    output = relay.output()
    assert f"listening on 127.0.0.1:{relay.port} (admin on 127.0.0.1:{relay.admin_port})" in output
