"""The target contract and the pieces every target shares: body rendering and JSON checks."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from relay.errors import RenderError
from relay.events import Delivery, Event, Outcome
from relay.render import CompiledTemplate, TemplateCompiler
from relay.retry import RetryPolicy
from relay.textsafety import encode_utf8


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    """Exactly what a target would send for one delivery."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Target(Protocol):
    name: str
    concurrency: int
    policy: RetryPolicy
    lease_s: float  # how long a claimed delivery may take before another worker may retry it

    def preview(self, delivery: Delivery, now: float) -> OutboundRequest:
        """Render without sending (`relay render`, `relay check`); raises RenderError."""
        ...

    async def send(self, delivery: Delivery) -> Outcome: ...

    async def close(self) -> None: ...


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


def compile_body(
    body: str | None,
    template: str | None,
    compiler: TemplateCompiler,
    yaml_path: str,
    problems: list[str],
) -> BodyRenderer:
    """Compile `body` (inline) or `template` (a file); a problem is added, not raised."""
    try:
        if body is not None:
            return BodyRenderer(compiler.inline(body, f"{yaml_path}.body"))
        if template is not None:
            return BodyRenderer(compiler.file(template))
    except ValueError as exc:
        problems.append(f"{yaml_path}.{'body' if body is not None else 'template'}: {exc}")
    return BodyRenderer(None)


def check_json(body: bytes, template_name: str) -> None:
    """A body sent as application/json must be JSON, as Flipt insists too."""
    try:
        json.loads(body)
    except ValueError as exc:
        raise RenderError(f"{template_name}: rendered body is not valid JSON: {exc}") from exc


def is_json_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")
