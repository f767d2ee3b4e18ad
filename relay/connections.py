"""Which connections are open, which are late, and which to close first when a new one needs room.

Pure bookkeeping, cheap per request: the server's connection protocol says when a connection
falls idle and when a request starts arriving; two insertion-ordered dicts keep each kind in
the order it began, so the longest-idle and the longest-arriving are always first. A request
whose body is in stays filed as arriving until it is answered; `make_room` and
`read_deadline_passed` find that out from the connection itself, when asked, instead of every
request paying for another move.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from relay.durations import format_duration

log = logging.getLogger("relay.connections")

TALLY_WARNING_EVERY_S = 60.0  # connections closed for room or lateness: a warning a minute


class Connection(Protocol):
    def make_room(self) -> bool:
        """Close for a newcomer; False if relay is working on this one's request."""

    def read_deadline_passed(self) -> None:
        """The request began limits.read_timeout ago: close it, or answer 408, if still arriving."""


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
    """The open connections: idle ones, and ones whose request is arriving, each oldest first."""

    def __init__(
        self, max_connections: int, read_timeout: timedelta, clock: Callable[[], float]
    ) -> None:
        self.max_connections = max_connections
        self.read_timeout = read_timeout
        self._read_timeout_s = read_timeout.total_seconds()
        self._clock = clock
        self._open: set[Connection] = set()
        self._idle: dict[Connection, None] = {}
        self._arriving: dict[Connection, float] = {}  # when its request's first byte came
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

    def at_capacity(self) -> str:
        return f"relay is at {self.max_connections} open connections (limits.max_connections)"

    def admit(self, connection: Connection) -> bool:
        """Make room for a new connection if the cap is reached; False: refuse it."""
        if len(self._open) >= self.max_connections and not self._make_room():
            return False
        self._open.add(connection)
        self._idle[connection] = None
        return True

    def _make_room(self) -> bool:
        while self._idle or self._arriving:
            victim = next(iter(self._idle or self._arriving))
            self._idle.pop(victim, None)
            self._arriving.pop(victim, None)
            if victim.make_room():
                self._open.discard(victim)
                self.closed_for_room.add()
                return True
        return False

    def now_idle(self, connection: Connection) -> None:
        self._arriving.pop(connection, None)
        self._idle[connection] = None

    def now_arriving(self, connection: Connection) -> None:
        """A request starts arriving; one that already is keeps its place and its start."""
        self._idle.pop(connection, None)
        self._arriving.setdefault(connection, self._clock())

    def forget(self, connection: Connection) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)
        self._arriving.pop(connection, None)

    def check_deadlines(self) -> None:
        """Tell each connection whose request began read_timeout ago; they are first in line."""
        started_before = self._clock() - self._read_timeout_s
        while self._arriving:
            connection, started_at = next(iter(self._arriving.items()))
            if started_at > started_before:
                return
            del self._arriving[connection]
            connection.read_deadline_passed()
