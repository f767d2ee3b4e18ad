"""The target contract and the pieces every target shares: body rendering and JSON checks."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO, runtime_checkable

import aiohttp

from relay.errors import RenderError
from relay.events import Delivery, Event, Outcome
from relay.ratelimit import Limiter, local_limiter
from relay.render import CompiledTemplate
from relay.retry import RetryPolicy
from relay.textsafety import encode_utf8


@dataclass(slots=True)
class OutboundRequest:
    """Exactly what a target would send for one delivery. One per attempt: not frozen (a
    frozen dataclass's __init__ sets each field through object.__setattr__), though nothing
    changes one."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Target(Protocol):
    """A target at run time, bound to its resources (an HTTP session, a database)."""

    name: str
    concurrency: int
    policy: RetryPolicy
    lease_s: float  # how long a claimed delivery may take before another worker may retry it

    async def send(self, delivery: Delivery) -> Outcome: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Resources:
    """What targets are bound to at run time; nothing of it exists while compiling."""

    session: aiohttp.ClientSession
    clock: Callable[[], float]
    out: TextIO  # the console target's stream
    limiter: Callable[[str, float], Limiter] = local_limiter  # (target, per second): its limiter


class TargetPlan(Protocol):
    """A compiled target: pure, so `relay check` and `relay render` need no connection."""

    @property
    def name(self) -> str: ...

    def preview(self, delivery: Delivery, now: float) -> OutboundRequest:
        """Render without sending (`relay render`, `relay check`); raises RenderError."""
        ...

    def bind(self, resources: Resources) -> Target:
        """The target that sends, on these resources; opens nothing until it sends."""
        ...


@runtime_checkable
class BatchTarget(Target, Protocol):
    """A target that writes many deliveries at once: the worker hands it each claimed group,
    of at most `batch_size` deliveries."""

    batch_size: int

    async def send_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """One outcome per delivery, in order."""
        ...


class BodyRenderer:
    """Renders a target's body: its template, or by default the bytes the sender sent."""

    def __init__(self, template: CompiledTemplate | None) -> None:
        self.template = template

    def render(self, event: Event, context: Mapping[str, Any]) -> bytes:
        if self.template is None:
            return event.body
        return encode_utf8(self.template.render(context))


def body_renderer(
    body: CompiledTemplate | None, template: CompiledTemplate | None, where: str
) -> BodyRenderer:
    """`body` (inline, named by its YAML path `where.body`) or `template` (a file), or neither."""
    if body is not None:
        return BodyRenderer(body.named(f"{where}.body"))
    return BodyRenderer(template)


def check_json(body: bytes, template_name: str) -> None:
    """A body sent as application/json must be JSON, as Flipt insists too."""
    try:
        json.loads(body)
    except ValueError as exc:
        raise RenderError(f"{template_name}: rendered body is not valid JSON: {exc}") from exc


def is_json_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
