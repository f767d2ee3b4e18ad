"""The admin API's endpoints: each is one function and one line in ENDPOINTS (`relay.api`).

What they show is what the commands print (`relay.listing`, `relay.targetstatus`), redacted
the same way; what they change goes through the same store calls as `relay deliveries replay`
and `relay targets pause|resume`, and a running daemon's workers are told at once.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, field_validator

from relay.api import Call, Endpoint, JsonObject, Params
from relay.errors import InboundError
from relay.fields import Duration
from relay.listing import delivery_fields, detail_fields
from relay.redaction import redacted_config
from relay.replaying import dead_pages
from relay.store.base import DeliveryFilter, DeliveryState
from relay.targetstatus import target_rows, targets_json


class DeliveriesParams(Params):
    state: DeliveryState | None = None
    """Only deliveries in this state (default: any)."""
    target: str | None = None
    """Only deliveries to this target."""
    source: str | None = None
    """Only deliveries of events from this source."""
    type: str | None = None
    """Only events whose type matches this glob, e.g. CASE_*."""
    event: str | None = None
    """Only deliveries of the event with this id."""
    since: Duration | None = None
    """Only events received within this long, e.g. 1h."""
    before: int | None = Field(default=None, ge=1)
    """The next page: deliveries older than this delivery id."""
    limit: int = Field(default=50, ge=1, le=1000)
    """At most this many, newest first."""

    def where(self) -> DeliveryFilter:
        since = None if self.since is None else time.time() - self.since.total_seconds()
        return DeliveryFilter(
            target=self.target,
            source=self.source,
            type_glob=self.type,
            event_id=self.event,
            since=since,
        )


async def list_deliveries(call: Call[DeliveriesParams]) -> JsonObject:
    """The newest deliveries that match (what `relay deliveries list` shows); ids, types and
    errors come from outside and are redacted like everything relay shows."""
    params = call.params
    records = await call.daemon.store.deliveries(
        params.state, params.limit, where=params.where(), before_id=params.before
    )
    redact, targets = call.daemon.redactor(), call.daemon.config.targets
    return {"deliveries": [delivery_fields(record, redact, targets) for record in records]}


class DeliveryId(Params):
    id: int = Field(ge=1)
    """The delivery's id."""


async def show_delivery(call: Call[DeliveryId]) -> JsonObject:
    """One delivery, its event (credential headers redacted) and every attempt."""
    detail = await call.daemon.store.delivery(call.params.id)
    if detail is None:
        raise InboundError(f"no delivery {call.params.id}", 404)
    return detail_fields(detail, call.daemon.redactor(), call.daemon.config.targets)


class ReplayParams(Params):
    ids: str | None = None
    """Delivery ids, comma-separated: these dead deliveries (else: every dead one matched)."""
    target: str | None = None
    """Only dead deliveries to this target."""
    source: str | None = None
    """Only dead deliveries of events from this source."""
    type: str | None = None
    """Only events whose type matches this glob."""
    since: Duration | None = None
    """Only events received within this long."""
    dry_run: bool = False
    """Say what would be replayed; change nothing."""

    @field_validator("ids")
    @classmethod
    def _ids(cls, ids: str | None) -> str | None:
        if ids is not None and not all(part.strip().isdigit() for part in ids.split(",")):
            raise ValueError("must be delivery ids separated by commas")
        return ids

    def delivery_ids(self) -> list[int]:
        return [int(part) for part in self.ids.split(",")] if self.ids else []


async def replay_deliveries(call: Call[ReplayParams]) -> JsonObject:
    """Make dead deliveries pending again (`relay deliveries replay`), by id or by filter."""
    params, store = call.params, call.daemon.store
    where = DeliveriesParams(
        target=params.target, source=params.source, type=params.type, since=params.since
    ).where()
    skipped: list[str] = []
    count, shown = 0, []
    redact, targets = call.daemon.redactor(), call.daemon.config.targets
    async for page in dead_pages(store, where, params.delivery_ids(), skipped):
        if params.dry_run:
            shown += [delivery_fields(record, redact, targets) for record in page]
            count += len(page)
        else:
            count += await store.replay([record.id for record in page])
    answer: JsonObject = {"dry_run": params.dry_run, "count": count, "skipped": skipped}
    if params.dry_run:
        answer["deliveries"] = shown
    elif count and call.daemon.dispatcher is not None:
        call.daemon.dispatcher.notify(targets)
    return answer


async def list_targets(call: Call[Params]) -> JsonObject:
    """Each target's state and backlog (`relay targets`), counted off the event loop."""
    daemon = call.daemon
    rows = target_rows(await daemon.store.target_statuses_aside(), list(daemon.config.targets))
    return {"targets": targets_json(rows, time.time(), daemon.redactor())}


class PauseParams(Params):
    name: str
    """The target."""
    reason: str = Field(default="paused through the admin API", max_length=500)
    """Why: shown beside the pause."""


class TargetName(Params):
    name: str
    """The target."""


async def pause_target(call: Call[PauseParams]) -> JsonObject:
    """Claim nothing for the target until it is resumed (`relay targets pause`)."""
    name = await _known_target(call, call.params.name)
    store = call.daemon.store
    if await store.target_pause(name) is None:
        await store.pause_target(name, call.params.reason)
    _tell_workers(call, name)
    return {"target": name, "paused": True}


async def resume_target(call: Call[TargetName]) -> JsonObject:
    """Deliver to a paused target again (`relay targets resume`)."""
    name = await _known_target(call, call.params.name)
    was = await call.daemon.store.resume_target(name)
    _tell_workers(call, name)
    return {"target": name, "paused": False, "was_paused": was is not None}


async def _known_target(call: Call[Any], name: str) -> str:
    stored = [status.name for status in await call.daemon.store.target_statuses_aside()]
    if name not in call.daemon.config.targets and name not in stored:
        raise InboundError(f"no target named {name!r}", 404)
    return name


def _tell_workers(call: Call[Any], name: str) -> None:
    if call.daemon.dispatcher is not None:
        call.daemon.dispatcher.check_state(name)


async def show_config(call: Call[Params]) -> JsonObject:
    """The running config (the last one loaded), every credential redacted."""
    return redacted_config(call.daemon.config, call.daemon.redactor())


ENDPOINTS: tuple[Endpoint[Any], ...] = (
    Endpoint("GET", "/api/deliveries", list_deliveries, DeliveriesParams),
    Endpoint("GET", "/api/deliveries/{id}", show_delivery, DeliveryId),
    Endpoint("POST", "/api/deliveries/replay", replay_deliveries, ReplayParams),
    Endpoint("GET", "/api/targets", list_targets, Params),
    Endpoint("POST", "/api/targets/{name}/pause", pause_target, PauseParams),
    Endpoint("POST", "/api/targets/{name}/resume", resume_target, TargetName),
    Endpoint("GET", "/api/config", show_config, Params),
)
