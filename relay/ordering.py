"""Ordering by key: each delivery's key, computed when its event is accepted.

Ingest is the only time the order of events is known, so the key is evaluated then and
stored with the delivery; the store hands out only the oldest pending delivery of each key
(`relay.store.sqlite`). A key that fails to evaluate (a missing field, null) leaves that
delivery without a key: it goes out unordered, and the failure is logged with the event.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay import jsoncodec
from relay.errors import RenderError
from relay.events import Event
from relay.render import Expression

log = logging.getLogger("relay.ordering")

MAX_KEY_CHARS = 200  # a longer key is stored as its SHA-256, so a sender cannot bloat the index


@dataclass(frozen=True, slots=True)
class OrderKeys:
    """The `ordering.key` expression of each target that has one, by target name."""

    expressions: Mapping[str, Expression] = field(default_factory=dict)

    def keys_for(self, event: Event, targets: Sequence[str]) -> dict[str, str] | None:
        """The key of each of `targets` that orders its deliveries; None when none does."""
        if not self.expressions:
            return None
        keys: dict[str, str] | None = None
        context: dict[str, Any] | None = None
        for target in targets:
            expression = self.expressions.get(target)
            if expression is None:
                continue
            if context is None:
                context = {"event": event.template_context()}
            key = self._evaluate(expression, {**context, "target": {"name": target}}, event)
            if key is not None:
                keys = keys or {}
                keys[target] = key
        return keys

    def _evaluate(
        self, expression: Expression, context: Mapping[str, Any], event: Event
    ) -> str | None:
        try:
            key = key_text(expression(context))
        except (RenderError, TypeError, ValueError) as exc:  # TypeError: a value JSON lacks
            problem = str(exc) if isinstance(exc, RenderError) else f"{expression.name}: {exc}"
        else:
            if key is not None:
                return key
            problem = f"{expression.name}: the key is null"
        log.warning(
            "%s; event %s of source %s goes out without a key (unordered)",
            problem,
            event.id,
            event.source,
        )
        return None


NO_ORDERING = OrderKeys()


def key_text(value: Any) -> str | None:
    """A key as stored: a string as it is, anything else as JSON (`42`, `true`); None for
    null. A key longer than MAX_KEY_CHARS, one that is not UTF-8 text (a lone surrogate from
    JSON's `\\ud800`) or one that holds NUL (which PostgreSQL text cannot) is stored as its
    SHA-256: equal keys still store equal."""
    if value is None:
        return None
    text = value if isinstance(value, str) else jsoncodec.dumps_compact(value)
    if len(text) <= MAX_KEY_CHARS and "\0" not in text and _is_utf8(text):
        return text
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
