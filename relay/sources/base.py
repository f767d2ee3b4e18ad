"""What a source contributes to ingest: verify the raw request, then read id, type and data.

A sender family is one module: its `verify` config model and verifier (a VerifyScheme), its
reader, how it serialises and signs (for `relay send`), and its samples; it is one `Sender`
entry in `relay/sources/__init__.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import SecretStr

from relay.events import Event
from relay.fields import Model


@dataclass(slots=True)
class EventIdentity:
    """What a source reads from a request: one per request, so not frozen (a frozen
    dataclass's __init__ sets each field through object.__setattr__), though nothing changes
    one."""

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


class VerifyModel(Model):
    """What a `verify` config model is: each scheme narrows `scheme` to its own name."""

    if TYPE_CHECKING:  # declared by each scheme, where its fields are in the order they read
        scheme: str
        secret: SecretStr | list[SecretStr]


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


# How a sender's requests are signed, for `relay send`: (verify config, body, now) -> headers.
Signer = Callable[[Any, bytes, float], dict[str, str]]


@dataclass(frozen=True, slots=True)
class VerifyScheme:
    """One value of `verify.scheme`: its config model, its verifier, and how to sign."""

    name: str
    model: type[VerifyModel]
    build_verifier: Callable[[Any, Callable[[], float]], Verifier]  # (config, clock)
    sign: Signer


@dataclass(frozen=True, slots=True)
class Sender:
    """A sender family: how its requests are read, written and (by default) verified."""

    name: str  # what `sources.NAME.sender` says
    read: Reader
    serialise: Callable[[Any], bytes]  # a payload as the sender's own code writes it
    verify: VerifyScheme | None  # the scheme its requests are signed with
    # Shipped samples (relay/samples/NAME/): False for a scheme any application may speak,
    # whose payloads are the application's own.
    samples: bool = True
    # Headers its requests carry beside the signature, for `relay render` and `relay check`.
    headers: Callable[[float], dict[str, str]] = field(default=lambda now: {})


def compact_json(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as JavaScript's JSON.stringify writes it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
