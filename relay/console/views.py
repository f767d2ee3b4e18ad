"""What the console's pages show, as plain values for the templates: pure functions over what
the admin API already returns (`relay.endpoints`, redacted there), the store's records and
the running config. The templates escape every value (autoescape); nothing here builds HTML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from relay import jsoncodec
from relay.errors import RenderError
from relay.events import Event
from relay.preview import format_request, preview
from relay.redaction import Redactor, redact_request
from relay.store.base import StoredEvent
from relay.targets import TargetConfig
from relay.targets.base import TargetPlan
from relay.targetstatus import age_text

RATE_WINDOW_S = 300.0  # deliveries per minute are counted over the last five minutes
MAX_SHOWN_CHARS = 64 * 1024  # of an event's pretty JSON or a rendered request
Row = dict[str, Any]


def epoch_of(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def relative(iso: str, now: float) -> str:
    """`5m ago`, `in 30s`, `just now`."""
    seconds = now - epoch_of(iso)
    if abs(seconds) < 1:
        return "just now"
    return f"{age_text(seconds)} ago" if seconds > 0 else f"in {age_text(-seconds)}"


def utc_text(iso: str) -> str:
    """The exact time, for a tooltip: `2026-11-29 01:02:03.456 UTC`."""
    moment = datetime.fromtimestamp(epoch_of(iso), UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def health(row: Mapping[str, Any]) -> str:
    """One word for a target's row colour: paused, failing (its last attempt failed),
    ok (its last attempt was delivered) or idle (nothing sent yet)."""
    if row["state"] == "paused":
        return "paused"
    error_at, success_at = row["last_error_at"], row["last_success_at"]
    if error_at is not None and (success_at is None or epoch_of(error_at) >= epoch_of(success_at)):
        return "failing"
    return "ok" if success_at is not None else "idle"


def target_rows(
    rows: list[Row], delivered: Mapping[str, int], targets: Mapping[str, TargetConfig]
) -> list[Row]:
    """The admin API's target rows, with their health, kind and deliveries per minute."""
    shown = []
    for row in rows:
        name = row["target"]
        config = targets.get(name)
        per_minute = delivered.get(name, 0) / (RATE_WINDOW_S / 60)
        shown.append(
            {
                **row,
                "health": health(row),
                "kind": config.kind if config is not None else None,
                "per_minute": f"{per_minute:.1f}" if per_minute < 10 else f"{per_minute:.0f}",
            }
        )
    return shown


def pretty_body(event: StoredEvent, redact: Redactor) -> tuple[str, bool]:
    """The event's body to read: indented JSON if it is JSON (else its text), every configured
    secret cut out, at most MAX_SHOWN_CHARS; and whether it was JSON."""
    try:
        text, is_json = json.dumps(jsoncodec.loads(event.body), indent=2, ensure_ascii=False), True
    except ValueError:
        text, is_json = event.body.decode("utf-8", "replace"), False
    return _clipped(redact(text)), is_json


def rendered_request(
    event: StoredEvent, plan: TargetPlan | None, config: TargetConfig | None, redact: Redactor
) -> tuple[str | None, str | None]:
    """What the target would be sent for this event now, as `relay render` prints it (secrets
    redacted): (the request, None), or (None, why it cannot be shown)."""
    if plan is None or config is None:
        return None, "this target is not in the running config"
    try:
        payload = jsoncodec.loads(event.body)
    except ValueError as exc:
        return None, f"the event's body is not JSON ({exc})"
    replayed = Event(
        event.source,
        event.event_id,
        event.type,
        event.received_at,
        event.body,
        payload,
        event.headers,
        event.data_key,
        event.created_at,
    )
    try:
        request = preview(plan, replayed, event.received_at)
    except RenderError as exc:
        return None, redact(str(exc))
    return _clipped(format_request(redact_request(request, redact, config))), None


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "\n…"


def query_string(params: Mapping[str, object], **changes: object) -> str:
    """`params` with `changes`, for a link (paging, a filter kept): empty values left out."""
    merged = {**params, **changes}
    return urlencode(
        {name: str(value) for name, value in merged.items() if value not in ("", None)}
    )
