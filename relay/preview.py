"""Rendering without sending: `relay render` shows one request, `relay check` renders every
route's templates against the shipped samples of its sources, so template mistakes surface
before deploy rather than as dead deliveries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from relay import config, samples
from relay.errors import RenderError
from relay.events import Delivery, Event
from relay.router import CompiledRoute
from relay.sources import SENDERS
from relay.targets.base import OutboundRequest, TargetPlan
from relay.textsafety import escape_controls


def build_event(source_name: str, sender: str, payload: Any, now: float) -> Event:
    """The event relay would store for `payload` sent by `sender` to source `source_name`."""
    family = SENDERS[sender]
    body = family.serialise(payload)
    headers = {"content-type": "application/json", **family.headers(now)}
    identity = family.read(source_name, payload, body, headers)
    return identity.to_event(source_name, now, body, payload, headers)


def preview(target: TargetPlan, event: Event, now: float) -> OutboundRequest:
    return target.preview(Delivery(0, target.name, 1, now, event), now)


def format_request(request: OutboundRequest) -> str:
    """The request as text for a terminal: event data in it cannot drive the terminal."""
    lines = [f"{request.method} {request.url}"]
    lines += [f"{name}: {value}" for name, value in request.headers.items()]
    body = request.body.decode("utf-8", errors="replace")
    lines += ["", *body.split("\n")]
    return "\n".join(escape_controls(line) for line in lines)


def check_samples(
    cfg: config.Config,
    routes: list[CompiledRoute],
    targets: Mapping[str, TargetPlan],
    now: float,
) -> list[str]:
    """Render each route's targets for every sample its sources and types would let through.

    One problem per (target, sample): the same template failing through two routes is one fix.
    """
    problems: dict[tuple[str, str, str], str] = {}
    for route in routes:
        where = f"routes[{route.index}]"
        for source_name, sample in _samples_for(cfg, route):
            sender = sample.sender
            event = build_event(source_name, sender, sample.payload, now)
            try:
                if not route.matches(
                    source_name, event.type, _constant({"event": event.template_context()})
                ):
                    continue
            except RenderError as exc:
                problems.setdefault(
                    (where, sender, sample.name), f"{where}.when: {_on(sample, event)}: {exc}"
                )
                continue
            for target_name in route.targets:
                try:
                    preview(targets[target_name], event, now)
                except RenderError as exc:
                    problems.setdefault(
                        (target_name, sender, sample.name),
                        f"{where} → targets.{target_name}: {_on(sample, event)}: {exc}",
                    )
    return list(problems.values())


def _constant(context: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    return lambda: context


def _on(sample: samples.Sample, event: Event) -> str:
    return f"{sample.sender} sample {sample.name} (type {event.type})"


def _samples_for(cfg: config.Config, route: CompiledRoute) -> Iterator[tuple[str, samples.Sample]]:
    for source_name, source in cfg.sources.items():
        if route.sources is not None and source_name not in route.sources:
            continue
        if SENDERS[source.reads_as].samples:
            for sample in samples.samples(source.reads_as):
                yield source_name, sample
