"""A daemon's name on the shared store, and the release of its own leases after a crash.

Each claim records the claiming replica's name (`leased_by`). A replica that dies holding
leases leaves them to run out (another replica then claims the deliveries), but the same
replica restarted (a container restarted in its pod, a unit restarted by systemd) should not
sit out that wait. It takes a session advisory lock on its name for as long as it runs;
whoever holds the lock is the only live process with that name, so the leases that name holds
belong to a run that is gone and are released at once. Two live processes given the same name
cannot both hold it: the second releases nothing, says so, and tags its own claims with a name
of its own run, so that a restart of the first never releases them.
"""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from relay.store.pg_purge import rowcount

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("relay.store")

RELEASE = (
    "UPDATE deliveries SET lease_until = 0"
    " WHERE state = 'pending' AND leased_by = $1 AND lease_until > $2"
)


def replica_name(listen_port: int) -> str:
    """A daemon's name: unique among live replicas (one port per host), the same after a
    restart on the same host (or in the same pod)."""
    return f"{socket.gethostname()}:{listen_port}"


class ReplicaLock:
    """The advisory lock on a replica's name, taken on the connection that listens."""

    def __init__(self, schema: str, replica: str) -> None:
        self.replica = replica
        self._key = f"relay-replica:{schema}:{replica}"
        self._warned = False

    async def take(self, conn: asyncpg.Connection) -> bool:
        """Whether `conn` now holds the lock; False while another live process holds it."""
        held = bool(
            await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", self._key)
        )
        if not held and not self._warned:
            log.warning(
                "replica %s: another live relay uses this name (same host name and listen"
                " port) on this store; neither releases the other's leases",
                self.replica,
            )
        self._warned = not held
        return held


async def release_leases_of(conn: asyncpg.Connection, *, replica: str | None, now: float) -> int:
    """Make due at once the deliveries `replica` holds leased; how many."""
    return rowcount(await conn.execute(RELEASE, replica, now))
