"""Retry decisions as pure functions: classify a response, parse Retry-After, schedule the next try.

One policy owns the deadline: no attempt is scheduled past `max_elapsed` after the first.
Backoff uses full jitter: a uniform draw from [0, min(max_interval, initial * multiplier^n)].
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from relay.durations import format_duration_s
from relay.events import Delivered, Failed, Gone, Outcome, Retry
from relay.shared_config import OnGone, RetryConfig

# 408 Request Timeout, 425 Too Early, 429 Too Many Requests: the request may succeed later.
RETRYABLE_4XX = frozenset({408, 425, 429})
GONE = 410


def classify_status(status: int, retry_after: str | None, now: float) -> Outcome:
    """2xx delivered; 408/425/429 and 5xx but 501 retry; 410 is gone; any other status fails
    at once."""
    if 200 <= status < 300:
        return Delivered(status)
    if status in RETRYABLE_4XX or (500 <= status < 600 and status != 501):
        return Retry(f"HTTP {status}", status, parse_retry_after(retry_after, now))
    if status == GONE:
        return Gone(f"HTTP {status} Gone", status)
    return Failed(f"HTTP {status}", status)


def gone_as(outcome: Outcome, on_gone: OnGone) -> Outcome:
    """A target's `on_gone` applied: Gone pauses the target, or the delivery is dead at once."""
    if isinstance(outcome, Gone) and on_gone == "dead":
        return Failed(outcome.reason, outcome.status)
    return outcome


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), None if absent."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True, slots=True)
class Schedule:
    at: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_s: float
    multiplier: float
    max_interval_s: float
    max_elapsed_s: float
    max_attempts: int | None

    @classmethod
    def from_config(cls, retry: RetryConfig) -> RetryPolicy:
        return cls(
            initial_s=retry.initial.total_seconds(),
            multiplier=retry.multiplier,
            max_interval_s=retry.max_interval.total_seconds(),
            max_elapsed_s=retry.max_elapsed.total_seconds(),
            max_attempts=retry.max_attempts,
        )

    def backoff_cap_s(self, attempt: int) -> float:
        """The jitter ceiling after failed attempt number `attempt` (1-based)."""
        exponent = min(attempt - 1, 1000)
        try:
            grown = self.initial_s * math.pow(self.multiplier, exponent)
        except OverflowError:
            grown = math.inf
        return min(self.max_interval_s, grown)

    def decide(
        self,
        failure: Retry,
        attempt: int,
        first_attempt_at: float,
        now: float,
        random: Callable[[], float],
    ) -> Schedule | GiveUp:
        """When to try again after failed attempt `attempt`, or why not to."""
        if self.max_attempts is not None and attempt >= self.max_attempts:
            return GiveUp(f"{failure.reason}; gave up after {attempt} attempts (max_attempts)")
        delay = random() * self.backoff_cap_s(attempt)
        if failure.after_s is not None:
            delay = max(delay, failure.after_s)
        deadline = first_attempt_at + self.max_elapsed_s
        if now + delay > deadline:
            spent = format_duration_s(self.max_elapsed_s)
            return GiveUp(f"{failure.reason}; gave up: next attempt would pass max_elapsed {spent}")
        return Schedule(now + delay)
