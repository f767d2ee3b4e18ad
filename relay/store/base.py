"""The store interface. SQLite is the embedded implementation; PostgreSQL lets replicas share one.

A delivery is `pending` until it is `delivered` or `dead`. A worker claims due pending
deliveries with a lease; a claim counts as an attempt, so a crash mid-send is counted too.

A paused target is claimed for by no one; its deliveries wait. A delivery with an ordering key
waits (`HELD_AT`) while an older one of its target and key is pending, and is released when
that one is delivered or dead: only the oldest pending delivery of a key is ever claimed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from relay.errors import StoreError
from relay.events import Delivery, Event
from relay.ratelimit import Limiter

DeliveryState = Literal["pending", "delivered", "dead"]

# The next attempt of a delivery held behind an older one of its key: "not by itself". The
# last second of year 9999, so that it still reads as a date.
HELD_AT = 253_402_300_799.0


def is_held(next_attempt_at: float) -> bool:
    """Whether a pending delivery waits for an older one of its key rather than for a time."""
    return next_attempt_at >= HELD_AT


@dataclass(slots=True)
class IngestResult:
    """One per request: not frozen (as EventIdentity), though nothing changes one."""

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
    until: float | None = None  # of events received before this time (epoch seconds)
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
    data_key: str | None = None  # where the sender's envelope keeps its data (`Event.data_key`)


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
    keyed: bool = False  # has an ordering key: once settled, the next of its key may go


@dataclass(frozen=True, slots=True)
class TargetPause:
    """Why and since when a target is paused: nothing is claimed for it until it is resumed."""

    since: float
    reason: str


@dataclass(frozen=True, slots=True)
class TargetActivity:
    """A target's last delivered attempt and last failed one (its error stored as clean text:
    secrets redacted, control characters escaped)."""

    last_success_at: float | None = None
    last_error_at: float | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """One target as an operator sees it (`relay targets`)."""

    name: str
    pause: TargetPause | None
    pending: int
    dead: int
    oldest_pending_at: float | None  # when relay received the event of the oldest pending one
    activity: TargetActivity


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

    def on_new_deliveries(self, wake: Callable[[Iterable[str]], None]) -> None:
        """Call `wake(targets)` when another process stores deliveries for those targets (a
        store shared by replicas); this process's own ingest wakes its workers itself."""
        ...

    def rate_limiter(self, target: str, per_second: float) -> Limiter:
        """The send limiter of `target`: shared by every process on a shared store."""
        ...

    async def ingest(
        self, event: Event, targets: Sequence[str], keys: Mapping[str, str] | None = None
    ) -> IngestResult:
        """Store the event and one pending delivery per target in one transaction; a target
        in `keys` orders its deliveries by that key.

        Returns only after the commit; a (source, id) seen before stores nothing new.
        Raises StoreError when the commit fails.
        """
        ...

    async def claim(self, target: str, limit: int, lease_s: float) -> list[Delivery]:
        """Lease up to `limit` due deliveries of `target` for `lease_s` seconds: none while the
        target is paused, and of each ordering key only the oldest pending delivery."""
        ...

    async def record(self, results: Sequence[AttemptResult]) -> None:
        """Record attempts' results, each in the attempt history too, and drop their leases,
        in one transaction."""
        ...

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Drop leases without recording a result (shutdown): the deliveries are due again."""
        ...

    async def next_due_at(self, target: str) -> float | None:
        """When the next pending delivery of `target` that nobody holds a lease on comes due,
        if there is one and the target is not paused."""
        ...

    async def forget_order_keys(self, target: str) -> int:
        """`target` orders no more: its pending deliveries lose their keys, and those held
        behind an older one of their key are due now. How many were held."""
        ...

    async def target_pause(self, target: str) -> TargetPause | None:
        """Whether `target` is paused, why and since when."""
        ...

    async def pause_target(self, target: str, reason: str) -> TargetPause:
        """Claim nothing for `target` until it is resumed; the pause in force (a target
        already paused keeps its reason and time)."""
        ...

    async def resume_target(self, target: str) -> TargetPause | None:
        """Claim for `target` again; the pause that ended, or None if it was not paused.

        The time spent paused does not count toward a delivery's `max_elapsed`: each pending
        delivery's retry window moves on by the length of the pause."""
        ...

    async def note_activity(self, target: str, activity: TargetActivity) -> None:
        """Keep `target`'s last success and last error (None fields leave theirs as they are)."""
        ...

    async def target_statuses(self) -> list[TargetStatus]:
        """Every target the store knows (one with deliveries, a pause or activity), by name."""
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

    async def delivered_since(self, since: float) -> dict[str, int]:
        """How many deliveries of each target were delivered at or after `since` (the
        console's deliveries per minute), counted off the event loop from an index of
        delivered deliveries by the time they were settled: it reads as many index entries as
        it counts, never the rest of the store."""
        ...

    async def target_statuses_aside(self) -> list[TargetStatus]:
        """`target_statuses`, read off the event loop (the gauges, every few seconds): it
        costs ingest nothing."""
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
