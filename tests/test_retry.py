"""The retry policy as pure values: classification, Retry-After, full jitter, the hard deadline."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from relay.events import Delivered, Failed, Gone, Retry
from relay.retry import (
    GiveUp,
    RetryPolicy,
    Schedule,
    classify_status,
    gone_as,
    parse_retry_after,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    assert classify_status(status, None, NOW) == Delivered(status)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_retry(status: int) -> None:
    assert classify_status(status, None, NOW) == Retry(f"HTTP {status}", status, None)


@pytest.mark.parametrize("status", [301, 302, 304, 400, 401, 403, 404, 422, 501])
def test_other_statuses_fail_at_once(status: int) -> None:
    assert classify_status(status, None, NOW) == Failed(f"HTTP {status}", status)


def test_410_is_gone_and_on_gone_dead_makes_it_a_failure() -> None:
    gone = classify_status(410, None, NOW)
    assert gone == Gone("HTTP 410 Gone", 410)
    assert gone_as(gone, "pause") == gone
    assert gone_as(gone, "dead") == Failed("HTTP 410 Gone", 410)
    assert gone_as(Retry("HTTP 503", 503), "dead") == Retry("HTTP 503", 503)


def test_retry_after_in_seconds_is_kept() -> None:
    assert classify_status(429, "7", NOW) == Retry("HTTP 429", 429, 7.0)


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after(formatdate(NOW + 30, usegmt=True), NOW) == 30.0


def test_retry_after_in_the_past_or_garbage() -> None:
    assert parse_retry_after(formatdate(NOW - 30, usegmt=True), NOW) == 0.0
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after(None, NOW) is None


POLICY = RetryPolicy(
    initial_s=0.5, multiplier=2.0, max_interval_s=10.0, max_elapsed_s=60.0, max_attempts=None
)


def test_backoff_grows_exponentially_up_to_max_interval() -> None:
    caps = [POLICY.backoff_cap_s(n) for n in range(1, 8)]
    assert caps == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert POLICY.backoff_cap_s(10_000) == 10.0


def test_full_jitter_draws_between_zero_and_the_cap() -> None:
    failure = Retry("HTTP 503", 503)
    assert POLICY.decide(failure, 3, NOW, NOW, lambda: 0.0) == Schedule(NOW)
    assert POLICY.decide(failure, 3, NOW, NOW, lambda: 0.5) == Schedule(NOW + 1.0)
    assert POLICY.decide(failure, 3, NOW, NOW, lambda: 1.0) == Schedule(NOW + 2.0)


def test_retry_after_is_honoured_over_a_shorter_backoff() -> None:
    failure = Retry("HTTP 429", 429, after_s=20.0)
    assert POLICY.decide(failure, 1, NOW, NOW, lambda: 1.0) == Schedule(NOW + 20.0)


def test_retry_after_past_max_elapsed_gives_up_instead() -> None:
    failure = Retry("HTTP 429", 429, after_s=120.0)
    decision = POLICY.decide(failure, 1, NOW, NOW, lambda: 1.0)
    assert decision == GiveUp("HTTP 429; gave up: next attempt would pass max_elapsed 1m")


def test_no_attempt_is_scheduled_past_max_elapsed() -> None:
    failure = Retry("HTTP 503", 503)
    first = NOW - 55.0
    assert POLICY.decide(failure, 9, first, NOW, lambda: 0.4) == Schedule(NOW + 4.0)
    assert isinstance(POLICY.decide(failure, 9, first, NOW, lambda: 0.6), GiveUp)


def test_max_attempts_caps_the_number_of_tries() -> None:
    policy = RetryPolicy(0.5, 2.0, 10.0, 3600.0, max_attempts=3)
    failure = Retry("connection error: refused")
    assert isinstance(policy.decide(failure, 2, NOW, NOW, lambda: 0.5), Schedule)
    assert policy.decide(failure, 3, NOW, NOW, lambda: 0.5) == GiveUp(
        "connection error: refused; gave up after 3 attempts (max_attempts)"
    )
