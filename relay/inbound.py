"""The inbound HTTP edge: allowlist → body limit → verify → JSON → id, type → route → store → 202.

No 2xx leaves before the store has committed; any refusal stores nothing and answers
`{"error": "<reason>"}` with a status the sender can act on.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import get_args

import orjson
from aiohttp import hdrs, web
from aiohttp.http_exceptions import ContentEncodingError

from relay import jsoncodec
from relay.allowlist import Network, client_address, contains
from relay.answers import JsonAnswer
from relay.errors import InboundError, RefusalKind, StoreError
from relay.metrics import Metrics
from relay.ordering import NO_ORDERING, OrderKeys
from relay.refusals import BodyAbandoned, describe_error
from relay.router import Router
from relay.sources.base import Reader, Verifier
from relay.store.base import Store
from relay.textsafety import header_text, identifier_problem

log = logging.getLogger("relay.inbound")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DECODED_ENCODINGS = frozenset({"", "identity", "gzip", "deflate"})

# A refusal's `result` in relay_inbound_requests_total: a fixed set, never the free text.
# By status, unless the raise names its kind (an InboundError's `kind`).
REFUSALS_BY_STATUS = {
    400: "invalid_event",  # the sender's reader or the id/type checks refused it
    401: "signature",
    403: "forbidden",
    408: "body_timeout",
    413: "too_large",
    415: "unsupported_encoding",
    499: "client_left",
    500: "internal_error",
    503: "over_capacity",  # relay's connection cap cut the body short
}
INBOUND_RESULTS = ("accepted", "duplicate", *REFUSALS_BY_STATUS.values(), *get_args(RefusalKind))


def refusal_result(error: InboundError) -> str:
    """The metric label for a refusal: one of INBOUND_RESULTS."""
    if error.kind is not None:
        return error.kind
    fallback = "internal_error" if error.status >= 500 else "invalid_event"
    return REFUSALS_BY_STATUS.get(error.status, fallback)


@dataclass(frozen=True, slots=True)
class CompiledSource:
    name: str
    path: str
    verify: Verifier | None
    read: Reader
    allow_ips: list[Network] | None = None
    trusted_proxies: list[Network] = field(default_factory=list)

    def check_address(self, peer: str | None, forwarded_for: str | None) -> None:
        if self.allow_ips is None:
            return
        address = client_address(peer, forwarded_for, self.trusted_proxies)
        if address is None or not contains(self.allow_ips, address):
            raise InboundError(f"address {address} is not allowed to post to {self.path}", 403)


def error_response(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


class Ingest:
    """The sources relay serves, behind one catch-all route so that `configure` can change
    them while relay runs; a request keeps the sources and routes it started with."""

    def __init__(
        self,
        store: Store,
        notify: Callable[[Iterable[str]], None],
        metrics: Metrics,
        clock: Callable[[], float],
        max_body_bytes: int,
        fixed_paths: Mapping[str, str],
    ) -> None:
        self._max_body_bytes = max_body_bytes
        self._store = store
        self._notify = notify
        self._metrics = metrics
        self._clock = clock
        self._fixed_paths = dict(fixed_paths)  # relay's own pages: path → method
        self._handlers: dict[str, Handler] = {}
        self._refuse = fallback(self._fixed_paths)

    def configure(
        self,
        sources: Sequence[CompiledSource],
        router: Router,
        order_keys: OrderKeys = NO_ORDERING,
    ) -> None:
        """Serve these sources, routing with this router and keying ordered targets'
        deliveries with `order_keys`, from now on."""
        self._handlers = {
            source.path: self._handler(source, router, order_keys) for source in sources
        }
        self._refuse = fallback({**{s.path: "POST" for s in sources}, **self._fixed_paths})

    @property
    def paths(self) -> list[str]:
        return list(self._handlers)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """The catch-all route: a POST to a source path, else 404 or 405 as JSON."""
        handler = self._handlers.get(request.path) if request.method == "POST" else None
        if handler is None:
            return await self._refuse(request)
        return await handler(request)

    def direct(self, request: web.Request) -> Handler | None:
        """The handler of a POST to a source path, for the server to call without routing
        (relay.server.DIRECT_ROUTE); None sends the request through the app's router. A
        request with `Expect: 100-continue` goes through the router, which answers it."""
        if request.method != "POST" or hdrs.EXPECT in request.headers:
            return None
        return self._handlers.get(request.path)

    def _handler(self, source: CompiledSource, router: Router, order_keys: OrderKeys) -> Handler:
        # Every result counted from the start (at 0), so that alerts see each series begin.
        counted = self._metrics.requests.of_source(source.name, INBOUND_RESULTS)

        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                response = await self._accept(source, router, order_keys, request)
            except InboundError as exc:
                result = refusal_result(exc)
                counted[result] += 1
                log.info(
                    "source %s: refused with %d: %s",
                    source.name,
                    exc.status,
                    exc.reason,
                    extra=_refusal_fields(source.name, request, exc.status, exc.reason, result),
                )
                return error_response(exc.status, exc.reason)
            except Exception:  # a bug: answered as JSON, logged once with its traceback
                counted["internal_error"] += 1
                log.exception(
                    "source %s: unexpected error while handling a request",
                    source.name,
                    extra=_refusal_fields(source.name, request, 500, None, "internal_error"),
                )
                return error_response(500, "relay failed to handle this request; see its log")
            counted["accepted" if response.status == 202 else "duplicate"] += 1
            return response

        return handle

    async def _accept(
        self, source: CompiledSource, router: Router, order_keys: OrderKeys, request: web.Request
    ) -> web.StreamResponse:
        if source.allow_ips is not None:  # the peer's address is looked up only for this
            source.check_address(request.remote, request.headers.get("X-Forwarded-For"))
        body = await _read_body(request, self._max_body_bytes)
        headers = {name.lower(): header_text(value) for name, value in request.headers.items()}
        if source.verify is not None:
            source.verify(body, headers)
        try:
            payload = jsoncodec.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InboundError(f"body is not valid JSON: {exc}", kind="invalid_json") from exc
        identity = source.read(source.name, payload, body, headers)
        problem = identifier_problem("id", identity.id) or identifier_problem("type", identity.type)
        if problem is not None:
            raise InboundError(problem)
        event = identity.to_event(source.name, self._clock(), body, payload, headers)
        targets = router.targets_for(
            source.name, event.id, event.type, lambda: {"event": event.template_context()}
        )
        keys = order_keys.keys_for(event, targets)  # only now is the order of events known
        try:
            result = await self._store.ingest(event, targets, keys)
        except StoreError as exc:
            log.error(
                "source %s: event %s not stored: %s",
                source.name,
                event.id,
                exc,
                extra={"source": source.name, "event_id": event.id, "reason": str(exc)},
            )
            raise InboundError(
                "relay cannot store the event right now; retry later", 503, "store_unavailable"
            ) from exc
        if log.isEnabledFor(logging.DEBUG):  # the hot path builds no log record otherwise
            _log_accepted(source.name, event.id, result.duplicate, result.deliveries)
        if result.duplicate:
            return JsonAnswer(200, b'{"id": %s, "duplicate": true}' % orjson.dumps(event.id))
        self._notify(targets)
        return JsonAnswer(
            202, b'{"id": %s, "deliveries": %d}' % (orjson.dumps(event.id), result.deliveries)
        )


def _refusal_fields(
    source: str, request: web.Request, status: int, reason: str | None, result: str
) -> dict[str, object]:
    """A refusal's fields for structured log lines."""
    return {
        "source": source,
        "status": status,
        "reason": reason,
        "result": result,
        "remote": request.remote,
    }


def _log_accepted(source: str, event_id: str, duplicate: bool, deliveries: int) -> None:
    result = "duplicate" if duplicate else "accepted"
    fields = {"source": source, "event_id": event_id, "result": result}
    if duplicate:
        log.debug("source %s: event %s is a duplicate", source, event_id, extra=fields)
    else:
        log.debug(
            "source %s: event %s accepted for %d deliveries",
            source,
            event_id,
            deliveries,
            extra=fields,
        )


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body as the sender serialised it: gzip and deflate are decoded (by aiohttp).

    The app's client_max_size is the same limit, counted on the decoded bytes, so read()
    refuses a body that lies about its length or inflates past it.
    """
    encoding = _content_encoding(request)
    if request.content_length is not None and request.content_length > limit:
        raise InboundError(_too_large(limit), 413)
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise InboundError(_too_large(limit), 413) from exc
    except BodyAbandoned as exc:
        raise InboundError(exc.reason, exc.status) from exc
    except (web.RequestPayloadError, ConnectionResetError) as exc:
        if isinstance(exc.__cause__, ContentEncodingError):
            reason = f"body is not valid {encoding} (Content-Encoding: {encoding})"
            raise InboundError(reason, kind="malformed_body") from exc
        status, reason = describe_error(400, exc)  # a malformed body, or the client left
        raise InboundError(reason, status, "malformed_body" if status == 400 else None) from exc


def _content_encoding(request: web.Request) -> str:
    """The body's Content-Encoding, if it is one relay decodes; else 415."""
    value = request.headers.get(hdrs.CONTENT_ENCODING, "identity")
    encoding = value.strip().lower()
    if encoding not in DECODED_ENCODINGS:
        raise InboundError(
            f"Content-Encoding {value[:40]!r} is not supported: send the body as is, "
            "gzip or deflate",
            415,
        )
    return encoding


def _too_large(limit: int) -> str:
    return f"body is larger than {limit} bytes (limits.max_body_bytes)"


def fallback(allowed_methods: Mapping[str, str]) -> Handler:
    """The last route: 404, or 405 naming the method to use, as JSON like every refusal.

    A catch-all route rather than a middleware, so that accepted requests pay nothing for it.
    """

    async def refuse(request: web.Request) -> web.Response:
        allowed = allowed_methods.get(request.path)
        if allowed is None:
            return error_response(404, f"no source is configured at {request.path}")
        return error_response(
            405, f"method {request.method} is not allowed on {request.path}; use {allowed}"
        )

    return refuse
