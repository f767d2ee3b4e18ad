"""Retention in the PostgreSQL store: the SQLite store's walk and judgement (purge.py), with
the deliveries of each batch locked while it is judged, since replicas purge at once: a replay
waits for the batch, or the batch for the replay, and each event is deleted once.
"""

from __future__ import annotations

import asyncpg

from relay.store.base import DeliveryState, RetentionPolicy
from relay.store.purge import Walk, examinable, judge


async def purge_batch(
    conn: asyncpg.Connection, retention: RetentionPolicy, now: float, walk: Walk, limit: int
) -> tuple[int, Walk, bool]:
    """One batch, in the caller's transaction."""
    rows = [
        (row[0], row[1])
        for row in await conn.fetch(
            "SELECT pk, received_at FROM events WHERE pk > $1 ORDER BY pk LIMIT $2",
            walk.after_pk,
            limit,
        )
    ]
    examined = examinable(rows, retention, now)
    deliveries: dict[int, list[tuple[DeliveryState, float]]] = {}
    for event_pk, state, updated_at in await conn.fetch(
        "SELECT event_pk, state, updated_at FROM deliveries WHERE event_pk = ANY($1::bigint[])"
        " FOR UPDATE",
        [pk for pk, _ in examined],
    ):
        deliveries.setdefault(event_pk, []).append((state, updated_at))
    verdict = judge(examined, deliveries, retention, now, walk)
    deleted = 0
    if verdict.expired:
        await conn.execute(
            "DELETE FROM attempts WHERE delivery_id IN (SELECT id FROM deliveries"
            " WHERE event_pk = ANY($1::bigint[]))",
            verdict.expired,
        )
        await conn.execute(
            "DELETE FROM deliveries WHERE event_pk = ANY($1::bigint[])", verdict.expired
        )
        status = await conn.execute(
            "DELETE FROM events WHERE pk = ANY($1::bigint[])", verdict.expired
        )
        deleted = rowcount(status)  # another replica's pass may have taken some
    done = len(examined) < len(rows) or len(rows) < limit
    return deleted, verdict.walk, done


def rowcount(status: str) -> int:
    """The row count of a command status such as `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])
