"""Reloading the config of a running relay (what SIGHUP does), in-process on real sockets.

Each test starts relay on one config file, rewrites the file and calls the daemon's reload,
as `relay run` does on SIGHUP (tests/test_reload_process.py sends the signal itself).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from relay.app import DAEMON, Daemon
from relay.cli import main
from relay.reload import ConfigChange
from relay.store.base import DeliveryRecord
from relay.targets.base import Target
from tests.clock import FakeClock, wake
from tests.conftest import ConfigWriter, Relay, StartRelay, hmac_hex
from tests.pg import Postgres, TcpProxy, host_port, postgres
from tests.rawhttp import RawConnection
from tests.receiver import Receiver, Reply, wait_until

RETRY = "{initial: 1s, multiplier: 1, max_interval: 1s, max_elapsed: 1h}"


@pytest.fixture
async def second() -> AsyncIterator[Receiver]:
    """Another receiver, for a second target whose answers are scripted apart."""
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


def daemon_of(relay: Relay) -> Daemon:
    app = relay.client.app
    assert app is not None
    daemon: Daemon = app[DAEMON]
    return daemon


def delivering_to(relay: Relay) -> Mapping[str, Target]:
    """The targets relay's workers claim for, by name."""
    dispatcher = daemon_of(relay).dispatcher
    assert dispatcher is not None
    return dispatcher.targets


async def reload(relay: Relay, path: Path) -> ConfigChange:
    """Reload from `path`, which must succeed; what changed."""
    result = await daemon_of(relay).reload(path)
    assert result.change is not None, result.problems
    return result.change


def http(url: str, extra: str = "") -> str:
    return f'{{kind: http, url: "{url}", retry: {RETRY}{extra}}}'


def two_targets(a: str, b: str | None) -> str:
    """Source app routed to target a, and to target b when there is one."""
    names = "[a, b]" if b is not None else "[a]"
    return f"""\
        store: "sqlite:///relay.db"
        sources:
          app: {{path: /hooks/app}}
        targets:
          a: {a}
          {f"b: {b}" if b is not None else ""}
        routes:
          - targets: {names}
        """


async def deliveries_of(
    relay: Relay, target: str, done: Callable[[DeliveryRecord], bool]
) -> list[DeliveryRecord]:
    """Wait until some delivery of `target` is `done`; those that are."""
    records = await relay.wait_for_deliveries(
        lambda records: any(r.target == target and done(r) for r in records),
        f"a delivery of {target} as expected",
    )
    return [r for r in records if r.target == target and done(r)]


def failed_once(record: DeliveryRecord) -> bool:
    """Its first attempt is recorded as failed and a retry waits: not only claimed (a claim
    counts the attempt before the request is even sent)."""
    return record.attempts == 1 and record.state == "pending" and record.last_status == 503


def metric(relay: Relay, name: str) -> float:
    text = daemon_of(relay).metrics.exposition().decode()
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def test_a_broken_config_keeps_the_old_routes_serving(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    path = write_config(two_targets(http(f"{receiver.url}/a"), None))
    relay = await start_relay(path, clock=clock)
    write_config(
        f"""\
        store: "sqlite:///relay.db"
        sources:
          app: {{path: /hooks/app}}
        targets:
          a: {{kind: http, url: "{receiver.url}/new", timeout: soon}}
        routes:
          - targets: [a, nowhere]
        """
    )
    clock.advance(60)
    with caplog.at_level(logging.INFO, logger="relay"):
        result = await daemon_of(relay).reload(path)
    problems = (
        'targets.a.timeout: invalid duration "soon" (use e.g. 500ms, 15s, 5m, 24h, 3d)',
        'routes[0].targets[1]: no target named "nowhere"; targets are: a',
    )
    assert not result.ok
    assert result.problems == problems
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert logged == [
        f"config not reloaded from {path}: 2 problem(s); the running config stays",
        *(f"config reload: {problem}" for problem in problems),
    ]

    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    (got,) = await receiver.wait_for(1)
    assert got.path == "/a"  # the running definition
    assert metric(relay, 'relay_config_reloads_total{result="failure"}') == 1
    assert metric(relay, 'relay_config_reloads_total{result="success"}') == 0
    assert metric(relay, "relay_config_last_reload_success_timestamp_seconds") == clock.now - 60


async def test_a_new_target_starts_receiving(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    path = write_config(two_targets(http(f"{receiver.url}/a"), None))
    relay = await start_relay(path, clock=clock)
    write_config(two_targets(http(f"{receiver.url}/a"), http(f"{receiver.url}/b")))
    clock.advance(60)
    with caplog.at_level(logging.INFO, logger="relay"):
        change = await reload(relay, path)
    assert change.targets.added == ("b",)
    assert f"config reloaded from {path}: targets: added b; 1 unchanged. routes changed" in [
        r.getMessage() for r in caplog.records
    ]

    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    await receiver.wait_for(2)
    assert sorted(r.path for r in receiver.received) == ["/a", "/b"]
    assert metric(relay, 'relay_config_reloads_total{result="success"}') == 1
    assert metric(relay, "relay_config_last_reload_success_timestamp_seconds") == clock.now


async def test_a_removed_targets_deliveries_wait_and_resume_when_it_returns(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    second: Receiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clock = FakeClock()
    both = two_targets(http(f"{receiver.url}/a"), http(f"{second.url}/b"))
    path = write_config(both)
    relay = await start_relay(path, clock=clock)
    second.default = Reply(503, "down")
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    await deliveries_of(relay, "b", failed_once)

    write_config(two_targets(http(f"{receiver.url}/a"), None))
    with caplog.at_level(logging.INFO, logger="relay"):
        removed = await daemon_of(relay).reload(path)
    assert removed.ok, removed.problems
    assert removed.waiting == {"b": 1}
    assert (
        "target b is not in the config: its 1 pending deliveries wait until it is again"
        " (relay deliveries lists them)"
    ) in [r.getMessage() for r in caplog.records]
    assert "b" not in delivering_to(relay)

    second.default = Reply(200)
    clock.advance(5)  # the retry is due, but there is no target b to send it
    wake(relay, "a", "b")
    assert (await relay.post("/hooks/app", {"id": "e2", "type": "t"})).status == 202
    await relay.wait_for_state("delivered", count=2)  # e1 and e2 to a
    (waiting,) = [r for r in await relay.store.deliveries() if r.target == "b"]
    assert (waiting.state, waiting.attempts) == ("pending", 1)
    assert len(second.received) == 1

    assert await asyncio.to_thread(main, ["deliveries", "-c", str(path)]) == 0
    printed = capsys.readouterr()
    (line,) = [line for line in printed.out.splitlines() if "\tb" in line]
    assert line.split("\t")[1:4] == ["pending", "b (not in the config)", "app/e1"]
    assert printed.err == (
        f"1 pending deliveries are for targets not in {path}: b (1); relay sends them once a"
        " target of that name is configured again\n"
    )

    write_config(both)
    returned = await daemon_of(relay).reload(path)
    assert returned.ok
    assert returned.waiting == {}
    await second.wait_for(2)
    assert second.received[1].headers["Relay-Event-Id"] == "e1"
    assert second.received[1].headers["Relay-Attempt"] == "2"
    await relay.wait_for_state("delivered", count=3)


async def test_deliveries_of_targets_gone_from_the_config_are_reported_at_start(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    second: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A restart on a config without a target is a reload too: its deliveries wait."""
    clock = FakeClock()
    path = write_config(two_targets(http(f"{receiver.url}/a"), http(f"{second.url}/b")))
    relay = await start_relay(path, clock=clock)
    second.default = Reply(503, "down")
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    await deliveries_of(relay, "b", failed_once)
    await relay.client.close()

    write_config(two_targets(http(f"{receiver.url}/a"), None))
    with caplog.at_level(logging.INFO, logger="relay"):
        await start_relay(path, clock=clock)
    assert (
        "target b is not in the config: its 1 pending deliveries wait until it is again"
        " (relay deliveries lists them)"
    ) in [r.getMessage() for r in caplog.records]


async def test_an_attempt_in_flight_to_a_removed_target_finishes_and_is_recorded(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver, second: Receiver
) -> None:
    path = write_config(two_targets(http(f"{receiver.url}/a"), http(f"{second.url}/b")))
    relay = await start_relay(path)
    answer = asyncio.Event()
    second.script = [Reply(200, hold=answer)]
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    await second.wait_for(1)

    write_config(two_targets(http(f"{receiver.url}/a"), None))
    await reload(relay, path)
    # relay goes on working meanwhile; the attempt is still waiting for its answer
    assert (await relay.post("/hooks/app", {"id": "e2", "type": "t"})).status == 202
    await receiver.wait_for(2)
    await relay.wait_for_state("delivered", count=2)
    answer.set()
    (record,) = await deliveries_of(relay, "b", lambda r: r.state == "delivered")
    assert (record.attempts, record.last_status) == (1, 200)


async def test_a_changed_template_is_used_for_already_stored_deliveries(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    """The url, headers, template and retry of the new definition, for a stored delivery."""
    clock = FakeClock()
    running = f"""\
        store: "sqlite:///relay.db"
        sources:
          app: {{path: /hooks/app}}
        targets:
          out:
            kind: http
            url: "{receiver.url}/v1"
            headers: {{X-Version: "1"}}
            template: out.j2
            retry: {RETRY}
        routes:
          - targets: [out]
        """
    path = write_config(running, {"out.j2": '{"v": 1, "id": {{ event.id | json }}}'})
    relay = await start_relay(path, clock=clock)
    receiver.default = Reply(503, "busy")
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    await deliveries_of(relay, "out", failed_once)
    assert receiver.received[0].body == b'{"v": 1, "id": "e1"}'

    changed = (
        running.replace("/v1", "/v2")
        .replace('X-Version: "1"', 'X-Version: "2"')
        .replace("max_elapsed: 1h}", "max_elapsed: 1h, max_attempts: 2}")
    )
    write_config(changed, {"out.j2": '{"v": 2, "id": {{ event.id | json }}}'})
    assert (await reload(relay, path)).targets.changed == ("out",)
    clock.advance(5)
    wake(relay, "out")
    await receiver.wait_for(2)
    again = receiver.received[1]
    assert (again.path, again.headers["X-Version"], again.body) == (
        "/v2",
        "2",
        b'{"v": 2, "id": "e1"}',
    )
    (dead,) = await relay.wait_for_state("dead")  # max_attempts: 2 is the new retry's
    assert dead.attempts == 2


async def test_a_listen_change_is_refused_and_the_old_config_keeps_running(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    running = two_targets(http(f"{receiver.url}/a"), None)
    path = write_config(running)
    relay = await start_relay(path)
    moved = two_targets(http(f"{receiver.url}/a"), http(f"{receiver.url}/b"))
    moved = moved.replace("/hooks/app", "/hooks/new")
    write_config(moved.replace("store:", 'listen: "127.0.0.1:1"\n        store:'))
    result = await daemon_of(relay).reload(path)
    assert result.problems == (
        'listen: changed from "127.0.0.1:8080" to "127.0.0.1:1": relay cannot move to another'
        " address while it runs; restart relay to apply it; the running config stays",
    )
    assert list(delivering_to(relay)) == ["a"]
    assert (await relay.post("/hooks/new", {"id": "e0", "type": "t"})).status == 404
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    (got,) = await receiver.wait_for(1)
    assert got.path == "/a"
    assert metric(relay, 'relay_config_reloads_total{result="failure"}') == 1


async def test_new_source_paths_are_served_and_removed_ones_answer_404(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    running = two_targets(http(f"{receiver.url}/a"), None)
    path = write_config(running)
    relay = await start_relay(path)
    write_config(running.replace("app: {path: /hooks/app}", "other: {path: /hooks/other}"))
    await reload(relay, path)

    gone = await relay.post("/hooks/app", {"id": "e1", "type": "t"})
    assert gone.status == 404
    assert await gone.json() == {"error": "no source is configured at /hooks/app"}
    served = await relay.post("/hooks/other", {"id": "e2", "type": "t"})
    assert served.status == 202
    (got,) = await receiver.wait_for(1)
    assert got.headers["Relay-Event-Id"] == "e2"
    assert (await relay.counts())["events"] == 1


async def test_a_request_in_flight_finishes_under_the_config_it_started_with(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver, second: Receiver
) -> None:
    """Its head came before the reload, its body after: the secret and routes it started with
    are the ones it is verified and routed by; the next request gets the new ones."""
    running = f"""\
        store: "sqlite:///relay.db"
        sources:
          app:
            path: /hooks/app
            verify: {{scheme: hmac-sha256, secret: first-secret, header: X-Signature}}
        targets:
          a: {http(f"{receiver.url}/a")}
          b: {http(f"{second.url}/b")}
        routes:
          - targets: [a]
        """
    path = write_config(running)
    relay = await start_relay(path)
    body = b'{"id": "e1", "type": "t"}'
    connection = await RawConnection.open(relay.client.port)
    await connection.send(
        b"POST /hooks/app HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nX-Signature: " + hmac_hex("first-secret", body).encode() + b"\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    # relay answers 100 Continue once the request is routed to its source's handler
    continued = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5.0)
    assert continued.startswith(b"HTTP/1.1 100 Continue")

    write_config(running.replace("first-secret", "second-secret").replace("[a]", "[b]"))
    await reload(relay, path)
    await connection.send(body)
    head = await asyncio.wait_for(connection.reader.readuntil(b"\r\n\r\n"), 5.0)
    assert head.startswith(b"HTTP/1.1 202"), head
    connection.writer.close()
    (got,) = await receiver.wait_for(1)
    assert got.path == "/a"

    late = b'{"id": "e2", "type": "t"}'
    refused = await relay.post("/hooks/app", late, secret="first-secret")
    assert refused.status == 401
    assert (await relay.post("/hooks/app", late, secret="second-secret")).status == 202
    (routed,) = await second.wait_for(1)
    assert routed.headers["Relay-Event-Id"] == "e2"


async def test_unchanged_targets_keep_their_runtime_objects(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    path = write_config(two_targets(http(f"{receiver.url}/a"), http(f"{receiver.url}/b")))
    relay = await start_relay(path)
    before = dict(delivering_to(relay))
    write_config(two_targets(http(f"{receiver.url}/a"), http(f"{receiver.url}/b2")))
    await reload(relay, path)
    assert delivering_to(relay)["a"] is before["a"]
    assert delivering_to(relay)["b"] is not before["b"]


async def test_secrets_of_the_new_config_are_redacted_from_stored_errors(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = write_config(two_targets(http(f"{receiver.url}/a"), None))
    relay = await start_relay(path)
    token = "tok-after-the-reload"
    monkeypatch.setenv("PARTNER_TOKEN", token)
    auth = ', headers: {Authorization: "Bearer ${PARTNER_TOKEN}"}'
    write_config(two_targets(http(f"{receiver.url}/a", auth), None))
    await reload(relay, path)
    receiver.default = Reply(400, f"bad token: Bearer {token}")
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    (dead,) = await relay.wait_for_state("dead")
    assert receiver.received[0].headers["Authorization"] == f"Bearer {token}"
    assert dead.last_error == "HTTP 400: bad token: [redacted]"


async def test_a_retention_change_applies_to_the_next_purge(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    clock = FakeClock()
    running = two_targets(http(f"{receiver.url}/a"), None)
    path = write_config(running)
    relay = await start_relay(path, clock=clock, purge_interval_s=0.01)
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    await relay.wait_for_state("delivered")
    clock.advance(2 * 86400)  # kept: the default retention keeps delivered events 7 days
    write_config(running.replace("routes:", "retention: {delivered: 1d}\n        routes:"))
    assert (await reload(relay, path)).retention_changed
    await wait_until(
        lambda: metric(relay, "relay_store_purged_events_total") == 1,
        5,
        lambda: "the delivered event purged under the new retention",
    )
    assert (await relay.counts())["events"] == 0


async def backend_pids(pg: Postgres, expected: Callable[[set[int]], bool], what: str) -> set[int]:
    """Poll relay's PostgreSQL connections until `expected(pids)`; fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        pids = {pid for pid, _ in await pg.relay_backends()}
        if expected(pids):
            return pids
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: relay's backends are {pids}")
        await asyncio.sleep(0.02)


def warehouse_target(url: str, table: str, timeout: str = "5s") -> dict[str, Any]:
    return {
        "kind": "warehouse",
        "url": url,
        "table": table,
        "columns": {"event_id": {"value": "event.id"}},
        "key": ["event_id"],
        "create_table": True,
        "batch": {"max_rows": 1},
        "timeout": timeout,
    }


def warehouse_config(warehouse: dict[str, Any], out_url: str) -> str:
    """Source app routed to the warehouse target wh and the http target out (JSON is YAML)."""
    return json.dumps(
        {
            "store": "sqlite:///relay.db",
            "sources": {"app": {"path": "/hooks/app"}},
            "targets": {"wh": warehouse, "out": {"kind": "http", "url": out_url}},
            "routes": [{"targets": ["wh", "out"]}],
        }
    )


async def post_and_deliver(relay: Relay, event_id: str, delivered: int) -> None:
    assert (await relay.post("/hooks/app", {"id": event_id, "type": "t"})).status == 202
    await relay.wait_for_state("delivered", count=delivered)


async def test_an_unchanged_warehouse_target_keeps_its_database_connection(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    """A reload that changes another target leaves the warehouse's connection open and in use;
    one that changes the warehouse target closes it and the new definition opens its own."""
    async with postgres() as pg:
        table = pg.new_table()
        path = write_config(warehouse_config(warehouse_target(pg.url, table), f"{receiver.url}/a"))
        relay = await start_relay(path)
        await post_and_deliver(relay, "e1", 2)
        first = await backend_pids(pg, lambda pids: len(pids) == 1, "one connection")

        write_config(warehouse_config(warehouse_target(pg.url, table), f"{receiver.url}/b"))
        assert (await reload(relay, path)).targets.unchanged == ("wh",)
        await post_and_deliver(relay, "e2", 4)
        assert await pg.count(table) == 2
        assert {pid for pid, _ in await pg.relay_backends()} == first

        write_config(warehouse_config(warehouse_target(pg.url, table, "6s"), f"{receiver.url}/b"))
        await reload(relay, path)
        await post_and_deliver(relay, "e3", 6)
        await backend_pids(
            pg, lambda pids: len(pids) == 1 and not pids & first, "the old connection closed"
        )


async def test_a_write_in_flight_finishes_with_the_definition_it_started_with(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    """The warehouse target changes while a batch is being written: the write completes with
    the old definition, and its delivery is recorded once, not tried again by the new one."""
    async with postgres() as pg:
        proxy = TcpProxy(*host_port(pg.base_url))
        await proxy.start()
        try:
            table = pg.new_table()
            url = pg.url_via("127.0.0.1", proxy.port)
            path = write_config(warehouse_config(warehouse_target(url, table), receiver.url))
            relay = await start_relay(path)
            await post_and_deliver(relay, "e1", 2)  # connected, table made
            proxy.stall()
            assert (await relay.post("/hooks/app", {"id": "e2", "type": "t"})).status == 202
            await deliveries_of(relay, "wh", lambda r: r.event_id == "e2" and r.attempts == 1)

            changed = warehouse_target(url, table, "6s")
            write_config(warehouse_config(changed, receiver.url))
            await reload(relay, path)
            await post_and_deliver(relay, "e3", 4)  # to out, while the write waits
            proxy.resume()
            records = await relay.wait_for_state("delivered", count=6, timeout_s=10)
        finally:
            await proxy.close()
        (written,) = [r for r in records if (r.target, r.event_id) == ("wh", "e2")]
        assert written.attempts == 1
        assert await pg.count(table) == 3
