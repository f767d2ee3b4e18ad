"""SIGHUP to the real daemon (`python -m relay run`) while events stream in.

The contract under test: a reload loses and duplicates nothing. Every event acknowledged
before, during and after a reload (a good one, then a broken one) reaches each target that
existed all along exactly once; the events posted after the reload also reach the target it
added, and go out with the changed target's new definition.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.process import RelayProcess, free_port, listeners
from tests.receiver import Receiver, wait_until

POSTERS = 4
MAX_POSTS = 2000  # per poster: a bound; the test stops them long before
PHASE_ACKS = 100  # events acknowledged between one step and the next
RETRY = "{initial: 50ms, max_interval: 200ms, max_elapsed: 1m}"


def config(relay: RelayProcess, url: str, *, version: int, added: str | None = None) -> str:
    """Source `in` routed to `kept`, `edited` (X-Version: version) and `added` if given."""
    assert relay.admin_port is not None
    return (
        listeners(relay.port, relay.admin_port)
        + f"""\
store: "sqlite:///relay.db"
sources:
  in: {{path: /hooks/in}}
targets:
  kept: {{kind: http, url: "{url}/kept", retry: {RETRY}}}
  edited: {{kind: http, url: "{url}/edited", headers: {{X-Version: "{version}"}}, retry: {RETRY}}}
  {added or ""}
routes:
  - targets: [kept, edited{", added" if added else ""}]
"""
    )


class Stream:
    """Posters sending events p<n>-<i> one after another until told to stop."""

    def __init__(self, relay: RelayProcess) -> None:
        self.relay = relay
        self.started: list[str] = []  # in the order their POSTs began
        self.acked: set[str] = set()
        self.refused: dict[str, int | None] = {}
        self.stopping = False

    async def post(self, session: aiohttp.ClientSession, poster: int) -> None:
        for i in range(MAX_POSTS):
            if self.stopping:
                return
            event_id = f"p{poster}-{i}"
            body = json.dumps({"id": event_id, "type": "test"}).encode()
            self.started.append(event_id)
            try:
                async with session.post(f"{self.relay.url}/hooks/in", data=body) as response:
                    await response.read()
                    status: int | None = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = None
            if status != 202:
                self.refused[event_id] = status
                return
            self.acked.add(event_id)

    async def until_acked(self, count: int) -> None:
        await wait_until(
            lambda: len(self.acked) >= count or bool(self.refused),
            30,
            lambda: f"{count} acknowledged; {len(self.acked)} so far" + self.relay.output(),
        )
        assert not self.refused, f"refused: {self.refused}" + self.relay.output()


def ids_by_path(receiver: Receiver) -> dict[str, collections.Counter[str]]:
    got: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for received in receiver.received:
        got[received.path][received.headers["Relay-Event-Id"]] += 1
    return got


async def reload_with(relay: RelayProcess, text: str, logged: str) -> None:
    """Write the config, send SIGHUP, and wait for relay to log `logged` once more."""
    before = relay.output().count(logged)
    relay.config.write_text(text)
    relay.send_signal(signal.SIGHUP)
    await wait_until(
        lambda: relay.output().count(logged) > before,
        20,
        lambda: f"relay to log {logged!r}" + relay.output(),
    )


@pytest.fixture
def relay(tmp_path: Path, receiver: Receiver) -> Iterator[RelayProcess]:
    path = tmp_path / "relay.yaml"
    process = RelayProcess(path, free_port(), tmp_path / "relay.log", free_port())
    path.write_text(config(process, receiver.url, version=1))
    yield process
    process.stop_now()


@pytest.mark.slow
async def test_reload_under_load_loses_and_duplicates_nothing(
    relay: RelayProcess, receiver: Receiver
) -> None:
    url = receiver.url
    added = f'added: {{kind: http, url: "{url}/added", retry: {RETRY}}}'
    broken = f'added: {{kind: http, url: "{url}/added", timeout: soon}}'
    relay.start()
    await relay.wait_ready()
    stream = Stream(relay)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        posters = [asyncio.create_task(stream.post(session, n)) for n in range(POSTERS)]
        try:
            await stream.until_acked(PHASE_ACKS)
            await wait_until(  # so that some went out with the first definition
                lambda: "/edited" in ids_by_path(receiver),
                20,
                lambda: "a delivery to edited before the reload" + relay.output(),
            )
            good = config(relay, url, version=2, added=added)
            await reload_with(relay, good, "config reloaded from")
            posted_before_reload = set(stream.started)
            await stream.until_acked(len(stream.acked) + PHASE_ACKS)
            bad = config(relay, url, version=3, added=broken)
            await reload_with(relay, bad, "config not reloaded from")
            await stream.until_acked(len(stream.acked) + PHASE_ACKS)
        finally:
            stream.stopping = True
            await asyncio.gather(*posters)
        async with session.get(f"{relay.admin_url}/metrics") as response:
            metrics = await response.text()
    assert not stream.refused, f"refused: {stream.refused}" + relay.output()

    acked, after_reload = stream.acked, stream.acked - posted_before_reload
    expected = {"/kept": acked, "/edited": acked, "/added": after_reload}
    await wait_until(
        lambda: all(set(ids_by_path(receiver)[p]) >= ids for p, ids in expected.items()),
        30,
        lambda: "every acknowledged event delivered" + relay.output(),
    )
    got = ids_by_path(receiver)
    for path in expected:
        twice = {event_id for event_id, n in got[path].items() if n > 1}
        assert not twice, f"{path}: delivered more than once: {sorted(twice)[:20]}"
        unknown = set(got[path]) - acked
        assert not unknown, f"{path}: delivered, never acknowledged: {sorted(unknown)[:20]}"
    versions = {
        r.headers["Relay-Event-Id"]: r.headers["X-Version"]
        for r in receiver.received
        if r.path == "/edited"
    }
    assert {versions[event_id] for event_id in after_reload} == {"2"}
    assert "1" in {versions[event_id] for event_id in acked - after_reload}

    output = relay.output()
    assert (
        'config reload: targets.added.timeout: invalid duration "soon" (use e.g. 500ms, 15s, 5m,'
        " 24h, 3d)" in output
    )
    assert 'relay_config_reloads_total{result="success"} 1.0' in metrics
    assert 'relay_config_reloads_total{result="failure"} 1.0' in metrics
    relay.send_signal(signal.SIGTERM)
    assert await relay.wait_exit() == 0, relay.output()
