"""JSON on the hot path: orjson where it can, the standard library where it must.

orjson parses several times faster, but it reads integers beyond 64 bits as floats (losing
digits) and refuses NaN. A body with a run of 19 digits, which any such integer has, goes to
`json`, and so does one orjson refuses; `json`'s error text is the one a sender gets back.
The run is found by mapping every ASCII digit to "0" and looking for nineteen of them: the
same answer as a regular expression for 19 digits, for about 8 % of its cost (a regex walks its
pattern at every position of the body, ~150k instructions for a 784-byte one).

Nesting is bounded by orjson's limit of 1024 levels: orjson reads every body first, so `json`
only sees bodies within it (or ones orjson refused for NaN), and is given the recursion
headroom to read them; deeper ones are a ValueError, never a RecursionError.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson

MAX_DEPTH = 1024  # orjson's own limit
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS = b"0" * 19
_TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"


def loads(data: bytes) -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise ValueError(_TOO_DEEP) from None
        return _exact(data)
    if may_exceed_64_bits(data):
        return _exact(data)
    return value


def may_exceed_64_bits(data: bytes) -> bool:
    """Whether `data` holds a run of 19 ASCII digits (what an integer beyond 64 bits needs).

    `find`, not `in`: bytes' `in` first tries its operand as an int, raising and discarding a
    TypeError on every call (0.3 us here, on every ingest and every claimed event)."""
    return data.translate(_DIGITS_AS_ZEROS).find(_NINETEEN_DIGITS) >= 0


def _exact(data: bytes) -> Any:
    """`json`, which recurses once per level, with room for MAX_DEPTH more levels."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + MAX_DEPTH + 64)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError(_TOO_DEEP) from None
    finally:
        sys.setrecursionlimit(limit)


def dumps_compact(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a type orjson does not know, or an integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
