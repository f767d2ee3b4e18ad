"""Template filters that outbound messages need: JSON values, Slack escaping, times, clipping.

Each is a plain function, registered by `render.build_environment`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import jinja2

DEFAULT_TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"
# Numbers above this are milliseconds since the epoch (it is 1973 in ms, year 5138 in s).
_MS_THRESHOLD = 100_000_000_000


def to_json(value: Any) -> str:
    """Any value as JSON, so a string is safe inside a JSON template: `{{ x | json }}`."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here, naming the missing attribute
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def slack_escape(value: Any) -> str:
    """Escape `&`, `<`, `>` as Slack mrkdwn requires, so user text cannot forge links."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def format_time(value: Any, fmt: str = DEFAULT_TIME_FORMAT) -> str:
    """Epoch seconds or milliseconds (Flagright's `createdTimestamp`), or ISO 8601 text, in UTC."""
    when = parse_time(value)
    return when.astimezone(UTC).strftime(fmt)


def parse_time(value: Any) -> datetime:
    kind = type(value)
    if kind is int or kind is float:  # the common case first: warehouse rows parse many
        return datetime.fromtimestamp(value / 1000 if abs(value) >= _MS_THRESHOLD else value, UTC)
    if isinstance(value, bool):
        raise ValueError(f"format_time: not a time: {value!r}")
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) >= _MS_THRESHOLD else value
        return datetime.fromtimestamp(seconds, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"format_time: not an ISO 8601 time: {value!r}") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    if isinstance(value, jinja2.Undefined):
        str(value)
    raise ValueError(f"format_time: not a time: {type(value).__name__}")


# What `slack_escape` writes: a cut inside one would leave `&a` or `&l` in the message.
_ENTITIES = ("&amp;", "&lt;", "&gt;")
_LONGEST_ENTITY = max(map(len, _ENTITIES))


def clip(value: Any, length: int, marker: str = "…") -> str:
    """At most `length` characters, the marker included, when the text had to be cut.

    The cut never splits an `&amp;`, `&lt;` or `&gt;`: it moves to before the entity, so
    text escaped for Slack and then clipped stays escaped text.
    """
    text = str(value)
    if len(text) <= length:
        return text
    if length < len(marker):  # no room for the marker: the text alone, cut
        marker = ""
    cut = max(0, length - len(marker))
    return text[: _entity_safe_cut(text, cut)] + marker


def _entity_safe_cut(text: str, cut: int) -> int:
    """`cut`, or the start of the entity `text[:cut]` would split."""
    start = text.rfind("&", max(0, cut - _LONGEST_ENTITY + 1), cut)
    if start == -1:
        return cut
    if any(text.startswith(entity, start) and start + len(entity) > cut for entity in _ENTITIES):
        return start
    return cut


FILTERS = {
    "json": to_json,
    "slack_escape": slack_escape,
    "format_time": format_time,
    "clip": clip,
}
