"""The hot-path JSON codec accepts everything the standard library does."""

from __future__ import annotations

import json

import pytest

from relay import jsoncodec


def test_plain_json_round_trips() -> None:
    assert jsoncodec.loads(b'{"a": [1, 2.5, "Caf\\u00e9", null, true]}') == {
        "a": [1, 2.5, "Café", None, True]
    }
    assert jsoncodec.dumps_compact({"k": "Café"}) == '{"k":"Café"}'


def test_integers_beyond_64_bits_and_nan_fall_back_to_the_standard_library() -> None:
    big = 123456789012345678901234567890
    assert jsoncodec.loads(f'{{"n": {big}}}'.encode()) == {"n": big}
    assert jsoncodec.dumps_compact({"n": big}) == f'{{"n":{big}}}'
    value = jsoncodec.loads(b"[NaN]")[0]
    assert value != value


def test_broken_json_raises_the_standard_librarys_error() -> None:
    with pytest.raises(json.JSONDecodeError, match="Expecting value: line 1 column 8"):
        jsoncodec.loads(b'{"id": ')
