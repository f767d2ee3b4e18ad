"""Which connections are open, and which to close first when a new one needs room.

Pure bookkeeping: the server's connection protocol reports each phase change; at
`limits.max_connections` the longest-idle connection makes room, else the one whose request
has been arriving longest, else the newcomer is refused.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from relay.durations import format_duration

log = logging.getLogger("relay.connections")

TALLY_WARNING_EVERY_S = 60.0  # connections closed for room or lateness: a warning a minute


class Connection(Protocol):
    def make_room(self) -> None:
        """Close, for a newcomer; a request still arriving is answered 503."""


class Phase(enum.Enum):
    IDLE = "idle"
    HEAD = "head"
    BODY = "body"
    BUSY = "busy"
    LINGER = "linger"
    CLOSED = "closed"


ARRIVING = frozenset({Phase.HEAD, Phase.BODY, Phase.LINGER})


class Tally:
    """Counts one kind of closed connection; warns at the first and then at most once a minute.

    Under a flood of slow or idle connections a line per connection would flood the log.
    """

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self.what = what
        self.count = 0
        self._clock = clock
        self._warned_at = -math.inf

    def add(self) -> None:
        self.count += 1
        now = self._clock()
        if now - self._warned_at >= TALLY_WARNING_EVERY_S:
            self._warned_at = now
            log.warning("%s (%d since start)", self.what, self.count)


class Connections:
    """The open connections, in the order to close them when a new one needs room."""

    def __init__(
        self, max_connections: int, read_timeout: timedelta, clock: Callable[[], float]
    ) -> None:
        self.max_connections = max_connections
        self._open: set[Connection] = set()
        self._idle: dict[Connection, None] = {}  # insertion order: longest first
        self._arriving: dict[Connection, None] = {}
        self.closed_for_room = Tally(
            f"{self.at_capacity()}: closed the longest-idle or slowest to make room", clock
        )
        self.late_heads = Tally(
            "closed connections whose request head was not complete within "
            f"{format_duration(read_timeout)} (limits.read_timeout)",
            clock,
        )

    def counts(self) -> dict[str, int]:
        return {"open": len(self._open), "idle": len(self._idle), "arriving": len(self._arriving)}

    def admit(self, connection: Connection) -> bool:
        """Make room for a new connection if the cap is reached; False: refuse it."""
        if len(self._open) >= self.max_connections:
            victim = next(iter(self._idle or self._arriving), None)
            if victim is None:
                return False
            self.forget(victim)
            victim.make_room()
            self.closed_for_room.add()
        self._open.add(connection)
        self._idle[connection] = None
        return True

    def place(self, connection: Connection, phase: Phase) -> None:
        """File a connection under its phase; one still arriving keeps its place in line."""
        self._idle.pop(connection, None)
        if phase in ARRIVING:
            self._arriving.setdefault(connection, None)
            return
        self._arriving.pop(connection, None)
        if phase is Phase.IDLE:
            self._idle[connection] = None

    def forget(self, connection: Connection) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)
        self._arriving.pop(connection, None)

    def at_capacity(self) -> str:
        return f"relay is at {self.max_connections} open connections (limits.max_connections)"
