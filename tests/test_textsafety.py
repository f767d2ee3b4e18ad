"""Hostile text made safe: escaping for logs and terminals, ids, header values, UTF-8."""

from __future__ import annotations

import logging
import sys

import pytest

from relay.logs import SafeFormatter
from relay.redaction import REDACTED, Redactor
from relay.textsafety import (
    encode_utf8,
    escape_controls,
    escape_controls_json,
    header_text,
    header_value_problem,
    identifier_problem,
)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("plain text, café 事件", "plain text, café 事件"),
        ("a\nb\rc", "a\\x0ab\\x0dc"),
        ("\x00\x1b[2J\x7f\x85", "\\x00\\x1b[2J\\x7f\\x85"),
        ("\u2028\u2029", "\\u2028\\u2029"),
        ("\u202eevil\u2066", "\\u202eevil\\u2066"),
        ("lone \ud800", "lone \\ud800"),
        ("tab\tkept? no", "tab\\x09kept? no"),
    ],
)
def test_escape_controls(text: str, escaped: str) -> None:
    assert escape_controls(text) == escaped


def test_escape_controls_json_keeps_json_valid() -> None:
    assert escape_controls_json('{"a":"x\u2028\x85\ud800"}') == '{"a":"x\\u2028\\u0085\\ud800"}'


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("CASE_OPENED", None),
        ("evt 1 — café", None),
        ("x" * 256, None),
        ("", "event id is empty"),
        ("x" * 257, "event id is 257 characters long; at most 256 are allowed"),
        ("a\u200bb", "event id holds U+200B at position 1; only printable text is allowed"),
        ("\ud800", "event id holds U+D800 at position 0; only printable text is allowed"),
    ],
)
def test_identifier_problem(value: str, problem: str | None) -> None:
    assert identifier_problem("id", value) == problem


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("Bearer abc", True),
        ("tab\tinside", True),
        ("café \u2028 \x85", True),  # sent as UTF-8: no byte of it ends a header
        ("a\rb", False),
        ("a\nb", False),
        ("a\x00b", False),
        ("\x1b", False),
        ("\x7f", False),
        ("\udce9", False),
    ],
)
def test_header_value_problem(value: str, ok: bool) -> None:
    assert (header_value_problem(value) is None) is ok


def test_encode_utf8_replaces_lone_surrogates_only() -> None:
    assert encode_utf8("ok 😀") == "ok 😀".encode()
    assert encode_utf8("a\ud83db") == "a\ufffdb".encode()


def test_header_text_reads_bytes_that_are_not_utf8_as_latin1() -> None:
    received = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")
    assert header_text(received) == "café ÿ"
    assert header_text("café") == "café"  # valid UTF-8 stays as decoded
    assert header_text("ascii") == "ascii"


def test_redactor_cuts_every_form_of_a_secret() -> None:
    redact = Redactor(['s3cr/t"x', "whsec_AbCdEf==", "abc"])
    text = 'raw s3cr/t"x, json s3cr/t\\"x, url s3cr%2Ft%22x, b64 AbCdEf== and abc stays'
    assert redact(text) == (
        f"raw {REDACTED}, json {REDACTED}, url {REDACTED}, b64 {REDACTED} and abc stays"
    )
    assert Redactor([])("anything") == "anything"


def test_log_lines_are_escaped_and_redacted_tracebacks_keep_their_lines() -> None:
    formatter = SafeFormatter("%(levelname)s %(message)s")
    formatter.redact = Redactor(["tok-123456"])
    try:
        raise ValueError("failed with tok-123456")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "relay", logging.ERROR, __file__, 1, "event %s: %s", ("a\nFAKE b", "tok-123456"), exc_info
    )
    text = formatter.format(record)
    first, *rest = text.splitlines()
    assert first == f"ERROR event a\\x0aFAKE b: {REDACTED}"
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == f"ValueError: failed with {REDACTED}"
    assert "tok-123456" not in text
