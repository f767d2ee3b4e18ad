"""A raw TCP connection to relay, for the bytes an HTTP client library will not send.

Every read has a deadline; a connection reset counts as closed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

DEADLINE_S = 5.0


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int | None) -> RawConnection:
        if port is None:
            raise AssertionError("the server is not listening")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def closed_by_relay(self) -> bool:
        """True once relay's end of the connection is closed (after what it sent is read)."""
        return self.reader.at_eof()

    async def until_closed(self, timeout_s: float = DEADLINE_S) -> bytes:
        """Everything relay sends until it closes the connection; fail at the deadline."""
        received = b""
        try:
            async with asyncio.timeout(timeout_s):
                while chunk := await self.reader.read(65536):
                    received += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            raise AssertionError(
                f"relay kept the connection open {timeout_s}s; it sent {received!r}"
            ) from None
        return received

    async def response(self, timeout_s: float = DEADLINE_S) -> RawResponse:
        """One response with a Content-Length; fail at the deadline."""
        async with asyncio.timeout(timeout_s):
            head = await self.reader.readuntil(b"\r\n\r\n")
            response = parse_head(head)
            length = int(response.headers.get("content-length", "0"))
            body = await self.reader.readexactly(length)
        return RawResponse(response.status, response.headers, body)

    def close(self) -> None:
        self.writer.close()


def parse_head(data: bytes) -> RawResponse:
    """Status and headers of a response's head; the body, if any, after it."""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)
