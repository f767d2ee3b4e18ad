"""The console's pages and actions: the I/O edge between the browser and the admin API.

Each page reads through the admin API's own endpoint functions (`relay.endpoints`: the same
listings, redaction and store calls as the JSON API and the commands) and renders a template;
each action is a POST, checked for its session's CSRF token and its origin, that calls the
same endpoint function and redirects (303) to a page saying what it did.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Set
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from relay.api import Call, Params, parse_params
from relay.app import Daemon
from relay.console.session import (
    CSRF_FIELD,
    SESSION_COOKIE,
    SESSION_TTL_S,
    Session,
    Sessions,
    csrf_refusal,
    same_origin,
    token_matches,
)
from relay.console.templating import ASSETS, assets, environment, html
from relay.console.views import (
    RATE_WINDOW_S,
    pretty_body,
    query_string,
    rendered_request,
    target_rows,
)
from relay.endpoints import (
    DeliveriesParams,
    DeliveryId,
    PauseParams,
    ReplayParams,
    TargetName,
    list_deliveries,
    list_targets,
    pause_target,
    replay_deliveries,
    resume_target,
)
from relay.errors import InboundError, StoreError
from relay.fields import Duration
from relay.listing import detail_fields, iso_time
from relay.redaction import redacted_config
from relay.replaying import dead_pages
from relay.store.base import DeliveryFilter

log = logging.getLogger("relay.admin")

SESSION = web.RequestKey("console_session", Session)
OPEN_PATHS = frozenset({"/sign-in"})
OPEN_PREFIXES = ("/api/", "/static/")  # the API checks its bearer token; the assets are public
PAGE_SIZE = 50
DEAD_COUNT_CAP = 10_000  # dead deliveries counted for "replay these N"; past it, "more than"
DEFAULT_PAUSE_REASON = "paused from the console"
NOTICES = {
    "paused": "Paused {target}: nothing is sent to it until it is resumed.",
    "resumed": "Resumed {target}: its pending deliveries go out now.",
    "replayed": "{n} dead deliveries are pending again; relay sends them now.",
    "not-dead": "Nothing replayed: only a dead delivery can be replayed.",
}


class DeliveryQuery(DeliveriesParams):
    """The Deliveries page's filter: the API's, and a range of arrival times (UTC)."""

    start: datetime | None = None
    """Only events received at or after this time."""
    end: datetime | None = None
    """Only events received before this time."""

    def where(self) -> DeliveryFilter:
        where = super().where()
        since, until = _epoch(self.start), _epoch(self.end)
        if since is not None and (where.since is None or since > where.since):
            where = replace(where, since=since)
        return where if until is None else replace(where, until=until)


class DeadQuery(Params):
    """The Dead letters page's filter (what `relay deliveries replay --state dead` takes)."""

    target: str | None = None
    source: str | None = None
    type: str | None = None
    since: Duration | None = None


class Console:
    """The pages of one admin app, over one daemon."""

    def __init__(self, daemon: Daemon, public_paths: Set[str]) -> None:
        self.daemon = daemon
        self.clock = daemon.clock
        self.public_paths = public_paths  # the admin listener's probes: no session
        self.sessions = Sessions(self.clock)
        self.env = environment()
        self.assets = assets()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self.targets_page),
            web.get("/deliveries", self.deliveries_page),
            web.get("/deliveries/{id}", self.delivery_page),
            web.get("/dead", self.dead_page),
            web.get("/dead/replay", self.dead_confirm_page),
            web.get("/config", self.config_page),
            web.get("/sign-in", self.sign_in_page),
            web.get("/static/{name}", self.asset),
            web.post("/targets/{name}/pause", self.pause),
            web.post("/targets/{name}/resume", self.resume),
            web.post("/deliveries/{id}/replay", self.replay_one),
            web.post("/dead/replay", self.replay_dead),
            web.post("/sign-in", self.sign_in),
            web.post("/sign-out", self.sign_out),
        ]

    # -- who may: sessions and CSRF ---------------------------------------------------------

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Console paths need a session (sign-in first); a POST, its CSRF token and origin."""
        path = request.path
        if path.startswith(OPEN_PREFIXES) or path in OPEN_PATHS or path in self.public_paths:
            return await handler(request)
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
            form = await request.post()
            given = form.get(CSRF_FIELD)
            refusal = csrf_refusal(
                session,
                given if isinstance(given, str) else None,
                request.headers.get(hdrs.ORIGIN),
                request.headers.get(hdrs.REFERER),
                request.host,
            )
            if refusal is not None:
                log.info("console: refused POST %s from %s: %s", path, request.remote, refusal)
                return self.error(request, 403, refusal)
        response = await self._answer(request, handler)
        if opened is not None:
            self._set_cookie(request, response, opened)
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except InboundError as exc:
            return self.error(request, exc.status, exc.reason)
        except StoreError as exc:
            log.error("console %s %s: %s", request.method, request.path, exc)
            return self.error(request, 503, f"The store cannot answer right now: {exc}")
        except web.HTTPException:
            raise
        except Exception:  # a bug: a page saying so, logged once with its traceback
            log.exception("console %s %s: unexpected error", request.method, request.path)
            return self.error(request, 500, "relay failed to show this page; see its log.")

    def _set_cookie(self, request: web.Request, response: web.StreamResponse, cookie: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            cookie,
            httponly=True,
            samesite="Strict",
            secure=request.secure,
            path="/",
            max_age=int(SESSION_TTL_S),
        )

    async def sign_in_page(self, request: web.Request) -> web.StreamResponse:
        if self.daemon.config.admin.token is None:
            return see_other("/")
        return self.page(request, "sign_in.html", next=_local(request.query.get("next")))

    async def sign_in(self, request: web.Request) -> web.StreamResponse:
        token = self.daemon.config.admin.token
        if token is None:
            return see_other("/")
        form = await request.post()
        origin, referer = request.headers.get(hdrs.ORIGIN), request.headers.get(hdrs.REFERER)
        if not same_origin(origin, referer, request.host):
            return self.error(request, 403, "This sign-in form was not sent from this console.")
        given, next_path = form.get("token"), _local(_text(form.get("next")))
        if not isinstance(given, str) or not token_matches(token, given):
            log.info("console: refused sign-in from %s: not the admin token", request.remote)
            context = {"next": next_path, "problem": "That is not the admin token."}
            return self.page(request, "sign_in.html", 401, **context)
        cookie, _ = self.sessions.open(token)
        response = see_other(next_path)
        self._set_cookie(request, response, cookie)
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        self.sessions.close(request.cookies.get(SESSION_COOKIE))
        response = see_other("/sign-in")
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    # -- pages ------------------------------------------------------------------------------

    async def targets_page(self, request: web.Request) -> web.StreamResponse:
        daemon = self.daemon
        listed = await list_targets(Call(daemon, Params(), request))
        delivered = await daemon.store.delivered_since(self.clock() - RATE_WINDOW_S)
        rows = target_rows(listed["targets"], delivered, daemon.config.targets)
        return self.page(request, "targets.html", targets=rows, nav="targets")

    async def deliveries_page(self, request: web.Request) -> web.StreamResponse:
        filters = _given(request.query.items())
        try:
            query = parse_params(DeliveryQuery, {}, filters.items())
        except InboundError as exc:
            return self._deliveries(request, filters, [], None, exc.reason, 400)
        shown = query.model_copy(update={"limit": query.limit + 1})
        rows = (await list_deliveries(Call(self.daemon, shown, request)))["deliveries"]
        older = rows[query.limit - 1]["id"] if len(rows) > query.limit else None
        return self._deliveries(request, filters, rows[: query.limit], older, None, 200)

    def _deliveries(
        self,
        request: web.Request,
        filters: dict[str, str],
        rows: list[dict[str, Any]],
        older: int | None,
        problem: str | None,
        status: int,
    ) -> web.StreamResponse:
        return self.page(
            request,
            "deliveries.html",
            status,
            nav="deliveries",
            filters=filters,
            deliveries=rows,
            older=query_string(filters, before=older) if older is not None else None,
            newest=query_string(filters, before=None) if "before" in filters else None,
            problem=problem,
            states=("pending", "delivered", "dead"),
        )

    async def delivery_page(self, request: web.Request) -> web.StreamResponse:
        delivery_id = _delivery_id(request)
        detail = await self.daemon.store.delivery(delivery_id)
        if detail is None:
            return self.error(request, 404, f"There is no delivery {delivery_id}.")
        daemon, redact = self.daemon, self.daemon.redactor()
        target = detail.delivery.target
        body, is_json = pretty_body(detail.event, redact)
        rendered, render_problem = rendered_request(
            detail.event,
            daemon.compiled.targets.get(target),
            daemon.config.targets.get(target),
            redact,
        )
        return self.page(
            request,
            "delivery.html",
            nav="deliveries",
            detail=detail_fields(detail, redact, daemon.config.targets),
            body=body,
            body_is_json=is_json,
            rendered=rendered,
            render_problem=render_problem,
        )

    async def dead_page(self, request: web.Request) -> web.StreamResponse:
        return await self._dead(request, "dead.html")

    async def dead_confirm_page(self, request: web.Request) -> web.StreamResponse:
        return await self._dead(request, "dead_confirm.html")

    async def _dead(self, request: web.Request, template: str) -> web.StreamResponse:
        filters = _given(request.query.items())
        query = parse_params(DeadQuery, {}, filters.items())
        listing = DeliveriesParams(**query.model_dump(), state="dead", limit=PAGE_SIZE)
        rows = (await list_deliveries(Call(self.daemon, listing, request)))["deliveries"]
        count, by_target = await self._count_dead(listing.where())
        return self.page(
            request,
            template,
            nav="dead",
            filters=filters,
            deliveries=rows,
            count=count,
            capped=count >= DEAD_COUNT_CAP,
            by_target=by_target,
            query=query_string(filters),
        )

    async def _count_dead(self, where: DeliveryFilter) -> tuple[int, dict[str, int]]:
        """How many dead deliveries the filter matches (up to DEAD_COUNT_CAP), by target."""
        by_target: dict[str, int] = {}
        count = 0
        async for page in dead_pages(self.daemon.store, where, (), []):
            for record in page:
                by_target[record.target] = by_target.get(record.target, 0) + 1
            count += len(page)
            if count >= DEAD_COUNT_CAP:
                break
        redact = self.daemon.redactor()
        return count, {redact(name): n for name, n in sorted(by_target.items())}

    async def config_page(self, request: web.Request) -> web.StreamResponse:
        daemon, redact = self.daemon, self.daemon.redactor()
        shown = json.dumps(redacted_config(daemon.config, redact), indent=2, ensure_ascii=False)
        reload = daemon.last_reload
        last = None
        if reload is not None:
            change = reload.result.change
            last = {
                "at": iso_time(reload.at),
                "path": redact(reload.path),
                "ok": reload.result.ok,
                "problems": [redact(problem) for problem in reload.result.problems],
                "summary": change.summary() if change is not None else None,
            }
        started = iso_time(daemon.started_at)
        return self.page(
            request, "config.html", nav="config", config=shown, last=last, started=started
        )

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.assets:
            raise web.HTTPNotFound()
        response = web.Response(body=self.assets[name], content_type=ASSETS[name])
        response.headers["Cache-Control"] = "no-cache"
        return response

    # -- actions ----------------------------------------------------------------------------

    async def pause(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        reason = _text(form.get("reason")).strip() or DEFAULT_PAUSE_REASON
        params = parse_params(PauseParams, request.match_info, [("reason", reason)])
        answer = await pause_target(Call(self.daemon, params, request))
        return see_other(f"/?{query_string({'done': 'paused', 'target': answer['target']})}")

    async def resume(self, request: web.Request) -> web.StreamResponse:
        params = parse_params(TargetName, request.match_info, [])
        answer = await resume_target(Call(self.daemon, params, request))
        return see_other(f"/?{query_string({'done': 'resumed', 'target': answer['target']})}")

    async def replay_one(self, request: web.Request) -> web.StreamResponse:
        delivery_id = _delivery_id(request)
        params = ReplayParams(ids=str(delivery_id))
        answer = await replay_deliveries(Call(self.daemon, params, request))
        done = (
            {"done": "replayed", "n": answer["count"]} if answer["count"] else {"done": "not-dead"}
        )
        return see_other(f"/deliveries/{delivery_id}?{query_string(done)}")

    async def replay_dead(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        fields = _given((name, _text(value)) for name, value in form.items() if name != CSRF_FIELD)
        query = parse_params(DeadQuery, {}, fields.items())
        answer = await replay_deliveries(
            Call(self.daemon, ReplayParams(**query.model_dump()), request)
        )
        done = query_string(fields, done="replayed", n=answer["count"])
        return see_other(f"/dead?{done}")

    # -- rendering --------------------------------------------------------------------------

    def page(
        self, request: web.Request, template: str, status: int = 200, **context: Any
    ) -> web.Response:
        session = request.get(SESSION)
        base = {
            "now": self.clock(),
            "csrf": session.csrf if session is not None else "",
            "signed_in": session is not None and self.daemon.config.admin.token is not None,
            "open_listener": self.daemon.config.admin.token is None,
            "notice": self._notice(request),
            "nav": None,
        }
        return html(self.env, template, {**base, **context}, status)

    def error(self, request: web.Request, status: int, message: str) -> web.Response:
        return self.page(request, "error.html", status, code=status, message=message)

    def _notice(self, request: web.Request) -> str | None:
        """A fixed sentence for `?done=...` after an action (never text from the URL, but a
        configured target's name and a count)."""
        template = NOTICES.get(request.query.get("done", ""))
        if template is None:
            return None
        target = request.query.get("target", "")
        n = request.query.get("n", "0")
        if target not in self.daemon.config.targets or not n.isdigit():
            target, n = "the target", n if n.isdigit() else "0"
        return template.format(target=target, n=n)


def see_other(location: str) -> web.Response:
    """303: after a POST, the browser GETs the page that says what was done."""
    return web.Response(status=303, headers={hdrs.LOCATION: location})


def _given(items: Iterable[tuple[str, str]]) -> dict[str, str]:
    """A form's fields without the empty ones (a filter left at "any")."""
    return {name: value for name, value in items if value.strip()}


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _local(path: str | None) -> str:
    """Where to go after signing in: a path of this console, never another site."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _delivery_id(request: web.Request) -> int:
    return parse_params(DeliveryId, request.match_info, []).id


def _epoch(moment: datetime | None) -> float | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()
