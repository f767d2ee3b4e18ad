"""WAL checkpoints from a worker thread.

SQLite's automatic checkpoint runs inside the commit that crosses the threshold, which here is
on the event loop: every ~1,000 pages one ingest waited milliseconds while the WAL was copied
and the database synced. A thread checkpointing often, PASSIVE so it never waits for the
writer, does most of that copying off the loop. The loop's automatic checkpoint stays on: a
passive checkpoint beside a steady writer never completes, and without one that does, the
WAL would never restart and would grow without limit.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from pathlib import Path

from relay.background import cancel_and_wait
from relay.store.health import StoreHealth, is_corruption

log = logging.getLogger("relay.store")


class Checkpointer:
    def __init__(self, path: Path, health: StoreHealth, interval_s: float = 0.05) -> None:
        self._path = path
        self._health = health
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._task = asyncio.create_task(self._run(), name="sqlite-checkpoint")

    async def _run(self) -> None:
        last_error = ""  # logged once, not every round, while it lasts
        while not self._health.failed:
            await asyncio.sleep(self._interval_s)
            try:
                await asyncio.to_thread(self.checkpoint)
            except sqlite3.Error as exc:  # the next round tries again
                if is_corruption(exc):
                    self._health.error_from(exc)
                elif str(exc) != last_error:
                    log.warning("WAL checkpoint of %s failed: %s", self._path.name, exc)
                last_error = str(exc)
            else:
                last_error = ""

    def checkpoint(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if not self._health.failed:  # a lost or corrupt file is left as it is
            try:
                await asyncio.to_thread(self.checkpoint)
            except sqlite3.Error as exc:
                log.warning("WAL checkpoint of %s failed: %s", self._path.name, exc)
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
