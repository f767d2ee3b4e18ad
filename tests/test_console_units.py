"""The console's pure parts: sessions and their end, the origin check, where sign-in may
return to, relative times and a target's health."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from relay.console.forms import local_path
from relay.console.session import (
    MAX_SESSIONS,
    MAX_TRACKED_ADDRESSES,
    SESSION_TTL_S,
    SIGN_IN_FAILURES,
    SIGN_IN_WINDOW_S,
    FailedSignIns,
    Sessions,
    csrf_refusal,
    same_origin,
    token_matches,
)
from relay.console.views import health, query_string, relative, utc_text
from tests.browser import unavailable

TOKEN = SecretStr("the-admin-token-0123")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_is_found_by_its_cookie_until_it_expires() -> None:
    clock = Clock()
    sessions = Sessions(clock)
    cookie, session = sessions.open(TOKEN)
    assert sessions.find(cookie, TOKEN) == session
    assert sessions.find("another-cookie", TOKEN) is None
    assert sessions.find(None, TOKEN) is None
    clock.now += SESSION_TTL_S
    assert sessions.find(cookie, TOKEN) is None


def test_a_new_token_or_signing_out_ends_a_session() -> None:
    sessions = Sessions(Clock())
    cookie, _ = sessions.open(TOKEN)
    assert sessions.find(cookie, SecretStr("a-rotated-token-4567")) is None
    assert sessions.find(cookie, TOKEN) is None  # ended, not only hidden
    cookie, _ = sessions.open(TOKEN)
    sessions.close(cookie)
    assert sessions.find(cookie, TOKEN) is None


def test_sessions_are_capped_oldest_first() -> None:
    sessions = Sessions(Clock())
    first, _ = sessions.open(TOKEN)
    cookies = [sessions.open(TOKEN)[0] for _ in range(MAX_SESSIONS)]
    assert sessions.find(first, TOKEN) is None
    assert sessions.find(cookies[-1], TOKEN) is not None


def test_an_address_that_keeps_giving_wrong_tokens_waits_out_the_window() -> None:
    clock = Clock()
    failures = FailedSignIns(clock)
    for _ in range(SIGN_IN_FAILURES - 1):
        failures.failed("10.0.0.1")
    assert failures.wait_s("10.0.0.1") == 0.0
    clock.now += 10
    failures.failed("10.0.0.1")
    assert failures.wait_s("10.0.0.1") == SIGN_IN_WINDOW_S - 10
    assert failures.wait_s("10.0.0.2") == 0.0  # another address is not held back
    clock.now += SIGN_IN_WINDOW_S - 10
    assert failures.wait_s("10.0.0.1") == 0.0
    failures.failed("10.0.0.1")  # a new window: one failure in it
    assert failures.wait_s("10.0.0.1") == 0.0


def test_a_right_token_clears_an_address_and_tracking_is_bounded() -> None:
    failures = FailedSignIns(Clock())
    for _ in range(SIGN_IN_FAILURES - 1):
        failures.failed("10.0.0.1")
    failures.succeeded("10.0.0.1")
    failures.failed("10.0.0.1")
    assert failures.wait_s("10.0.0.1") == 0.0
    for n in range(MAX_TRACKED_ADDRESSES + 5):
        failures.failed(f"addr-{n}")
    assert len(failures) == MAX_TRACKED_ADDRESSES


def test_cookies_and_csrf_tokens_are_random_and_distinct() -> None:
    sessions = Sessions(Clock())
    opened = [sessions.open(TOKEN) for _ in range(50)]
    values = {cookie for cookie, _ in opened} | {session.csrf for _, session in opened}
    assert len(values) == 100
    assert all(len(value) >= 40 for value in values)


def test_the_token_comparison() -> None:
    assert token_matches(TOKEN, " the-admin-token-0123\n")
    assert not token_matches(TOKEN, "the-admin-token-012")
    assert not token_matches(TOKEN, "the-admin-token-0123\udcff")


@pytest.mark.parametrize(
    ("origin", "referer", "same"),
    [
        ("http://relay.local:9090", None, True),
        ("https://RELAY.local:9090", None, True),
        ("http://relay.local:9091", None, False),
        ("http://evil.example", "http://relay.local:9090/", False),
        ("null", "http://relay.local:9090/dead", True),
        (None, "http://relay.local:9090/dead", True),
        (None, "http://relay.local:9090.evil.example/", False),
        ("javascript://relay.local:9090", None, False),
        (None, None, False),
    ],
)
def test_the_origin_check(origin: str | None, referer: str | None, same: bool) -> None:
    assert same_origin(origin, referer, "relay.local:9090") is same


def test_csrf_refusals_say_what_to_do() -> None:
    sessions = Sessions(Clock())
    _, session = sessions.open(TOKEN)
    here = "http://relay.local:9090"
    assert csrf_refusal(session, session.csrf, here, None, "relay.local:9090") is None
    assert "reload the page" in str(csrf_refusal(session, "x", here, None, "relay.local:9090"))
    assert "reload the page" in str(csrf_refusal(session, None, here, None, "relay.local:9090"))
    assert "sign in again" in str(csrf_refusal(None, "x", here, None, "relay.local:9090"))
    assert "Origin" in str(csrf_refusal(session, session.csrf, None, None, "relay.local:9090"))


@pytest.mark.parametrize(
    ("asked", "lands"),
    [
        ("/dead?target=a", "/dead?target=a"),
        ("//evil.example/x", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/\n/evil.example", "/"),
        ("/ /evil.example", "/"),
        ("/dead?target=caf\u00e9", "/"),
        ("https://evil.example/", "/"),
        ("", "/"),
        (None, "/"),
    ],
)
def test_sign_in_returns_only_to_a_local_path(asked: str | None, lands: str) -> None:
    assert local_path(asked) == lands


def test_relative_times_and_their_exact_utc() -> None:
    iso = "2026-01-02T03:04:05.678Z"
    then = 1767323045.678
    assert relative(iso, then + 0.5) == "just now"
    assert relative(iso, then + 90) == "1m ago"
    assert relative(iso, then + 3 * 3600 + 300) == "3h 5m ago"
    assert relative(iso, then - 30) == "in 30s"
    assert utc_text(iso) == "2026-01-02 03:04:05.678 UTC"


def row(**fields: object) -> dict[str, object]:
    return {"state": "active", "last_error_at": None, "last_success_at": None, **fields}


def test_a_targets_health_is_its_last_attempt() -> None:
    early, late = "2026-01-02T03:04:05.000Z", "2026-01-02T03:05:05.000Z"
    assert health(row()) == "idle"
    assert health(row(last_success_at=early)) == "ok"
    assert health(row(last_error_at=early)) == "failing"
    assert health(row(last_success_at=early, last_error_at=late)) == "failing"
    assert health(row(last_success_at=late, last_error_at=early)) == "ok"
    assert health(row(state="paused", last_error_at=late)) == "paused"


def test_links_keep_the_filter_and_drop_empty_values() -> None:
    shown = query_string({"state": "dead", "type": "A*"}, before=7)
    assert shown == "state=dead&type=A%2A&before=7"
    assert query_string({"state": "", "event": "a&b=c"}, before=None) == "event=a%26b%3Dc"


def test_without_the_browser_its_tests_skip_on_a_laptop_and_fail_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="BROWSER NOT AVAILABLE"):
        unavailable("/usr/bin/chromium is missing")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires the browser"):
        unavailable("/usr/bin/chromium is missing")
