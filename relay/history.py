"""What the attempt history keeps of one attempt: when it started, how long it took, and the
start of the target's answer and its Retry-After header.

A target's answer is text from outside like any event data: it may echo the request's
credentials, or hold escape sequences for the terminal that shows it later. So the history
keeps it as stored errors are kept: every configured secret cut out, control characters
escaped, and bounded (the first 2 KB of the answer).
"""

from __future__ import annotations

from relay.events import Outcome
from relay.redaction import Redactor
from relay.store.base import AttemptResult
from relay.textsafety import encode_utf8, escape_controls

RESPONSE_PREVIEW_BYTES = 2048  # of the answer's body, as UTF-8, kept per attempt
RETRY_AFTER_CHARS = 64  # a date is 29 characters; anything longer is not one
CUT_MARKER = "…"


def response_preview(text: str, redact: Redactor) -> str:
    """The first RESPONSE_PREVIEW_BYTES of `text` (a character cut in two is dropped), with
    CUT_MARKER after it when there was more; secrets are cut out before the text is, so a
    secret across the boundary is redacted too."""
    window = text[: RESPONSE_PREVIEW_BYTES + redact.longest_chars]
    cleaned = encode_utf8(redact(window))
    preview = cleaned[:RESPONSE_PREVIEW_BYTES].decode("utf-8", errors="ignore")
    cut = len(cleaned) > RESPONSE_PREVIEW_BYTES or len(text) > len(window)
    return escape_controls(preview) + (CUT_MARKER if cut else "")


def retry_after_text(value: str, redact: Redactor) -> str:
    text = escape_controls(redact(value))
    if len(text) > RETRY_AFTER_CHARS:
        return text[:RETRY_AFTER_CHARS] + CUT_MARKER
    return text


def note_attempt(
    result: AttemptResult,
    attempt: int,
    outcome: Outcome,
    started_at: float,
    measured_s: float,
    redact: Redactor,
) -> None:
    """Add to `result` what the history keeps of the attempt that gave `outcome`; its
    duration is the target's own figure when it gives one (an HTTP exchange without the rate
    limiter's wait, a warehouse batch's write), else `measured_s`, the worker's."""
    result.attempt = attempt
    result.started_at = started_at
    result.duration_s = measured_s if outcome.duration_s is None else outcome.duration_s
    if outcome.response is not None:
        result.response = response_preview(outcome.response, redact)
    if outcome.retry_after is not None:
        result.retry_after = retry_after_text(outcome.retry_after, redact)
