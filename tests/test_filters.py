"""Template filters, as plain functions and through a template."""

from __future__ import annotations

from pathlib import Path

import pytest

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


def test_filters_in_a_template(tmp_path: Path) -> None:
    compiler = TemplateCompiler(tmp_path)
    template = compiler.inline(
        '{"text": {{ (event.note | slack_escape | clip(12)) | json }},'
        ' "at": {{ event.ts | format_time("%H:%M") | json }}}',
        "t",
    )
    rendered = template.render({"event": {"note": '<b> & "q" done', "ts": 1661522222301}})
    assert rendered == '{"text": "&lt;b&gt; &…", "at": "13:57"}'
