"""The values that flow through relay: Event, Delivery, and a delivery attempt's Outcome."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any


@dataclass(slots=True)
class Event:
    """One accepted inbound request, as stored and as templates see it.

    Not frozen, though nothing changes one: a frozen dataclass's __init__ costs several
    microseconds per field set through object.__setattr__, on every request.
    """

    source: str
    id: str
    type: str
    received_at: float  # seconds since the epoch
    body: bytes  # the exact bytes received
    payload: Any  # the parsed body
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    data_key: str | None = None  # where the sender's envelope keeps its data, if anywhere
    created_at: float | None = None  # when the sender says it happened (epoch seconds)

    @property
    def data(self) -> Any:
        if self.data_key is not None and isinstance(self.payload, dict):
            return self.payload.get(self.data_key)
        return self.payload

    def template_context(self) -> dict[str, Any]:
        return {name: read(self) for name, read in TEMPLATE_FIELDS.items()}


def template_context(event: Event, target_name: str) -> dict[str, Any]:
    """What a target's templates see: the event, and the target's own name."""
    return {"event": event.template_context(), "target": {"name": target_name}}


def _iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat()


# What templates see as `event`, field by field (the warehouse mapper reads single fields).
TEMPLATE_FIELDS: dict[str, Callable[[Event], Any]] = {
    "id": attrgetter("id"),
    "type": attrgetter("type"),
    "source": attrgetter("source"),
    "received_at": lambda event: _iso(event.received_at),
    "created_at": lambda event: _iso(event.created_at),
    "payload": attrgetter("payload"),
    "data": attrgetter("data"),
    "headers": lambda event: dict(event.headers),
}


@dataclass(slots=True)
class Delivery:
    """One attempt at sending one event to one target, as claimed from the store.

    Not frozen, though nothing changes one, as Event: one is made per attempt, and a frozen
    dataclass's __init__ sets each field through object.__setattr__ (twice the cost)."""

    id: int
    target: str
    attempt: int  # 1 for the first attempt
    first_attempt_at: float  # seconds since the epoch
    event: Event
    order_key: str | None = None  # deliveries of one key go out one at a time (`ordering`)


# Each outcome also carries what the attempt history keeps, where the target knows it: how long
# the attempt took (`duration_s`), the target's answer (`response`, its text as received: the
# worker redacts, escapes and cuts it) and that answer's `Retry-After` header as sent.
# Outcomes are not frozen, though nothing changes one: an http target makes one or two per
# attempt, and a frozen dataclass's __init__ costs three times as much (0.4 against 1.2 us).


@dataclass(slots=True)
class Delivered:
    status: int | None = None
    duration_s: float | None = None
    response: str | None = None
    retry_after: str | None = None


@dataclass(slots=True)
class Retry:
    """A transient failure: try again, not before `after_s` seconds if the target said so."""

    reason: str
    status: int | None = None
    after_s: float | None = None
    duration_s: float | None = None
    response: str | None = None
    retry_after: str | None = None


@dataclass(slots=True)
class Failed:
    """A permanent failure: retrying would fail the same way."""

    reason: str
    status: int | None = None
    duration_s: float | None = None
    response: str | None = None
    retry_after: str | None = None


@dataclass(slots=True)
class Gone:
    """The target says it is gone for good (410 Gone): pause the target and keep the delivery
    until an operator resumes it, as Svix disables such an endpoint."""

    reason: str
    status: int | None = None
    duration_s: float | None = None
    response: str | None = None
    retry_after: str | None = None


Outcome = Delivered | Retry | Failed | Gone
DELIVERED = Delivered()  # the common outcome, shared rather than made per delivery
