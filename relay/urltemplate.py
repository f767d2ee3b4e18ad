"""URL templates: a value from an event stays one path segment or one query value.

The URL environment's `finalize` encodes every expression's output, so `/`, `?`, `#`, `&`,
`=`, `%`, `+`, spaces, control and non-ASCII characters cannot reshape the URL; the template's
literal text is sent as written. `url_raw` is the explicit opt-out: it returns `UrlText`, which
`finalize` lets through, and nothing in an event can be a `UrlText`.

A value that is exactly `.` or `..` is encoded too (`%2E%2E`), but RFC 3986 makes that the same
segment as `..`, and servers and proxies resolve it as one: a rendered path with such a segment
is refused rather than sent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, unquote

_DOT_VALUES = {".": "%2E", "..": "%2E%2E"}
_DOT_SEGMENTS = {".": "dropped from the path", "..": "one step up the path"}
# RFC 3986 unreserved and reserved characters and "%": what a request line may carry as is.
_NOT_URL_CHAR = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?#\[\]%]")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class UrlText(str):
    """Text already fit to stand in a URL as written: `finalize` does not encode it again."""

    __slots__ = ()


def encode_value(value: Any) -> str:
    """One path segment or query value: everything but `A-Za-z0-9-._~` percent-encoded (UTF-8).

    `str()` first, so a missing name raises as StrictUndefined does everywhere else.
    """
    text = str(value)
    return _DOT_VALUES.get(text) or quote(text, safe="")


def finalize(value: Any) -> str:
    """Jinja `finalize` of the URL environment: applied to each `{{ }}` output."""
    return value if isinstance(value, UrlText) else encode_value(value)


def url_raw(value: Any) -> UrlText:
    """The opt-out: the value as it is, free to add segments or parameters. Trusted text only."""
    return UrlText(str(value))


def url_encode(value: Any) -> UrlText:
    """Jinja's `urlencode` made safe: a string is one encoded value (Jinja's leaves `/`), a
    mapping or list of pairs becomes `key=value&...` with each part encoded; never twice."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        return UrlText(encode_value(value))
    pairs = value.items() if isinstance(value, Mapping) else value
    return UrlText("&".join(f"{encode_value(k)}={encode_value(v)}" for k, v in pairs))


URL_FILTERS = {"urlencode": url_encode, "url_raw": url_raw}


def url_text_problem(text: str) -> str | None:
    """Why `text` (a URL's path and query) cannot go on the wire as written; None if it can."""
    bad = _NOT_URL_CHAR.search(text)
    if bad is not None:
        char = bad.group()
        escaped = quote(char.encode("utf-8", "surrogatepass"), safe="")
        return f"{char!a} is not allowed in a URL (percent-encode it: {escaped})"
    escape = _BAD_ESCAPE.search(text)
    if escape is not None:
        return '"%" must start a %XX escape (a literal "%" is %25)'
    return None


def rendered_url_problem(text: str) -> str | None:
    """`url_text_problem`, or a path segment a value made into `.` or `..`."""
    problem = url_text_problem(text)
    if problem is not None:
        return problem
    path = text.partition("?")[0].partition("#")[0]
    for segment in path.split("/"):
        dots = unquote(segment) if "%" in segment else ""
        if dots in _DOT_SEGMENTS:
            return (
                f'a value made the path segment "{segment}", which servers resolve as '
                f'"{dots}" ({_DOT_SEGMENTS[dots]})'
            )
    return None
