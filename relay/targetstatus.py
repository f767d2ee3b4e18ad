"""What `relay targets` shows: one row per target, as a table for people or JSON for programs.

Pure: the rows come from the store (`Store.target_statuses`) and the config's target names.
Every text that came from outside (a target's answer in its last error, a pause reason) is
redacted and escaped again here, whatever the store holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from relay.store.base import TargetActivity, TargetStatus
from relay.textsafety import escape_controls

NOT_CONFIGURED = " (not in the config)"
ERROR_COLUMN_CHARS = 80  # of the last error in the table; JSON has all of it
HEADINGS = ("TARGET", "STATE", "PENDING", "DEAD", "OLDEST PENDING", "LAST SUCCESS", "LAST ERROR")
RIGHT_ALIGNED = frozenset({2, 3})  # the counts

Clean = Callable[[str], str]  # redacts secrets from text that came from outside


@dataclass(frozen=True, slots=True)
class TargetRow:
    status: TargetStatus
    configured: bool  # False: the config no longer has it, its deliveries wait for it


def target_rows(statuses: Iterable[TargetStatus], configured: Sequence[str]) -> list[TargetRow]:
    """Every configured target, in config order (those the store knows nothing of yet as
    idle), then the targets the store knows that the config does not have."""
    known = {status.name: status for status in statuses}
    rows = [TargetRow(known.pop(name, _idle(name)), True) for name in configured]
    rows += [TargetRow(status, False) for status in known.values() if _worth_showing(status)]
    return rows


def _idle(name: str) -> TargetStatus:
    return TargetStatus(name, None, 0, 0, None, TargetActivity())


def _worth_showing(status: TargetStatus) -> bool:
    """A removed target is shown while it holds deliveries or a pause, not for its history."""
    return bool(status.pending or status.dead or status.pause)


def format_targets(rows: Sequence[TargetRow], now: float, clean: Clean) -> str:
    """The table, then one line per paused target saying why and since when."""
    table = [HEADINGS, *(_cells(row, now, clean) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADINGS))]
    lines = [_aligned(line, widths) for line in table]
    for row in rows:
        pause = row.status.pause
        if pause is not None:
            lines.append(
                f"{_name(row)} paused {age_text(now - pause.since)} ago, at {_utc(pause.since)}:"
                f" {_text(pause.reason, clean)}; relay targets resume"
                f" {escape_controls(row.status.name)} sends its {row.status.pending} pending"
                " deliveries"
            )
    return "\n".join(lines)


def _cells(row: TargetRow, now: float, clean: Clean) -> tuple[str, ...]:
    status, activity = row.status, row.status.activity
    error = "-"
    if activity.last_error_at is not None:
        text = _text(activity.last_error or "", clean)
        if len(text) > ERROR_COLUMN_CHARS:
            text = text[: ERROR_COLUMN_CHARS - 1] + "…"
        error = f"{age_text(now - activity.last_error_at)} ago: {text}"
    oldest = status.oldest_pending_at
    success = activity.last_success_at
    return (
        _name(row),
        "paused" if status.pause is not None else "active",
        str(status.pending),
        str(status.dead),
        age_text(now - oldest) if oldest is not None else "-",
        f"{age_text(now - success)} ago" if success is not None else "never",
        error,
    )


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [
        cell.rjust(width) if i in RIGHT_ALIGNED else cell.ljust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    ]
    return "  ".join(padded).rstrip()


def targets_json(rows: Sequence[TargetRow], now: float, clean: Clean) -> list[dict[str, Any]]:
    """The same rows as JSON values (times as ISO 8601 in UTC, ages in seconds)."""
    return [_json_row(row, now, clean) for row in rows]


def _json_row(row: TargetRow, now: float, clean: Clean) -> dict[str, Any]:
    status, activity, pause = row.status, row.status.activity, row.status.pause
    oldest = status.oldest_pending_at
    return {
        "target": status.name,
        "configured": row.configured,
        "state": "paused" if pause is not None else "active",
        "paused_at": _iso(pause.since) if pause is not None else None,
        "paused_reason": clean(pause.reason) if pause is not None else None,
        "pending": status.pending,
        "dead": status.dead,
        "oldest_pending_at": _iso(oldest),
        "oldest_pending_age_s": round(now - oldest, 3) if oldest is not None else None,
        "last_success_at": _iso(activity.last_success_at),
        "last_error_at": _iso(activity.last_error_at),
        "last_error": clean(activity.last_error) if activity.last_error is not None else None,
    }


def _name(row: TargetRow) -> str:
    return escape_controls(row.status.name) + ("" if row.configured else NOT_CONFIGURED)


def _text(text: str, clean: Clean) -> str:
    return escape_controls(clean(text))


def _iso(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).isoformat()


def _utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def age_text(seconds: float) -> str:
    """`45s`, `12m`, `3h 5m`, `2d 4h`: two units at most, whole numbers."""
    whole = max(0, int(seconds))
    for size, unit, smaller, smaller_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "m")):
        if whole >= size:
            rest = (whole % size) // smaller
            return f"{whole // size}{unit}" + (f" {rest}{smaller_unit}" if rest else "")
    if whole >= 60:
        return f"{whole // 60}m"
    return f"{whole}s"
