"""What a reload changes: the running config and the new one, compared as values.

Pure, so that the daemon (`relay.app.Daemon.reload`) only applies what this says. `listen`,
`admin.listen`, `store` and `limits` are bound into the listening sockets, the store and the
HTTP servers when relay starts, so a change to any of them is refused and the running config
stays. Everything else can change while relay runs: sources, routes, targets, templates,
retention and the admin token (the admin API checks each request against the running one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from relay.config import Config, LimitsConfig
from relay.durations import format_duration

RESTART = "restart relay to apply it; the running config stays"


@dataclass(frozen=True, slots=True)
class Names:
    """What changed in one section (sources or targets), by name, in config order."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()

    def summary(self, section: str) -> str | None:
        """`targets: added b; removed c; 2 unchanged`, or None when nothing changed."""
        parts = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if names
        ]
        if not parts:
            return None
        return f"{section}: {'; '.join(parts)}; {len(self.unchanged)} unchanged"


@dataclass(frozen=True, slots=True)
class ConfigChange:
    refused: tuple[str, ...]  # why the new config cannot run without a restart: `path: reason`
    sources: Names
    targets: Names
    routes_changed: bool
    retention_changed: bool
    admin_token_changed: bool = False

    def summary(self) -> str:
        parts = [self.sources.summary("sources"), self.targets.summary("targets")]
        if self.routes_changed:
            parts.append("routes changed")
        if self.retention_changed:
            parts.append("retention changed")
        if self.admin_token_changed:
            parts.append("admin.token changed")
        return ". ".join(part for part in parts if part) or "nothing changed"


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """A reload's outcome: the problems that kept the running config, or what changed."""

    problems: tuple[str, ...] = ()
    change: ConfigChange | None = None
    # Pending deliveries of targets the running config does not have, by target: they wait.
    waiting: Mapping[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True, slots=True)
class ReloadAttempt:
    """The last reload, for the console: when, of which file, and how it went."""

    at: float  # epoch seconds
    path: str
    result: ReloadResult


def compare(running: Config, new: Config) -> ConfigChange:
    """What running `new` instead of `running` changes, and what it would need a restart for."""
    return ConfigChange(
        refused=tuple(_restart_needed(running, new)),
        sources=_compare_names(running.sources, new.sources),
        targets=_compare_names(running.targets, new.targets),
        routes_changed=running.routes != new.routes,
        retention_changed=running.retention != new.retention,
        admin_token_changed=running.admin.token != new.admin.token,
    )


def _compare_names(running: Mapping[str, object], new: Mapping[str, object]) -> Names:
    kept = [name for name in new if name in running]
    return Names(
        added=tuple(name for name in new if name not in running),
        removed=tuple(name for name in running if name not in new),
        changed=tuple(name for name in kept if running[name] != new[name]),
        unchanged=tuple(name for name in kept if running[name] == new[name]),
    )


def _restart_needed(running: Config, new: Config) -> list[str]:
    problems = []
    if running.listen != new.listen:
        problems.append(
            f'listen: changed from "{running.listen}" to "{new.listen}": relay cannot move to'
            f" another address while it runs; {RESTART}"
        )
    if running.admin.listen != new.admin.listen:
        problems.append(
            f'admin.listen: changed from "{running.admin.listen}" to "{new.admin.listen}": relay'
            f" cannot move its admin listener while it runs; {RESTART}"
        )
    if running.store != new.store:  # not quoted: a store url may hold a password
        problems.append(f"store: changed: relay cannot switch stores while it runs; {RESTART}")
    for name in LimitsConfig.model_fields:
        before, after = getattr(running.limits, name), getattr(new.limits, name)
        if before != after:
            problems.append(
                f"limits.{name}: changed from {_shown(before)} to {_shown(after)}: limits are"
                f" set in the HTTP server when relay starts; {RESTART}"
            )
    return problems


def _shown(value: object) -> str:
    return format_duration(value) if isinstance(value, timedelta) else str(value)
