"""The hot-path JSON codec accepts everything the standard library does."""

from __future__ import annotations

import json
import re
import sys

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

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


# The check it replaced: its answers are the reference.
_OLD_CHECK = re.compile(rb"\d{19}")
_DIGIT_HEAVY = st.binary(max_size=80) | st.lists(
    st.sampled_from([b"0", b"9", b"5", b"1234567890", b"-", b".", b"e", b" ", b"\xd9\xa3", b"a"]),
    max_size=40,
).map(b"".join)


@given(_DIGIT_HEAVY)
def test_the_19_digit_check_answers_as_the_regex_did(data: bytes) -> None:
    assert jsoncodec.may_exceed_64_bits(data) == bool(_OLD_CHECK.search(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"1234567890123456789", True),  # 19 digits: 2**63 has them
        (b"123456789012345678", False),  # 18: always within 64 bits
        (b'{"n": 123456789012345678, "m": 9}', False),
        (b'{"s": "x0000000000000000000y"}', True),  # inside a string counts too: harmless
        ("١٢٣٤٥٦٧٨٩١٢٣٤٥٦٧٨٩١".encode(), False),  # only ASCII digits are digits in bytes
    ],
)
def test_the_19_digit_check(data: bytes, expected: bool) -> None:
    assert jsoncodec.may_exceed_64_bits(data) is expected


def _old_loads(data: bytes) -> object:
    """jsoncodec.loads as it was with the regex check."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)
    return json.loads(data) if _OLD_CHECK.search(data) else value


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@given(_JSON)
def test_loads_gives_what_it_gave_with_the_regex_check(value: object) -> None:
    data = json.dumps(value).encode()
    assert repr(jsoncodec.loads(data)) == repr(_old_loads(data))
