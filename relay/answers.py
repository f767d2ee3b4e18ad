"""Ingest's JSON answers (202 accepted, 200 duplicate), written as prepared bytes.

`web.Response` builds a header multidict, looks up the reason, decides chunking, keep-alive and
the Connection header, and serialises every header for each answer (~15k instructions). On a
keep-alive HTTP/1.1 request the answer is always the same head but for the length and the
Date, so `JsonAnswer` writes a head prepared once per status plus those two. Any other request
(HTTP/1.0, `Connection: close`) is answered through aiohttp's own path, so the Connection
header and keep-alive stay aiohttp's decision.

Like relay/server.py this reaches into aiohttp's response (`_start`, `write_eof` and the
request's payload writer); the aiohttp range is pinned in pyproject.toml, and a test compares
these answers with `web.Response`'s byte for byte.
"""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

CONTENT_TYPE = "application/json"
_SERVER = SERVER_SOFTWARE.encode("latin-1")


def _head_start(status: int) -> bytes:
    """The head up to the Content-Length value, as aiohttp writes it for a JSON Response."""
    reason = HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: ".encode()
    )


_HEAD_STARTS = {status: _head_start(status) for status in (200, 202)}


class JsonAnswer(web.StreamResponse):
    """A JSON body with status 200 or 202, the same bytes as `web.Response(body=body,
    status=status, content_type="application/json")`, written in one piece."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status=status)
        self._json = body
        self._wire: bytes | None = None  # the whole answer, when written by the prepared path

    async def _start(self, request: web.BaseRequest) -> AbstractStreamWriter:
        head_start = _HEAD_STARTS.get(self.status)
        if head_start is None or request.version != HttpVersion11 or not request.keep_alive:
            self._headers[hdrs.CONTENT_TYPE] = CONTENT_TYPE
            self._headers[hdrs.CONTENT_LENGTH] = str(len(self._json))
            return await super()._start(request)
        self._req = request
        writer = self._payload_writer = request._payload_writer
        self._keep_alive = True
        await request._prepare_hook(self)
        date = rfc822_formatted_time().encode("latin-1")
        self._wire = b"%s%d\r\nDate: %s\r\nServer: %s\r\n\r\n%s" % (
            head_start,
            len(self._json),
            date,
            _SERVER,
            self._json,
        )
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        await super().write_eof(self._json if self._wire is None else self._wire)
