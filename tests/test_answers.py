"""Ingest's prepared answers are aiohttp's own answers, byte for byte, on every kind of request.

They fail loudly when aiohttp changes what relay/answers.py relies on (the head it writes, the
response's `_start` and `write_eof`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from relay.answers import JsonAnswer
from tests.rawhttp import RawConnection

BODY = b'{"id": "e-1", "deliveries": 2}'
DATE = re.compile(rb"\r\nDate: [A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT\r\n")

REQUESTS = {
    "HTTP/1.1 keep-alive": b"POST /{kind}/{status} HTTP/1.1\r\nHost: relay\r\nContent-Length: 2\r\n"
    b"\r\n{}",
    "HTTP/1.1 close": b"POST /{kind}/{status} HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n"
    b"Content-Length: 2\r\n\r\n{}",
    "HTTP/1.0": b"POST /{kind}/{status} HTTP/1.0\r\nHost: relay\r\nContent-Length: 2\r\n\r\n{}",
    "HTTP/1.0 keep-alive": b"POST /{kind}/{status} HTTP/1.0\r\nHost: relay\r\n"
    b"Connection: keep-alive\r\nContent-Length: 2\r\n\r\n{}",
}


async def prepared(request: web.Request) -> web.StreamResponse:
    await request.read()
    return JsonAnswer(int(request.match_info["status"]), BODY)


async def plain(request: web.Request) -> web.StreamResponse:
    await request.read()
    status = int(request.match_info["status"])
    return web.Response(body=BODY, status=status, content_type="application/json")


@pytest.fixture
async def port() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_post("/prepared/{status}", prepared)
    app.router.add_post("/plain/{status}", plain)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    yield server.sockets[0].getsockname()[1]
    await runner.cleanup()


async def kept_open(port: int, request: bytes) -> bool:
    """Whether the server answers a second request on the connection after `request`."""
    connection = await RawConnection.open(port)
    await connection.send(request)
    await connection.response()
    try:
        await connection.send(b"GET /nothing HTTP/1.1\r\nHost: relay\r\n\r\n")
        await connection.response(timeout_s=2.0)
    except (asyncio.IncompleteReadError, ConnectionResetError):
        return False
    finally:
        connection.close()
    return True


async def raw_answer(port: int, request: bytes) -> bytes:
    connection = await RawConnection.open(port)
    await connection.send(request)
    head = await connection.reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
    body = await connection.reader.readexactly(length)
    connection.close()
    return head + body


@pytest.mark.parametrize("status", [200, 202])
@pytest.mark.parametrize("kind", list(REQUESTS))
async def test_a_prepared_answer_is_aiohttp_s_answer_byte_for_byte(
    port: int, kind: str, status: int
) -> None:
    request = REQUESTS[kind].replace(b"{status}", b"%d" % status)
    for _ in range(3):  # the two answers may straddle a second, and so differ in Date
        ours = await raw_answer(port, request.replace(b"{kind}", b"prepared"))
        theirs = await raw_answer(port, request.replace(b"{kind}", b"plain"))
        if ours == theirs:
            break
    assert ours == theirs
    assert DATE.search(ours)
    assert ours.endswith(b"\r\n\r\n" + BODY)


@pytest.mark.parametrize("kind", list(REQUESTS))
async def test_a_prepared_answer_keeps_or_closes_the_connection_as_aiohttp_does(
    port: int, kind: str
) -> None:
    request = REQUESTS[kind].replace(b"{status}", b"202")
    ours = await kept_open(port, request.replace(b"{kind}", b"prepared"))
    theirs = await kept_open(port, request.replace(b"{kind}", b"plain"))
    assert ours == theirs == kind.endswith("keep-alive")


async def test_the_keep_alive_answer_is_exactly_these_bytes(port: int) -> None:
    request = REQUESTS["HTTP/1.1 keep-alive"].replace(b"{status}", b"202")
    ours = await raw_answer(port, request.replace(b"{kind}", b"prepared"))
    assert re.sub(rb"Date: [^\r]*", b"Date: -", ours) == (
        b"HTTP/1.1 202 Accepted\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: 30\r\n"
        b"Date: -\r\n"
        b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n"
        b"\r\n" + BODY
    )
