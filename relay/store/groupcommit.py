"""Group commit on the event loop: the writes of two loop turns share one SQLite transaction.

Many concurrent requests then pay for one commit. A write that fails is retried alone, so one
bad write never fails its neighbours; whatever it raised reaches its writer as a StoreError,
and every writer gets an answer. A store that has failed (lost or corrupt) refuses writes.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from relay.errors import StoreError
from relay.store.health import StoreHealth, is_corruption

log = logging.getLogger("relay.store")

WriteOp = Callable[[sqlite3.Cursor], Any]


class GroupCommit:
    def __init__(self, connection: Callable[[], sqlite3.Connection], health: StoreHealth) -> None:
        self._connection = connection
        self._health = health
        self._queue: list[tuple[WriteOp, asyncio.Future[Any]]] = []
        self._flush_scheduled = False
        self.commits = 0

    def submit(self, op: WriteOp) -> asyncio.Future[Any]:
        """Queue `op`; the future gives its result once the transaction holding it commits."""
        self._health.check()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((op, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            # Two loop turns, not one: requests whose bodies arrive in the next turn join too.
            loop.call_soon(loop.call_soon, self.flush)
        return future

    def flush(self) -> None:
        """Commit every queued write in one transaction; isolate the culprit if one fails.

        Runs as a loop callback: nothing may escape it, or the batch's writers wait forever.
        """
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        if not batch:
            return
        try:
            results = self.transaction([op for op, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not (self._health.failed or is_corruption(exc)):
                for op, future in batch:  # one bad write must not fail its neighbours
                    self._settle_one(op, future)
                return
            error = self._error(exc)
            for _, future in batch:
                _fail(future, error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _settle_one(self, op: WriteOp, future: asyncio.Future[Any]) -> None:
        try:
            (result,) = self.transaction([op])
        except Exception as exc:
            _fail(future, self._error(exc))
            return
        if not future.done():
            future.set_result(result)

    def _error(self, exc: Exception) -> StoreError:
        if not isinstance(exc, sqlite3.Error | StoreError):  # a bug in a write: show where
            log.error("a store write raised %r", exc, exc_info=exc)
        return self._health.error_from(exc)

    def transaction(self, ops: Sequence[WriteOp]) -> list[Any]:
        """Run `ops` in one transaction now (a claim cannot wait for the next group)."""
        self._health.check()
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


def _fail(future: asyncio.Future[Any], error: StoreError) -> None:
    if not future.done():
        future.set_exception(error)
