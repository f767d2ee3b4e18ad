"""Retention in the SQLite store: walk the events oldest first, a batch per transaction; an
event goes with its deliveries and their attempts.

A pass starts at the oldest event and stops at the first one too young to go (events are
numbered in the order they arrived). Events kept on the way (a delivery pending or not yet
old enough) would be read again by every pass, so the next pass starts where this one
stopped, until the earliest moment one of them could go, and at the latest the shorter
retention after this pass: an event arriving later cannot go before that, wherever SQLite
numbers it (it reuses the numbers of the newest rows once they are deleted), and a later
change to an event only moves its moment later (a delivery settling now stays at least the
shorter retention).

Deleted rows' pages go to SQLite's free list and are reused by later inserts, so under steady
load the file stops growing (it does not shrink: that would take a VACUUM).
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from relay.store.base import DeliveryState, RetentionPolicy

# Events per transaction (each with its deliveries): about a millisecond of work, which is
# how long a batch holds up the ingests that share its commit (docs/benchmarks.md).
BATCH_EVENTS = 100


@dataclass(frozen=True, slots=True)
class Walk:
    """Where the next pass may start, and until when starting there skips nothing."""

    after_pk: int = 0
    until: float = -math.inf

    def start(self, now: float) -> Walk:
        """Where a pass at `now` starts: here while that skips nothing, else at the oldest."""
        return self if now < self.until else Walk(0, math.inf)


@dataclass(frozen=True, slots=True)
class Batch:
    purged: int
    walk: Walk  # the walk so far: last event examined, earliest moment a kept one may go
    done: bool  # reached an event too young to go, or the newest
    took_s: float  # how long its statements ran, for pacing


def purge_batch(
    cur: sqlite3.Cursor, retention: RetentionPolicy, now: float, walk: Walk, limit: int
) -> Batch:
    """Examine up to `limit` events after `walk.after_pk`; delete those `retention` lets go."""
    started = time.perf_counter()
    rows = cur.execute(
        "SELECT pk, received_at FROM events WHERE pk > ? ORDER BY pk LIMIT ?",
        (walk.after_pk, limit),
    ).fetchall()
    examined = examinable(rows, retention, now)
    verdict = judge(examined, _deliveries(cur, examined), retention, now, walk)
    expired = [(pk,) for pk in verdict.expired]
    cur.executemany(
        "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE event_pk = ?)",
        expired,
    )
    cur.executemany("DELETE FROM deliveries WHERE event_pk = ?", expired)
    cur.executemany("DELETE FROM events WHERE pk = ?", expired)
    done = len(examined) < len(rows) or len(rows) < limit
    return Batch(len(expired), verdict.walk, done, time.perf_counter() - started)


def examinable(
    rows: Sequence[tuple[int, float]], retention: RetentionPolicy, now: float
) -> Sequence[tuple[int, float]]:
    """The (pk, received_at) rows, oldest first, up to the first too young to go: none after
    it can go yet either."""
    young_after = now - retention.shortest_s
    first_young = next((i for i, (_, at) in enumerate(rows) if at > young_after), None)
    return rows if first_young is None else rows[:first_young]


@dataclass(frozen=True, slots=True)
class Verdict:
    expired: list[int]  # the pks of the events that go now
    walk: Walk  # where the next batch starts, and until when starting there skips nothing


def judge(
    examined: Sequence[tuple[int, float]],
    deliveries: Mapping[int, Sequence[tuple[DeliveryState, float]]],
    retention: RetentionPolicy,
    now: float,
    walk: Walk,
) -> Verdict:
    """Which of the examined events go now, given their deliveries' (state, updated_at)."""
    expired: list[int] = []
    until = min(walk.until, now + retention.shortest_s)
    for pk, received_at in examined:
        expiry = retention.expires_at(received_at, deliveries.get(pk, ()))
        if expiry is not None and expiry <= now:
            expired.append(pk)
        else:
            until = min(until, now + retention.shortest_s if expiry is None else expiry)
    after_pk = examined[-1][0] if examined else walk.after_pk
    return Verdict(expired, Walk(after_pk, until))


def _deliveries(
    cur: sqlite3.Cursor, events: Sequence[tuple[int, float]]
) -> dict[int, list[tuple[DeliveryState, float]]]:
    by_event: dict[int, list[tuple[DeliveryState, float]]] = defaultdict(list)
    if not events:
        return by_event
    for event_pk, state, updated_at in cur.execute(
        "SELECT event_pk, state, updated_at FROM deliveries WHERE event_pk BETWEEN ? AND ?",
        (events[0][0], events[-1][0]),
    ):
        by_event[event_pk].append((state, updated_at))
    return by_event
