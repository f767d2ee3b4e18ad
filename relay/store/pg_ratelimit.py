"""A target's send rate shared by every replica: one row holds the target's next free slot.

Each send takes the next slot with one atomic statement
(`next_at = greatest(next_at, now) + interval`), so replicas together send no faster than the
limit. If the store cannot be reached the replica spaces its own sends (the in-process
limiter) rather than stop delivering: the limit then holds per replica until it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from relay.ratelimit import RateLimiter

log = logging.getLogger("relay.store")

TAKE_SLOT = (
    "INSERT INTO rate_slots AS s (target, next_at) VALUES ($1, $2::float8 + $3::float8)"
    " ON CONFLICT (target) DO UPDATE SET next_at = greatest(s.next_at, $2::float8) + $3::float8"
    " RETURNING next_at - $3::float8"
)


class SharedRateLimiter:
    def __init__(
        self,
        acquire: Callable[[], Any],
        target: str,
        per_second: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval_s = 1.0 / per_second
        self._acquire = acquire
        self._target = target
        self._clock = clock
        self._sleep = sleep
        self._alone = RateLimiter(per_second, clock, sleep)

    async def reserve(self) -> float:
        """Take the target's next slot across replicas; how long to wait for it."""
        now = self._clock()
        async with self._acquire() as conn:
            slot: float = await conn.fetchval(TAKE_SLOT, self._target, now, self.interval_s)
        return max(0.0, slot - now)

    async def acquire(self) -> None:
        try:
            wait_s = await self.reserve()
        except Exception as exc:
            log.warning(
                "target %s: cannot take a shared send slot (%s): spacing this replica's sends",
                self._target,
                exc,
            )
            wait_s = self._alone.reserve()
        if wait_s > 0:
            await self._sleep(wait_s)
