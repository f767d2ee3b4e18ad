"""The config's addresses: target URLs (a fixed origin, a path that may be templated), the
listen address and the store URL. Messages never echo what may hold a secret.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import yarl

from relay.fields import error
from relay.urltemplate import url_text_problem

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
