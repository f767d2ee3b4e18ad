"""The values that flow through relay: Event, Delivery, and a delivery attempt's Outcome."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
        return {
            "id": self.id,
            "type": self.type,
            "source": self.source,
            "received_at": _iso(self.received_at),
            "created_at": _iso(self.created_at) if self.created_at is not None else None,
            "payload": self.payload,
            "data": self.data,
            "headers": dict(self.headers),
        }


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt at sending one event to one target, as claimed from the store."""

    id: int
    target: str
    attempt: int  # 1 for the first attempt
    first_attempt_at: float  # seconds since the epoch
    event: Event


@dataclass(frozen=True, slots=True)
class Delivered:
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Retry:
    """A transient failure: try again, not before `after_s` seconds if the target said so."""

    reason: str
    status: int | None = None
    after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """A permanent failure: retrying would fail the same way."""

    reason: str
    status: int | None = None


Outcome = Delivered | Retry | Failed
