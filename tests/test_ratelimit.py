"""The per-target send rate, in virtual time: the limiter's clock and sleep are the test's."""

from __future__ import annotations

import asyncio

import pytest

from relay.ratelimit import RateLimiter


class VirtualTime:
    """A clock that moves only when the limiter sleeps: each sleep is recorded, not waited."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)  # let others run, as a real sleep would


def test_a_burst_is_given_one_slot_per_interval() -> None:
    time = VirtualTime()
    limiter = RateLimiter(4, time.clock, time.sleep)
    assert [limiter.reserve() for _ in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_a_free_slot_is_taken_at_once_and_unused_time_is_not_saved_up() -> None:
    time = VirtualTime()
    limiter = RateLimiter(2, time.clock, time.sleep)
    assert limiter.reserve() == 0.0
    time.now = 10.0  # idle far longer than the interval
    assert [limiter.reserve() for _ in range(3)] == [0.0, 0.5, 1.0]  # no burst allowance


async def test_each_acquire_waits_for_its_slot_before_returning() -> None:
    time = VirtualTime()
    limiter = RateLimiter(10, time.clock, time.sleep)
    sent_at = []
    for _ in range(4):
        await limiter.acquire()
        sent_at.append(time.now)
    assert sent_at == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert len(time.sleeps) == 3  # the first slot was free


async def test_concurrent_acquires_share_one_rate() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the clock stands still: all ask at once
        waits.append(seconds)
        await asyncio.sleep(0)

    limiter = RateLimiter(5, lambda: 0.0, sleep)
    await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    assert sorted(waits) == pytest.approx([0.2, 0.4, 0.6])  # each its own slot
