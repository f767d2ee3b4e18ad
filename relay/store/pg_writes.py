"""Group commit against PostgreSQL: writes queued while a transaction runs share the next one.

One transaction is in flight at a time, so under load a group grows with the time a commit
takes and many concurrent requests pay for one. As in the SQLite store's group commit, a write
that fails is retried alone so one bad write never fails its neighbours, and every writer gets
an answer; but a lost connection fails the whole group at once (retrying alone would only meet
it again): each writer gets a StoreError, and the next group takes a fresh connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from relay.errors import StoreError

log = logging.getLogger("relay.store")

PgWriteOp = Callable[[asyncpg.Connection], Awaitable[Any]]
Acquire = Callable[[], Any]  # an async context manager giving a pooled connection


def is_connection_loss(exc: BaseException) -> bool:
    """Whether `exc` says the connection or the server is gone (not what one write did)."""
    if isinstance(exc, asyncpg.DataError):  # a value the driver cannot send: this write's own
        return False
    if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    # 08: connection exception; 57: operator intervention (shutdown, terminated backend)
    return isinstance(exc, asyncpg.PostgresError) and sqlstate[:2] in ("08", "57")


class PgGroupCommit:
    def __init__(self, acquire: Acquire, describe: Callable[[BaseException], StoreError]) -> None:
        self._acquire = acquire
        self._describe = describe
        self._queue: list[tuple[PgWriteOp, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0

    def submit(self, op: PgWriteOp) -> asyncio.Future[Any]:
        """Queue `op`; the future gives its result once the transaction holding it commits."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((op, future))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_all(), name="postgres-group-commit")
        return future

    async def _flush_all(self) -> None:
        try:
            await asyncio.sleep(0)  # writes submitted in this loop turn join the first group
            while self._queue:
                batch, self._queue = self._queue, []
                await self._flush(batch)
        finally:
            self._flusher = None
            if self._queue:  # cancelled meanwhile (close): nobody is left waiting
                for _, future in self._queue:
                    future.cancel()
                self._queue = []

    async def _flush(self, batch: list[tuple[PgWriteOp, asyncio.Future[Any]]]) -> None:
        try:
            results = await self.transaction([op for op, _ in batch])
        except Exception as exc:
            if len(batch) > 1 and not is_connection_loss(exc):
                for op, future in batch:  # one bad write must not fail its neighbours
                    await self._settle_one(op, future)
                return
            error = self._error(exc)
            for _, future in batch:
                _fail(future, error)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _settle_one(self, op: PgWriteOp, future: asyncio.Future[Any]) -> None:
        try:
            (result,) = await self.transaction([op])
        except Exception as exc:
            _fail(future, self._error(exc))
            return
        if not future.done():
            future.set_result(result)

    def _error(self, exc: Exception) -> StoreError:
        expected = asyncpg.PostgresError | asyncpg.DataError | StoreError
        if not isinstance(exc, expected) and not is_connection_loss(exc):
            log.error("a store write raised %r", exc, exc_info=exc)  # a bug in a write
        return self._describe(exc)

    async def transaction(self, ops: Sequence[PgWriteOp]) -> list[Any]:
        """Run `ops` in one transaction now, on a connection of the pool."""
        async with self._acquire() as conn, conn.transaction():
            results = [await op(conn) for op in ops]
        self.commits += 1
        return results

    async def close(self) -> None:
        """Wait until every write queued so far has its answer."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)


def _fail(future: asyncio.Future[Any], error: StoreError) -> None:
    if not future.done():
        future.set_exception(error)
