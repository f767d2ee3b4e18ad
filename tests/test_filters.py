"""Template filters, as plain functions and through a template."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from relay.filters import clip, format_time, slack_escape, to_json
from relay.render import TemplateCompiler


def test_slack_escape_escapes_the_three_control_characters() -> None:
    assert slack_escape("a & b <@U123> <!channel>") == "a &amp; b &lt;@U123&gt; &lt;!channel&gt;"
    assert slack_escape(5) == "5"


def test_json_makes_text_safe_inside_json() -> None:
    assert to_json('say "hi"\nnow') == '"say \\"hi\\"\\nnow"'
    assert to_json({"a": [1, None]}) == '{"a":[1,null]}'
    assert to_json("Café") == '"Café"'


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1661522222301, "2022-08-26 13:57:02 UTC"),  # Flagright createdTimestamp (ms)
        (1661522222, "2022-08-26 13:57:02 UTC"),  # seconds
        ("2023-09-13T13:05:18-04:00", "2023-09-13 17:05:18 UTC"),  # Flipt RFC 3339
        ("2026-11-20T10:00:00.123456Z", "2026-11-20 10:00:00 UTC"),  # Flagsmith
    ],
)
def test_format_time_reads_ms_seconds_and_iso(value: object, expected: str) -> None:
    assert format_time(value) == expected


def test_format_time_takes_a_format_and_refuses_garbage() -> None:
    assert format_time(0, "%d %b %Y") == "01 Jan 1970"
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        format_time("yesterday")
    with pytest.raises(ValueError, match="not a time"):
        format_time(True)


def test_clip_keeps_short_text_and_marks_the_cut() -> None:
    assert clip("short", 10) == "short"
    assert clip("abcdefghij", 5) == "abcd…"
    assert len(clip("x" * 5000, 3000)) == 3000
    assert clip("abcdefghij", 8, "[+]") == "abcde[+]"


@pytest.mark.parametrize(
    ("text", "length", "expected"),
    [
        ("ba&amp;b", 5, "ba…"),  # the cut would leave "ba&a"
        ("ba&amp;bc", 8, "ba&amp;…"),  # the entity is whole: nothing moves
        ("x&lt;y", 4, "x…"),
        ("x&gt;y", 3, "x…"),
        ("&amp;&amp;", 7, "&amp;…"),
        ("&amp;", 3, "…"),  # nothing of the text is left
        ("AT&T is fine", 5, "AT&T…"),  # a bare "&" is no entity
    ],
)
def test_clip_never_splits_an_entity(text: str, length: int, expected: str) -> None:
    assert clip(text, length) == expected


def test_clip_without_room_for_the_marker_cuts_the_text_alone() -> None:
    assert clip("abcdef", 2, "[+]") == "ab"
    assert clip("a&lt;b", 2, "[+]") == "a"
    assert clip("abcdef", 0) == ""
    assert clip("abcdef", -3) == ""


# Every "&" in escaped text starts one of the three entities slack_escape writes.
_BARE_AMPERSAND = re.compile(r"&(?!amp;|lt;|gt;)")


@settings(max_examples=500, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("&<>a;lmgtp \n…é"), max_size=60) | st.text(max_size=60),
    length=st.integers(min_value=0, max_value=70),
    marker=st.sampled_from(["…", "[+]", ""]),
)
@example(text="ba&b", length=4, marker="…")  # the bug: "ba&a…"
def test_clip_of_escaped_text_is_short_enough_and_keeps_every_entity_whole(
    text: str, length: int, marker: str
) -> None:
    escaped = slack_escape(text)
    clipped = clip(escaped, length, marker)
    assert len(clipped) <= length
    kept = clipped
    if clipped != escaped and length >= len(marker):
        assert clipped.endswith(marker)
        kept = clipped.removesuffix(marker) if marker else clipped
    assert escaped.startswith(kept)
    assert not _BARE_AMPERSAND.search(kept), clipped
    # Cut before the entity, not earlier: at most an entity's length less one is given up.
    assert len(kept) >= min(len(escaped), length - len(marker)) - 4


def test_filters_in_a_template(tmp_path: Path) -> None:
    compiler = TemplateCompiler(tmp_path)
    template = compiler.inline(
        '{"text": {{ (event.note | slack_escape | clip(12)) | json }},'
        ' "at": {{ event.ts | format_time("%H:%M") | json }}}',
        "t",
    )
    rendered = template.render({"event": {"note": '<b> & "q" done', "ts": 1661522222301}})
    assert rendered == '{"text": "&lt;b&gt; …", "at": "13:57"}'
