"""The config's addresses: target URLs (a fixed origin, a path that may be templated), the
listen address and the store URL. Messages never echo what may hold a secret.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import yarl

from relay.durations import parse_duration
from relay.fields import error
from relay.urltemplate import url_text_problem

SQLITE_OPTIONS = {"synchronous": ("normal", "full"), "busy_timeout": None}
_ORIGIN = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*)(.*)$", re.DOTALL)


def split_url(url: str) -> tuple[str, str]:
    """`scheme://host[:port]` and the rest (path, query, fragment)."""
    match = _ORIGIN.match(url)
    return (match.group(1), match.group(2)) if match else (url, "")


def check_url_origin(url: str) -> None:
    """Scheme and host are fixed; only the path and query may hold template expressions.

    A path and query without any is sent exactly as written, so it must be fit for a URL
    (a templated one is checked when compiled).
    """
    origin, rest = split_url(url)
    if "{{" in origin or "{%" in origin:
        raise error(
            "url", "only the path and query may contain template expressions, not scheme or host"
        )
    parts = urlsplit(origin)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise error("url", f'url must be http(s)://HOST/..., got "{_url_preview(origin, rest)}"')
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise error("url", f'invalid port in "{_url_preview(origin, rest)}"') from None
    try:
        yarl.URL(origin)  # as targets send it: an IDN host in punycode
    except ValueError:
        raise error("url", f'invalid host in "{_url_preview(origin, rest)}"') from None
    problem = None if "{{" in rest or "{%" in rest else url_text_problem(rest)
    if problem is not None:
        raise error("url", problem)


def _url_preview(origin: str, rest: str) -> str:
    """Enough of a url to find it, without the user info, path or query that may hold secrets."""
    if "://" not in origin:
        origin, sep, _ = origin.partition("/")
        return origin + ("/..." if sep else "")
    scheme, _, authority = origin.partition("://")
    if "@" in authority:
        authority = "...@" + authority.rpartition("@")[2]
    return f"{scheme}://{authority}" + ("/..." if rest else "")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    ok = sep and host and port.isascii() and port.isdigit() and 0 < int(port) < 65536
    if not ok:
        raise error("listen", f'listen must be "HOST:PORT", got "{listen}"')
    return host.strip("[]"), int(port)


def check_store(store: str) -> None:
    """Only the embedded SQLite store exists; its query options are checked here, not at start."""
    scheme, sep, _ = store.partition("://")
    if not sep:
        raise error("store", f'store must be a URL such as sqlite:///var/relay.db, got "{store}"')
    if not store.startswith("sqlite:///"):
        # Only the scheme is quoted: a database URL may carry a password.
        raise error("store", f'unsupported store "{scheme}://...": use sqlite:///PATH')
    file_part, _, query = store.removeprefix("sqlite:///").partition("?")
    if not file_part:
        raise error("store", "sqlite:/// needs a file path, e.g. sqlite:///var/relay.db")
    wrong: list[str] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        allowed = SQLITE_OPTIONS.get(name, ())
        if name not in SQLITE_OPTIONS:
            wrong.append(f'unknown option "{name}" (use {" or ".join(SQLITE_OPTIONS)})')
        elif allowed is not None and value not in allowed:
            wrong.append(f'{name} must be {" or ".join(allowed)}, got "{value}"')
        elif name == "busy_timeout":
            try:
                parse_duration(value)
            except ValueError as exc:
                wrong.append(f"busy_timeout: {exc}")
    if wrong:
        raise error("store", "; ".join(wrong))
