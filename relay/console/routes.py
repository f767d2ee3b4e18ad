"""The console on the admin app: its route table, its session guard, and page rendering.

The pages (`pages`) and actions (`actions`) are functions of the `Console` and the request.
The guard runs after the admin token's (which keeps `/api/` for bearer tokens): a console
page needs a session, and a POST its session's CSRF token and a same-origin `Origin` (or
`Referer`). A refusal or a failure is an HTML page saying what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Set
from functools import partial
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from relay.app import Daemon
from relay.console import actions, pages
from relay.console.forms import see_other, set_session_cookie, text_of
from relay.console.session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    FailedSignIns,
    Session,
    Sessions,
    csrf_refusal,
)
from relay.console.templating import ASSETS, assets, environment, html
from relay.console.views import query_string
from relay.errors import InboundError, StoreError

log = logging.getLogger("relay.admin")

SESSION = web.RequestKey("console_session", Session)
OPEN_PATHS = frozenset({"/sign-in"})
OPEN_PREFIXES = ("/api/", "/static/")  # the API checks its bearer token; the assets are public
NOTICES = {
    "paused": "Paused {target}: nothing is sent to it until it is resumed.",
    "resumed": "Resumed {target}: its pending deliveries go out now.",
    "replayed": "{n} dead deliveries are pending again; relay sends them now.",
    "not-dead": "Nothing replayed: only a dead delivery can be replayed.",
}
ConsoleHandler = Callable[["Console", web.Request], Awaitable[web.StreamResponse]]
ROUTES: tuple[tuple[str, str, ConsoleHandler], ...] = (
    ("GET", "/", pages.targets_page),
    ("GET", "/deliveries", pages.deliveries_page),
    ("GET", "/deliveries/{id}", pages.delivery_page),
    ("GET", "/dead", pages.dead_page),
    ("GET", "/dead/replay", pages.dead_confirm_page),
    ("GET", "/config", pages.config_page),
    ("GET", "/sign-in", actions.sign_in_page),
    ("POST", "/sign-in", actions.sign_in),
    ("POST", "/sign-out", actions.sign_out),
    ("POST", "/targets/{name}/pause", actions.pause),
    ("POST", "/targets/{name}/resume", actions.resume),
    ("POST", "/deliveries/{id}/replay", actions.replay_one),
    ("POST", "/dead/replay", actions.replay_dead),
)


class Console:
    """The console of one admin app, over one daemon: its sessions, templates and assets."""

    def __init__(self, daemon: Daemon, public_paths: Set[str]) -> None:
        self.daemon = daemon
        self.clock = daemon.clock
        self.public_paths = public_paths  # the admin listener's probes: no session
        self.sessions = Sessions(self.clock)
        self.failed_sign_ins = FailedSignIns(self.clock)
        self.env = environment()
        self.assets = assets()

    def routes(self) -> list[web.RouteDef]:
        table = [web.route(method, path, partial(page, self)) for method, path, page in ROUTES]
        return [*table, web.get("/static/{name}", self.asset)]

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Console paths need a session (sign-in first); a POST, its CSRF token and origin."""
        path = request.path
        if path.startswith(OPEN_PREFIXES) or path in OPEN_PATHS or path in self.public_paths:
            return await self._answer(request, handler)
        token = self.daemon.config.admin.token
        session = self.sessions.find(request.cookies.get(SESSION_COOKIE), token)
        opened = None
        if session is None and token is None:  # an open admin listener: a session for CSRF
            opened, session = self.sessions.open(None)
        if session is None:
            if request.method == "GET":
                return see_other(f"/sign-in?{query_string({'next': request.path_qs})}")
            return self.error(request, 403, "You are not signed in, or your session ended.")
        request[SESSION] = session
        if request.method == "POST":
            refusal = await _csrf_refusal(request, session)
            if refusal is not None:
                log.info("console: refused POST %s from %s: %s", path, request.remote, refusal)
                return self.error(request, 403, refusal)
        response = await self._answer(request, handler)
        if opened is not None:
            set_session_cookie(request, response, opened)
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except InboundError as exc:
            return self.error(request, exc.status, exc.reason)
        except StoreError as exc:
            log.error("console %s %s: %s", request.method, request.path, exc)
            return self.error(request, 503, f"The store cannot answer right now: {exc}")
        except web.HTTPNotFound:
            if not _is_page_request(request):
                raise  # an API client's, a probe's or an asset's 404: the admin app's JSON
            return self.error(request, 404, f"There is no page at {request.path}.")
        except web.HTTPException:  # the router's 405 and the rest: the admin app answers them
            raise
        except Exception:  # a bug: a page saying so, logged once with its traceback
            log.exception("console %s %s: unexpected error", request.method, request.path)
            return self.error(request, 500, "relay failed to show this page; see its log.")

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.assets:
            raise web.HTTPNotFound()
        response = web.Response(body=self.assets[name], content_type=ASSETS[name])
        response.headers["Cache-Control"] = "no-cache"
        return response

    def page(
        self, request: web.Request, template: str, status: int = 200, **context: Any
    ) -> web.Response:
        session = request.get(SESSION)
        token_set = self.daemon.config.admin.token is not None
        base = {
            "now": self.clock(),
            "csrf": session.csrf if session is not None else "",
            "signed_in": session is not None and token_set,
            "open_listener": not token_set,
            "notice": self._notice(request),
            "nav": None,
            "target_names": list(self.daemon.config.targets),  # suggested in filter fields
            "source_names": list(self.daemon.config.sources),
        }
        return html(self.env, template, {**base, **context}, status)

    def error(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.page(request, "error.html", status, code=status, message=message)

    def _notice(self, request: web.Request) -> str | None:
        """A fixed sentence for `?done=...` after an action: never text from the URL, only
        a configured target's name and a count."""
        template = NOTICES.get(request.query.get("done", ""))
        if template is None:
            return None
        target = request.query.get("target", "")
        count = request.query.get("n", "0")
        return template.format(
            target=target if target in self.daemon.config.targets else "the target",
            n=count if count.isdigit() else "0",
        )


async def _csrf_refusal(request: web.Request, session: Session) -> str | None:
    form = await request.post()
    return csrf_refusal(
        session,
        text_of(form.get(CSRF_FIELD)) or None,
        request.headers.get(hdrs.ORIGIN),
        request.headers.get(hdrs.REFERER),
        request.host,
    )


def _is_page_request(request: web.Request) -> bool:
    """A browser navigating to a console path (it asks for text/html), not an API client, a
    probe or an asset."""
    return (
        request.method == "GET"
        and not request.path.startswith(OPEN_PREFIXES)
        and "text/html" in request.headers.get(hdrs.ACCEPT, "")
    )
