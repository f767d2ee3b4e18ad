"""Durations as operators write them: `500ms`, `15s`, `5m`, `24h`, `3d`."""

from __future__ import annotations

import re
from datetime import timedelta

PATTERN = r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)\s*"
_DURATION = re.compile(PATTERN)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
EXAMPLES = "500ms, 15s, 5m, 24h, 3d"


def parse_duration(text: str) -> timedelta:
    """Parse one number with one unit; raise ValueError naming the bad text."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f'invalid duration "{text}" (use e.g. {EXAMPLES})')
    number, unit = match.groups()
    try:
        return timedelta(seconds=float(number) * _UNIT_SECONDS[unit])
    except OverflowError:
        raise ValueError(f'invalid duration "{text}": too long') from None


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling, for messages and summaries."""
    seconds = value.total_seconds()
    for unit in ("d", "h", "m", "s"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{round(seconds * 1000)}ms"


def format_duration_s(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds))
