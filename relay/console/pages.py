"""The console's pages (GET): each reads through the admin API's endpoint functions
(`relay.endpoints`: the same listings, redaction and store calls as the JSON API and the
commands) or the store's interface, and renders one template."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from relay.api import Call, Params, parse_params
from relay.console.forms import epoch_of, given, path_delivery_id
from relay.console.views import (
    RATE_WINDOW_S,
    pretty_body,
    query_string,
    rendered_request,
    target_rows,
)
from relay.endpoints import DeliveriesParams, list_deliveries, list_targets
from relay.errors import InboundError
from relay.fields import Duration
from relay.listing import detail_fields, iso_time
from relay.redaction import redacted_config
from relay.replaying import dead_pages
from relay.store.base import DeliveryFilter

if TYPE_CHECKING:
    from relay.console.routes import Console

PAGE_SIZE = 50
DEAD_COUNT_CAP = 10_000  # dead deliveries counted for "replay these N"; past it, "more than"


class DeliveryQuery(DeliveriesParams):
    """The Deliveries page's filter: the API's, and a range of arrival times (UTC)."""

    start: datetime | None = None
    """Only events received at or after this time."""
    end: datetime | None = None
    """Only events received before this time."""

    def where(self) -> DeliveryFilter:
        where = super().where()
        since, until = epoch_of(self.start), epoch_of(self.end)
        if since is not None and (where.since is None or since > where.since):
            where = replace(where, since=since)
        return where if until is None else replace(where, until=until)


class DeadQuery(Params):
    """The Dead letters page's filter (what `relay deliveries replay --state dead` takes)."""

    target: str | None = None
    source: str | None = None
    type: str | None = None
    since: Duration | None = None


async def targets_page(console: Console, request: web.Request) -> web.StreamResponse:
    daemon = console.daemon
    listed = await list_targets(Call(daemon, Params(), request))
    delivered = await daemon.store.delivered_since(console.clock() - RATE_WINDOW_S)
    rows = target_rows(listed["targets"], delivered, daemon.config.targets)
    return console.page(request, "targets.html", targets=rows, nav="targets")


async def deliveries_page(console: Console, request: web.Request) -> web.StreamResponse:
    filters = given(request.query.items())
    try:
        query = parse_params(DeliveryQuery, {}, filters.items())
    except InboundError as exc:
        return _deliveries(console, request, filters, [], None, exc.reason, 400)
    shown = query.model_copy(update={"limit": query.limit + 1})
    rows = (await list_deliveries(Call(console.daemon, shown, request)))["deliveries"]
    older = rows[query.limit - 1]["id"] if len(rows) > query.limit else None
    return _deliveries(console, request, filters, rows[: query.limit], older, None, 200)


def _deliveries(
    console: Console,
    request: web.Request,
    filters: dict[str, str],
    rows: list[dict[str, Any]],
    older: int | None,
    problem: str | None,
    status: int,
) -> web.StreamResponse:
    return console.page(
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


async def delivery_page(console: Console, request: web.Request) -> web.StreamResponse:
    delivery_id = path_delivery_id(request)
    detail = await console.daemon.store.delivery(delivery_id)
    if detail is None:
        return console.error(request, 404, f"There is no delivery {delivery_id}.")
    daemon, redact = console.daemon, console.daemon.redactor()
    target = detail.delivery.target
    body, is_json = pretty_body(detail.event, redact)
    rendered, render_problem = rendered_request(
        detail.event,
        daemon.compiled.targets.get(target),
        daemon.config.targets.get(target),
        redact,
    )
    return console.page(
        request,
        "delivery.html",
        nav="deliveries",
        detail=detail_fields(detail, redact, daemon.config.targets),
        body=body,
        body_is_json=is_json,
        rendered=rendered,
        render_problem=render_problem,
    )


async def dead_page(console: Console, request: web.Request) -> web.StreamResponse:
    return await _dead(console, request, "dead.html")


async def dead_confirm_page(console: Console, request: web.Request) -> web.StreamResponse:
    return await _dead(console, request, "dead_confirm.html")


async def _dead(console: Console, request: web.Request, template: str) -> web.StreamResponse:
    filters = given(request.query.items())
    query = parse_params(DeadQuery, {}, filters.items())
    listing = DeliveriesParams(**query.model_dump(), state="dead", limit=PAGE_SIZE)
    rows = (await list_deliveries(Call(console.daemon, listing, request)))["deliveries"]
    count, by_target = await _count_dead(console, listing.where())
    return console.page(
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


async def _count_dead(console: Console, where: DeliveryFilter) -> tuple[int, dict[str, int]]:
    """How many dead deliveries the filter matches (up to DEAD_COUNT_CAP), by target."""
    by_target: dict[str, int] = {}
    count = 0
    async for page in dead_pages(console.daemon.store, where, (), []):
        for record in page:
            by_target[record.target] = by_target.get(record.target, 0) + 1
        count += len(page)
        if count >= DEAD_COUNT_CAP:
            break
    redact = console.daemon.redactor()
    return count, {redact(name): n for name, n in sorted(by_target.items())}


async def config_page(console: Console, request: web.Request) -> web.StreamResponse:
    daemon, redact = console.daemon, console.daemon.redactor()
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
    return console.page(
        request, "config.html", nav="config", config=shown, last=last, started=started
    )
