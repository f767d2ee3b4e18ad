"""The hot-path JSON codec accepts everything the standard library does."""

from __future__ import annotations

import json
import sys

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


@pytest.mark.parametrize(
    "prefix",
    [b"", b"12345678901234567890,", b"NaN,"],
    ids=["plain", "big-integer", "nan"],
)
def test_nesting_beyond_the_limit_is_a_value_error_never_a_recursion_error(prefix: bytes) -> None:
    deep = b"[" + prefix + b"[" * 4999 + b"]" * 5000
    with pytest.raises(ValueError, match=r"^JSON nested deeper than 1024 levels$"):
        jsoncodec.loads(deep)


@pytest.mark.parametrize("prefix", [b"", b"12345678901234567890,"])
def test_nesting_up_to_the_limit_parses_however_deep_the_caller_is(prefix: bytes) -> None:
    body = b"[" + prefix + b"[" * (jsoncodec.MAX_DEPTH - 1) + b"]" * jsoncodec.MAX_DEPTH

    def nested(levels: int) -> object:  # parse with most of the recursion limit already used
        return jsoncodec.loads(body) if levels == 0 else nested(levels - 1)

    value = nested(sys.getrecursionlimit() - 100)
    assert isinstance(value, list)
