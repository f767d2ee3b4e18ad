"""The embedded store: one SQLite file in WAL mode, written on the event loop with group commit.

Writes (ingest, attempt results) queue up during one loop iteration and commit together in
one transaction, so many concurrent requests share one commit. With `synchronous=normal` (the
default) a commit is a write into the WAL, which survives a process crash (`kill -9`); a power
cut can lose the last commits. `synchronous=full` fsyncs every commit and survives both.

An exclusive lock file keeps a second relay process off the same database, which is what makes
releasing all leases at start-up safe.

A store whose file is deleted, replaced or corrupt fails for good (see health.py): a daemon
checks the file at start (`PRAGMA quick_check`: 0.2-0.3 s for 218 MB in the page cache,
seconds read cold) and every second after that checks that its path still names the file it
opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from relay import jsoncodec
from relay.errors import StoreError
from relay.events import Delivery, Event
from relay.ratelimit import Limiter, local_limiter
from relay.store import sqlite_targets as targets
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
from relay.store.checkpoint import Checkpointer
from relay.store.groupcommit import GroupCommit
from relay.store.health import (
    FileIdentity,
    StoreHealth,
    corrupt_message,
    is_corruption,
    lost_message,
    lost_reason,
)
from relay.store.purge import BATCH_EVENTS, Batch, Walk, purge_batch
from relay.store.rows import ATTEMPT_OUTCOMES, event_from_row
from relay.store.schema import migrate
from relay.store.url import SqliteUrl, parse_store_url
from relay.store.views import delivery_detail, list_deliveries

log = logging.getLogger("relay.store")

T = TypeVar("T")

WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL file is truncated back to this after a reset
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
FILE_CHECK_INTERVAL_S = 1.0  # how soon a deleted or replaced store file is noticed
PURGE_REST_RATIO = 3.0  # retention rests this many times as long as each batch took


def _null(value: None) -> None:
    """None as a parameter: bound as NULL, as without an adapter."""
    return value


# Python's sqlite3 looks for an adapter for every parameter that is not an int, float, str or
# bytes. For None it has none: it raises and formats an AttributeError on its way to binding
# NULL, about 3,500 instructions (0.5 us) per None, and a recorded attempt binds four of them.
# An adapter for None is found by the first lookup. It is process-wide, and binds the same NULL.
sqlite3.register_adapter(type(None), _null)

# What a worker may claim, as SQL over `d`, a pending delivery of :target: nothing while the
# target is paused (a constant subquery, evaluated once), and of an ordering key only the
# oldest pending delivery. Deliveries held behind an older one of their key wait at HELD_AT,
# past every due time, so the scan of the due index never walks them; this guard keeps the
# order even where a delivery was made due beside an older one (a replay).
CLAIMABLE = (
    "NOT EXISTS (SELECT 1 FROM targets WHERE name = :target AND paused_at IS NOT NULL)"
    " AND (d.order_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries o"
    " INDEXED BY deliveries_order WHERE o.state = 'pending' AND o.target = :target"
    " AND o.order_key = d.order_key AND o.id < d.id))"
)
# A worker walks only deliveries it may claim (schema.py): the due index holds the pending ones
# nobody leased, in the order they come due; a lease that ran out by :now (an attempt that
# outlived it) is found by one seek in the index of leased ones. A claim takes those first
# (they are rare, and were due before their lease), then the due ones, in one statement (a
# union sorted over both arms cost 20-25 us more per call). The `lease_until` terms are
# literals, so that SQLite takes the partial indexes.
UNLEASED = (
    "FROM deliveries d WHERE state = 'pending' AND lease_until = 0 AND target = :target"
    f" AND {CLAIMABLE}"
)
LAPSED_LEASE = "state = 'pending' AND lease_until > 0 AND target = :target AND lease_until <= :now"
# At a daemon's start, no other process holds a lease (the lock file): the leased index alone.
RELEASE_LEASES = "UPDATE deliveries SET lease_until = 0 WHERE state = 'pending' AND lease_until > 0"
# A delivery with a key waits while another of its target and key is pending.
ORDERED_INSERT = (
    "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at, order_key)"
    " VALUES (:pk, :target, 'pending', CASE WHEN EXISTS (SELECT 1 FROM deliveries"
    " INDEXED BY deliveries_order WHERE state = 'pending' AND target = :target"
    " AND order_key = :key) THEN :held ELSE :now END, :now, :key)"
)
# A delivery with a key is settled: the oldest pending one of its key is due now, if held.
RELEASE_NEXT = (
    "UPDATE deliveries SET next_attempt_at = :now, updated_at = :now"
    " WHERE next_attempt_at = :held AND id = (SELECT MIN(n.id) FROM deliveries s"
    " JOIN deliveries n INDEXED BY deliveries_order"
    " ON n.target = s.target AND n.order_key = s.order_key AND n.state = 'pending'"
    " WHERE s.id = :settled)"
)


class SqliteStore:
    def __init__(
        self,
        path: Path,
        clock: Callable[[], float],
        synchronous: str = "normal",
        busy_timeout_ms: int = 5000,
        file_check_interval_s: float = FILE_CHECK_INTERVAL_S,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f'synchronous must be "normal" or "full", got "{synchronous}"')
        self.path = path
        self._clock = clock
        self._synchronous = SYNCHRONOUS[synchronous]
        self._busy_timeout_ms = busy_timeout_ms
        self._file_check_interval_s = file_check_interval_s
        self._db: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._lock_fd: int | None = None
        self._health = StoreHealth(path)
        self._writes = GroupCommit(self._connection, self._health)
        self._file_check: asyncio.Task[None] | None = None
        self._copy: asyncio.Future[bool] | None = None
        self._side_files: dict[Path, FileIdentity] = {}  # the WAL and its index, as opened
        self._walk = Walk()

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float]) -> SqliteStore:
        """The store a `sqlite:///` URL names (relay.store.url)."""
        parsed = parse_store_url(url)
        if not isinstance(parsed, SqliteUrl):
            raise ValueError(f"not a SQLite store: {parsed.shown}")
        return cls(
            parsed.path,
            clock,
            synchronous=parsed.synchronous,
            busy_timeout_ms=int(parsed.busy_timeout.total_seconds() * 1000),
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self, *, daemon: bool = True) -> None:
        """A daemon holds the lock file, checks the file and releases stale leases, and then
        watches the file; a CLI reader does none of that."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if daemon:
            self._lock_fd = _lock_exclusively(Path(f"{self.path.resolve()}.lock"))
        try:
            db, released = self._connect(daemon)
            identity = FileIdentity.of(self.path)
            self._side_files = _side_files(self.path)
        except (sqlite3.Error, StoreError, OSError) as exc:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            if isinstance(exc, StoreError):
                raise
            if is_corruption(exc):
                raise StoreError(corrupt_message(self.path, str(exc))) from exc
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        if released:
            log.info("released %d leases left by a previous run", released)
        self._db = db
        if daemon:
            self._checkpointer = Checkpointer(self.path, self._health)
            self._checkpointer.start()
            self._file_check = asyncio.create_task(
                self._check_file(identity), name="sqlite-file-check"
            )

    def _connect(self, daemon: bool) -> tuple[sqlite3.Connection, int]:
        """The connection, and how many leases a previous run left."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            if daemon:  # never acknowledge an event into a malformed file
                problems = [row[0] for row in db.execute("PRAGMA quick_check").fetchall()]
                if problems != ["ok"]:
                    raise StoreError(corrupt_message(self.path, "; ".join(problems[:3])))
            migrate(db, f"store {self.path}")
            if not daemon:
                return db, 0
            # The Checkpointer's thread copies most of the WAL; the loop's own automatic
            # checkpoint (kept) then finds little left and still lets the WAL restart,
            # which a checkpoint beside a steady writer alone never completes.
            db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            released = db.execute(RELEASE_LEASES).rowcount
        except BaseException:
            db.close()
            raise
        return db, released

    async def _check_file(self, opened: FileIdentity) -> None:
        """Fail the store once its path no longer names the file opened (a cheap stat)."""
        while not self._health.failed:
            await asyncio.sleep(self._file_check_interval_s)
            reason = lost_reason(self.path, opened)
            if reason is not None:
                stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
                copy = self.path.with_name(f"{self.path.name}.lost-{stamp}")
                self._health.fail(lost_message(self.path, reason, copy))
                self._copy = asyncio.ensure_future(asyncio.to_thread(self._copy_lost_file, copy))
                await asyncio.shield(self._copy)

    def _copy_lost_file(self, copy: Path) -> bool:
        """Copy the open (deleted or replaced) file, which only this process can still read."""
        try:
            with contextlib.closing(sqlite3.connect(copy)) as target:
                self._connection().backup(target)
        except (sqlite3.Error, OSError, StoreError) as exc:
            log.error("could not copy the lost store to %s: %s", copy, exc)
            return False
        log.info("copied the lost store to %s", copy)
        return True

    def _remove_lost_side_files(self) -> None:
        """SQLite leaves a moved database's WAL (and its index) behind when it closes: remove
        them once copied, or they would be replayed into the copy when it is moved into place."""
        for side, opened in self._side_files.items():
            if lost_reason(side, opened) is None:
                side.unlink(missing_ok=True)
                log.info("removed %s, the lost store's own", side.name)

    def on_new_deliveries(self, wake: Callable[[Iterable[str]], None]) -> None:
        """One process per file: its own ingest wakes its workers."""

    def rate_limiter(self, target: str, per_second: float) -> Limiter:
        return local_limiter(target, per_second)

    async def wait_failed(self) -> StoreError:
        return await self._health.wait_failed()

    async def ping(self) -> None:
        """A read of the file's first page, on the loop: microseconds, as WAL readers never
        wait for the writer; a failed, closed or unreadable store raises StoreError."""
        self._read("SELECT 1 FROM sqlite_master LIMIT 1")

    @property
    def commits(self) -> int:
        """Group commits so far: fewer than writes under concurrency."""
        return self._writes.commits

    async def close(self) -> None:
        if self._file_check is not None:
            self._file_check.cancel()
            await asyncio.gather(self._file_check, return_exceptions=True)
            self._file_check = None
        copied: bool | BaseException = False
        if self._copy is not None:
            (copied,) = await asyncio.gather(self._copy, return_exceptions=True)
            self._copy = None
        self._writes.flush()
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if copied is True:
            self._remove_lost_side_files()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path.name} is not open")
        return self._db

    def _read(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        return self._view(lambda db: db.execute(sql, params).fetchall())

    def _view(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """Run `read` on the connection; a failure is a StoreError (and may fail the store)."""
        self._health.check()
        try:
            return read(self._connection())
        except sqlite3.Error as exc:
            raise self._health.error_from(exc) from exc

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(
        self, event: Event, targets: Sequence[str], keys: Mapping[str, str] | None = None
    ) -> IngestResult:
        now = self._clock()
        headers = jsoncodec.dumps_compact(dict(event.headers))

        def insert(cur: sqlite3.Cursor) -> IngestResult:
            cur.execute(
                "INSERT INTO events (source, event_id, type, received_at, body, headers, data_key,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (source, event_id) DO NOTHING",
                (
                    event.source,
                    event.id,
                    event.type,
                    event.received_at,
                    event.body,
                    headers,
                    event.data_key,
                    event.created_at,
                ),
            )
            if cur.rowcount == 0:
                return IngestResult(duplicate=True, deliveries=0)
            if not targets:
                return IngestResult(duplicate=False, deliveries=0)
            event_pk = cur.lastrowid
            if keys:
                cur.executemany(ORDERED_INSERT, [_keyed(event_pk, t, keys, now) for t in targets])
                return IngestResult(duplicate=False, deliveries=len(targets))
            cur.executemany(
                "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?)",
                [(event_pk, target, now, now) for target in targets],
            )
            return IngestResult(duplicate=False, deliveries=len(targets))

        result: IngestResult = await self._writes.submit(insert)
        return result

    # -- delivery --------------------------------------------------------------------------

    async def claim(self, target: str, limit: int, lease_s: float) -> list[Delivery]:
        now = self._clock()
        times = {"now": now, "until": now + lease_s, "target": target, "limit": limit}

        def lease(cur: sqlite3.Cursor) -> list[Any]:
            return cur.execute(
                "UPDATE deliveries SET attempts = attempts + 1,"
                " first_attempt_at = COALESCE(first_attempt_at, :now),"
                " lease_until = :until, updated_at = :now"
                f" WHERE id IN (SELECT id FROM (SELECT id FROM deliveries d WHERE {LAPSED_LEASE}"
                f" AND {CLAIMABLE} LIMIT :limit) UNION ALL SELECT id FROM (SELECT id {UNLEASED}"
                " AND next_attempt_at <= :now ORDER BY next_attempt_at LIMIT :limit)"
                " LIMIT :limit)"
                " RETURNING id, event_pk, attempts, first_attempt_at, order_key",
                times,
            ).fetchall()

        try:
            (claimed,) = self._writes.transaction([lease])
        except Exception as exc:
            raise self._health.error_from(exc) from exc
        if not claimed:
            return []
        events = self._events({row[1] for row in claimed})
        deliveries, unreadable = [], []
        for delivery_id, event_pk, attempt, first_attempt_at, key in sorted(claimed):
            event = events.get(event_pk, "the event is missing")
            if isinstance(event, str):
                error = f"the stored event cannot be read: {event}"
                keyed = key is not None
                unreadable.append(
                    AttemptResult(delivery_id, "dead", error=error, attempt=attempt, keyed=keyed)
                )
                continue
            deliveries.append(Delivery(delivery_id, target, attempt, first_attempt_at, event, key))
        if unreadable:  # dead, or every claim would trip on them again
            await self.record(unreadable)
        return deliveries

    def _events(self, pks: set[int]) -> dict[int, Event | str]:
        """The events by pk; for one that cannot be read back, why (and it is logged)."""
        marks = ",".join("?" * len(pks))
        rows = self._read(
            "SELECT pk, source, event_id, type, received_at, body, headers, data_key, created_at"
            f" FROM events WHERE pk IN ({marks})",
            sorted(pks),
        )
        events: dict[int, Event | str] = {}
        for row in rows:
            try:
                events[row[0]] = event_from_row(row)
            except Exception as exc:  # a byte flipped on disk that SQLite cannot see
                events[row[0]] = repr(exc)
                log.error(
                    "store %s: event %r of source %r cannot be read (%r): its deliveries are dead",
                    self.path.name,
                    row[2],
                    row[1],
                    exc,
                )
        return events

    async def record(self, results: Sequence[AttemptResult]) -> None:
        now = self._clock()
        rows = [
            (r.state, r.next_attempt_at, r.status, r.error, now, r.delivery_id) for r in results
        ]
        attempts = [
            (
                r.delivery_id,
                r.attempt,
                now if r.started_at is None else r.started_at,
                r.duration_s,
                ATTEMPT_OUTCOMES[r.state],
                r.status,
                r.error,
                r.response,
                r.retry_after,
            )
            for r in results
        ]
        settled_keyed = [
            {"now": now, "held": HELD_AT, "settled": r.delivery_id}
            for r in results
            if r.keyed and r.state != "pending"
        ]

        def update(cur: sqlite3.Cursor) -> None:
            cur.executemany(
                "UPDATE deliveries SET state = ?, next_attempt_at = COALESCE(?, next_attempt_at),"
                " last_status = ?, last_error = ?, lease_until = 0, updated_at = ? WHERE id = ?",
                rows,
            )
            cur.executemany(
                "INSERT INTO attempts (delivery_id, number, started_at, duration_s, result,"
                " status, error, response, retry_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                attempts,
            )
            if settled_keyed:
                cur.executemany(RELEASE_NEXT, settled_keyed)

        await self._writes.submit(update)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        if not delivery_ids:
            return
        ids = list(delivery_ids)

        def drop(cur: sqlite3.Cursor) -> None:
            cur.executemany(
                "UPDATE deliveries SET lease_until = 0 WHERE id = ? AND state = 'pending'",
                [(i,) for i in ids],
            )

        await self._writes.submit(drop)

    async def next_due_at(self, target: str) -> float | None:
        # One entry of each of the two indexes: a few microseconds however many deliveries
        # wait or are in flight (docs/benchmarks.md). A lease that runs out later is found
        # by the worker's poll, at most a second later.
        now = self._clock()
        ((due, lapsed),) = self._read(
            f"SELECT (SELECT next_attempt_at {UNLEASED} ORDER BY next_attempt_at LIMIT 1),"
            f" EXISTS (SELECT 1 FROM deliveries d WHERE {LAPSED_LEASE} AND {CLAIMABLE})",
            {"target": target, "now": now},
        )
        if lapsed:
            return now
        return None if due is None else float(due)

    async def forget_order_keys(self, target: str) -> int:
        now = self._clock()

        def forget(cur: sqlite3.Cursor) -> int:
            held: int = cur.execute(
                "UPDATE deliveries SET next_attempt_at = :now, updated_at = :now"
                " WHERE state = 'pending' AND lease_until = 0 AND target = :target"
                " AND next_attempt_at = :held",
                {"now": now, "target": target, "held": HELD_AT},
            ).rowcount
            cur.execute(
                "UPDATE deliveries SET order_key = NULL"
                " WHERE state = 'pending' AND target = ? AND order_key IS NOT NULL",
                (target,),
            )
            return held

        count: int = await self._writes.submit(forget)
        return count

    # -- target control (relay/store/sqlite_targets.py) ---------------------------------

    async def target_pause(self, target: str) -> TargetPause | None:
        return self._view(partial(targets.target_pause, target=target))

    async def pause_target(self, target: str, reason: str) -> TargetPause:
        op = partial(targets.pause, target=target, reason=reason, now=self._clock())
        pause_in_force: TargetPause = await self._writes.submit(op)
        return pause_in_force

    async def resume_target(self, target: str) -> TargetPause | None:
        op = partial(targets.resume, target=target, now=self._clock())
        ended: TargetPause | None = await self._writes.submit(op)
        return ended

    async def note_activity(self, target: str, activity: TargetActivity) -> None:
        await self._writes.submit(partial(targets.note_activity, target=target, activity=activity))

    async def target_statuses(self) -> list[TargetStatus]:
        return self._view(targets.target_statuses)

    # -- operator views --------------------------------------------------------------------

    async def deliveries(
        self,
        state: DeliveryState | None = None,
        limit: int = 100,
        *,
        where: DeliveryFilter = EVERY_DELIVERY,
        before_id: int | None = None,
    ) -> list[DeliveryRecord]:
        return self._view(
            partial(list_deliveries, state=state, limit=limit, where=where, before_id=before_id)
        )

    async def delivery(self, delivery_id: int) -> DeliveryDetail | None:
        return self._view(partial(delivery_detail, delivery_id=delivery_id))

    async def replay(self, delivery_ids: Sequence[int] | None = None) -> int:
        now = self._clock()
        # A delivery with a key waits behind any pending one of its key, and goes next.
        sql = (
            "UPDATE deliveries SET state = 'pending', attempts = 0, first_attempt_at = NULL,"
            " next_attempt_at = CASE WHEN order_key IS NOT NULL AND EXISTS (SELECT 1"
            " FROM deliveries o INDEXED BY deliveries_order WHERE o.state = 'pending'"
            " AND o.target = deliveries.target AND o.order_key = deliveries.order_key)"
            " THEN :held ELSE :now END,"
            " lease_until = 0, updated_at = :now WHERE state = 'dead'"
        )
        times = {"now": now, "held": HELD_AT}

        def revive(cur: sqlite3.Cursor) -> int:
            if delivery_ids is None:
                return cur.execute(sql, times).rowcount
            return sum(
                cur.execute(f"{sql} AND id = :id", {**times, "id": i}).rowcount
                for i in delivery_ids
            )

        count: int = await self._writes.submit(revive)
        return count

    async def counts(self) -> dict[str, int]:
        counts = {"events": self._read("SELECT COUNT(*) FROM events")[0][0]}
        counts.update({"pending": 0, "delivered": 0, "dead": 0})
        for state, n in self._read("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
            counts[state] = n
        return counts

    async def pending_by_target(self) -> dict[str, int]:
        # The partial indexes of pending deliveries cover this (0.08 s for 670,000 of them,
        # five times faster than the planner's own choice, the state index), off the event
        # loop: a reload asks for it while relay serves.
        rows = await self._aside(lambda db: db.execute(targets.PENDING_BY_TARGET).fetchall())
        return {target: count for target, count, _ in rows}

    async def target_statuses_aside(self) -> list[TargetStatus]:
        """`target_statuses`, off the event loop (the gauges, every few seconds)."""
        return await self._aside(targets.target_statuses)

    async def delivered_since(self, since: float) -> dict[str, int]:
        return await self._aside(partial(targets.delivered_since, since=since))

    async def _aside(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """`read` in a thread on a read-only connection of its own: in WAL mode a reader
        waits for no writer."""
        self._health.check()
        try:
            return await asyncio.to_thread(self._read_aside, read)
        except sqlite3.Error as exc:
            raise self._health.error_from(exc) from exc

    def _read_aside(self, read: Callable[[sqlite3.Connection], T]) -> T:
        uri = f"{self.path.resolve().as_uri()}?mode=ro"  # never creates a file that is gone
        with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as db:
            db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            db.execute("BEGIN")  # one snapshot for every read
            try:
                return read(db)
            finally:
                db.execute("COMMIT")

    # -- retention -------------------------------------------------------------------------

    async def purge(self, retention: RetentionPolicy, batch_events: int = BATCH_EVENTS) -> int:
        """One pass, each batch a write of its own that ingests share; after each batch the
        pass rests three times as long as the batch took, so that it never has more than a
        quarter of the loop (the WAL it writes costs checkpoints too: docs/benchmarks.md)."""
        now = self._clock()
        walk, purged = self._walk.start(now), 0
        while True:
            op = partial(purge_batch, retention=retention, now=now, walk=walk, limit=batch_events)
            batch: Batch = await self._writes.submit(op)
            purged += batch.purged
            walk = batch.walk
            if batch.done:
                break
            await asyncio.sleep(batch.took_s * PURGE_REST_RATIO)
        self._walk = walk
        return purged


def _keyed(
    event_pk: int | None, target: str, keys: Mapping[str, str], now: float
) -> dict[str, Any]:
    """The parameters of ORDERED_INSERT for one delivery (no key: unordered)."""
    return {"pk": event_pk, "target": target, "key": keys.get(target), "now": now, "held": HELD_AT}


def _side_files(path: Path) -> dict[Path, FileIdentity]:
    sides = [path.with_name(f"{path.name}{suffix}") for suffix in ("-wal", "-shm")]
    return {side: FileIdentity.of(side) for side in sides if side.exists()}


def _lock_exclusively(lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise StoreError(
            f"store {lock_path.with_suffix('')} is in use by another relay process"
            " (use a PostgreSQL store to run several replicas)"
        ) from exc
    return fd
