"""What a source contributes to ingest: verify the raw request, then read id, type and data."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from relay.events import Event


@dataclass(frozen=True, slots=True)
class EventIdentity:
    id: str
    type: str
    data_key: str | None  # the payload key holding the sender's data, None for the whole payload
    created_at: float | None = None  # when the sender says the event happened (epoch seconds)

    def to_event(
        self,
        source: str,
        received_at: float,
        body: bytes,
        payload: Any,
        headers: Mapping[str, str],
    ) -> Event:
        return Event(
            source=source,
            id=self.id,
            type=self.type,
            received_at=received_at,
            body=body,
            payload=payload,
            headers=headers,
            data_key=self.data_key,
            created_at=plausible_time(self.created_at),
        )


# The times a datetime can hold (years 1 to 9999): a sender's timestamp beyond them, or NaN,
# would fail every template that shows it, so it counts as absent.
EARLIEST_S = datetime(1, 1, 1, tzinfo=UTC).timestamp()
LATEST_S = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def plausible_time(epoch_s: float | None) -> float | None:
    if epoch_s is not None and EARLIEST_S <= epoch_s <= LATEST_S:
        return epoch_s
    return None


class Verifier(Protocol):
    def __call__(self, body: bytes, headers: Mapping[str, str]) -> None:
        """Return if the request is authentic; raise VerificationError with the reason if not."""


class Reader(Protocol):
    def __call__(
        self, source: str, payload: Any, body: bytes, headers: Mapping[str, str]
    ) -> EventIdentity:
        """Find the event's id, type and data in what the sender sent."""


def body_digest(body: bytes) -> str:
    """The id of an event whose sender sends none: the same bytes give the same id."""
    return hashlib.sha256(body).hexdigest()


def read_generic(
    source: str, payload: Any, body: bytes, headers: Mapping[str, str]
) -> EventIdentity:
    """`payload.id` else the body's SHA-256; `payload.type` else the source name;
    `payload.data` when the payload has it, else the whole payload."""
    event_id: str | None = None
    event_type = source
    data_key: str | None = None
    if isinstance(payload, dict):
        if "data" in payload:
            data_key = "data"
        raw_id = payload.get("id")
        if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and str(raw_id):
            event_id = str(raw_id)
        raw_type = payload.get("type")
        if isinstance(raw_type, str) and raw_type:
            event_type = raw_type
    return EventIdentity(event_id or body_digest(body), event_type, data_key)
