"""The embedded store: one SQLite file in WAL mode, written on the event loop with group commit.

Writes (ingest, attempt results) queue up during one loop iteration and commit together in
one transaction, so many concurrent requests share one commit. With `synchronous=normal` (the
default) a commit is a write into the WAL, which survives a process crash (`kill -9`); a power
cut can lose the last commits. `synchronous=full` fsyncs every commit and survives both.

An exclusive lock file keeps a second relay process off the same database, which is what makes
releasing all leases at start-up safe.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from relay import jsoncodec
from relay.durations import parse_duration
from relay.errors import StoreError
from relay.events import Delivery, Event
from relay.store.base import AttemptResult, DeliveryRecord, DeliveryState, IngestResult
from relay.store.checkpoint import Checkpointer

log = logging.getLogger("relay.store")

T = TypeVar("T")
WriteOp = Callable[[sqlite3.Cursor], Any]

# Each entry brings the schema from the previous version to its own; the file records its
# version in `PRAGMA user_version`. Append, never edit: operators' files are at every version.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        pk INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at REAL NOT NULL,
        body BLOB NOT NULL,
        headers TEXT NOT NULL,
        data_key TEXT,
        UNIQUE (source, event_id)
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        event_pk INTEGER NOT NULL REFERENCES events (pk),
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        first_attempt_at REAL,
        lease_until REAL NOT NULL DEFAULT 0,
        last_status INTEGER,
        last_error TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (target, next_attempt_at) WHERE state = 'pending';
    CREATE INDEX deliveries_state ON deliveries (state, id);
    """,
    "ALTER TABLE events ADD COLUMN created_at REAL;",
)


def migrate(db: sqlite3.Connection) -> None:
    """Bring the file to the newest schema, one transaction per step."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
        version = 1  # written before versions were recorded
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        db.executescript(f"BEGIN IMMEDIATE; {script} PRAGMA user_version = {number}; COMMIT;")


WAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024  # the WAL file is truncated back to this after a reset
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}


class SqliteStore:
    def __init__(
        self,
        path: Path,
        clock: Callable[[], float],
        synchronous: str = "normal",
        busy_timeout_ms: int = 5000,
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f'synchronous must be "normal" or "full", got "{synchronous}"')
        self.path = path
        self._clock = clock
        self._synchronous = SYNCHRONOUS[synchronous]
        self._busy_timeout_ms = busy_timeout_ms
        self._db: sqlite3.Connection | None = None
        self._checkpointer: Checkpointer | None = None
        self._lock_fd: int | None = None
        self._queue: list[tuple[WriteOp, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self.commits = 0  # group commits so far: fewer than writes under concurrency

    @classmethod
    def from_url(cls, url: str, clock: Callable[[], float]) -> SqliteStore:
        """`sqlite:///relative/path` or `sqlite:////absolute/path`, `?synchronous=full`."""
        rest = url.removeprefix("sqlite:///")
        file_part, _, query = rest.partition("?")
        options = dict(parse_qsl(query))
        unknown = set(options) - {"synchronous", "busy_timeout"}
        if unknown:
            raise ValueError(f"unknown sqlite store option(s): {', '.join(sorted(unknown))}")
        busy = parse_duration(options.get("busy_timeout", "5s"))
        return cls(
            Path(file_part),
            clock,
            synchronous=options.get("synchronous", "normal"),
            busy_timeout_ms=int(busy.total_seconds() * 1000),
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self, *, daemon: bool = True) -> None:
        """A daemon holds the lock file and releases stale leases; a CLI reader does neither."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if daemon:
            self._lock_fd = _lock_exclusively(Path(f"{self.path.resolve()}.lock"))
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            migrate(db)
            released = 0
            if daemon:
                # The Checkpointer's thread copies most of the WAL; the loop's own automatic
                # checkpoint (kept) then finds little left and still lets the WAL restart,
                # which a checkpoint beside a steady writer alone never completes.
                db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
                released = db.execute(
                    "UPDATE deliveries SET lease_until = 0"
                    " WHERE state = 'pending' AND lease_until > 0"
                ).rowcount
        except sqlite3.Error as exc:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        if released:
            log.info("released %d leases left by a previous run", released)
        self._db = db
        if daemon:
            self._checkpointer = Checkpointer(self.path)
            self._checkpointer.start()

    async def close(self) -> None:
        if self._queue:
            self._flush()
        if self._checkpointer is not None:
            await self._checkpointer.stop()
            self._checkpointer = None
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- group commit ----------------------------------------------------------------------

    def _submit(self, op: WriteOp) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((op, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Two loop turns, not one: requests whose bodies arrive in the next turn join too.
            loop.call_soon(loop.call_soon, self._flush)
        return future

    def _flush(self) -> None:
        """Commit every queued write in one transaction; isolate the culprit if one fails."""
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            results = self._transaction([op for op, _ in batch])
        except (sqlite3.Error, StoreError) as exc:
            if len(batch) == 1:
                _fail(batch[0][1], StoreError(f"store {self.path.name}: {exc}"))
                return
            for op, future in batch:  # one bad write must not fail its neighbours
                self._settle_one(op, future)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _settle_one(self, op: WriteOp, future: asyncio.Future[Any]) -> None:
        try:
            (result,) = self._transaction([op])
        except (sqlite3.Error, StoreError) as exc:
            _fail(future, StoreError(f"store {self.path.name}: {exc}"))
            return
        if not future.done():
            future.set_result(result)

    def _transaction(self, ops: Sequence[WriteOp]) -> list[Any]:
        db = self._connection()
        cursor = db.cursor()
        try:
            cursor.execute("BEGIN IMMEDIATE")
            results = [op(cursor) for op in ops]
            cursor.execute("COMMIT")
            self.commits += 1
        except BaseException:
            if db.in_transaction:
                db.rollback()
            raise
        finally:
            cursor.close()
        return results

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError(f"store {self.path.name} is not open")
        return self._db

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path.name}: {exc}") from exc

    # -- ingest ----------------------------------------------------------------------------

    async def ingest(self, event: Event, targets: Sequence[str]) -> IngestResult:
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
            cur.executemany(
                "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?)",
                [(event_pk, target, now, now) for target in targets],
            )
            return IngestResult(duplicate=False, deliveries=len(targets))

        result: IngestResult = await self._submit(insert)
        return result

    # -- delivery --------------------------------------------------------------------------

    async def claim(self, target: str, limit: int, lease_s: float) -> list[Delivery]:
        now = self._clock()

        def lease(cur: sqlite3.Cursor) -> list[Any]:
            return cur.execute(
                "UPDATE deliveries SET attempts = attempts + 1,"
                " first_attempt_at = COALESCE(first_attempt_at, :now),"
                " lease_until = :until, updated_at = :now"
                " WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending'"
                "   AND target = :target AND next_attempt_at <= :now AND lease_until <= :now"
                "   ORDER BY next_attempt_at LIMIT :limit)"
                " RETURNING id, event_pk, attempts, first_attempt_at",
                {"now": now, "until": now + lease_s, "target": target, "limit": limit},
            ).fetchall()

        try:
            (claimed,) = self._transaction([lease])
        except sqlite3.Error as exc:
            raise StoreError(f"store {self.path.name}: {exc}") from exc
        if not claimed:
            return []
        events = self._events({row[1] for row in claimed})
        return [
            Delivery(
                id=row[0],
                target=target,
                attempt=row[2],
                first_attempt_at=row[3],
                event=events[row[1]],
            )
            for row in sorted(claimed)
        ]

    def _events(self, pks: set[int]) -> dict[int, Event]:
        marks = ",".join("?" * len(pks))
        rows = self._read(
            "SELECT pk, source, event_id, type, received_at, body, headers, data_key, created_at"
            f" FROM events WHERE pk IN ({marks})",
            sorted(pks),
        )
        return {row[0]: _event_from_row(row) for row in rows}

    async def record(self, results: Sequence[AttemptResult]) -> None:
        now = self._clock()
        rows = [
            (r.state, r.next_attempt_at, r.status, r.error, now, r.delivery_id) for r in results
        ]

        def update(cur: sqlite3.Cursor) -> None:
            cur.executemany(
                "UPDATE deliveries SET state = ?, next_attempt_at = COALESCE(?, next_attempt_at),"
                " last_status = ?, last_error = ?, lease_until = 0, updated_at = ? WHERE id = ?",
                rows,
            )

        await self._submit(update)

    async def release(self, delivery_ids: Sequence[int]) -> None:
        if not delivery_ids:
            return
        ids = list(delivery_ids)

        def drop(cur: sqlite3.Cursor) -> None:
            cur.executemany(
                "UPDATE deliveries SET lease_until = 0 WHERE id = ? AND state = 'pending'",
                [(i,) for i in ids],
            )

        await self._submit(drop)

    async def next_due_at(self, target: str) -> float | None:
        rows = self._read(
            "SELECT MIN(MAX(next_attempt_at, lease_until)) FROM deliveries"
            " WHERE state = 'pending' AND target = ?",
            (target,),
        )
        value = rows[0][0]
        return float(value) if value is not None else None

    # -- operator views --------------------------------------------------------------------

    async def deliveries(
        self, state: DeliveryState | None = None, limit: int = 100
    ) -> list[DeliveryRecord]:
        where = "WHERE d.state = ?" if state else ""
        params: list[Any] = [state] if state else []
        rows = self._read(
            "SELECT d.id, e.source, e.event_id, e.type, d.target, d.state, d.attempts,"
            " d.next_attempt_at, d.last_status, d.last_error"
            f" FROM deliveries d JOIN events e ON e.pk = d.event_pk {where}"
            " ORDER BY d.id DESC LIMIT ?",
            [*params, limit],
        )
        return [DeliveryRecord(*row) for row in rows]

    async def replay(self, delivery_ids: Sequence[int] | None = None) -> int:
        now = self._clock()
        sql = (
            "UPDATE deliveries SET state = 'pending', attempts = 0, first_attempt_at = NULL,"
            " next_attempt_at = ?, lease_until = 0, updated_at = ? WHERE state = 'dead'"
        )

        def revive(cur: sqlite3.Cursor) -> int:
            if delivery_ids is None:
                return cur.execute(sql, (now, now)).rowcount
            return sum(
                cur.execute(f"{sql} AND id = ?", (now, now, i)).rowcount for i in delivery_ids
            )

        count: int = await self._submit(revive)
        return count

    async def counts(self) -> dict[str, int]:
        counts = {"events": self._read("SELECT COUNT(*) FROM events")[0][0]}
        counts.update({"pending": 0, "delivered": 0, "dead": 0})
        for state, n in self._read("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
            counts[state] = n
        return counts


def _fail(future: asyncio.Future[Any], error: StoreError) -> None:
    if not future.done():
        future.set_exception(error)


def _event_from_row(row: Sequence[Any]) -> Event:
    _, source, event_id, event_type, received_at, body, headers, data_key, created_at = row
    body = bytes(body)
    return Event(
        source=source,
        id=event_id,
        type=event_type,
        received_at=received_at,
        body=body,
        payload=jsoncodec.loads(body),
        headers=json.loads(headers),
        data_key=data_key,
        created_at=created_at,
    )


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
