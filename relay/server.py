"""The HTTP server relay runs: aiohttp's, with a read deadline, an idle timeout, a cap on open
connections, and aiohttp's own refusals answered as JSON.

aiohttp closes idle keep-alive connections, but lets a request's head and body take as long as
the client likes, keeps every connection it accepts, and answers malformed requests in plain
text. `RelayRequestHandler` adds what is missing. This is the only module that reaches into
aiohttp's server (the aiohttp range is pinned in pyproject.toml, and tests check one answer
aiohttp generates byte for byte, so a change inside aiohttp fails loudly).

Each connection is in one phase at a time:

    idle ─first byte─▶ head ─head parsed─▶ body ─body complete─▶ busy ─answered─▶ idle
                                            └─answered before the body was in─▶ linger ─▶ idle

`limits.read_timeout` runs from a request's first byte until its body is complete: a late head
closes the connection, a late body is answered 408, a late linger closes the connection. At
`limits.max_connections` a new connection closes the longest-idle one, else the one whose
request has been arriving longest; only when every connection holds a request relay is working
on is the new one refused with 503.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import resource
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    ContentEncodingError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
)
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from relay.config import Limits
from relay.durations import format_duration

log = logging.getLogger("relay.server")

RESERVED_FILES = 128  # descriptors left for the store, outbound connections and logs
TALLY_WARNING_EVERY_S = 60.0  # connections closed for room or lateness: a warning a minute
CLIENT_CLOSED_REQUEST = 499  # nginx's status for it: never sent, but logged and counted
CLIENT_LEFT = "the client closed the connection before the body was complete"

AppHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
Task = asyncio.Task[None]
RequestFactory = Callable[
    [RawRequestMessage, StreamReader, web.RequestHandler, AbstractStreamWriter, Task],
    web.BaseRequest,
]


class BodyAbandoned(TimeoutError):
    """relay stopped waiting for a request body; the handler reading it answers `status`.

    Set on the body stream. A TimeoutError, so that aiohttp, draining a body nobody read,
    takes it as the end of that body rather than as a fault.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Phase(enum.Enum):
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    BUSY = "busy"
    LINGER = "linger"
    CLOSED = "closed"


ARRIVING = frozenset({Phase.HEAD, Phase.BODY, Phase.LINGER})


class Tally:
    """Counts one kind of closed connection; warns at the first and then at most once a minute.

    Under a flood of slow or idle connections a line per connection would flood the log.
    """

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self.what = what
        self.count = 0
        self._clock = clock
        self._warned_at = -math.inf

    def add(self) -> None:
        self.count += 1
        now = self._clock()
        if now - self._warned_at >= TALLY_WARNING_EVERY_S:
            self._warned_at = now
            log.warning("%s (%d since start)", self.what, self.count)


class Connections:
    """The open connections, in the order to close them when a new one needs room."""

    def __init__(
        self, max_connections: int, read_timeout: timedelta, clock: Callable[[], float]
    ) -> None:
        self.max_connections = max_connections
        self._open: set[RelayRequestHandler] = set()
        self._idle: dict[RelayRequestHandler, None] = {}  # insertion order: longest first
        self._arriving: dict[RelayRequestHandler, None] = {}
        self.closed_for_room = Tally(
            f"{self.at_capacity()}: closed the longest-idle or slowest to make room", clock
        )
        self.late_heads = Tally(
            "closed connections whose request head was not complete within "
            f"{format_duration(read_timeout)} (limits.read_timeout)",
            clock,
        )

    def counts(self) -> dict[str, int]:
        return {"open": len(self._open), "idle": len(self._idle), "arriving": len(self._arriving)}

    def admit(self, connection: RelayRequestHandler) -> bool:
        """Make room for a new connection if the cap is reached; False: refuse it."""
        if len(self._open) >= self.max_connections:
            victim = next(iter(self._idle or self._arriving), None)
            if victim is None:
                return False
            self.forget(victim)
            victim.make_room()
            self.closed_for_room.add()
        self._open.add(connection)
        self._idle[connection] = None
        return True

    def place(self, connection: RelayRequestHandler, phase: Phase) -> None:
        """File a connection under its phase; one still arriving keeps its place in line."""
        self._idle.pop(connection, None)
        if phase in ARRIVING:
            self._arriving.setdefault(connection, None)
            return
        self._arriving.pop(connection, None)
        if phase is Phase.IDLE:
            self._idle[connection] = None

    def forget(self, connection: RelayRequestHandler) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)
        self._arriving.pop(connection, None)

    def at_capacity(self) -> str:
        return f"relay is at {self.max_connections} open connections (limits.max_connections)"


class RelayRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, with relay's read deadline, cap and JSON refusals."""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        connections: Connections,
        read_timeout: timedelta,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._timers = loop
        self._connections = connections
        self._read_timeout = read_timeout
        self._phase = Phase.IDLE
        self._body: StreamReader | None = None
        self._deadline: asyncio.TimerHandle | None = None

    # -- phases ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self._connections.admit(self):
            return
        self._phase = Phase.CLOSED
        reason = f"{self._connections.at_capacity()}, all busy; retry later"
        log.info("connection from %s refused: %s", self._peer(), reason)
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(refusal(503, "Service Unavailable", reason))
        self.force_close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._enter(Phase.CLOSED)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and self._phase is Phase.IDLE:
            self._enter(Phase.HEAD)
            self._start_deadline()
        super().data_received(data)

    def request_started(self, body: StreamReader) -> None:
        """A request's head is parsed and `body` is its body (pipelined requests start here)."""
        if self._phase is Phase.CLOSED:
            return
        if self._phase is not Phase.HEAD:
            self._start_deadline()
        self._body = body
        self._enter(Phase.BODY)
        body.on_eof(self._body_complete)

    def _body_complete(self) -> None:
        self._cancel_deadline()
        self._enter(Phase.IDLE if self._phase is Phase.LINGER else Phase.BUSY)

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        if self._phase is Phase.BUSY:
            self._enter(Phase.IDLE)
        elif self._phase is Phase.BODY:
            self._enter(Phase.LINGER)
        return answered

    def _enter(self, phase: Phase) -> None:
        if self._phase is Phase.CLOSED:
            return
        self._phase = phase
        if phase is Phase.CLOSED:
            self._cancel_deadline()
            self._connections.forget(self)
        else:
            self._connections.place(self, phase)

    # -- the read deadline, and making room -------------------------------------------------

    def _start_deadline(self) -> None:
        self._cancel_deadline()
        delay_s = self._read_timeout.total_seconds()
        self._deadline = self._timers.call_later(delay_s, self._deadline_passed)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        within = f"within {format_duration(self._read_timeout)} (limits.read_timeout)"
        if self._phase is Phase.BODY and self._body is not None:
            self._body.set_exception(BodyAbandoned(408, f"request body not complete {within}"))
        elif self._phase is Phase.HEAD:
            peer = self._peer()
            log.debug("connection from %s closed: request head not complete %s", peer, within)
            self._connections.late_heads.add()
            self.force_close()
        elif self._phase is Phase.LINGER:
            self.force_close()

    def make_room(self) -> None:
        """Close this connection for a new one; a request still arriving is answered 503."""
        phase, self._phase = self._phase, Phase.CLOSED
        self._cancel_deadline()
        log.debug("connection from %s closed while %s, to make room", self._peer(), phase.value)
        if phase is Phase.BODY and self._body is not None:
            reason = f"{self._connections.at_capacity()}; retry later"
            self._body.set_exception(BodyAbandoned(503, reason))
        else:
            self.force_close()

    def _peer(self) -> str:
        peer = self.peername
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    # -- aiohttp's own refusals, as JSON ----------------------------------------------------

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        status, reason = describe_error(status, exc)
        if status >= 500:
            log.error("answered %d: %s", status, reason, exc_info=exc)
        else:
            level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.INFO
            log.log(level, "bad request from %s: %d %s", self._peer(), status, reason)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was already being sent; cannot send the error")
        response = web.json_response({"error": reason}, status=status)
        response.force_close()
        return response

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A client's fault noticed outside a handler is one line, not a traceback."""
        exc = kw.get("exc_info")
        if isinstance(exc, HttpProcessingError | web.RequestPayloadError):
            # Found draining a body after the answer: the handler has logged the request.
            log.debug("connection from %s: %s", self._peer(), describe_error(400, exc)[1])
        else:
            super().log_exception(*args, **kw)


def refusal(status: int, phrase: str, reason: str) -> bytes:
    """A whole answer for a connection no request was read from."""
    body = json.dumps({"error": reason}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


# aiohttp's parse errors whose own text quotes the client's bytes, in words of relay's.
PARSE_ERRORS: list[tuple[type[HttpProcessingError], str]] = [
    (LineTooLong, "request line or a header is too long"),
    (InvalidHeader, "invalid header"),
    (BadHttpMethod, "invalid method in the request line"),
    (BadStatusLine, "malformed request line"),
    (InvalidURLError, "invalid URL in the request line"),
]


def describe_error(status: int, exc: BaseException | None) -> tuple[int, str]:
    """The status and text for an error aiohttp found, without echoing the client's bytes."""
    if isinstance(exc, ConnectionResetError):  # the body's end, when the client leaves
        return CLIENT_CLOSED_REQUEST, CLIENT_LEFT
    if isinstance(exc, web.RequestPayloadError):
        return 400, _body_error(exc)
    if isinstance(exc, ContentEncodingError):  # found in the head: an encoding aiohttp lacks
        return 415, "Content-Encoding is not supported: send the body as is, gzip or deflate"
    if isinstance(exc, BadHttpMethod) and "HTTPS" in exc.message:
        return 400, "HTTPS sent to a plain HTTP port"
    if isinstance(exc, HttpProcessingError):
        known = (text for kind, text in PARSE_ERRORS if isinstance(exc, kind))
        return 400, next(known, None) or f"malformed request: {_reason(exc.message)}"
    if status == 504:
        return 504, "relay timed out handling the request"
    return 500, "relay failed to handle the request; its log says why"


def _body_error(exc: web.RequestPayloadError) -> str:
    cause = exc.__cause__
    if isinstance(cause, ContentEncodingError):
        return "body does not decode as its Content-Encoding says"
    if isinstance(cause, HttpProcessingError):
        return f"malformed body: {_reason(cause.message)}"
    return "malformed body"


def _reason(message: str) -> str:
    """llhttp's reason: the text before it quotes the offending bytes, printable ASCII only."""
    lines = message.split(":\n", 1)[0].strip().splitlines()
    text = "".join(c if " " <= c <= "~" else "?" for c in (lines[0] if lines else ""))
    return text[:120] or "bad request"


class RelayServer(web.Server):
    """aiohttp's Server, making RelayRequestHandlers and telling them when a request starts."""

    def __init__(
        self,
        handler: AppHandler,
        *,
        request_factory: RequestFactory,
        connections: Connections,
        read_timeout: timedelta,
        **handler_options: Any,
    ) -> None:
        super().__init__(handler, request_factory=self._start_request)
        self._make_request_of_app = request_factory
        self._open_connections = connections
        self._read_timeout = read_timeout
        self._handler_options = handler_options
        self._running_loop = asyncio.get_running_loop()

    def __call__(self) -> RelayRequestHandler:
        return RelayRequestHandler(
            self,
            loop=self._running_loop,
            connections=self._open_connections,
            read_timeout=self._read_timeout,
            **self._handler_options,
        )

    def _start_request(
        self,
        message: RawRequestMessage,
        payload: StreamReader,
        protocol: web.RequestHandler,
        writer: AbstractStreamWriter,
        task: asyncio.Task[None],
    ) -> web.BaseRequest:
        if isinstance(protocol, RelayRequestHandler):
            protocol.request_started(payload)
        return self._make_request_of_app(message, payload, protocol, writer, task)


class RelayRunner(web.AppRunner):
    """The AppRunner `relay run` and the tests serve with: the app, on a RelayServer."""

    def __init__(
        self,
        app: web.Application,
        limits: Limits,
        *,
        max_connections: int | None = None,
        shutdown_timeout_s: float = 60.0,
    ) -> None:
        super().__init__(app, handle_signals=False, shutdown_timeout=shutdown_timeout_s)
        self._limits = limits
        cap = max_connections if max_connections is not None else limits.max_connections
        clock = asyncio.get_running_loop().time
        self.connections = Connections(cap, limits.read_timeout, clock)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app up and freezes it
        return RelayServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            connections=self.connections,
            read_timeout=self._limits.read_timeout,
            keepalive_timeout=self._limits.idle_timeout.total_seconds(),
            access_log=None,
        )


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard one; (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, hard


def connection_cap(max_connections: int, open_files: int) -> int:
    """max_connections, lowered to fit the open-file limit with room for everything else."""
    if open_files == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, open_files - RESERVED_FILES))
