"""Targets' state in the PostgreSQL store: pauses, and the last success and error. Plain
functions over a connection, run in the store's group commits (statuses: pg_views.py)."""

from __future__ import annotations

import asyncpg

from relay.store.base import TargetActivity, TargetPause


async def pause(conn: asyncpg.Connection, target: str, reason: str, now: float) -> TargetPause:
    """Pause `target` (a pause already in force keeps its time and reason); the pause."""
    await conn.execute(
        "INSERT INTO targets (name, paused_at, paused_reason) VALUES ($1, $2, $3)"
        " ON CONFLICT (name) DO UPDATE SET paused_at = $2, paused_reason = $3"
        " WHERE targets.paused_at IS NULL",
        target,
        now,
        reason,
    )
    row = await conn.fetchrow(
        "SELECT paused_at, paused_reason FROM targets WHERE name = $1", target
    )
    return TargetPause(row[0], row[1]) if row is not None else TargetPause(now, reason)


async def resume(conn: asyncpg.Connection, target: str, now: float) -> TargetPause | None:
    """End `target`'s pause, if any (the pause it was); each pending delivery's first attempt
    moves on by the time paused, which then does not count toward `max_elapsed`."""
    row = await conn.fetchrow(
        "SELECT paused_at, paused_reason FROM targets WHERE name = $1"
        " AND paused_at IS NOT NULL FOR UPDATE",
        target,
    )
    if row is None:
        return None
    ended = TargetPause(row[0], row[1])
    await conn.execute(
        "UPDATE targets SET paused_at = NULL, paused_reason = NULL WHERE name = $1", target
    )
    await conn.execute(
        "UPDATE deliveries SET first_attempt_at = first_attempt_at + $1"
        " WHERE state = 'pending' AND target = $2 AND first_attempt_at IS NOT NULL",
        max(0.0, now - ended.since),
        target,
    )
    return ended


async def note_activity(conn: asyncpg.Connection, target: str, activity: TargetActivity) -> None:
    """Keep `target`'s last success and error (None fields leave theirs as they are)."""
    await conn.execute(
        "INSERT INTO targets (name, last_success_at, last_error_at, last_error)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (name) DO UPDATE SET"
        " last_success_at = COALESCE(excluded.last_success_at, targets.last_success_at),"
        " last_error_at = COALESCE(excluded.last_error_at, targets.last_error_at),"
        " last_error = COALESCE(excluded.last_error, targets.last_error)",
        target,
        activity.last_success_at,
        activity.last_error_at,
        activity.last_error,
    )
