"""Ingest into the PostgreSQL store: group commit, the events of a group in one statement.

One group is in flight at a time; events arriving meanwhile form the next one, so under load
a group grows with the time a commit takes. A statement per event would cost a round trip to
the server each, and an explicit transaction two more (BEGIN, COMMIT): on a busy machine each
round trip waits for the server process to be scheduled. So the events of a group without
ordering keys go in one statement that commits on its own (arrays of every column), with their
deliveries and one NOTIFY per target: one round trip, one flush to disk. An event with
ordering keys goes alone, in its place, since whether its delivery waits behind an older one
of its key depends on what was stored before it.

Should a group's statement fail for something one event holds (a value the server refuses),
nothing of it is stored and each event is tried alone, so it fails alone. A lost connection
fails every event of the group not yet stored: each gets a StoreError (ingest answers 503).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from relay import jsoncodec
from relay.errors import StoreError
from relay.events import Event
from relay.store.base import HELD_AT, IngestResult
from relay.store.pg_writes import is_connection_loss

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
        $6::text[], $7::text[], $8::float8[], $9::float8[]) WITH ORDINALITY
        AS i (source, event_id, type, received_at, body, headers, data_key, created_at, now, n)
), first AS (
    SELECT DISTINCT ON (source, event_id) * FROM input ORDER BY source, event_id, n
), e AS (
    INSERT INTO events (source, event_id, type, received_at, body, headers, data_key, created_at)
    SELECT source, event_id, type, received_at, body, headers, data_key, created_at
    FROM first ORDER BY n
    ON CONFLICT (source, event_id) DO NOTHING
    RETURNING pk, source, event_id
), stored AS (
    SELECT e.pk, f.n, f.now FROM e JOIN first f USING (source, event_id)
), d AS (
    INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at)
    SELECT s.pk, t.target, 'pending', s.now, s.now
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
    keys: Mapping[str, str] | None
    now: float
    answer: asyncio.Future[IngestResult]

    def answer_with(self, result: IngestResult | StoreError) -> None:
        if self.answer.done():  # its request went away meanwhile
            return
        if isinstance(result, StoreError):
            self.answer.set_exception(result)
        else:
            self.answer.set_result(result)


Describe = Callable[[BaseException], StoreError]
Acquire = Callable[[], contextlib.AbstractAsyncContextManager[asyncpg.Connection]]


class Ingester:
    def __init__(self, acquire: Acquire, channel: str, describe: Describe) -> None:
        self._acquire = acquire
        self._channel = channel
        self._describe = describe
        self._queue: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0

    def ingest(
        self, event: Event, targets: Sequence[str], keys: Mapping[str, str] | None, now: float
    ) -> asyncio.Future[IngestResult]:
        """Queue the event; the future answers once it is committed (StoreError if not)."""
        answer: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        headers = jsoncodec.dumps_compact(dict(event.headers))
        self._queue.append(Pending(event, headers, targets, keys or None, now, answer))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all(), name="postgres-ingest")
        return answer

    async def _flush_all(self) -> None:
        try:
            await asyncio.sleep(0)  # events posted in this loop turn join the first group
            while self._queue:
                group, self._queue = self._queue, []
                try:
                    async with self._acquire() as conn:
                        for run in _runs(group):
                            await self._store(conn, run)
                except Exception as exc:  # the connection: whatever is not stored yet fails
                    error = self._describe(exc)
                    for pending in group:
                        pending.answer_with(error)
        finally:
            self._flusher = None
            for pending in self._queue:  # cancelled meanwhile (close)
                pending.answer_with(StoreError("the store closed before the event was stored"))
            self._queue = []

    async def _store(self, conn: asyncpg.Connection, run: Sequence[Pending]) -> None:
        """Store a run of events in one statement, or each alone if that fails."""
        try:
            if run[0].keys:
                results: Sequence[IngestResult | StoreError] = [
                    await _insert_one(conn, run[0], self._channel)
                ]
            else:
                results = await _insert_many(conn, run, self._channel)
        except Exception as exc:
            if is_connection_loss(exc):
                raise
            if len(run) == 1:
                run[0].answer_with(self._describe(exc))
                return
            for pending in run:  # one bad event must not fail the others
                await self._store(conn, [pending])
            return
        self.commits += 1
        for pending, result in zip(run, results, strict=True):
            pending.answer_with(result)

    async def close(self) -> None:
        """Wait until every event queued so far has its answer."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


def _runs(group: Sequence[Pending]) -> list[list[Pending]]:
    """The group in order, as runs of events without keys and events with keys alone."""
    runs: list[list[Pending]] = []
    for pending in group:
        if pending.keys or not runs or runs[-1][0].keys:
            runs.append([pending])
        else:
            runs[-1].append(pending)
    return runs


async def _insert_many(
    conn: asyncpg.Connection, group: Sequence[Pending], channel: str
) -> list[IngestResult]:
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
        [p.now for p in group],
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


async def _insert_one(conn: asyncpg.Connection, pending: Pending, channel: str) -> IngestResult:
    params = _one_params(pending, channel)
    row = await conn.fetchrow(INGEST_ONE, *params)
    if row is None:
        return IngestResult(duplicate=True, deliveries=0)
    return IngestResult(duplicate=False, deliveries=len(pending.targets))


def _one_params(pending: Pending, channel: str) -> tuple[Any, ...]:
    event, keys = pending.event, pending.keys or {}
    return (
        event.source,
        event.id,
        event.type,
        event.received_at,
        event.body,
        pending.headers,
        event.data_key,
        event.created_at,
        list(pending.targets),
        pending.now,
        HELD_AT,
        [keys.get(t) for t in pending.targets],
        channel,
    )
