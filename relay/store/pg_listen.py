"""LISTEN for new deliveries stored by any replica, on a connection of its own.

Ingest NOTIFYs the store's channel with each target it stored a delivery for, in the same
transaction, so the notification goes out at commit and never before. Every replica listening
wakes its worker for that target at once instead of at its next poll; the poll stays the
fallback for whatever a lost listening connection missed, and the connection is opened again.
The same connection holds the replica's name lock (pg_replica.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

import asyncpg

from relay.background import cancel_and_wait
from relay.store.pg_replica import ReplicaLock

log = logging.getLogger("relay.store")

WakeTargets = Callable[[Iterable[str]], None]
RECONNECT_S = 1.0


def channel_name(schema: str) -> str:
    """The channel of the store in `schema` (a plain name, checked by relay.store.url)."""
    return f"relay_{schema}"


class Listener:
    def __init__(
        self, connect_options: dict[str, Any], channel: str, lock: ReplicaLock | None = None
    ) -> None:
        self._options = connect_options
        self.channel = channel
        self._lock = lock  # held on the listening connection, while it lasts
        self.holds_replica_lock = False
        self.wake: WakeTargets | None = None
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._warned = False

    async def start(self) -> None:
        """Listen now if the server answers (else soon after), and from then on."""
        await self._listen()
        self._task = asyncio.create_task(self._keep_listening(), name="postgres-listen")

    async def _listen(self) -> bool:
        self._lost.clear()
        try:
            conn = await asyncpg.connect(**self._options)
        except Exception as exc:
            if not self._warned:
                log.warning("cannot listen for new events (%s): polling meanwhile", exc)
                self._warned = True
            return False
        conn.add_termination_listener(self._terminated)
        try:
            await conn.add_listener(self.channel, self._notified)
            if self._lock is not None:
                self.holds_replica_lock = await self._lock.take(conn)
        except Exception as exc:
            log.warning("cannot listen for new events (%s): polling meanwhile", exc)
            conn.terminate()
            return False
        if self._warned:
            log.info("listening for new events again")
            self._warned = False
        self._conn = conn
        return True

    async def _keep_listening(self) -> None:
        while True:
            if self._conn is not None:
                await self._lost.wait()
                self._conn = None
            await asyncio.sleep(RECONNECT_S)
            await self._listen()

    def _terminated(self, conn: Any) -> None:
        self.holds_replica_lock = False  # the server let go of it with the session
        self._lost.set()

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        wake = self.wake
        if wake is not None and isinstance(payload, str):
            wake((payload,))

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except (TimeoutError, OSError, asyncpg.InterfaceError):
                conn.terminate()
