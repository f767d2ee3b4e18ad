"""JSON on the hot path: orjson where it can, the standard library where it must.

orjson parses several times faster, but it reads integers beyond 64 bits as floats (losing
digits) and refuses NaN. A body with a run of 19 digits, which any such integer has, goes to
`json`, and so does one orjson refuses; `json`'s error text is the one a sender gets back.

Nesting is bounded by orjson's limit of 1024 levels: orjson reads every body first, so `json`
only sees bodies within it (or ones orjson refused for NaN), and is given the recursion
headroom to read them; deeper ones are a ValueError, never a RecursionError.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

import orjson

MAX_DEPTH = 1024  # orjson's own limit
_MAYBE_BEYOND_64_BITS = re.compile(rb"\d{19}")
_TOO_DEEP = f"JSON nested deeper than {MAX_DEPTH} levels"


def loads(data: bytes) -> Any:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise ValueError(_TOO_DEEP) from None
        return _exact(data)
    if _MAYBE_BEYOND_64_BITS.search(data):
        return _exact(data)
    return value


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
