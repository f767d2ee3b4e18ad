"""Log formats: JSON lines carry the fields a call passes, escaped and with every secret cut out;
the text format stays as people read it; `--log-format` and RELAY_LOG_FORMAT choose."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from relay import logs
from relay.cli import _parser, main
from relay.logs import JsonFormatter, SafeFormatter
from relay.redaction import Redactor

SECRET = "s3cr3t-token-value"


def record(
    msg: str, *args: object, level: int = logging.WARNING, **fields: object
) -> logging.LogRecord:
    made = logging.LogRecord("relay.delivery", level, __file__, 1, msg, args, None)
    made.__dict__.update(fields)
    return made


def json_formatter() -> JsonFormatter:
    formatter = JsonFormatter()
    formatter.redact = Redactor([SECRET])
    return formatter


def test_a_json_line_escapes_and_redacts_every_value_from_outside() -> None:
    hostile = f"line one\nline two {SECRET} \x1b[2J \u2028 \x85 \u202e"
    line = json_formatter().format(
        record(
            "target %s: event %s is dead: %s",
            "out",
            "e-1",
            hostile,
            event_id="e-1",
            target="out",
            reason=hostile,
            remote=f"10.0.0.1 {SECRET}",
        )
    )
    assert "\n" not in line
    assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e]", line)
    assert SECRET not in line
    parsed = json.loads(line)
    redacted = hostile.replace(SECRET, "[redacted]")
    assert parsed["msg"] == f"target out: event e-1 is dead: {redacted}"
    assert parsed["reason"] == redacted  # JSON keeps the text; only its encoding is escaped
    assert parsed["remote"] == "10.0.0.1 [redacted]"


def test_a_json_line_has_the_time_level_logger_and_the_fields_that_apply() -> None:
    made = record(
        "retrying",
        level=logging.INFO,
        event_id="e-1",
        source="shop",
        target="out",
        delivery_id=7,
        attempt=2,
        status=503,
        duration_ms=12.5,
        reason="HTTP 503",
        result="retry",
        remote=None,  # does not apply: left out
        unrelated="not a field relay logs",
    )
    made.created = 1_700_000_000.25
    parsed = json.loads(json_formatter().format(made))
    assert parsed == {
        "ts": "2023-11-14T22:13:20.250Z",
        "level": "info",
        "logger": "relay.delivery",
        "msg": "retrying",
        "event_id": "e-1",
        "source": "shop",
        "target": "out",
        "delivery_id": 7,
        "attempt": 2,
        "status": 503,
        "duration_ms": 12.5,
        "reason": "HTTP 503",
        "result": "retry",
    }


def test_a_traceback_is_one_field_of_one_line_with_its_secrets_cut_out() -> None:
    try:
        raise RuntimeError(f"answer was:\n{SECRET}")
    except RuntimeError:
        made = logging.LogRecord("relay", logging.ERROR, __file__, 1, "boom", (), sys.exc_info())
    line = json_formatter().format(made)
    assert "\n" not in line
    assert SECRET not in line
    parsed = json.loads(line)
    assert parsed["exc"].startswith("Traceback (most recent call last):\n")
    assert parsed["exc"].endswith("RuntimeError: answer was:\n[redacted]")


def test_a_lone_surrogate_cannot_break_the_line() -> None:
    line = json_formatter().format(record("event %s", "\ud800", reason="\udcff"))
    line.encode("utf-8")  # would raise if it held a lone surrogate itself
    assert json.loads(line)["reason"] == "\udcff"


def test_the_text_format_stays_a_readable_line_without_the_fields() -> None:
    formatter = SafeFormatter("%(levelname)s %(name)s: %(message)s")
    formatter.redact = Redactor([SECRET])
    line = formatter.format(
        record("event %s is dead: %s", "e-1", f"a\nb {SECRET}", target="out", status=400)
    )
    assert line == "WARNING relay.delivery: event e-1 is dead: a\\x0ab [redacted]"


@pytest.fixture
def root_handler() -> Iterator[logging.Handler]:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    yield handler
    logging.getLogger().removeHandler(handler)


def test_secrets_from_the_config_reach_a_json_handler(root_handler: logging.Handler) -> None:
    logs.redact_secrets([SECRET])
    formatter = root_handler.formatter
    assert isinstance(formatter, JsonFormatter)
    assert SECRET not in formatter.format(record("x", reason=SECRET))


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "-c", "relay.yaml"], "text"),
        (["--log-format", "json", "run", "-c", "relay.yaml"], "json"),
        (["run", "-c", "relay.yaml", "--log-format", "json"], "json"),
        (["--log-format", "json", "run", "-c", "relay.yaml", "--log-format", "text"], "text"),
    ],
)
def test_log_format_is_chosen_before_or_after_the_command(
    argv: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAY_LOG_FORMAT", raising=False)
    assert _parser().parse_args(argv).log_format == expected


def test_relay_log_format_sets_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_LOG_FORMAT", "json")
    assert _parser().parse_args(["run", "-c", "relay.yaml"]).log_format == "json"
    args = _parser().parse_args(["run", "-c", "relay.yaml", "--log-format", "text"])
    assert args.log_format == "text"


def test_an_unknown_relay_log_format_is_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RELAY_LOG_FORMAT", "yaml")
    with pytest.raises(SystemExit) as exited:
        main(["check", "-c", "relay.yaml"])
    assert exited.value.code == 2
    assert "RELAY_LOG_FORMAT must be one of text, json" in capsys.readouterr().err
