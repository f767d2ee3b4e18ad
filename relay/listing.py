"""Deliveries and their attempts as an operator reads them: a line of text or a JSON object each.

Pure: a record from the store in, text or a JSON-ready mapping out; `relay deliveries` prints
them and an admin endpoint can serve the same. Ids, types, errors, headers, bodies and answers
all came from outside, so every value is redacted (each configured secret, and header values
whose name says credential) and, in text, has its control characters escaped: a value can
neither forge a line nor drive the terminal.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Container, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay.fields import SENSITIVE_HEADER
from relay.redaction import REDACTED, Redactor
from relay.store.base import (
    AttemptRecord,
    DeliveryDetail,
    DeliveryRecord,
    StoredEvent,
    is_held,
)
from relay.textsafety import escape_controls, escape_controls_json

NOT_CONFIGURED = " (not in the config)"
BODY_PREVIEW_BYTES = 2048  # of an event's body, in `relay deliveries show`


def delivery_line(record: DeliveryRecord, redact: Redactor, targets: Container[str]) -> str:
    """One tab-separated line. A target the config no longer has is marked: its pending
    deliveries wait for it."""
    due = _due(record)
    status = record.last_status if record.last_status is not None else "-"
    fields = [
        str(record.id),
        record.state,
        record.target + ("" if record.target in targets else NOT_CONFIGURED),
        f"{record.source}/{record.event_id}",
        record.event_type,
        f"attempts={record.attempts}",
        f"status={status}",
        f"due={due}",
        record.last_error or "",
    ]
    return "\t".join(escape_controls(redact(field)) for field in fields)


def delivery_fields(
    record: DeliveryRecord, redact: Redactor, targets: Container[str]
) -> dict[str, Any]:
    """The delivery as a JSON-ready mapping, text redacted; times in ISO 8601 UTC."""
    return {
        "id": record.id,
        "state": record.state,
        "target": redact(record.target),
        "target_configured": record.target in targets,
        "source": redact(record.source),
        "event_id": redact(record.event_id),
        "type": redact(record.event_type),
        "received_at": iso_time(record.received_at),
        "attempts": record.attempts,
        "last_status": record.last_status,
        "next_attempt_at": (
            iso_time(record.next_attempt_at) if _waits_for_its_time(record) else None
        ),
        "waits_for_its_key": record.state == "pending" and is_held(record.next_attempt_at),
        "last_error": None if record.last_error is None else redact(record.last_error),
    }


def _due(record: DeliveryRecord) -> str:
    if record.state != "pending":
        return "-"
    if is_held(record.next_attempt_at):
        return "after the older one of its key"  # ordering: it waits for its key's head
    return _clock_time(record.next_attempt_at)


def _waits_for_its_time(record: DeliveryRecord) -> bool:
    return record.state == "pending" and not is_held(record.next_attempt_at)


def detail_lines(detail: DeliveryDetail, redact: Redactor, targets: Container[str]) -> list[str]:
    """`relay deliveries show`: the delivery's line, its event, and each attempt."""
    event = detail.event
    lines = [
        f"event {event.source}/{event.event_id}, type {event.type}",
        f"  received {iso_time(event.received_at)}",
    ]
    if event.created_at is not None:
        lines.append(f"  created {iso_time(event.created_at)}")
    lines.append("  headers:")
    lines += [f"    {name}: {value}" for name, value in shown_headers(event, redact).items()]
    preview, size = body_preview(event, redact)
    lines += [f"  body ({size} bytes):", f"    {preview}", ""]
    lines.append(f"{len(detail.attempts)} attempt(s) recorded")
    previous = 0
    for attempt in detail.attempts:
        if attempt.number <= previous:  # a replay counts attempts from 1 again
            lines.append("  replayed")
        previous = attempt.number
        lines += _attempt_lines(attempt, redact)
    shown = [escape_controls(redact(line)) for line in lines]
    return [delivery_line(detail.delivery, redact, targets), "", *shown]


def _attempt_lines(attempt: AttemptRecord, redact: Redactor) -> Iterator[str]:
    status = "-" if attempt.status is None else str(attempt.status)
    head = (
        f"  #{attempt.number} {iso_time(attempt.started_at)} {attempt.result}"
        f" status={status} took={_duration(attempt.duration_s)}"
    )
    if attempt.retry_after is not None:
        head += f" retry-after={attempt.retry_after}"
    yield head
    if attempt.error is not None:
        yield f"    error: {attempt.error}"
    if attempt.response is not None:
        yield f"    response: {attempt.response}"


def detail_fields(
    detail: DeliveryDetail, redact: Redactor, targets: Container[str]
) -> dict[str, Any]:
    """`relay deliveries show --json`: the delivery, its event and its attempts."""
    event = detail.event
    preview, size = body_preview(event, redact)
    return {
        "delivery": delivery_fields(detail.delivery, redact, targets),
        "event": {
            "source": redact(event.source),
            "id": redact(event.event_id),
            "type": redact(event.type),
            "received_at": iso_time(event.received_at),
            "created_at": None if event.created_at is None else iso_time(event.created_at),
            "headers": shown_headers(event, redact),
            "body_bytes": size,
            "body_preview": preview,
        },
        "attempts": [_attempt_fields(attempt, redact) for attempt in detail.attempts],
    }


def _attempt_fields(attempt: AttemptRecord, redact: Redactor) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "started_at": iso_time(attempt.started_at),
        "duration_ms": None if attempt.duration_s is None else round(attempt.duration_s * 1000, 3),
        "result": attempt.result,
        "status": attempt.status,
        "error": _redacted(attempt.error, redact),
        "response": _redacted(attempt.response, redact),
        "retry_after": _redacted(attempt.retry_after, redact),
    }


def shown_headers(event: StoredEvent, redact: Redactor) -> dict[str, str]:
    """The event's headers with credentials out: the value of a header whose name says
    credential (a sender's signature too), and every configured secret in the others."""
    return {
        redact(name): REDACTED if SENSITIVE_HEADER.search(name) else redact(value)
        for name, value in event.headers.items()
    }


def body_preview(event: StoredEvent, redact: Redactor) -> tuple[str, int]:
    """The start of the event's body as text (a character cut in two is held back, bytes
    that are not UTF-8 shown as U+FFFD), and the body's size in bytes."""
    head = event.body[:BODY_PREVIEW_BYTES]
    text = codecs.getincrementaldecoder("utf-8")("replace").decode(head, final=False)
    if len(event.body) > BODY_PREVIEW_BYTES:
        text += "…"
    return redact(text), len(event.body)


def json_line(fields: Mapping[str, Any]) -> str:
    """One line of JSON that is safe on a terminal: control characters as `\\uNNNN`."""
    return escape_controls_json(json.dumps(fields, ensure_ascii=False))


def waiting_note(waiting: Mapping[str, int], path: Path) -> str:
    counts = ", ".join(f"{escape_controls(name)} ({count})" for name, count in waiting.items())
    return (
        f"{sum(waiting.values())} pending deliveries are for targets not in {path}: {counts};"
        " relay sends them once a target of that name is configured again"
    )


def iso_time(epoch_s: float) -> str:
    """`2025-05-01T12:00:00.123Z`"""
    stamp = datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _clock_time(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%H:%M:%S")


def _duration(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}ms"


def _redacted(text: str | None, redact: Redactor) -> str | None:
    return None if text is None else redact(text)
