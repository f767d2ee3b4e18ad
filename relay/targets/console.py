"""Writes each rendered body as one line on stdout, so a demo needs no outside service."""

from __future__ import annotations

import json
from typing import TextIO

from relay.errors import RenderError
from relay.events import Delivered, Delivery, Failed, Outcome, template_context
from relay.retry import RetryPolicy
from relay.targets.base import BodyRenderer, OutboundRequest
from relay.textsafety import escape_controls, escape_controls_json


class ConsoleTarget:
    concurrency = 1
    lease_s = 30.0

    def __init__(self, name: str, body: BodyRenderer, policy: RetryPolicy, out: TextIO) -> None:
        self.name = name
        self.policy = policy
        self._body = body
        self._out = out

    def preview(self, delivery: Delivery, now: float) -> OutboundRequest:
        body = self._body.render(delivery.event, template_context(delivery.event, self.name))
        return OutboundRequest("WRITE", "stdout", {}, one_line(body).encode())

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            line = self.preview(delivery, 0.0).body.decode()
        except RenderError as exc:
            return Failed(str(exc))
        self._out.write(line + "\n")
        self._out.flush()
        return Delivered()

    async def close(self) -> None:
        return None


def one_line(body: bytes) -> str:
    """Compact JSON stays JSON; other text has its control characters escaped, so that event
    data can neither split the line nor drive the terminal that shows it."""
    text = body.decode("utf-8", errors="replace")
    try:
        compact = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        return escape_controls(text)
    return escape_controls_json(compact)
