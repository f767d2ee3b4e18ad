"""What both stores make of their rows: an event read back, an attempt's outcome as stored."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import orjson

from relay import jsoncodec
from relay.events import Event
from relay.store.base import AttemptOutcome, DeliveryState

# A pending result is an attempt to be retried.
ATTEMPT_OUTCOMES: dict[DeliveryState, AttemptOutcome] = {
    "delivered": "delivered",
    "pending": "retry",
    "dead": "dead",
}


def event_from_row(row: Sequence[Any]) -> Event:
    """(pk, source, event_id, type, received_at, body, headers, data_key, created_at) as an
    Event; raises whatever a damaged body or header text makes the decoders raise."""
    _, source, event_id, event_type, received_at, body, headers, data_key, created_at = row
    body = bytes(body)
    return Event(
        source=source,
        id=event_id,
        type=event_type,
        received_at=received_at,
        body=body,
        payload=jsoncodec.loads(body),
        headers=headers_from_text(headers),
        data_key=data_key,
        created_at=created_at,
    )


def headers_from_text(text: str) -> Any:
    """An event's headers as ingest stored them (a JSON object of strings): orjson reads them
    in a fifth of `json`'s time, on every claim; `json` reads what orjson refuses (a lone
    surrogate)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
