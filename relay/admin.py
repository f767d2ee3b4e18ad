"""The admin listener: health, readiness, metrics and the JSON API, on a port of its own.

The ingest port faces the senders and serves only their paths and `/healthz`; everything about
deliveries is here. `/healthz`, `/readyz` and `/metrics` are open (probes and scrapers);
`/api/...` needs `Authorization: Bearer <admin.token>` whenever a token is set, checked against
the running config's token (so a reload rotates it) in constant time, and never logged.
Refusals and unknown paths are answered as JSON. Every other path is the web console
(`relay.console`), whose pages need a session opened by signing in with the same token.

`/readyz` is 200 only while relay has started, is not shutting down, and its store answers a
trivial query within a second; otherwise 503 with every reason.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware
from pydantic import SecretStr

from relay.api import Endpoint, json_answer
from relay.app import DAEMON, Daemon
from relay.console import add_console
from relay.endpoints import ENDPOINTS
from relay.errors import StoreError
from relay.inbound import error_response
from relay.store.base import Store

log = logging.getLogger("relay.admin")

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
API_PREFIX = "/api/"
STORE_ANSWER_S = 1.0  # a store slower than this to answer a trivial query is not ready
MAX_BODY_BYTES = 64 * 1024  # an admin request carries parameters, not events


def create_admin_app(
    daemon: Daemon, endpoints: Sequence[Endpoint[Any]] = ENDPOINTS
) -> web.Application:
    """The admin listener's app, a view of `daemon` (whose resources the ingest app opens):
    probes, the JSON API and the web console."""
    app = web.Application(middlewares=[_guard(daemon)], client_max_size=MAX_BODY_BYTES)
    app[DAEMON] = daemon
    app.router.add_get("/healthz", daemon.healthz)
    app.router.add_get("/readyz", partial(readyz, daemon))
    app.router.add_get("/metrics", daemon.metrics_page)
    for endpoint in endpoints:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler(daemon))
    add_console(app, daemon, PUBLIC_PATHS)
    return app


# -- the token --------------------------------------------------------------------------------


def token_refusal(token: SecretStr | None, authorization: str | None) -> str | None:
    """Why a request with this Authorization header may not pass, or None when it may."""
    if token is None:
        return None
    if authorization is None:
        return "this needs Authorization: Bearer <admin.token>"
    scheme, _, given = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return "Authorization must be Bearer <admin.token>"
    expected = token.get_secret_value().encode()
    if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected):
        return "the bearer token is not admin.token"
    return None


def _guard(daemon: Daemon) -> Middleware:
    """The token check before the API's paths (the console checks its own sessions); the
    router's 404 and 405 (and any other HTTP error) as JSON."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX) or request.path == API_PREFIX.rstrip("/"):
            authorization = request.headers.get(hdrs.AUTHORIZATION)
            refusal = token_refusal(daemon.config.admin.token, authorization)
            if refusal is not None:
                log.info(
                    "refused %s %s from %s: %s",
                    request.method,
                    request.path,
                    request.remote,
                    refusal,
                )
                response = error_response(401, refusal)
                response.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="relay admin"'
                return response
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return error_response(exc.status, _http_error(request, exc))

    return guard


def _http_error(request: web.Request, exc: web.HTTPException) -> str:
    if isinstance(exc, web.HTTPNotFound):
        return f"nothing at {request.path} (see README, Admin listener)"
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return f"method {request.method} is not allowed on {request.path}; use {allowed}"
    return exc.reason


# -- readiness --------------------------------------------------------------------------------


async def readyz(daemon: Daemon, request: web.Request) -> web.Response:
    reasons = await not_ready_reasons(daemon)
    if reasons:
        return json_answer({"status": "not ready", "reasons": reasons}, status=503)
    return json_answer({"status": "ready"})


async def not_ready_reasons(daemon: Daemon) -> list[str]:
    """Why relay should not be sent traffic now; empty when it is ready."""
    reasons = []
    if not daemon.started:
        reasons.append("relay is starting")
    if daemon.draining:
        reasons.append("relay is shutting down")
    problem = await store_problem(daemon.store, asyncio.get_running_loop().time)
    if problem is not None:
        reasons.append(problem)
    return reasons


async def store_problem(
    store: Store, clock: Callable[[], float], limit_s: float = STORE_ANSWER_S
) -> str | None:
    """Why the store is not fit to take events, or None. A store that answers on the loop
    (SQLite) cannot be interrupted, so one that answered late is measured as well."""
    started = clock()
    try:
        await asyncio.wait_for(store.ping(), limit_s)
    except TimeoutError:
        return f"the store did not answer a trivial query within {limit_s:g}s"
    except StoreError as exc:
        return str(exc)
    took_s = clock() - started
    if took_s > limit_s:
        return f"the store took {took_s:.1f}s to answer a trivial query (more than {limit_s:g}s)"
    return None
