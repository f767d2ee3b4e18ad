"""relay's log lines: one line per message whatever the event data holds, secrets cut out.

Messages quote event ids, answers of targets and errors, all of which come from outside: their
control characters are escaped, so a newline in them cannot forge a line and ESC cannot drive
the terminal. A traceback keeps its own lines in the text format. Every configured secret is
redacted from the whole record, traceback included.

Two formats: `text` for people, and `json` for log pipelines, one object per line with `ts`,
`level`, `logger`, `msg` and the fields a call site passes as `extra=` (FIELDS) where they apply.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Literal, TextIO

from relay.redaction import NOTHING_TO_REDACT, Redactor
from relay.textsafety import escape_controls, escape_controls_json

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

# What a log call may pass as `extra=`, in the order a JSON line lists them.
FIELDS = (
    "event_id",
    "source",
    "target",
    "delivery_id",
    "attempt",
    "status",
    "duration_ms",
    "reason",
    "result",
    "remote",
)


class SafeFormatter(logging.Formatter):
    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self.redact = NOTHING_TO_REDACT

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Every text value is redacted before it is encoded, so no
    secret survives in any field, and JSON escaping keeps each record on one line; what JSON
    leaves as itself but a terminal would act on (C1 controls, U+2028, bidirectional
    overrides, lone surrogates) is escaped too."""

    def __init__(self) -> None:
        super().__init__()
        self.redact = NOTHING_TO_REDACT

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": self.redact(record.getMessage()),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = self._value(value)
        if record.exc_info:
            line["exc"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = self.redact(self.formatStack(record.stack_info))
        return escape_controls_json(json.dumps(line, ensure_ascii=False))

    def _value(self, value: object) -> object:
        if isinstance(value, int | float):
            return value
        return self.redact(str(value))


def _timestamp(epoch_s: float) -> str:
    """RFC 3339 in UTC, to the millisecond: 2025-01-31T12:00:00.123Z."""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.removesuffix("+00:00") + "Z"


def formatter(log_format: LogFormat) -> SafeFormatter | JsonFormatter:
    return JsonFormatter() if log_format == "json" else SafeFormatter()


def configure(level: str, stream: TextIO, log_format: LogFormat = "text") -> None:
    """Log to `stream` at `level` in `log_format` (the `relay` command's logging)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(log_format))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def redact_secrets(secrets: Iterable[str]) -> None:
    """From now on, cut these values out of every line the root logger's handlers write."""
    redactor = Redactor(secrets)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, SafeFormatter | JsonFormatter):
            handler.formatter.redact = redactor
