"""Events read back from a store's row (relay/store/rows.py)."""

from __future__ import annotations

import json

import pytest

from relay.store.rows import event_from_row, headers_from_text


def test_an_event_reads_back_with_its_headers() -> None:
    row = (1, "src", "ev-1", "t", 10.0, b'{"n": 1}', '{"X-Id":"7","A":"b"}', None, None)
    event = event_from_row(row)
    assert (event.id, event.payload, event.headers) == ("ev-1", {"n": 1}, {"X-Id": "7", "A": "b"})


@pytest.mark.parametrize(
    ("text", "headers"),
    [
        ('{"X-Name":"caf\u00e9 \u2603","Digits":"1234567890123456789012"}', None),
        ('{"X-Odd":"\\ud800 alone"}', {"X-Odd": "\ud800 alone"}),  # orjson refuses: json reads it
        ('{"Dup":"1","Dup":"2"}', {"Dup": "2"}),
    ],
)
def test_headers_read_as_json_reads_them(text: str, headers: dict[str, str] | None) -> None:
    expected = json.loads(text) if headers is None else headers
    assert headers_from_text(text) == expected


def test_headers_that_are_not_json_are_an_error() -> None:
    with pytest.raises(ValueError, match="Expecting value"):
        headers_from_text('{"X": ')
