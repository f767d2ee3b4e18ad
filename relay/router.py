"""Routes compiled once: source sets, type globs as one regex each, `when` as a Jinja expression."""

from __future__ import annotations

import fnmatch
import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay import config
from relay.errors import RenderError

log = logging.getLogger("relay.router")

Predicate = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    index: int
    sources: frozenset[str] | None
    types: re.Pattern[str] | None
    when: Predicate | None
    targets: tuple[str, ...]

    def matches(
        self, source: str, event_type: str, context: Callable[[], Mapping[str, Any]]
    ) -> bool:
        """`context` is only built when a `when` expression has to be evaluated."""
        if self.sources is not None and source not in self.sources:
            return False
        if self.types is not None and not self.types.fullmatch(event_type):
            return False
        return self.when is None or bool(self.when(context()))


def compile_type_globs(globs: Sequence[str]) -> re.Pattern[str]:
    """`CASE_*` style globs (case-sensitive) joined into one alternation."""
    return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs))


class Router:
    MEMO_SIZE = 4096

    def __init__(self, routes: Sequence[CompiledRoute]) -> None:
        self.routes = tuple(routes)
        # Without `when`, the answer depends on (source, type) only: remember it.
        self._memo: dict[tuple[str, str], tuple[str, ...]] | None = (
            None if any(r.when is not None for r in self.routes) else {}
        )

    def targets_for(
        self, source: str, event_id: str, event_type: str, context: Callable[[], Mapping[str, Any]]
    ) -> tuple[str, ...]:
        """The union of the targets of every matching route, each once, in config order.

        A `when` that fails to evaluate (say, a missing field under StrictUndefined) does not
        match; it is logged with the event so the operator can guard it with `is defined`.
        """
        if self._memo is not None:
            known = self._memo.get((source, event_type))
            if known is None:
                if len(self._memo) >= self.MEMO_SIZE:
                    self._memo.clear()
                known = self._memo[(source, event_type)] = self._match(
                    source, event_id, event_type, context
                )
            return known
        return self._match(source, event_id, event_type, functools.cache(context))

    def _match(
        self, source: str, event_id: str, event_type: str, context: Callable[[], Mapping[str, Any]]
    ) -> tuple[str, ...]:
        chosen: dict[str, None] = {}
        for route in self.routes:
            try:
                matched = route.matches(source, event_type, context)
            except RenderError as exc:
                log.warning("routes[%d].when failed for event %s: %s", route.index, event_id, exc)
                continue
            if matched:
                chosen.update(dict.fromkeys(route.targets))
        return tuple(chosen)


def compile_routes(routes: Sequence[config.RouteConfig]) -> Router:
    """Routes from their config; `when` was compiled when the config was validated."""
    return Router(
        [
            CompiledRoute(
                index=i,
                sources=frozenset(route.sources) if route.sources is not None else None,
                types=compile_type_globs(route.types) if route.types is not None else None,
                when=route.when.named(f"routes[{i}].when") if route.when is not None else None,
                targets=tuple(route.targets),
            )
            for i, route in enumerate(routes)
        ]
    )
