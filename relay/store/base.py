"""The store interface. SQLite is the embedded implementation; PostgreSQL lets replicas share one.

A delivery is `pending` until it is `delivered` or `dead`. A worker claims due pending
deliveries with a lease; a claim counts as an attempt, so a crash mid-send is counted too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from relay.errors import StoreError
from relay.events import Delivery, Event

DeliveryState = Literal["pending", "delivered", "dead"]


@dataclass(frozen=True, slots=True)
class IngestResult:
    duplicate: bool
    deliveries: int


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivery as an operator lists it."""

    id: int
    source: str
    event_id: str
    event_type: str
    target: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str | None
    received_at: float  # when its event arrived


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """Which deliveries an operator means, beside their state: each field set must match."""

    target: str | None = None
    source: str | None = None
    type_glob: str | None = None  # `CASE_*`, case-sensitive, as a route's `types` match
    event_id: str | None = None
    since: float | None = None  # of events received at or after this time (epoch seconds)
    delivery_ids: frozenset[int] | None = None


EVERY_DELIVERY = DeliveryFilter()

AttemptOutcome = Literal["delivered", "retry", "dead"]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt as the history keeps it; texts are stored redacted and escaped."""

    number: int  # the delivery's attempt count when it was made (a replay starts again at 1)
    started_at: float
    duration_s: float | None
    result: AttemptOutcome
    status: int | None
    error: str | None
    response: str | None  # the start of the target's answer
    retry_after: str | None  # its Retry-After header


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as stored, for an operator to look at: nothing in it is parsed."""

    source: str
    event_id: str
    type: str
    received_at: float
    created_at: float | None
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class DeliveryDetail:
    """One delivery with its event and every attempt recorded, oldest first."""

    delivery: DeliveryRecord
    event: StoredEvent
    attempts: list[AttemptRecord]


@dataclass(slots=True)
class AttemptResult:
    """What one attempt came to: the delivery's new state, and when to try again if pending;
    the rest is what the attempt history keeps (texts already redacted and escaped).

    Not frozen, though nothing changes one: a frozen dataclass's __init__ costs several
    times more, and a warehouse records one per row.
    """

    delivery_id: int
    state: DeliveryState
    next_attempt_at: float | None = None
    status: int | None = None
    error: str | None = None
    attempt: int = 0  # the delivery's attempt count (1 for the first)
    started_at: float | None = None  # None: when it is recorded
    duration_s: float | None = None
    response: str | None = None
    retry_after: str | None = None


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long settled events stay: an event leaves the store, with its deliveries, once none
    of them is pending, every delivered one finished `delivered_s` ago and every dead one
    `dead_s` ago. An event no route sent anywhere leaves `delivered_s` after it arrived.
    """

    delivered_s: float
    dead_s: float

    @property
    def shortest_s(self) -> float:
        """No event leaves sooner than this after it arrived."""
        return min(self.delivered_s, self.dead_s)

    def expires_at(
        self, received_at: float, deliveries: Iterable[tuple[DeliveryState, float]]
    ) -> float | None:
        """When the event may go, given its deliveries' (state, updated_at); None if pending."""
        expiry: float | None = None
        for state, updated_at in deliveries:
            if state == "pending":
                return None
            kept_s = self.delivered_s if state == "delivered" else self.dead_s
            expiry = updated_at + kept_s if expiry is None else max(expiry, updated_at + kept_s)
        return received_at + self.delivered_s if expiry is None else expiry


class Store(Protocol):
    async def open(self, *, daemon: bool = True) -> None:
        """`daemon=False` for operator commands that run beside a running daemon."""
        ...

    async def close(self) -> None: ...

    async def ingest(self, event: Event, targets: Sequence[str]) -> IngestResult:
        """Store the event and one pending delivery per target in one transaction.

        Returns only after the commit; a (source, id) seen before stores nothing new.
        Raises StoreError when the commit fails.
        """
        ...

    async def claim(self, target: str, limit: int, lease_s: float) -> list[Delivery]:
        """Lease up to `limit` due deliveries of `target` for `lease_s` seconds."""
        ...

    async def record(self, results: Sequence[AttemptResult]) -> None:
        """Record attempts' results, each in the attempt history too, and drop their leases,
        in one transaction."""
        ...

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Drop leases without recording a result (shutdown): the deliveries are due again."""
        ...

    async def next_due_at(self, target: str) -> float | None:
        """When the next pending delivery of `target` can be claimed, if there is one."""
        ...

    async def deliveries(
        self,
        state: DeliveryState | None = None,
        limit: int = 100,
        *,
        where: DeliveryFilter = EVERY_DELIVERY,
        before_id: int | None = None,
    ) -> list[DeliveryRecord]:
        """Newest first, at most `limit`; `before_id` continues a listing after its last id.

        Each filter alone is answered from an index in that order, so a listing reads about
        as many rows as it returns, however large the store."""
        ...

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None:
        """The delivery, its event and its attempts; None if there is no such delivery."""
        ...

    async def replay(self, delivery_ids: Sequence[int] | None = None) -> int:
        """Make dead deliveries pending again (all of them when `delivery_ids` is None)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Number of events and of deliveries in each state."""
        ...

    async def pending_by_target(self) -> dict[str, int]:
        """Number of pending deliveries of each target that has any."""
        ...

    async def purge(self, retention: RetentionPolicy) -> int:
        """Delete the events `retention` lets go as of now, with their deliveries, a few
        hundred per transaction so that ingest is never held up long; return how many."""
        ...

    async def ping(self) -> None:
        """Answer a trivial query, or raise StoreError: whether the store can be used now.
        Quick: readiness probes call it."""
        ...

    async def wait_failed(self) -> StoreError:
        """Return once the store can no longer be used (its file was deleted, replaced or is
        corrupt): it then refuses every read and write, and the daemon should exit."""
        ...
