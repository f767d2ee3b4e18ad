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
import logging
import resource
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from relay.config import Limits
from relay.connections import Connections, Phase
from relay.durations import format_duration
from relay.refusals import BodyAbandoned, describe_error, refusal

log = logging.getLogger("relay.server")

RESERVED_FILES = 128  # descriptors left for the store, outbound connections and logs

AppHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
Task = asyncio.Task[None]
RequestFactory = Callable[
    [RawRequestMessage, StreamReader, web.RequestHandler, AbstractStreamWriter, Task],
    web.BaseRequest,
]


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
