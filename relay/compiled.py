"""The config compiled: sources, routes and target plans, ready to serve, with no resources.

Validation compiled every template and expression already (`relay.templatefields`); this
assembles the pieces. It opens no socket, session, file or database, so `relay check` and
`relay render` use it as the daemon does; the daemon binds the plans to resources afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from relay.allowlist import parse_networks
from relay.config import Config, SourceConfig
from relay.inbound import CompiledSource
from relay.ordering import OrderKeys
from relay.router import Router, compile_routes
from relay.sources import SENDERS, build_verifier
from relay.store.url import parse_store_url
from relay.targets import plan_target
from relay.targets.base import TargetPlan


@dataclass(frozen=True, slots=True)
class CompiledConfig:
    config: Config
    sources: tuple[CompiledSource, ...]
    router: Router
    targets: Mapping[str, TargetPlan]
    warnings: tuple[str, ...]
    order_keys: OrderKeys  # the ordering key of each target that has one

    def summary(self) -> str:
        return (
            f"{len(self.sources)} sources, {len(self.targets)} targets, "
            f"{len(self.config.routes)} routes, store {parse_store_url(self.config.store).shown}"
        )


def compile_config(config: Config, clock: Callable[[], float] = time.time) -> CompiledConfig:
    sources = tuple(compile_source(name, s, clock) for name, s in config.sources.items())
    warnings = tuple(
        f"sources.{name}: no verify: requests to {source.path} are not authenticated"
        for name, source in config.sources.items()
        if source.verify is None
    )
    targets = {name: plan_target(name, target) for name, target in config.targets.items()}
    order_keys = OrderKeys(
        MappingProxyType(
            {
                name: target.ordering.key.named(f"targets.{name}.ordering.key")
                for name, target in config.targets.items()
                if target.ordering is not None
            }
        )
    )
    return CompiledConfig(
        config,
        sources,
        compile_routes(config.routes),
        MappingProxyType(targets),
        warnings,
        order_keys,
    )


def compile_source(name: str, source: SourceConfig, clock: Callable[[], float]) -> CompiledSource:
    return CompiledSource(
        name=name,
        path=source.path,
        verify=build_verifier(source.verify, clock) if source.verify is not None else None,
        read=SENDERS[source.reads_as].read,
        allow_ips=parse_networks(source.allow_ips) if source.allow_ips is not None else None,
        trusted_proxies=parse_networks(source.trusted_proxies),
    )
