"""Who may use the console: sessions opened with the admin token, and CSRF checks.

A session is an opaque random id in an HttpOnly, SameSite=Strict cookie; the token itself is
never stored in the browser. The server keeps each session in memory (a restart signs
everyone out) with the digest of the token it was opened with, so rotating `admin.token`
(a reload) ends every session opened with the old one. Every POST carries the session's CSRF
token in a hidden field and must come from a page of this origin (`Origin`, else `Referer`).
Pure but for the clock and the random ids.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

SESSION_COOKIE = "relay_console"
CSRF_FIELD = "csrf"
SESSION_TTL_S = 12 * 3600.0  # an operator signs in again after a shift
MAX_SESSIONS = 1000  # past this, the oldest session ends first
SIGN_IN_FAILURES = 10  # wrong tokens one address may try in a window
SIGN_IN_WINDOW_S = 60.0
MAX_TRACKED_ADDRESSES = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    csrf: str  # the hidden field every POST of this session must carry
    token_digest: bytes  # of the admin token it was opened with
    expires_at: float


class Sessions:
    """The open sessions, by a digest of their cookie (a lookup reveals nothing by timing)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._key = secrets.token_bytes(32)
        self._by_digest: dict[bytes, Session] = {}

    def open(self, token: SecretStr | None) -> tuple[str, Session]:
        """A new session for whoever showed `token`: the cookie value and the session."""
        cookie = secrets.token_urlsafe(32)
        session = Session(
            secrets.token_urlsafe(32), self._token_digest(token), self._clock() + SESSION_TTL_S
        )
        if len(self._by_digest) >= MAX_SESSIONS:
            del self._by_digest[next(iter(self._by_digest))]
        self._by_digest[_digest(cookie)] = session
        return cookie, session

    def find(self, cookie: str | None, token: SecretStr | None) -> Session | None:
        """The live session of this cookie, opened with the running token; else None."""
        if not cookie:
            return None
        session = self._by_digest.get(_digest(cookie))
        if session is None:
            return None
        stale = session.expires_at <= self._clock()
        if stale or not hmac.compare_digest(session.token_digest, self._token_digest(token)):
            self.close(cookie)
            return None
        return session

    def close(self, cookie: str | None) -> None:
        if cookie:
            self._by_digest.pop(_digest(cookie), None)

    def _token_digest(self, token: SecretStr | None) -> bytes:
        text = b"" if token is None else token.get_secret_value().encode("utf-8", "replace")
        return hmac.new(self._key, text, hashlib.sha256).digest()


class FailedSignIns:
    """Wrong tokens per client address: after `SIGN_IN_FAILURES` within `SIGN_IN_WINDOW_S` of
    the first, that address is refused until the window ends, so nobody can try tokens fast.
    Memory stays bounded: past `MAX_TRACKED_ADDRESSES`, the address tracked longest goes."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._by_address: dict[str, tuple[float, int]] = {}  # first failure, failures since

    def wait_s(self, address: str) -> float:
        """How long `address` must wait before it may try a token; 0 when it may now."""
        entry = self._by_address.get(address)
        if entry is None:
            return 0.0
        first, failures = entry
        left = first + SIGN_IN_WINDOW_S - self._clock()
        if left <= 0:
            del self._by_address[address]
            return 0.0
        return left if failures >= SIGN_IN_FAILURES else 0.0

    def failed(self, address: str) -> None:
        now = self._clock()
        first, failures = self._by_address.pop(address, (now, 0))
        if first + SIGN_IN_WINDOW_S <= now:
            first, failures = now, 0
        if len(self._by_address) >= MAX_TRACKED_ADDRESSES:
            del self._by_address[next(iter(self._by_address))]
        self._by_address[address] = (first, failures + 1)

    def succeeded(self, address: str) -> None:
        self._by_address.pop(address, None)

    def __len__(self) -> int:  # addresses tracked
        return len(self._by_address)


def _digest(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode("utf-8", "replace")).digest()


def token_matches(token: SecretStr, given: str) -> bool:
    """Whether the sign-in form's value is the admin token, in constant time."""
    expected = token.get_secret_value().encode()
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), expected)


def csrf_refusal(
    session: Session | None, given: str | None, origin: str | None, referer: str | None, host: str
) -> str | None:
    """Why a POST may not change anything, or None when it may."""
    if not same_origin(origin, referer, host):
        return "this form was not sent from a page of this console (Origin does not match)"
    if session is None:
        return "you are not signed in, or your session has ended: sign in again"
    if given is None or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        return "this form is out of date (its CSRF token does not match): reload the page"
    return None


def same_origin(origin: str | None, referer: str | None, host: str) -> bool:
    """Whether the browser says the request came from a page served at `host`: by `Origin`
    (every POST from a current browser has one), else by `Referer`; neither: no."""
    source = origin if origin and origin != "null" else referer
    if not source:
        return False
    parts = urlsplit(source)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()
