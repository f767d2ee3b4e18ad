"""The console's actions (POST) and its sign-in: each change calls the same endpoint
function as the JSON API (`relay.endpoints`) and redirects to a page saying what it did. The
session guard (`routes.Console.guard`) has checked the CSRF token and origin before."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from aiohttp import hdrs, web

from relay.api import Call, parse_params
from relay.console.forms import (
    given,
    local_path,
    path_delivery_id,
    see_other,
    set_session_cookie,
    text_of,
)
from relay.console.pages import DeadQuery
from relay.console.session import CSRF_FIELD, SESSION_COOKIE, same_origin, token_matches
from relay.console.views import query_string
from relay.endpoints import (
    PauseParams,
    ReplayParams,
    TargetName,
    pause_target,
    replay_deliveries,
    resume_target,
)

if TYPE_CHECKING:
    from relay.console.routes import Console

log = logging.getLogger("relay.admin")

DEFAULT_PAUSE_REASON = "paused from the console"


async def sign_in_page(console: Console, request: web.Request) -> web.StreamResponse:
    if console.daemon.config.admin.token is None:
        return see_other("/")
    return console.page(request, "sign_in.html", next=local_path(request.query.get("next")))


async def sign_in(console: Console, request: web.Request) -> web.StreamResponse:
    token = console.daemon.config.admin.token
    if token is None:
        return see_other("/")
    form = await request.post()
    origin, referer = request.headers.get(hdrs.ORIGIN), request.headers.get(hdrs.REFERER)
    if not same_origin(origin, referer, request.host):
        return console.error(request, 403, "This sign-in form was not sent from this console.")
    shown, next_path = text_of(form.get("token")), local_path(text_of(form.get("next")))
    address = request.remote or ""
    wait_s = console.failed_sign_ins.wait_s(address)
    if wait_s > 0:
        seconds = math.ceil(wait_s)
        log.info("console: refused sign-in from %s: too many wrong tokens", address)
        problem = f"Too many wrong tokens from your address: try again in {seconds} s."
        response = console.page(request, "sign_in.html", 429, next=next_path, problem=problem)
        response.headers[hdrs.RETRY_AFTER] = str(seconds)
        return response
    if not token_matches(token, shown):
        console.failed_sign_ins.failed(address)
        log.info("console: refused sign-in from %s: not the admin token", address)
        context = {"next": next_path, "problem": "That is not the admin token."}
        return console.page(request, "sign_in.html", 401, **context)
    console.failed_sign_ins.succeeded(address)
    cookie, _ = console.sessions.open(token)
    response = see_other(next_path)
    set_session_cookie(request, response, cookie)
    return response


async def sign_out(console: Console, request: web.Request) -> web.StreamResponse:
    console.sessions.close(request.cookies.get(SESSION_COOKIE))
    response = see_other("/sign-in")
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def pause(console: Console, request: web.Request) -> web.StreamResponse:
    form = await request.post()
    reason = text_of(form.get("reason")).strip() or DEFAULT_PAUSE_REASON
    params = parse_params(PauseParams, request.match_info, [("reason", reason)])
    answer = await pause_target(Call(console.daemon, params, request))
    return see_other(f"/?{query_string({'done': 'paused', 'target': answer['target']})}")


async def resume(console: Console, request: web.Request) -> web.StreamResponse:
    params = parse_params(TargetName, request.match_info, [])
    answer = await resume_target(Call(console.daemon, params, request))
    return see_other(f"/?{query_string({'done': 'resumed', 'target': answer['target']})}")


async def replay_one(console: Console, request: web.Request) -> web.StreamResponse:
    delivery_id = path_delivery_id(request)
    params = ReplayParams(ids=str(delivery_id))
    answer = await replay_deliveries(Call(console.daemon, params, request))
    done = {"done": "replayed", "n": answer["count"]} if answer["count"] else {"done": "not-dead"}
    return see_other(f"/deliveries/{delivery_id}?{query_string(done)}")


async def replay_dead(console: Console, request: web.Request) -> web.StreamResponse:
    form = await request.post()
    fields = given((name, text_of(value)) for name, value in form.items() if name != CSRF_FIELD)
    query = parse_params(DeadQuery, {}, fields.items())
    answer = await replay_deliveries(
        Call(console.daemon, ReplayParams(**query.model_dump()), request)
    )
    done = query_string(fields, done="replayed", n=answer["count"])
    return see_other(f"/dead?{done}")
