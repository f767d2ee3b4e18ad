"""Writes each rendered body as one line on stdout, so a demo needs no outside service."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal, TextIO

from relay.errors import RenderError
from relay.events import Delivered, Delivery, Failed, Outcome, template_context
from relay.retry import RetryPolicy
from relay.shared_config import BodyTargetModel, RetryConfig
from relay.targets.base import BodyRenderer, OutboundRequest, Resources, body_renderer
from relay.textsafety import escape_controls, escape_controls_json


class ConsoleTargetConfig(BodyTargetModel):
    kind: Literal["console"]
    """One line per event on standard output."""
    retry: RetryConfig = RetryConfig()
    """Retries with backoff, within max_elapsed."""


@dataclass(frozen=True, slots=True)
class ConsolePlan:
    name: str
    body: BodyRenderer
    policy: RetryPolicy

    def preview(self, delivery: Delivery, now: float) -> OutboundRequest:
        body = self.body.render(delivery.event, template_context(delivery.event, self.name))
        return OutboundRequest("WRITE", "stdout", {}, one_line(body).encode())

    def bind(self, resources: Resources) -> ConsoleTarget:
        return ConsoleTarget(self, resources.out)


def plan_console_target(name: str, target: ConsoleTargetConfig) -> ConsolePlan:
    body = body_renderer(target.body, target.template, f"targets.{name}")
    return ConsolePlan(name, body, RetryPolicy.from_config(target.retry))


class ConsoleTarget:
    concurrency = 1
    lease_s = 30.0

    def __init__(self, plan: ConsolePlan, out: TextIO) -> None:
        self.name = plan.name
        self.policy = plan.policy
        self._plan = plan
        self._out = out

    async def send(self, delivery: Delivery) -> Outcome:
        try:
            line = self._plan.preview(delivery, 0.0).body.decode()
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
