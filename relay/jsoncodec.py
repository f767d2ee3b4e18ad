"""JSON on the hot path: orjson where it can, the standard library where it must.

orjson parses several times faster, but it reads integers beyond 64 bits as floats (losing
digits) and refuses NaN. A body with a run of 19 digits, which any such integer has, goes to
`json`, and so does one orjson refuses; `json`'s error text is the one a sender gets back.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_MAYBE_BEYOND_64_BITS = re.compile(rb"\d{19}")


def loads(data: bytes) -> Any:
    if _MAYBE_BEYOND_64_BITS.search(data):
        return json.loads(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps_compact(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # a type orjson does not know, or an integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
