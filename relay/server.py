"""The HTTP server relay runs: aiohttp's, with a read deadline, an idle timeout, a cap on open
connections, and aiohttp's own refusals answered as JSON.

aiohttp closes idle keep-alive connections, but lets a request's head and body take as long as
the client likes, keeps every connection it accepts, and answers malformed requests in plain
text. `RelayRequestHandler` adds what is missing. This module and relay/answers.py (ingest's
prepared answers) are the only ones that reach into aiohttp's server (the aiohttp range is
pinned in pyproject.toml, and tests check answers aiohttp generates byte for byte, so a change
inside aiohttp fails loudly).

Each connection is in one phase at a time:

    idle ─first byte─▶ head ─head parsed─▶ body ─answered─▶ idle
                                             └─answered before the body was in─▶ linger ─▶ idle

`limits.read_timeout` runs from a request's first byte until its body is complete: a late head
closes the connection, a late body is answered 408, a late linger closes the connection. The
server checks deadlines a few times per read_timeout rather than arming a timer per request
(which cost ~10 us a request). At `limits.max_connections` a new connection closes the
longest-idle one, else the one whose request has been arriving longest; only when every
connection holds a request relay is working on is the new one refused with 503.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader

from relay.config import LimitsConfig
from relay.connections import Connections
from relay.durations import format_duration
from relay.refusals import BodyAbandoned, describe_error, refusal

log = logging.getLogger("relay.server")

RESERVED_FILES = 128  # descriptors left for the store, outbound connections and logs
DEADLINE_CHECKS_PER_TIMEOUT = 10  # a request is closed or answered 408 within 10% past it

AppHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
RequestHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A request the app can answer without aiohttp's router: its handler, else None.
DirectRoute = Callable[[web.Request], RequestHandler | None]
DIRECT_ROUTE: web.AppKey[DirectRoute] = web.AppKey("direct_route")
Task = asyncio.Task[None]
RequestFactory = Callable[
    [RawRequestMessage, StreamReader, web.RequestHandler, AbstractStreamWriter, Task],
    web.BaseRequest,
]


class Phase(enum.Enum):
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"  # the head is parsed: the body is arriving, or relay is working on the request
    LINGER = "linger"
    CLOSED = "closed"


class RelayRequestHandler(web.RequestHandler):
    """aiohttp's connection protocol, with relay's read deadline, cap and JSON refusals."""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        connections: Connections,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._connections = connections
        self._phase = Phase.IDLE
        self._body: StreamReader | None = None

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
        self._phase = Phase.CLOSED
        self._connections.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is Phase.IDLE and data:
            self._phase = Phase.HEAD
            self._connections.now_arriving(self)
        super().data_received(data)

    def request_started(self, body: StreamReader) -> None:
        """A request's head is parsed and `body` is its body (pipelined requests start here)."""
        if self._phase is Phase.CLOSED:
            return
        if self._phase is not Phase.HEAD:  # its bytes came while the one before was handled
            self._connections.now_arriving(self)
        self._phase = Phase.BODY
        self._body = body

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        answered = await super().finish_response(request, resp, start_time)
        if self._phase is Phase.BODY:
            self._answered(self._body)
        return answered

    def _answered(self, body: StreamReader | None) -> None:
        if body is None or body.is_eof():
            self._phase = Phase.IDLE
            self._connections.now_idle(self)
        else:  # answered before the body was in: aiohttp reads the rest, within the deadline
            self._phase = Phase.LINGER
            self._connections.now_arriving(self)
            body.on_eof(self._linger_done)

    def _linger_done(self) -> None:
        if self._phase is Phase.LINGER:
            self._phase = Phase.IDLE
            self._connections.now_idle(self)

    def _body_arriving(self) -> StreamReader | None:
        body = self._body
        if self._phase is Phase.BODY and body is not None and not body.is_eof():
            return body
        return None

    # -- the read deadline, and making room -------------------------------------------------

    def read_deadline_passed(self) -> None:
        within = f"within {format_duration(self._connections.read_timeout)} (limits.read_timeout)"
        body = self._body_arriving()
        if body is not None:
            body.set_exception(BodyAbandoned(408, f"request body not complete {within}"))
        elif self._phase is Phase.HEAD:
            peer = self._peer()
            log.debug("connection from %s closed: request head not complete %s", peer, within)
            self._connections.late_heads.add()
            self.force_close()
        elif self._phase is Phase.LINGER:
            self.force_close()

    def make_room(self) -> bool:
        """Close this connection for a new one; a request still arriving is answered 503."""
        body = self._body_arriving()
        if self._phase is Phase.BODY and body is None:
            return False  # the request is in: relay is working on it
        phase = self._phase.value
        log.debug("connection from %s closed while %s, to make room", self._peer(), phase)
        self._phase = Phase.CLOSED
        if body is not None:
            reason = f"{self._connections.at_capacity()}; retry later"
            body.set_exception(BodyAbandoned(503, reason))
        else:
            self.force_close()
        return True

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
    """aiohttp's Server, making RelayRequestHandlers, telling them when a request starts, and
    checking read deadlines a few times per read_timeout (at most a second apart)."""

    def __init__(
        self,
        handler: AppHandler,
        *,
        request_factory: RequestFactory,
        connections: Connections,
        **handler_options: Any,
    ) -> None:
        super().__init__(handler, request_factory=self._start_request)
        self._make_request_of_app = request_factory
        self._open_connections = connections
        self._handler_options = handler_options
        self._running_loop = asyncio.get_running_loop()
        read_timeout_s = connections.read_timeout.total_seconds()
        self._check_every_s = min(1.0, max(0.01, read_timeout_s / DEADLINE_CHECKS_PER_TIMEOUT))
        self._check = self._running_loop.call_later(self._check_every_s, self._check_deadlines)

    def __call__(self) -> RelayRequestHandler:
        return RelayRequestHandler(
            self,
            loop=self._running_loop,
            connections=self._open_connections,
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

    def _check_deadlines(self) -> None:
        self._open_connections.check_deadlines()
        self._check = self._running_loop.call_later(self._check_every_s, self._check_deadlines)

    def pre_shutdown(self) -> None:
        self._check.cancel()
        super().pre_shutdown()


def direct_first(direct: DirectRoute, app_handler: AppHandler) -> AppHandler:
    """Ask `direct` for each request's handler, and the app (its router) only if it has none.

    A request answered directly skips aiohttp's routing: resolving the path against every
    resource, building and freezing its match info (~25k instructions a request). Such a
    request has no match info and passes no middleware of the app: its handler must not need
    `request.app` or `match_info`, and an app with middlewares should not set DIRECT_ROUTE.
    """

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        app_request = cast(web.Request, request)  # what the app's request factory makes
        handler = direct(app_request)
        if handler is None:
            return await app_handler(request)
        return await handler(app_request)

    return handle


class RelayRunner(web.AppRunner):
    """The AppRunner `relay run` and the tests serve with: the app, on a RelayServer.

    An app that holds a DIRECT_ROUTE has it asked first for each request's handler.
    """

    def __init__(
        self,
        app: web.Application,
        limits: LimitsConfig,
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
        handler: AppHandler = plain.request_handler
        direct = self.app.get(DIRECT_ROUTE)
        if direct is not None:
            handler = direct_first(direct, handler)
        return RelayServer(
            handler,
            request_factory=plain.request_factory,
            connections=self.connections,
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


def connection_cap(max_connections: int, open_files: int, reserved: int = RESERVED_FILES) -> int:
    """max_connections, lowered to fit the open-file limit with `reserved` descriptors left
    for everything else."""
    if open_files == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, open_files - reserved))
