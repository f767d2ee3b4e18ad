"""Text from outside made safe for where it goes next: log lines, terminals, headers, UTF-8.

Event data is hostile. A newline in an id forges a log line; ESC drives the terminal that
shows it; a bidirectional override reorders what a person reads; a lone surrogate (valid in
JSON as `"\\ud800"`) cannot be encoded as UTF-8 at all, so it fails whatever writes it.
"""

from __future__ import annotations

import re

MAX_IDENTIFIER_CHARS = 256

# C0 and C1 controls, DEL, line and paragraph separators, bidirectional overrides and
# isolates, and lone surrogates: what must never reach a log line or a terminal as itself.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` on one line: each control or invisible-reordering character as `\\xNN`/`\\uNNNN`."""
    return _UNSAFE.sub(_escape_char, text)


def escape_controls_json(text: str) -> str:
    """The same for JSON text: as `\\uNNNN` escapes, so the text stays valid JSON."""
    return _UNSAFE.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def describe_char(char: str) -> str:
    return f"U+{ord(char):04X}"


def identifier_problem(what: str, value: str) -> str | None:
    """Why `value` cannot be an event id or type, or None when it can.

    Ids and types reach headers (`Relay-Event-Id`), log lines and pages: printable text only
    (letters, marks, numbers, punctuation, symbols and the ASCII space), at most 256 characters.
    """
    if not value:
        return f"event {what} is empty"
    if len(value) > MAX_IDENTIFIER_CHARS:
        return (
            f"event {what} is {len(value)} characters long;"
            f" at most {MAX_IDENTIFIER_CHARS} are allowed"
        )
    problem = unprintable_problem(value)
    return None if problem is None else f"event {what} {problem}"


def unprintable_problem(value: str) -> str | None:
    """Where `value` holds its first character that is not printable text, or None."""
    if value.isprintable():
        return None
    position, char = next((i, c) for i, c in enumerate(value) if not c.isprintable())
    return f"holds {describe_char(char)} at position {position}; only printable text is allowed"


def header_value_problem(value: str) -> str | None:
    """Why `value` cannot be sent as an HTTP header value, or None when it can.

    A control character other than tab would end or split the header (RFC 9110 5.5), and a
    lone surrogate cannot be encoded; other text goes out as UTF-8.
    """
    found = _HEADER_UNSAFE.search(value)
    if found is None:
        return None
    return f"holds {describe_char(found.group())}, which a header value cannot carry"


def encode_utf8(text: str) -> bytes:
    """UTF-8, with each lone surrogate as U+FFFD, as JavaScript's TextEncoder does."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text).encode()


def header_text(value: str) -> str:
    """A received header value as text, keeping every byte.

    aiohttp decodes header bytes as UTF-8 and keeps invalid bytes as lone surrogates, which
    nothing can store or send. Such a value is read as ISO-8859-1 instead, as RFC 9110 (5.5)
    says field values historically were: each byte becomes one character, none is lost.
    """
    if value.isascii() or _SURROGATE.search(value) is None:
        return value
    return value.encode("utf-8", "surrogateescape").decode("latin-1")
