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


@dataclass(frozen=True, slots=True)
class TargetStats:
    """One target's deliveries as its gauges show them."""

    pending: int = 0
    dead: int = 0
    oldest_pending_at: float | None = None  # when relay received the oldest pending one's event
    # The hook for pausing: relay cannot pause a target yet. A store that can sets it here,
    # and lists a paused target even when it holds no delivery.
    paused: bool = False


@dataclass(slots=True)
class AttemptResult:
    """What one attempt came to: the delivery's new state, and when to try again if pending.

    Not frozen, though nothing changes one: a frozen dataclass's __init__ costs several
    times more, and a warehouse records one per row.
    """

    delivery_id: int
    state: DeliveryState
    next_attempt_at: float | None = None
    status: int | None = None
    error: str | None = None


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
        """Record attempts' results and drop their leases, in one transaction."""
        ...

    async def release(self, delivery_ids: Sequence[int]) -> None:
        """Drop leases without recording a result (shutdown): the deliveries are due again."""
        ...

    async def next_due_at(self, target: str) -> float | None:
        """When the next pending delivery of `target` can be claimed, if there is one."""
        ...

    async def deliveries(
        self, state: DeliveryState | None = None, limit: int = 100
    ) -> list[DeliveryRecord]: ...

    async def replay(self, delivery_ids: Sequence[int] | None = None) -> int:
        """Make dead deliveries pending again (all of them when `delivery_ids` is None)."""
        ...

    async def counts(self) -> dict[str, int]:
        """Number of events and of deliveries in each state."""
        ...

    async def pending_by_target(self) -> dict[str, int]:
        """Number of pending deliveries of each target that has any."""
        ...

    async def target_stats(self) -> dict[str, TargetStats]:
        """Each target with pending or dead deliveries: how many, and how old the oldest
        pending one is. Read off the event loop, from indexes alone: it costs ingest nothing."""
        ...

    async def purge(self, retention: RetentionPolicy) -> int:
        """Delete the events `retention` lets go as of now, with their deliveries, a few
        hundred per transaction so that ingest is never held up long; return how many."""
        ...

    async def wait_failed(self) -> StoreError:
        """Return once the store can no longer be used (its file was deleted, replaced or is
        corrupt): it then refuses every read and write, and the daemon should exit."""
        ...
