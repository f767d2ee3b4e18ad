"""Hostile data on the way out: headers that would split a request, answers that echo
credentials or hold control characters, and faults while recording a result."""

from __future__ import annotations

import asyncio
import json
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from relay.cli import main
from relay.errors import StoreError
from relay.events import Delivery
from relay.store.base import AttemptResult
from relay.store.sqlite import SqliteStore
from tests.conftest import ConfigWriter, StartRelay
from tests.process import RelayProcess, free_port, listeners
from tests.receiver import Receiver, Reply, wait_until

TOKEN = "tok-6f1e2d3c4b5a"
SIGNING_SECRET = "sign-9a8b7c6d5e"


class EchoReceiver(Receiver):
    """Answers 500 with everything it received: the headers, then the body."""

    async def _handle(self, request: web.Request) -> web.Response:
        await super()._handle(request)
        lines = [f"{name}: {value}" for name, value in request.headers.items()]
        body = await request.read()
        return web.Response(status=500, text="\n".join([*lines, "", body.decode()]))


@pytest.fixture
async def echo() -> Any:
    server = EchoReceiver()
    await server.start()
    yield server
    await server.stop()


ECHO_CONFIG = """\
store: "sqlite:///relay.db"
sources:
  app: {{path: /hooks/app}}
targets:
  echo:
    kind: http
    url: "{url}/in"
    headers: {{Authorization: "Bearer ${{ECHO_TOKEN}}", X-Partner-Auth: "literal-partner-key"}}
    sign: {{scheme: hmac-sha256, secret: {signing}}}
    retry: {{initial: 10ms, max_interval: 20ms, max_elapsed: 30s, max_attempts: 3}}
routes:
  - targets: [echo]
"""

CREDENTIALS = (TOKEN, SIGNING_SECRET, "literal-partner-key")


async def test_credentials_echoed_by_a_target_are_not_stored_or_printed(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    echo: EchoReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ECHO_TOKEN", TOKEN)
    path = write_config(ECHO_CONFIG.format(url=echo.url, signing=SIGNING_SECRET))
    relay = await start_relay(path)
    body = {"id": "e1", "type": "t", "note": f"also in the body: {SIGNING_SECRET}"}
    assert (await relay.post("/hooks/app", body)).status == 202
    (record,) = await relay.wait_for_state("dead")
    assert echo.received[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert record.last_error is not None
    assert "[redacted]" in record.last_error
    for credential in CREDENTIALS:
        assert credential not in record.last_error
    assert await asyncio.to_thread(main, ["deliveries", "-c", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "e1" in printed
    for credential in CREDENTIALS:
        assert credential not in printed


async def test_a_header_that_renders_a_line_break_fails_at_once_and_sends_nothing(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    config = f"""\
        store: "sqlite:///relay.db"
        sources:
          app: {{path: /hooks/app}}
        targets:
          out:
            kind: http
            url: "{receiver.url}/in"
            headers: {{X-Note: "{{{{ event.data.note }}}}"}}
        routes:
          - targets: [out]
        """
    relay = await start_relay(write_config(textwrap.dedent(config)))
    notes = {"cr": "a\rInjected: 1", "lf": "a\nInjected: 1", "nul": "a\x00b", "esc": "\x1b[2J"}
    for name, note in notes.items():
        event = {"id": name, "type": "t", "data": {"note": note}}
        assert (await relay.post("/hooks/app", event)).status == 202
    dead = await relay.wait_for_state("dead", count=len(notes))
    reasons = {record.event_id: (record.attempts, record.last_error) for record in dead}
    assert reasons == {
        "cr": (
            1,
            "targets.out: header X-Note: the value holds U+000D, which a header value cannot carry",
        ),
        "lf": (
            1,
            "targets.out: header X-Note: the value holds U+000A, which a header value cannot carry",
        ),
        "nul": (
            1,
            "targets.out: header X-Note: the value holds U+0000, which a header value cannot carry",
        ),
        "esc": (
            1,
            "targets.out: header X-Note: the value holds U+001B, which a header value cannot carry",
        ),
    }
    assert receiver.received == []


async def test_control_characters_in_an_answer_are_stored_escaped_and_listed_on_one_line(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = f"""\
        store: "sqlite:///relay.db"
        sources:
          app: {{path: /hooks/app}}
        targets:
          out: {{kind: http, url: "{receiver.url}/in"}}
        routes:
          - targets: [out]
        """
    path = write_config(textwrap.dedent(config))
    relay = await start_relay(path)
    receiver.default = Reply(status=400, body="bad\x1b[31m red\x07 \u202eevil\x00")
    assert (await relay.post("/hooks/app", {"id": "e1", "type": "t"})).status == 202
    (record,) = await relay.wait_for_state("dead")
    assert record.last_error == "HTTP 400: bad\\x1b[31m red\\x07 \\u202eevil\\x00"
    assert await asyncio.to_thread(main, ["deliveries", "-c", str(path)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.endswith("\tHTTP 400: bad\\x1b[31m red\\x07 \\u202eevil\\x00")


class FailingRecordStore(SqliteStore):
    """The real store, with its first `record` failing as a full disk would."""

    failures_left = 1

    async def record(self, results: Sequence[AttemptResult]) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise StoreError("store relay.db: database or disk is full")
        await super().record(results)


class FailingClaimStore(SqliteStore):
    """The real store, with its first claim failing with a bug's exception."""

    failures_left = 1

    async def claim(self, target: str, limit: int, lease_s: float) -> list[Delivery]:
        if self.failures_left:
            self.failures_left -= 1
            raise RuntimeError("a bug in claim")
        return await super().claim(target, limit, lease_s)


@pytest.mark.parametrize("store_class", [FailingRecordStore, FailingClaimStore])
async def test_a_fault_in_the_store_does_not_stop_a_target_for_good(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    store_class: type[SqliteStore],
) -> None:
    """concurrency 1: a lost slot would stop the target; the lease is dropped, not left."""
    monkeypatch.setattr("relay.store.sqlite.SqliteStore", store_class)
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: unhandled.append(context))
    config = f"""\
        store: "sqlite:///relay.db"
        sources:
          app: {{path: /hooks/app}}
        targets:
          out: {{kind: http, url: "{receiver.url}/in", concurrency: 1}}
        routes:
          - targets: [out]
        """
    relay = await start_relay(write_config(textwrap.dedent(config)))
    assert isinstance(relay.store, store_class)
    for i in range(3):
        assert (await relay.post("/hooks/app", {"id": f"e{i}", "type": "t"})).status == 202
    await relay.wait_for_state("delivered", count=3)
    assert {r.event_id for r in await relay.store.deliveries()} == {"e0", "e1", "e2"}
    assert unhandled == []
    loop.set_exception_handler(None)


async def test_the_daemon_log_holds_no_credential_and_one_line_per_message(
    tmp_path: Path, echo: EchoReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target that echoes everything in its 500 answers, three times, to a real `relay run`."""
    monkeypatch.setenv("ECHO_TOKEN", TOKEN)
    port = free_port()
    config = tmp_path / "relay.yaml"
    listen = listeners(port, free_port())
    config.write_text(listen + ECHO_CONFIG.format(url=echo.url, signing=SIGNING_SECRET))
    relay = RelayProcess(config, port, tmp_path / "relay.log")
    relay.start()
    try:
        await relay.wait_ready()
        body = json.dumps({"id": "e1", "type": "t", "note": "line\nForged: yes\x1b[2J"})
        await post(relay, body.encode())
        await echo.wait_for(3, timeout_s=20)
        await wait_until(lambda: "is dead" in relay.log.read_text(), 20, relay.output)
    finally:
        relay.stop_now()
    log = relay.log.read_text()
    for credential in CREDENTIALS:
        assert credential not in log, relay.output()
    assert log.count("[redacted]") >= 3, relay.output()
    assert "\x1b" not in log
    for line in log.splitlines():
        assert re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ |-----)", line), line


async def post(relay: RelayProcess, body: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
    head = f"POST /hooks/app HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(4096), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 202"), answer
