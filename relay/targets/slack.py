"""Slack incoming webhooks: the message is checked before sending, Slack's error words kept.

Slack answers `ok`, or a plain-text error word (`invalid_payload`, `channel_not_found`, ...)
with a 4xx: those fail at once with the word in the reason; 429 waits for Retry-After, 5xx and
connection errors retry. 410 (`channel_is_archived`) is gone: every later message would fail
the same way until someone unarchives the channel, so the target pauses (`on_gone`), as any
target does. Sends are spaced to Slack's one message per second by default.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from relay.addresses import check_url_origin, split_url
from relay.errors import RenderError
from relay.events import Delivered, Failed, Gone, Outcome, Retry
from relay.fields import Duration, error
from relay.filters import clip
from relay.retry import GONE, RetryPolicy, gone_as, parse_retry_after
from relay.shared_config import BodyTargetModel, OnGone, RetryConfig
from relay.targets.base import body_renderer
from relay.targets.http import HttpPlan, HttpRequestBuilder


class SlackTargetConfig(BodyTargetModel):
    """A Slack incoming webhook; the template renders the message JSON."""

    kind: Literal["slack"]
    """A Slack incoming webhook."""
    url: str
    """The webhook url Slack gave you (it is its own credential: use ${VAR})."""
    timeout: Duration = timedelta(seconds=10)
    """Time allowed for one attempt."""
    max_per_second: float = Field(default=1.0, gt=0)  # Slack's documented limit
    """Messages a second at most (Slack's limit is 1)."""
    retry: RetryConfig = RetryConfig()
    """Retries with backoff, within max_elapsed."""
    on_gone: OnGone = "pause"
    """What Slack's 410 (channel_is_archived) does: pause the target, keeping its messages
    until `relay targets resume`, or make that message dead."""

    @field_validator("url")
    @classmethod
    def _fixed_url(cls, url: str) -> str:
        check_url_origin(url)
        if "{{" in url or "{%" in url:
            raise error("url", "a Slack webhook url cannot contain template expressions")
        return url

    @model_validator(mode="after")
    def _needs_a_message(self) -> SlackTargetConfig:
        if self.body is None and self.template is None:
            raise error("template", "a Slack target needs a template (or body) for the message")
        return self

    def credentials(self) -> Iterator[str]:
        yield self.url  # a Slack webhook url is its own token


MAX_BLOCKS = 50
MAX_TEXT_CHARS = 40_000
TRUNCATION_MARKER = "\n… (truncated by relay)"


def check_message(body: bytes) -> bytes:
    """A message Slack will take: `text` or `blocks`, at most 50 blocks, long text cut."""
    try:
        message: Any = json.loads(body)
    except ValueError as exc:
        raise RenderError(f"Slack message is not valid JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise RenderError("a Slack message must be a JSON object")
    text, blocks = message.get("text"), message.get("blocks")
    if not text and not blocks:
        raise RenderError('a Slack message needs "text" or "blocks"')
    if text is not None and not isinstance(text, str):
        raise RenderError('"text" of a Slack message must be a string')
    if blocks is not None and not isinstance(blocks, list):
        raise RenderError('"blocks" of a Slack message must be a list')
    if blocks is not None and len(blocks) > MAX_BLOCKS:
        raise RenderError(
            f"a Slack message has at most {MAX_BLOCKS} blocks; this one has {len(blocks)}"
        )
    if isinstance(text, str) and len(text) > MAX_TEXT_CHARS:
        message["text"] = clip(text, MAX_TEXT_CHARS, TRUNCATION_MARKER)
        return json.dumps(message, ensure_ascii=False).encode()
    return body


def classify_slack(
    status: int, text: str, retry_after: str | None, now: float, on_gone: OnGone = "pause"
) -> Outcome:
    word = text.strip()[:100] or f"HTTP {status}"
    if 200 <= status < 300:
        return Delivered(status)
    if status == 429:
        return Retry(f"slack: rate limited ({word})", status, parse_retry_after(retry_after, now))
    if 500 <= status < 600:
        return Retry(f"slack: HTTP {status} {word}", status, parse_retry_after(retry_after, now))
    if status == GONE:
        return gone_as(Gone(f"slack: {word} (HTTP {status})", status), on_gone)
    return Failed(f"slack: {word} (HTTP {status})", status)


def plan_slack_target(name: str, target: SlackTargetConfig) -> HttpPlan:
    origin, rest = split_url(target.url)
    body = body_renderer(target.body, target.template, f"targets.{name}")
    builder = HttpRequestBuilder(name, "POST", origin, rest, {}, body, None, check_message)
    return HttpPlan(
        builder,
        target.timeout.total_seconds(),
        concurrency=1,
        policy=RetryPolicy.from_config(target.retry),
        max_per_second=target.max_per_second,
        classify=partial(classify_slack, on_gone=target.on_gone),
    )
