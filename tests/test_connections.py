"""Connections: a read deadline per request, an idle timeout, a cap that keeps relay answering,
aiohttp's own refusals as JSON, and a client leaving mid-body as one log line.

Timeouts here are tiny (300ms) and every wait has a deadline of seconds, so a busy machine
makes the tests slower, never wrong.
"""

from __future__ import annotations

import asyncio
import logging
import re
import resource
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.config import LimitsConfig
from relay.connections import Connections, Tally
from relay.server import RESERVED_FILES, RelayRunner, connection_cap, raise_open_file_limit
from tests.conftest import ConfigWriter, Relay, RelayTestServer, StartRelay
from tests.rawhttp import RawConnection, parse_head
from tests.receiver import wait_until

CONFIG = """\
store: "sqlite:///relay.db"
limits: {limits}
sources:
  open:
    path: /hooks/open
targets:
  out:
    kind: console
routes:
  - targets: [out]
"""

NOTHING_STORED = {"events": 0, "pending": 0, "delivered": 0, "dead": 0}
HEAD = b"POST /hooks/open HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"


async def start(write_config: ConfigWriter, start_relay: StartRelay, limits: str) -> Relay:
    return await start_relay(write_config(CONFIG.format(limits=limits)))


def faults(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings, errors and tracebacks logged while serving (not the start-up warnings)."""
    return [
        record.getMessage()
        for record in caplog.records
        if (record.levelno >= logging.WARNING or record.exc_info)
        and "are not authenticated" not in record.getMessage()
    ]


async def answered(relay: Relay, event_id: str) -> None:
    """A normal request, on a new connection of its own, gets its normal answer."""
    connection = await RawConnection.open(relay.client.port)
    body = b'{"id": "%s"}' % event_id.encode()
    await connection.send(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    response = await connection.response()
    connection.close()
    assert response.status == 202, response.body
    assert response.json()["id"] == event_id


def test_limits_defaults_fit_a_sidecar() -> None:
    limits = LimitsConfig()
    assert limits.max_body_bytes == 1_048_576
    assert limits.read_timeout == timedelta(seconds=15)
    assert limits.idle_timeout == timedelta(seconds=75)
    assert limits.max_connections == 1000


# -- the read deadline ------------------------------------------------------------------------


async def trickle(connection: RawConnection, data: bytes, every_s: float = 0.05) -> int:
    """Send one byte at a time until all is sent or relay closes; the number of bytes sent."""
    for sent, byte in enumerate(data):
        if connection.closed_by_relay():
            return sent
        try:
            await connection.send(bytes([byte]))
        except ConnectionError:
            return sent
        await asyncio.sleep(every_s)
    return len(data)


async def test_a_trickled_head_is_closed_at_the_read_timeout_while_others_are_answered(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    relay = await start(write_config, start_relay, "{read_timeout: 300ms, idle_timeout: 60s}")
    slow = await RawConnection.open(relay.client.port)
    head = HEAD + b"X-Padding: " + b"a" * 200 + b"\r\n\r\n"  # 15s at a byte every 50ms
    trickling = asyncio.create_task(trickle(slow, head))
    for number in range(3):
        await answered(relay, f"meanwhile-{number}")
    assert await slow.until_closed() == b"", "a late head gets no answer, only a close"
    assert await trickling < len(head), "relay waited for the whole trickled head"
    assert relay.connections.late_heads.count == 1


async def test_a_trickled_body_is_answered_408_and_nothing_is_stored(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    relay = await start(write_config, start_relay, "{read_timeout: 300ms, idle_timeout: 60s}")
    slow = await RawConnection.open(relay.client.port)
    body = b'{"id": "slow", "pad": "' + b"x" * 200 + b'"}'
    await slow.send(HEAD + b"Content-Length: %d\r\n\r\n" % len(body))
    trickling = asyncio.create_task(trickle(slow, body))
    response = parse_head(await slow.until_closed())
    assert await trickling < len(body)
    assert response.status == 408
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {
        "error": "request body not complete within 300ms (limits.read_timeout)"
    }
    assert await relay.counts() == NOTHING_STORED
    await answered(relay, "after")


async def test_a_kept_alive_connection_idle_past_the_read_timeout_still_serves(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    relay = await start(write_config, start_relay, "{read_timeout: 300ms, idle_timeout: 60s}")
    connection = await RawConnection.open(relay.client.port)
    for event_id in (b"k1", b"k2"):
        body = b'{"id": "%s"}' % event_id
        await connection.send(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        response = await connection.response()
        assert response.status == 202
        assert response.json()["id"] == event_id.decode()
        await asyncio.sleep(0.6)  # idle for twice the read timeout: idle, not late
        assert not connection.closed_by_relay()
    connection.close()


async def test_an_idle_connection_is_closed_at_the_idle_timeout(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    relay = await start(write_config, start_relay, "{read_timeout: 60s, idle_timeout: 300ms}")
    silent = await RawConnection.open(relay.client.port)
    kept_alive = await RawConnection.open(relay.client.port)
    body = b'{"id": "once"}'
    await kept_alive.send(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert (await kept_alive.response()).status == 202
    assert await silent.until_closed() == b""
    assert await kept_alive.until_closed() == b""


class Fake:
    """A connection that records what it was told; `busy`: relay is working on its request."""

    def __init__(self, name: str, told: list[str]) -> None:
        self.name = name
        self.told = told
        self.busy = False

    def make_room(self) -> bool:
        if self.busy:
            return False
        self.told.append(f"{self.name} closed")
        return True

    def read_deadline_passed(self) -> None:
        self.told.append(f"{self.name} late")


def test_room_is_made_by_the_longest_idle_then_the_longest_arriving_else_refused() -> None:
    told: list[str] = []
    connections = Connections(3, timedelta(seconds=15), lambda: 0.0)
    a, b, c, d, e, f, g = (Fake(name, told) for name in "abcdefg")
    for connection in (a, b, c):
        assert connections.admit(connection)
    connections.now_arriving(a)
    connections.now_arriving(b)
    b.busy = True  # b's request is in: it is never closed for room
    assert connections.admit(d)  # c, the only idle one
    connections.now_arriving(d)
    connections.now_arriving(a)  # a's body starts: a keeps its place in line
    assert connections.admit(e)  # a, arriving longest
    connections.now_arriving(e)
    e.busy = True
    assert connections.admit(f)  # b is busy: d
    connections.now_arriving(f)
    f.busy = True
    assert not connections.admit(g)  # b, e, f are all busy
    assert told == ["c closed", "a closed", "d closed"]
    assert connections.counts() == {"open": 3, "idle": 0, "arriving": 0}
    assert connections.closed_for_room.count == 3
    b.busy = False  # b answered: idle, the next newcomer may close it
    connections.now_idle(b)
    assert connections.admit(g)
    assert told[-1] == "b closed"


def test_read_deadlines_reach_the_connections_whose_request_began_long_enough_ago() -> None:
    told: list[str] = []
    now = 0.0
    connections = Connections(10, timedelta(seconds=15), lambda: now)
    a, b, c = (Fake(name, told) for name in "abc")
    for connection in (a, b, c):
        connections.admit(connection)
    connections.now_arriving(a)
    now = 5.0
    connections.now_arriving(b)
    now = 10.0
    connections.now_arriving(a)  # still the same request: it began at 0
    connections.check_deadlines()
    assert told == []
    now = 15.0
    connections.check_deadlines()
    assert told == ["a late"]
    connections.now_idle(b)  # answered in time
    now = 100.0
    connections.check_deadlines()
    assert told == ["a late"]
    assert connections.counts() == {"open": 3, "idle": 2, "arriving": 0}


def test_a_tally_warns_at_the_first_and_then_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = 0.0
    tally = Tally("closed slow connections", lambda: now)
    for now in (100.0, 101.0, 159.0, 160.0, 161.0):  # noqa: B007 - the clock reads it
        tally.add()
    assert caplog.messages == [
        "closed slow connections (1 since start)",
        "closed slow connections (4 since start)",
    ]


# -- the connection cap -----------------------------------------------------------------------


async def test_at_max_connections_idle_ones_make_room_before_slow_ones(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    relay = await start(write_config, start_relay, "{max_connections: 3, read_timeout: 30s}")
    idle_first = await RawConnection.open(relay.client.port)
    slow = await RawConnection.open(relay.client.port)
    await slow.send(HEAD)  # a head that never ends
    idle_second = await RawConnection.open(relay.client.port)
    await wait_until(
        lambda: relay.connections.counts() == {"open": 3, "idle": 2, "arriving": 1},
        describe=lambda: f"connections {relay.connections.counts()}",
    )

    newcomers = []
    for event_id in (b"n1", b"n2"):
        newcomer = await RawConnection.open(relay.client.port)
        body = b'{"id": "%s"}' % event_id
        await newcomer.send(HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert (await newcomer.response()).status == 202
        newcomers.append(newcomer)
    assert await idle_first.until_closed() == b""
    assert await idle_second.until_closed() == b""
    assert not slow.closed_by_relay()

    for newcomer in newcomers:  # kept alive, now slow too, but later than `slow`
        await newcomer.send(HEAD)
    await wait_until(lambda: relay.connections.counts()["arriving"] == 3)
    await RawConnection.open(relay.client.port)
    assert await slow.until_closed() == b""
    assert not any(newcomer.closed_by_relay() for newcomer in newcomers)
    assert relay.connections.closed_for_room.count == 3


async def test_a_body_still_arriving_makes_room_with_503_and_nothing_is_stored(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    relay = await start(write_config, start_relay, "{max_connections: 1, read_timeout: 30s}")
    slow = await RawConnection.open(relay.client.port)
    await slow.send(HEAD + b'Content-Length: 100\r\n\r\n{"id": "slow"')
    await wait_until(lambda: relay.connections.counts()["arriving"] == 1)
    await answered(relay, "newcomer")
    response = parse_head(await slow.until_closed())
    assert response.status == 503
    assert response.body == (
        b'{"error": "relay is at 1 open connections (limits.max_connections); retry later"}'
    )
    assert (await relay.counts())["events"] == 1


async def test_when_every_connection_is_busy_a_new_one_is_refused_with_503() -> None:
    release = asyncio.Event()
    working = 0

    async def slow_work(request: web.Request) -> web.Response:
        nonlocal working
        working += 1
        await release.wait()
        return web.json_response({"done": True})

    app = web.Application()
    app.router.add_get("/work", slow_work)
    client: TestClient[Any, Any] = TestClient(RelayTestServer(app, LimitsConfig(max_connections=2)))
    await client.start_server()
    try:
        busy = [asyncio.create_task(client.get("/work")) for _ in range(2)]
        await wait_until(lambda: working == 2)
        refused = await RawConnection.open(client.port)
        response = parse_head(await refused.until_closed())
        assert response.status == 503
        assert response.headers["retry-after"] == "1"
        assert response.body == (
            b'{"error": "relay is at 2 open connections (limits.max_connections), all busy; '
            b'retry later"}'
        )
        release.set()
        assert [(await task).status for task in busy] == [200, 200]
    finally:
        await client.close()


async def test_hundreds_of_idle_and_slow_connections_leave_relay_answering(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    relay = await start(
        write_config,
        start_relay,
        "{max_connections: 100, read_timeout: 300ms, idle_timeout: 60s}",
    )
    crowd = []
    for number in range(250):
        connection = await RawConnection.open(relay.client.port)
        if number % 2:
            await connection.send(HEAD)
        crowd.append(connection)
        if number % 50 == 0:
            await answered(relay, f"during-{number}")
    for number in range(5):
        await answered(relay, f"after-{number}")
    await wait_until(
        lambda: relay.connections.counts()["arriving"] == 0,
        describe=lambda: f"slow heads closed; connections {relay.connections.counts()}",
    )
    assert relay.connections.counts()["open"] <= 100
    for connection in crowd:
        connection.close()


# -- clients that leave, and aiohttp's own refusals -------------------------------------------


async def test_a_client_that_leaves_mid_body_is_one_info_line_and_nothing_is_stored(
    write_config: ConfigWriter, start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await start(write_config, start_relay, "{read_timeout: 30s}")
    caplog.set_level(logging.DEBUG)
    leaving = await RawConnection.open(relay.client.port)
    await leaving.send(HEAD + b'Content-Length: 100\r\n\r\n{"id": "gone"')
    await wait_until(lambda: relay.connections.counts()["arriving"] == 1)
    leaving.close()
    expected = (
        "source open: refused with 499: "
        "the client closed the connection before the body was complete"
    )
    await wait_until(
        lambda: expected in caplog.messages, describe=lambda: f"log line; got {caplog.messages}"
    )
    await answered(relay, "next")
    assert [r.getMessage() for r in caplog.records if "client" in r.getMessage()] == [expected]
    assert faults(caplog) == []
    assert (await relay.counts())["events"] == 1


async def test_a_client_that_leaves_mid_body_of_any_handler_is_one_info_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def read_all(request: web.Request) -> web.Response:
        return web.json_response({"read": len(await request.read())})

    app = web.Application()
    app.router.add_post("/read", read_all)
    server = RelayTestServer(app, LimitsConfig())
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        caplog.set_level(logging.INFO)
        leaving = await RawConnection.open(client.port)
        await leaving.send(b"POST /read HTTP/1.1\r\nHost: relay\r\nContent-Length: 100\r\n\r\n{")
        assert isinstance(server.runner, RelayRunner)
        connections = server.runner.connections
        await wait_until(lambda: connections.counts()["arriving"] == 1)
        leaving.close()
        expected = (
            "bad request from 127.0.0.1: 499 "
            "the client closed the connection before the body was complete"
        )
        await wait_until(
            lambda: expected in caplog.messages, describe=lambda: f"got {caplog.messages}"
        )
    finally:
        await client.close()
    assert faults(caplog) == []


MANY_HEADERS = b"".join(b"X-%d: a\r\n" % n for n in range(200))
REFUSALS = [
    ("invalid method", b"G@T / HTTP/1.1\r\n\r\n", "invalid method in the request line"),
    ("not HTTP", b"hello\r\n\r\n", "invalid method in the request line"),
    ("TLS on the plain port", b"\x16\x03\x01\x00\xa5\x01\x00", "HTTPS sent to a plain HTTP port"),
    (
        "request line too long",
        b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n",
        "request line or a header is too long",
    ),
    (
        "header too long",
        b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n",
        "request line or a header is too long",
    ),
    (
        "too many headers",
        b"GET / HTTP/1.1\r\n" + MANY_HEADERS + b"\r\n",
        "malformed request: Too many headers received",
    ),
    (
        "bad header name byte",
        b"GET / HTTP/1.1\r\nX\x01Y: a\r\n\r\n",
        "malformed request: Invalid header token",
    ),
    (
        "bad header value byte",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        "malformed request: Invalid header value char",
    ),
    ("bad HTTP version", b"GET / HTTP/9.9\r\n\r\n", "malformed request line"),
    (
        "length and chunked",
        HEAD + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        "malformed request: Transfer-Encoding can't be present with Content-Length",
    ),
    (
        "bad chunk size",
        HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        "malformed request: Invalid character in chunk size",
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "error"), [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS]
)
async def test_aiohttp_s_own_refusals_are_json(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    caplog: pytest.LogCaptureFixture,
    request_bytes: bytes,
    error: str,
) -> None:
    relay = await start(write_config, start_relay, "{read_timeout: 30s}")
    connection = await RawConnection.open(relay.client.port)
    await connection.send(request_bytes)
    response = parse_head(await connection.until_closed())
    assert response.status == 400
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.json() == {"error": error}
    assert faults(caplog) == []
    assert await relay.counts() == NOTHING_STORED


async def test_one_aiohttp_refusal_byte_for_byte(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    """Fails loudly when aiohttp changes what relay's RequestHandler subclass relies on."""
    relay = await start(write_config, start_relay, "{}")
    connection = await RawConnection.open(relay.client.port)
    await connection.send(b"G@T / HTTP/1.1\r\nHost: relay\r\n\r\n")
    received = await connection.until_closed()
    normalised = re.sub(rb"Date: [^\r]*\r\n", b"Date: -\r\n", received)
    normalised = re.sub(rb"Server: [^\r]*\r\n", b"Server: -\r\n", normalised)
    assert normalised == (
        b"HTTP/1.0 400 Bad Request\r\n"
        b"Content-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: 47\r\n"
        b"Date: -\r\n"
        b"Server: -\r\n"
        b"\r\n"
        b'{"error": "invalid method in the request line"}'
    )


async def test_a_handler_bug_is_a_json_500_with_its_traceback_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application()
    app.router.add_get("/broken", broken)
    client: TestClient[Any, Any] = TestClient(RelayTestServer(app, LimitsConfig()))
    await client.start_server()
    try:
        response = await client.get("/broken")
        assert response.status == 500
        assert await response.json() == {
            "error": "relay failed to handle the request; its log says why"
        }
    finally:
        await client.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "a bug"


async def test_an_undecodable_body_nobody_reads_logs_no_traceback(
    write_config: ConfigWriter, start_relay: StartRelay, caplog: pytest.LogCaptureFixture
) -> None:
    relay = await start(write_config, start_relay, "{}")
    connection = await RawConnection.open(relay.client.port)
    await connection.send(
        b"POST /healthz HTTP/1.1\r\nHost: relay\r\nContent-Encoding: gzip\r\n"
        b"Content-Length: 11\r\n\r\nhello world"
    )
    response = await connection.response()
    assert response.status == 405
    assert response.json() == {"error": "method POST is not allowed on /healthz; use GET"}
    assert await connection.until_closed() == b""
    assert faults(caplog) == []


# -- the open-file limit ----------------------------------------------------------------------


@pytest.fixture
def lowered_open_file_limit() -> Iterator[tuple[int, int]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 512:
        pytest.skip(f"hard open-file limit {hard} leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield 256, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(
    lowered_open_file_limit: tuple[int, int],
) -> None:
    lowered, hard = lowered_open_file_limit
    assert raise_open_file_limit() == (lowered, hard)
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)


def test_max_connections_fits_below_the_open_file_limit() -> None:
    assert connection_cap(1000, 1_048_576) == 1000
    assert connection_cap(1000, 1024) == 1024 - RESERVED_FILES
    assert connection_cap(1000, RESERVED_FILES) == 1
    assert connection_cap(1000, resource.RLIM_INFINITY) == 1000
