"""Targets' state in the SQLite store: their pauses, last success and error, and backlog.

Plain functions over a connection or a cursor: the store runs the reads on its connection
(`relay targets`, the admin API) or, for the gauges every few seconds, in a thread on a
read-only connection of its own; the writes go through its group commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from typing import Any

from relay.store.base import TargetActivity, TargetPause, TargetStatus

# Per target, from the partial indexes alone (covering: no table row is read). The pending
# deliveries are in two, those nobody leased and those in flight (schema.py); each index
# holds the delivery's id, and ids grow with arrival: the smallest is the oldest.
PENDING_BY_TARGET = (
    "SELECT target, SUM(n), MIN(oldest) FROM ("
    "SELECT target, COUNT(*) AS n, MIN(id) AS oldest FROM deliveries INDEXED BY"
    " deliveries_waiting WHERE state = 'pending' AND lease_until = 0 GROUP BY target"
    " UNION ALL SELECT target, COUNT(*), MIN(id) FROM deliveries INDEXED BY deliveries_leased"
    " WHERE state = 'pending' AND lease_until > 0 GROUP BY target"
    ") GROUP BY target"
)
DEAD_BY_TARGET = (
    "SELECT target, COUNT(*) FROM deliveries INDEXED BY deliveries_dead"
    " WHERE state = 'dead' GROUP BY target"
)
DELIVERED_SINCE = (
    "SELECT target, COUNT(*) FROM deliveries INDEXED BY deliveries_delivered"
    " WHERE state = 'delivered' AND updated_at >= ? GROUP BY target"
)
STORED_STATE = (
    "SELECT name, paused_at, paused_reason, last_success_at, last_error_at, last_error FROM targets"
)


def target_statuses(db: sqlite3.Connection) -> list[TargetStatus]:
    """Every target that holds deliveries or state, by name (50-70 ms for 200,000 pending and
    200,000 dead deliveries: docs/benchmarks.md)."""
    pending = {target: (count, oldest) for target, count, oldest in db.execute(PENDING_BY_TARGET)}
    dead = dict(db.execute(DEAD_BY_TARGET).fetchall())
    stored = {row[0]: tuple(row[1:]) for row in db.execute(STORED_STATE)}
    received = _received_at_of(db, [oldest for _, oldest in pending.values()])
    return assemble_statuses(pending, dead, stored, received)


def assemble_statuses(
    pending: Mapping[str, tuple[int, int]],
    dead: Mapping[str, int],
    stored: Mapping[str, tuple[Any, ...]],
    received: Mapping[int, float],
) -> list[TargetStatus]:
    """Statuses by name from each target's (pending count, oldest pending id), dead count and
    stored (paused_at, reason, last success, last error time, last error), and when the
    oldest pending deliveries' events arrived (by delivery id)."""
    statuses = []
    for name in sorted({*pending, *dead, *stored}):
        count, oldest_id = pending.get(name, (0, None))
        paused_at, reason, success_at, error_at, error = stored.get(name, (None,) * 5)
        statuses.append(
            TargetStatus(
                name=name,
                pause=TargetPause(paused_at, reason) if paused_at is not None else None,
                pending=count,
                dead=dead.get(name, 0),
                oldest_pending_at=received.get(oldest_id) if oldest_id is not None else None,
                activity=TargetActivity(success_at, error_at, error),
            )
        )
    return statuses


def delivered_since(db: sqlite3.Connection, since: float) -> dict[str, int]:
    """Deliveries delivered at or after `since`, by target: a range of the partial index of
    delivered deliveries by settling time, which covers the count (docs/benchmarks.md)."""
    return dict(db.execute(DELIVERED_SINCE, (since,)).fetchall())


def _received_at_of(db: sqlite3.Connection, delivery_ids: list[int]) -> dict[int, float]:
    """When relay received the events of these deliveries, by delivery id."""
    if not delivery_ids:
        return {}
    marks = ",".join("?" * len(delivery_ids))
    rows = db.execute(
        "SELECT d.id, e.received_at FROM deliveries d JOIN events e ON e.pk = d.event_pk"
        f" WHERE d.id IN ({marks})",
        delivery_ids,
    )
    return dict(rows.fetchall())


def target_pause(db: sqlite3.Connection, target: str) -> TargetPause | None:
    row = db.execute(
        "SELECT paused_at, paused_reason FROM targets WHERE name = ? AND paused_at IS NOT NULL",
        (target,),
    ).fetchone()
    return TargetPause(row[0], row[1]) if row is not None else None


def pause(cur: sqlite3.Cursor, target: str, reason: str, now: float) -> TargetPause:
    """Pause `target` (a pause already in force keeps its time and reason); the pause."""
    cur.execute(
        "INSERT INTO targets (name, paused_at, paused_reason) VALUES (:target, :now, :why)"
        " ON CONFLICT (name) DO UPDATE SET paused_at = :now, paused_reason = :why"
        " WHERE paused_at IS NULL",
        {"target": target, "now": now, "why": reason},
    )
    in_force = target_pause(cur.connection, target)
    return in_force if in_force is not None else TargetPause(now, reason)


def resume(cur: sqlite3.Cursor, target: str, now: float) -> TargetPause | None:
    """End `target`'s pause, if any (the pause it was). Time spent paused does not count
    toward `max_elapsed`: each pending delivery's first attempt moves on by it."""
    ended = target_pause(cur.connection, target)
    if ended is None:
        return None
    cur.execute(
        "UPDATE targets SET paused_at = NULL, paused_reason = NULL WHERE name = ?", (target,)
    )
    for leases in ("lease_until = 0", "lease_until > 0"):  # one partial index each
        cur.execute(
            "UPDATE deliveries SET first_attempt_at = first_attempt_at + :paused_s"
            f" WHERE state = 'pending' AND {leases} AND target = :target"
            " AND first_attempt_at IS NOT NULL",
            {"paused_s": max(0.0, now - ended.since), "target": target},
        )
    return ended


def note_activity(cur: sqlite3.Cursor, target: str, activity: TargetActivity) -> None:
    cur.execute(
        "INSERT INTO targets (name, last_success_at, last_error_at, last_error)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
        " last_success_at = COALESCE(excluded.last_success_at, last_success_at),"
        " last_error_at = COALESCE(excluded.last_error_at, last_error_at),"
        " last_error = COALESCE(excluded.last_error, last_error)",
        (target, activity.last_success_at, activity.last_error_at, activity.last_error),
    )
