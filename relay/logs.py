"""relay's log lines: one line per message whatever the event data holds, secrets cut out.

Messages quote event ids, answers of targets and errors, all of which come from outside: their
control characters are escaped, so a newline in them cannot forge a line and ESC cannot drive
the terminal. A traceback keeps its own lines. Every configured secret is redacted from the
whole record, traceback included.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TextIO

from relay.redaction import NOTHING_TO_REDACT, Redactor
from relay.textsafety import escape_controls

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class SafeFormatter(logging.Formatter):
    def __init__(self, fmt: str = FORMAT) -> None:
        super().__init__(fmt)
        self.redact = NOTHING_TO_REDACT

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))


def configure(level: str, stream: TextIO) -> None:
    """Log to `stream` at `level` through a SafeFormatter (the `relay` command's logging)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])


def redact_secrets(secrets: Iterable[str]) -> None:
    """From now on, cut these values out of every line the root logger's handlers write."""
    redactor = Redactor(secrets)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, SafeFormatter):
            handler.formatter.redact = redactor
