"""The composition root: config → store → templates → router → targets → workers → server."""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import aiohttp
from aiohttp import web

from relay import config as cfg
from relay.allowlist import parse_networks
from relay.delivery import Dispatcher
from relay.errors import ConfigError
from relay.inbound import CompiledSource, Ingest, fallback
from relay.metrics import Metrics
from relay.redaction import Redactor, config_secrets
from relay.render import TemplateCompiler
from relay.retention import PURGE_INTERVAL_S, Purger, retention_policy
from relay.retry import RetryPolicy
from relay.router import Router, compile_routes
from relay.sources import READERS, build_verifier
from relay.store import open_store
from relay.store.base import Store
from relay.targets.base import Target, compile_body
from relay.targets.console import ConsoleTarget
from relay.targets.http import build_http_target
from relay.targets.slack import build_slack_target
from relay.targets.warehouse import build_warehouse_target

log = logging.getLogger("relay")

SHUTDOWN_GRACE_S = 10.0

STORE = web.AppKey("store", Store)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)


@dataclass
class Compiled:
    """Everything the config describes, compiled and cross-checked, before a port is bound."""

    config: cfg.Config
    sources: list[CompiledSource]
    router: Router
    targets: dict[str, Target]
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{len(self.sources)} sources, {len(self.targets)} targets, "
            f"{len(self.config.routes)} routes, store {self.config.store}"
        )


def compile_config(
    config: cfg.Config,
    session: aiohttp.ClientSession,
    clock: Callable[[], float] = time.time,
    out: TextIO | None = None,
) -> Compiled:
    """Compile templates, routes and targets; raise ConfigError listing every problem."""
    problems: list[str] = []
    warnings: list[str] = []
    compiler = TemplateCompiler(Path(config.templates_dir))
    sources = []
    for name, source in config.sources.items():
        if source.verify is None:
            warnings.append(
                f"sources.{name}: no verify: requests to {source.path} are not authenticated"
            )
        verify = build_verifier(source.verify, clock) if source.verify is not None else None
        sources.append(
            CompiledSource(
                name=name,
                path=source.path,
                verify=verify,
                read=READERS[source.reads_as],
                allow_ips=parse_networks(source.allow_ips)
                if source.allow_ips is not None
                else None,
                trusted_proxies=parse_networks(source.trusted_proxies),
            )
        )
    router = compile_routes(config.routes, compiler.expression, problems)
    targets: dict[str, Target] = {}
    for name, target in config.targets.items():
        targets[name] = build_target(name, target, compiler, session, clock, out, problems)
    if problems:
        raise ConfigError(problems)
    return Compiled(config, sources, router, targets, warnings)


def build_target(
    name: str,
    target: cfg.TargetConfig,
    compiler: TemplateCompiler,
    session: aiohttp.ClientSession,
    clock: Callable[[], float],
    out: TextIO | None,
    problems: list[str],
) -> Target:
    """The target registry: one branch per `kind`."""
    if isinstance(target, cfg.HttpTargetConfig):
        return build_http_target(name, target, compiler, session, clock, problems)
    if isinstance(target, cfg.SlackTargetConfig):
        return build_slack_target(name, target, compiler, session, clock, problems)
    if isinstance(target, cfg.WarehouseTargetConfig):
        return build_warehouse_target(name, target, compiler, problems)
    body = compile_body(target.body, target.template, compiler, f"targets.{name}", problems)
    return ConsoleTarget(name, body, RetryPolicy.from_config(target.retry), out or sys.stdout)


async def create_app(
    config: cfg.Config,
    *,
    clock: Callable[[], float] = time.time,
    rng: Callable[[], float] = random.random,
    out: TextIO | None = None,
    shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    purge_interval_s: float = PURGE_INTERVAL_S,
) -> web.Application:
    """Build the whole daemon as one aiohttp app; resources open and close in cleanup_ctx."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300), trust_env=False
    )
    try:
        compiled = compile_config(config, session, clock, out)
    except ConfigError:
        await session.close()
        raise
    for warning in compiled.warnings:
        log.warning("%s", warning)
    store = open_store(config.store, clock)
    metrics = Metrics()
    redactor = Redactor(config_secrets(config))
    dispatcher = Dispatcher(compiled.targets, store, metrics, clock, rng, redactor)
    purger = Purger(store, retention_policy(config.retention), metrics, purge_interval_s)
    ingest = Ingest(
        store, compiled.router, dispatcher.notify, metrics, clock, config.limits.max_body_bytes
    )

    app = web.Application(client_max_size=config.limits.max_body_bytes)
    app[STORE] = store
    app[DISPATCHER] = dispatcher
    for source in compiled.sources:
        app.router.add_post(source.path, ingest.handler(source))

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), content_type="text/plain")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    allowed = {source.path: "POST" for source in compiled.sources}
    allowed.update({"/healthz": "GET", "/metrics": "GET"})
    app.router.add_route("*", "/{tail:.*}", fallback(allowed))

    async def resources(app: web.Application) -> AsyncIterator[None]:
        try:
            await store.open()
        except BaseException:
            await session.close()
            raise
        dispatcher.start()
        purger.start()
        yield
        await purger.stop()
        await dispatcher.stop(shutdown_grace_s)
        for target in compiled.targets.values():
            await target.close()
        await session.close()
        await store.close()

    app.cleanup_ctx.append(resources)
    return app
