"""Ingest into the PostgreSQL store: the events of one group commit in one statement.

A statement per event costs a round trip to the server each, and a group holds as many events
as arrived while the previous commit ran: under load, round trips in a row, not the commit,
would bound ingest. So the events of a group without ordering keys go in one statement (one
round trip, arrays of every column), with their deliveries and one NOTIFY per target. An event
with ordering keys goes alone, in order, since whether its delivery waits behind an older one
of its key depends on what the statements before it stored.

Should the group's statement fail for something one event holds (a value the server refuses),
each event is tried alone, each in a savepoint, so it fails alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import asyncpg

from relay import jsoncodec
from relay.errors import StoreError
from relay.events import Event
from relay.store.base import HELD_AT, IngestResult
from relay.store.pg_writes import PgGroupCommit, is_connection_loss

# One event: stored, its deliveries (a keyed one held while another of its target and key is
# pending) and a notification per target; no row at all if its (source, id) is stored.
INGEST_ONE = """
WITH e AS (
    INSERT INTO events (source, event_id, type, received_at, body, headers, data_key, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (source, event_id) DO NOTHING
    RETURNING pk
), d AS (
    INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at, order_key)
    SELECT e.pk, t.target, 'pending', CASE WHEN t.key IS NOT NULL AND EXISTS (SELECT 1
        FROM deliveries o WHERE o.state = 'pending' AND o.target = t.target
        AND o.order_key = t.key) THEN $11::float8 ELSE $10::float8 END, $10, t.key
    FROM e, unnest($9::text[], $12::text[]) AS t (target, key)
    RETURNING target
)
SELECT e.pk, (SELECT count(*) FROM (SELECT pg_notify($13::text, target) FROM d) AS n) FROM e
"""
# Many events without keys: the numbers (1, 2, ...) of those stored, in arrival order; of an id
# given twice, the first.
INGEST_MANY = """
WITH input AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bytea[],
        $6::text[], $7::text[], $8::float8[]) WITH ORDINALITY
        AS i (source, event_id, type, received_at, body, headers, data_key, created_at, n)
), first AS (
    SELECT DISTINCT ON (source, event_id) * FROM input ORDER BY source, event_id, n
), e AS (
    INSERT INTO events (source, event_id, type, received_at, body, headers, data_key, created_at)
    SELECT source, event_id, type, received_at, body, headers, data_key, created_at
    FROM first ORDER BY n
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING pk, source, event_id
), stored AS (
    SELECT e.pk, f.n FROM e JOIN first f USING (source, event_id)
), d AS (
    INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at)
    SELECT s.pk, t.target, 'pending', $9, $9
    FROM stored s JOIN unnest($10::bigint[], $11::text[]) AS t (n, target) ON t.n = s.n
    ORDER BY s.pk
    RETURNING target
)
SELECT s.n, (SELECT count(*) FROM (SELECT pg_notify($12::text, target)
    FROM (SELECT DISTINCT target FROM d) AS t) AS n) FROM stored s
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """One event waiting for its group's statement."""

    event: Event
    headers: str  # as stored
    targets: Sequence[str]
    answer: asyncio.Future[IngestResult]


Describe = Callable[[BaseException], StoreError]


class Ingester:
    def __init__(self, writes: PgGroupCommit, channel: str, describe: Describe) -> None:
        self._writes = writes
        self._channel = channel
        self._describe = describe
        # The group still taking events, and the answer of its transaction.
        self._open: tuple[list[Pending], asyncio.Future[Any]] | None = None

    def ingest(
        self, event: Event, targets: Sequence[str], keys: Mapping[str, str] | None, now: float
    ) -> asyncio.Future[IngestResult]:
        """Queue the event; the future answers once its group committed (StoreError if not)."""
        headers = jsoncodec.dumps_compact(dict(event.headers))
        if keys:
            params = _one_params(event, headers, targets, keys, now, self._channel)
            return self._writes.submit(partial(_insert_one, params=params, targets=targets))
        answer: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        if self._open is None or self._open[1].done():  # done: it failed before it ran
            group: list[Pending] = []
            done = self._writes.submit(partial(self._insert_group, group=group, now=now))
            done.add_done_callback(partial(_answer_group, group=group, describe=self._describe))
            self._open = (group, done)
        self._open[0].append(Pending(event, headers, targets, answer))
        return answer

    async def _insert_group(
        self, conn: asyncpg.Connection, group: list[Pending], now: float
    ) -> list[IngestResult | StoreError]:
        if self._open is not None and self._open[0] is group:
            self._open = None  # events from now on go in the next group
        try:
            async with conn.transaction():  # a savepoint: the one-by-one path may follow
                return await _insert_many(conn, group, now, self._channel)
        except Exception as exc:
            if is_connection_loss(exc):
                raise
        results: list[IngestResult | StoreError] = []
        for pending in group:  # one bad event must not fail the others
            params = _one_params(
                pending.event, pending.headers, pending.targets, {}, now, self._channel
            )
            try:
                async with conn.transaction():
                    results.append(await _insert_one(conn, params, pending.targets))
            except Exception as exc:
                if is_connection_loss(exc):
                    raise
                results.append(self._describe(exc))
        return results


async def _insert_many(
    conn: asyncpg.Connection, group: Sequence[Pending], now: float, channel: str
) -> list[IngestResult | StoreError]:
    events = [p.event for p in group]
    numbers: list[int] = []
    targets: list[str] = []
    for number, pending in enumerate(group, start=1):
        numbers += [number] * len(pending.targets)
        targets += pending.targets
    rows = await conn.fetch(
        INGEST_MANY,
        [e.source for e in events],
        [e.id for e in events],
        [e.type for e in events],
        [e.received_at for e in events],
        [e.body for e in events],
        [p.headers for p in group],
        [e.data_key for e in events],
        [e.created_at for e in events],
        now,
        numbers,
        targets,
        channel,
    )
    stored = {row[0] for row in rows}
    return [
        IngestResult(duplicate=False, deliveries=len(p.targets))
        if number in stored
        else IngestResult(duplicate=True, deliveries=0)
        for number, p in enumerate(group, start=1)
    ]


async def _insert_one(
    conn: asyncpg.Connection, params: tuple[Any, ...], targets: Sequence[str]
) -> IngestResult:
    row = await conn.fetchrow(INGEST_ONE, *params)
    if row is None:
        return IngestResult(duplicate=True, deliveries=0)
    return IngestResult(duplicate=False, deliveries=len(targets))


def _one_params(
    event: Event,
    headers: str,
    targets: Sequence[str],
    keys: Mapping[str, str],
    now: float,
    channel: str,
) -> tuple[Any, ...]:
    return (
        event.source,
        event.id,
        event.type,
        event.received_at,
        event.body,
        headers,
        event.data_key,
        event.created_at,
        list(targets),
        now,
        HELD_AT,
        [keys.get(t) for t in targets],
        channel,
    )


def _answer_group(
    done: asyncio.Future[list[IngestResult | StoreError]],
    group: list[Pending],
    describe: Describe,
) -> None:
    """Give each event of the group its answer once the group's transaction is over."""
    if done.cancelled():
        error: BaseException | None = StoreError("the store closed before the event was stored")
    else:
        error = done.exception()
    for index, pending in enumerate(group):
        if pending.answer.done():
            continue
        if error is not None:
            pending.answer.set_exception(describe(error))
            continue
        result = done.result()[index]
        if isinstance(result, StoreError):
            pending.answer.set_exception(result)
        else:
            pending.answer.set_result(result)
