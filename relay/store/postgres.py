"""The shared store: PostgreSQL through an asyncpg pool, for several relay replicas at once.

Same semantics as the SQLite store (relay/store/base.py), shared by every replica:

- ingest commits in groups (pg_ingest.py), a group's events in one statement that inserts
  them (nothing for one whose (source, id) is stored: `ON CONFLICT DO NOTHING`, whichever
  replica stored it), their deliveries, and a NOTIFY per target that every replica's workers
  wake on (pg_listen.py); the other writes share group commits of their own (pg_writes.py);
- a claim leases with `FOR UPDATE SKIP LOCKED`, so replicas never claim the same delivery;
  a replica that dies leaves its leases to run out, and then any replica claims those
  deliveries again. A daemon has a name (`replica`: its host name and listen port) held as an
  advisory lock for as long as it runs (pg_replica.py); restarted under that name, it takes the
  lock and releases at once the leases its dead predecessor held, which no live process holds;
- pauses, attempt history, activity and the rate limit slots are rows every replica reads.

Only what acknowledges an event waits for the server to flush its commit to disk. The worker's
own writes (claims, results, activity, rate slots) go through a second pool whose connections
commit without waiting (`synchronous_commit = off`): a database crash may then lose the last
few of them, and what that costs is a delivery sent again, which at-least-once allows; each
attempt saves a disk flush (about 2 ms each on the machine in docs/benchmarks.md).

That pool also fixes how its statements are planned (`WORKER_SETTINGS`). Each of them finds
its rows through an index (a key, or the walk of a partial index), whatever the table's size
and whatever its parameters. Left to itself the server planned every claim anew (as costly as
running it), and cached a plan for the results made while the table was still small: a scan
of the whole deliveries table per result, kept until autovacuum next analysed the table.

Times are the injected clock's (epoch seconds), as in the SQLite store: replicas' clocks must
agree to well under a lease (NTP does). While no commit is possible (the server restarts,
fails over, a backend is terminated) every call raises StoreError and ingest answers 503; the
pool opens new connections by itself once the server answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar, cast

import asyncpg

from relay.errors import StoreError
from relay.events import Delivery, Event
from relay.ratelimit import Limiter
from relay.store import pg_targets, pg_views
from relay.store.base import (
    EVERY_DELIVERY,
    HELD_AT,
    AttemptResult,
    DeliveryDetail,
    DeliveryFilter,
    DeliveryRecord,
    DeliveryState,
    IngestResult,
    RetentionPolicy,
    TargetActivity,
    TargetPause,
    TargetStatus,
)
from relay.store.pg_ingest import Ingester
from relay.store.pg_listen import Listener, WakeTargets, channel_name
from relay.store.pg_purge import purge_batch, rowcount
from relay.store.pg_ratelimit import SharedRateLimiter
from relay.store.pg_replica import ReplicaLock, release_leases_of
from relay.store.pg_schema import MIGRATIONS, migrate
from relay.store.pg_writes import PgGroupCommit, is_connection_loss
from relay.store.purge import BATCH_EVENTS, Walk
from relay.store.rows import ATTEMPT_OUTCOMES, event_from_row
from relay.store.url import PostgresUrl

log = logging.getLogger("relay.store")

T = TypeVar("T")

POOL_SIZE = 10
# The worker's pool: commits that do not wait for the disk, one plan per statement, made for
# its index (see the module's docstring).
WORKER_SETTINGS = {
    "synchronous_commit": "off",
    "plan_cache_mode": "force_generic_plan",
    "enable_seqscan": "off",
}
CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0  # a statement the server does not answer fails: ingest answers 503
PURGE_REST_RATIO = 1.0  # retention rests as long as each batch took


def claimable(target: str) -> str:
    """What a worker may claim, as SQL over `d`, a pending delivery of the target in parameter
    `target` ($n): nothing while the target is paused, and of an ordering key only the oldest
    pending delivery."""
    return (
        f"NOT EXISTS (SELECT 1 FROM targets WHERE name = {target} AND paused_at IS NOT NULL)"
        " AND (d.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries o"
        f" WHERE o.state = 'pending' AND o.target = {target} AND o.order_key = d.order_key"
        " AND o.id < d.id))"
    )


CLAIM = f"""
WITH c AS (
    UPDATE deliveries SET attempts = attempts + 1,
        first_attempt_at = COALESCE(first_attempt_at, $1), lease_until = $2, updated_at = $1,
        leased_by = $5
    WHERE id IN (SELECT d.id FROM deliveries d WHERE d.state = 'pending' AND d.target = $3
        AND d.next_attempt_at <= $1 AND d.lease_until <= $1 AND {claimable("$3")}
        ORDER BY d.next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED)
    RETURNING id, event_pk, attempts, first_attempt_at, order_key
)
SELECT c.id, c.attempts, c.first_attempt_at, c.order_key, e.pk, e.source, e.event_id, e.type,
    e.received_at, e.body, e.headers, e.data_key, e.created_at
FROM c JOIN events e ON e.pk = c.event_pk ORDER BY c.id
"""
# Attempts' results, and each in the history, in one statement.
RECORD = """
WITH r AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::int[], $5::text[])
        AS r (id, state, next_at, status, error)
), u AS (
    UPDATE deliveries d SET state = r.state,
        next_attempt_at = COALESCE(r.next_at, d.next_attempt_at), last_status = r.status,
        last_error = r.error, lease_until = 0, updated_at = $6
    FROM r WHERE d.id = r.id
)
INSERT INTO attempts (delivery_id, number, started_at, duration_s, result, status, error,
    response, retry_after)
SELECT * FROM unnest($1::bigint[], $7::int[], $8::float8[], $9::float8[], $10::text[],
    $4::int[], $5::text[], $11::text[], $12::text[])
"""
# A delivery with a key is settled: the oldest pending one of its key is due now, if held.
RELEASE_NEXT = (
    "UPDATE deliveries SET next_attempt_at = $1, updated_at = $1"
    " WHERE next_attempt_at = $2 AND id = (SELECT min(n.id) FROM deliveries s"
    " JOIN deliveries n ON n.target = s.target AND n.order_key = s.order_key"
    " AND n.state = 'pending' WHERE s.id = $3)"
)
REPLAY = (
    "UPDATE deliveries SET state = 'pending', attempts = 0, first_attempt_at = NULL,"
    " next_attempt_at = CASE WHEN order_key IS NOT NULL AND EXISTS (SELECT 1"
    " FROM deliveries o WHERE o.state = 'pending' AND o.target = deliveries.target"
    " AND o.order_key = deliveries.order_key) THEN $2::float8 ELSE $1::float8 END,"
    " lease_until = 0, updated_at = $1 WHERE state = 'dead'"
)


class PostgresStore:
    def __init__(
        self,
        url: PostgresUrl,
        clock: Callable[[], float],
        *,
        pool_size: int = POOL_SIZE,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        replica: str | None = None,
    ) -> None:
        self.url = url
        self.replica = replica  # a daemon's name
        self._lease_owner = replica  # what its claims carry: the name, while its lock is held
        self._clock = clock
        self._pool_size = pool_size
        self._command_timeout_s = command_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._pool: asyncpg.Pool | None = None
        self._relaxed_pool: asyncpg.Pool | None = None  # commits without waiting for the disk
        self._writes = PgGroupCommit(self._acquire, self._error)
        self._results = PgGroupCommit(self._acquire_relaxed, self._error)
        self.channel = channel_name(url.schema)
        self._ingester = Ingester(self._acquire, self.channel, self._error)
        self._listener: Listener | None = None
        self._walk = Walk()

    @property
    def commits(self) -> int:
        """Group commits so far: fewer than writes under concurrency."""
        return self._ingester.commits + self._writes.commits + self._results.commits

    # -- lifecycle -------------------------------------------------------------------------

    def connect_options(self, **settings: str) -> dict[str, Any]:
        """What asyncpg gets for every connection: relay's schema first in the search path,
        and `settings` (server settings) beside it."""
        return {
            "dsn": self.url.dsn,
            "timeout": self._connect_timeout_s,
            "command_timeout": self._command_timeout_s,
            "server_settings": {"search_path": f'"{self.url.schema}"', **settings},
        }

    async def open(self, *, daemon: bool = True) -> None:
        """Connect, and bring the schema up to date (under an advisory lock: replicas starting
        together wait for each other); a daemon also listens for other replicas' events."""
        try:
            self._pool = await asyncpg.create_pool(
                min_size=1, max_size=self._pool_size, reset=_keep, **self.connect_options()
            )
            self._relaxed_pool = await asyncpg.create_pool(
                min_size=1,
                max_size=self._pool_size,
                reset=_keep,
                **self.connect_options(**WORKER_SETTINGS),
            )
        except Exception as exc:
            raise StoreError(
                f"cannot connect to store {self.url.shown}: {_describe(exc)}. Check that"
                " PostgreSQL runs there and that the user, password and database are right"
            ) from exc
        try:
            steps = await self.migrate()
        except BaseException:
            await self._close_pools()
            raise
        if steps:
            log.info(
                "store %s: schema %s migrated from version %d to %d",
                self.url.shown,
                self.url.schema,
                len(MIGRATIONS) - steps,
                len(MIGRATIONS),
            )
        if daemon:
            self._listener = Listener(self.connect_options(), self.channel, self._replica_lock())
            await self._listener.start()
            if self._listener.holds_replica_lock:
                await self._release_predecessors_leases()
            elif self.replica is not None:  # a live namesake, or no server yet: a name of
                # this run's own, whose leases no restart under the shared name releases
                self._lease_owner = f"{self.replica}/{secrets.token_hex(4)}"

    def _replica_lock(self) -> ReplicaLock | None:
        return None if self.replica is None else ReplicaLock(self.url.schema, self.replica)

    async def _release_predecessors_leases(self) -> None:
        """Due at once: what this replica's name still held leased when its last run died."""
        try:
            released = await self._write(
                partial(release_leases_of, replica=self.replica, now=self._clock())
            )
        except StoreError as exc:  # the leases run out instead
            log.warning("replica %s: cannot release its earlier leases: %s", self.replica, exc)
            return
        if released:
            log.info("replica %s: released %d leases its previous run held", self.replica, released)

    async def migrate(self) -> int:
        """Run the migrations the schema lacks; how many ran."""
        try:
            async with self._acquire() as conn:
                return await migrate(conn, self.url.schema, self.url.shown)
        except StoreError:
            raise
        except Exception as exc:
            raise self._error(exc) from exc

    def on_new_deliveries(self, wake: WakeTargets) -> None:
        """Call `wake(targets)` when any replica stores deliveries for them (a NOTIFY)."""
        if self._listener is not None:
            self._listener.wake = wake

    def rate_limiter(self, target: str, per_second: float) -> Limiter:
        """One send slot sequence for `target` across every replica."""
        return SharedRateLimiter(self._acquire_relaxed, target, per_second, self._clock)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        await self._ingester.close()
        await self._writes.close()
        await self._results.close()
        await self._close_pools()

    async def _close_pools(self) -> None:
        pools = [pool for pool in (self._pool, self._relaxed_pool) if pool is not None]
        self._pool = self._relaxed_pool = None
        for pool in pools:
            try:
                await asyncio.wait_for(pool.close(), self._command_timeout_s)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                pool.terminate()

    async def wait_failed(self) -> StoreError:
        """A PostgreSQL store does not fail for good: it recovers when the server is back."""
        await asyncio.Future()  # only ever cancelled
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    def _acquire(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        return self._connection(self._pool)

    def _acquire_relaxed(self) -> contextlib.AbstractAsyncContextManager[asyncpg.Connection]:
        """For the worker's writes, which a crash of the database may lose (see above)."""
        return self._connection(self._relaxed_pool)

    @contextlib.asynccontextmanager
    async def _connection(self, pool: asyncpg.Pool | None) -> AsyncIterator[asyncpg.Connection]:
        """A connection of `pool`, given back whatever happens. Giving back a connection the
        server has just ended raises; that must not turn a commit made on it into an error
        (the writers would be told 503, and their retries would be duplicates)."""
        if pool is None:
            raise StoreError(f"store {self.url.shown} is not open")
        conn = await pool.acquire(timeout=self._connect_timeout_s + self._command_timeout_s)
        try:
            yield cast(asyncpg.Connection, conn)  # the pool's proxy answers as a connection
        finally:
            try:
                await pool.release(conn)
            except Exception as exc:  # the pool has closed it and opens another when needed
                log.debug("store: a connection ended as it was given back: %r", exc)

    def _error(self, exc: BaseException) -> StoreError:
        if isinstance(exc, StoreError):
            return exc
        if is_connection_loss(exc):
            return StoreError(
                f"store {self.url.shown} cannot be reached ({_describe(exc)}); relay answers 503"
                " and tries again until it can"
            )
        return StoreError(f"store {self.url.shown}: {_describe(exc)}")

    async def _fetch(self, sql: str, *params: Any, relaxed: bool = False) -> list[asyncpg.Record]:
        try:
            async with self._acquire_relaxed() if relaxed else self._acquire() as conn:
                rows: list[asyncpg.Record] = await conn.fetch(sql, *params)
                return rows
        except Exception as exc:
            raise self._error(exc) from exc

    async def _on_connection(self, read: Callable[[asyncpg.Connection], Any]) -> Any:
        try:
            async with self._acquire() as conn:
                return await read(conn)
        except Exception as exc:
            raise self._error(exc) from exc

    async def _write(self, op: Callable[[asyncpg.Connection], Any]) -> Any:
        return await self._writes.submit(op)

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(
        self, event: Event, targets: Sequence[str], keys: Mapping[str, str] | None = None
    ) -> IngestResult:
        return await self._ingester.ingest(event, targets, keys, self._clock())

    # -- delivery --------------------------------------------------------------------------

    async def claim(self, target: str, limit: int, lease_s: float) -> list[Delivery]:
        now = self._clock()
        rows = await self._fetch(
            CLAIM, now, now + lease_s, target, limit, self._lease_owner, relaxed=True
        )
        deliveries, unreadable = [], []
        for row in rows:
            delivery_id, attempt, first_attempt_at, key = tuple(row[:4])
            try:
                event = event_from_row(tuple(row[4:]))
            except Exception as exc:  # bytes that were damaged on their way into the store
                log.error(
                    "store: event %r of source %r cannot be read (%r): its deliveries are dead",
                    row["event_id"],
                    row["source"],
                    exc,
                )
                error = f"the stored event cannot be read: {exc!r}"
                unreadable.append(
                    AttemptResult(
                        delivery_id, "dead", error=error, attempt=attempt, keyed=key is not None
                    )
                )
                continue
            deliveries.append(Delivery(delivery_id, target, attempt, first_attempt_at, event, key))
        if unreadable:  # dead, or every claim would trip on them again
            await self.record(unreadable)
        return deliveries

    async def record(self, results: Sequence[AttemptResult]) -> None:
        now = self._clock()
        columns = (
            [r.delivery_id for r in results],
            [r.state for r in results],
            [r.next_attempt_at for r in results],
            [r.status for r in results],
            [r.error for r in results],
            now,
            [r.attempt for r in results],
            [now if r.started_at is None else r.started_at for r in results],
            [r.duration_s for r in results],
            [ATTEMPT_OUTCOMES[r.state] for r in results],
            [r.response for r in results],
            [r.retry_after for r in results],
        )
        settled_keyed = [
            (now, HELD_AT, r.delivery_id) for r in results if r.keyed and r.state != "pending"
        ]

        async def update(conn: asyncpg.Connection) -> None:
            await conn.execute(RECORD, *columns)
            if settled_keyed:  # after the update, which the release must see
                await conn.executemany(RELEASE_NEXT, settled_keyed)

        await self._results.submit(update)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        if not delivery_ids:
            return
        ids = list(delivery_ids)

        async def drop(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "UPDATE deliveries SET lease_until = 0 WHERE id = ANY($1::bigint[])"
                " AND state = 'pending'",
                ids,
            )

        await self._results.submit(drop)

    async def next_due_at(self, target: str) -> float | None:
        rows = await self._fetch(
            "SELECT d.next_attempt_at FROM deliveries d WHERE d.state = 'pending'"
            f" AND d.target = $2 AND d.lease_until <= $1 AND {claimable('$2')}"
            " ORDER BY d.next_attempt_at LIMIT 1",
            self._clock(),
            target,
            relaxed=True,  # the worker's pool: its plan (see the module's docstring)
        )
        return float(rows[0][0]) if rows else None

    async def forget_order_keys(self, target: str) -> int:
        now = self._clock()

        async def forget(conn: asyncpg.Connection) -> int:
            held = await conn.execute(
                "UPDATE deliveries SET next_attempt_at = $1, updated_at = $1"
                " WHERE state = 'pending' AND target = $2 AND next_attempt_at = $3",
                now,
                target,
                HELD_AT,
            )
            await conn.execute(
                "UPDATE deliveries SET order_key = NULL"
                " WHERE state = 'pending' AND target = $1 AND order_key IS NOT NULL",
                target,
            )
            return rowcount(held)

        count: int = await self._write(forget)
        return count

    # -- target control --------------------------------------------------------------------

    async def target_pause(self, target: str) -> TargetPause | None:
        rows = await self._fetch(
            "SELECT paused_at, paused_reason FROM targets WHERE name = $1"
            " AND paused_at IS NOT NULL",
            target,
        )
        return TargetPause(rows[0][0], rows[0][1]) if rows else None

    async def pause_target(self, target: str, reason: str) -> TargetPause:
        op = partial(pg_targets.pause, target=target, reason=reason, now=self._clock())
        in_force: TargetPause = await self._write(op)
        return in_force

    async def resume_target(self, target: str) -> TargetPause | None:
        ended: TargetPause | None = await self._write(
            partial(pg_targets.resume, target=target, now=self._clock())
        )
        return ended

    async def note_activity(self, target: str, activity: TargetActivity) -> None:
        await self._results.submit(
            partial(pg_targets.note_activity, target=target, activity=activity)
        )

    async def target_statuses(self) -> list[TargetStatus]:
        statuses: list[TargetStatus] = await self._on_connection(pg_views.target_statuses)
        return statuses

    async def target_statuses_aside(self) -> list[TargetStatus]:
        """The same: a read on the server never holds up the event loop."""
        return await self.target_statuses()

    # -- operator views --------------------------------------------------------------------

    async def deliveries(
        self,
        state: DeliveryState | None = None,
        limit: int = 100,
        *,
        where: DeliveryFilter = EVERY_DELIVERY,
        before_id: int | None = None,
    ) -> list[DeliveryRecord]:
        async def read(conn: asyncpg.Connection) -> list[DeliveryRecord]:
            return await pg_views.list_deliveries(conn, state, limit, where, before_id)

        records: list[DeliveryRecord] = await self._on_connection(read)
        return records

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None:
        async def read(conn: asyncpg.Connection) -> DeliveryDetail | None:
            return await pg_views.delivery_detail(conn, delivery_id)

        detail: DeliveryDetail | None = await self._on_connection(read)
        return detail

    async def replay(self, delivery_ids: Sequence[int] | None = None) -> int:
        now = self._clock()

        async def revive(conn: asyncpg.Connection) -> int:
            if delivery_ids is None:
                return rowcount(await conn.execute(REPLAY, now, HELD_AT))
            ids = sorted(set(delivery_ids))
            status = await conn.execute(f"{REPLAY} AND id = ANY($3::bigint[])", now, HELD_AT, ids)
            return rowcount(status)

        count: int = await self._write(revive)
        return count

    async def counts(self) -> dict[str, int]:
        counts = {"events": (await self._fetch("SELECT count(*) FROM events"))[0][0]}
        counts.update({"pending": 0, "delivered": 0, "dead": 0})
        for state, n in await self._fetch("SELECT state, count(*) FROM deliveries GROUP BY state"):
            counts[state] = n
        return counts

    async def pending_by_target(self) -> dict[str, int]:
        rows = await self._fetch(
            "SELECT target, count(*) FROM deliveries WHERE state = 'pending' GROUP BY target"
        )
        return {target: count for target, count in rows}

    async def delivered_since(self, since: float) -> dict[str, int]:
        """A range of the partial index of delivered deliveries by settling time."""
        rows = await self._fetch(
            "SELECT target, count(*) FROM deliveries"
            " WHERE state = 'delivered' AND updated_at >= $1 GROUP BY target",
            since,
        )
        return {target: count for target, count in rows}

    # -- retention -------------------------------------------------------------------------

    async def purge(self, retention: RetentionPolicy, batch_events: int = BATCH_EVENTS) -> int:
        """One pass, a transaction per batch (replicas purging at once delete each event once:
        each batch locks the deliveries it judges, so a replay waits for it or it for the
        replay)."""
        now = self._clock()
        walk, purged = self._walk.start(now), 0
        while True:
            started = time.perf_counter()
            op = partial(purge_batch, retention=retention, now=now, walk=walk, limit=batch_events)
            batch_purged: int
            try:
                ((batch_purged, walk, done),) = await self._writes.transaction([op])
            except Exception as exc:
                raise self._error(exc) from exc
            purged += batch_purged
            if done:
                break
            await asyncio.sleep((time.perf_counter() - started) * PURGE_REST_RATIO)
        self._walk = walk
        return purged


async def _keep(conn: asyncpg.Connection) -> None:
    """A connection given back to a pool is kept as it is: relay leaves no session state
    behind (an open transaction is still rolled back), so the round trip of asyncpg's reset
    query (UNLISTEN *, RESET ALL ...) on every release is saved."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
