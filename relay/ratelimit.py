"""Per-target send rate: sends are spaced at least 1/rate apart; a burst waits, nothing drops.

The queue is the store: deliveries beyond what the limiter lets through stay pending there.
This limiter is per process; a store that replicas share gives each target one limiter for
all of them (relay/store/pg_ratelimit.py) through `Store.rate_limiter`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol


class Limiter(Protocol):
    @property
    def interval_s(self) -> float:
        """The time between two sends at the limit."""
        ...

    async def acquire(self) -> None:
        """Wait for the next send slot."""
        ...


class RateLimiter:
    def __init__(
        self,
        per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval_s = 1.0 / per_second
        self._clock = clock
        self._sleep = sleep
        self._next_at = 0.0

    def reserve(self) -> float:
        """Take the next slot; return how long to wait for it (0 when it is free now)."""
        now = self._clock()
        at = max(now, self._next_at)
        self._next_at = at + self.interval_s
        return at - now

    async def acquire(self) -> None:
        wait_s = self.reserve()
        if wait_s > 0:
            await self._sleep(wait_s)


def local_limiter(target: str, per_second: float) -> Limiter:
    """The limiter of a target whose sends no other process shares."""
    return RateLimiter(per_second)
