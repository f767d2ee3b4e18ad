"""The composition root: config → compiled config → resources → workers → server.

Compiling is pure (`relay.compiled`); every resource is then opened in a cleanup context of
its own, in order, and closed in reverse: the HTTP client session, the store, the targets
bound to them, the delivery workers, the retention purger.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TextIO

import aiohttp
from aiohttp import web

from relay.compiled import CompiledConfig, compile_config
from relay.config import Config
from relay.delivery import SHUTDOWN_GRACE_S, Dispatcher
from relay.inbound import Ingest
from relay.metrics import Metrics
from relay.redaction import Redactor, config_secrets
from relay.retention import PURGE_INTERVAL_S, Purger, retention_policy
from relay.store import open_store
from relay.store.base import Store
from relay.targets.base import Resources, Target

log = logging.getLogger("relay")

STORE = web.AppKey("store", Store)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
HEALTH_PATHS = {"/healthz": "GET", "/metrics": "GET"}


class Daemon:
    """One relay: its compiled config, and the resources it binds that config to."""

    def __init__(
        self,
        compiled: CompiledConfig,
        clock: Callable[[], float],
        rng: Callable[[], float],
        out: TextIO,
        shutdown_grace_s: float,
        purge_interval_s: float,
    ) -> None:
        self.compiled = compiled
        self.config = compiled.config
        self.store = open_store(self.config.store, clock)
        self.metrics = Metrics()
        self._clock = clock
        self._rng = rng
        self._out = out
        self._grace_s = shutdown_grace_s
        self._purge_interval_s = purge_interval_s
        self._session: aiohttp.ClientSession | None = None
        self._targets: Mapping[str, Target] = {}
        self.dispatcher: Dispatcher | None = None
        limits = self.config.limits
        self.ingest = Ingest(
            self.store, self._notify, self.metrics, clock, limits.max_body_bytes, HEALTH_PATHS
        )
        self.ingest.configure(compiled.sources, compiled.router)

    def _notify(self, target_names: Iterable[str]) -> None:
        if self.dispatcher is not None:
            self.dispatcher.notify(target_names)

    def contexts(self) -> list[Callable[[web.Application], AsyncIterator[None]]]:
        """Each resource opened in its own context, in this order; closed in reverse."""
        return [
            self._client_session,
            self._open_store,
            self._bind_targets,
            self._workers,
            self._retention,
        ]

    async def _client_session(self, app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
            self._session = session
            yield

    async def _open_store(self, app: web.Application) -> AsyncIterator[None]:
        await self.store.open()
        yield
        await self.store.close()

    async def _bind_targets(self, app: web.Application) -> AsyncIterator[None]:
        assert self._session is not None
        resources = Resources(self._session, self._clock, self._out)
        self._targets = {name: plan.bind(resources) for name, plan in self.compiled.targets.items()}
        yield
        for target in reversed(self._targets.values()):
            await target.close()

    async def _workers(self, app: web.Application) -> AsyncIterator[None]:
        redactor = Redactor(config_secrets(self.config))
        self.dispatcher = Dispatcher(
            self._targets,
            self.store,
            self.metrics,
            self._clock,
            self._rng,
            redactor,
            self._grace_s,
        )
        app[DISPATCHER] = self.dispatcher
        self.dispatcher.start()
        yield
        await self.dispatcher.stop()

    async def _retention(self, app: web.Application) -> AsyncIterator[None]:
        policy = retention_policy(self.config.retention)
        purger = Purger(self.store, policy, self.metrics, self._purge_interval_s)
        purger.start()
        yield
        await purger.stop()

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain")


async def create_app(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    rng: Callable[[], float] = random.random,
    out: TextIO | None = None,
    shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    purge_interval_s: float = PURGE_INTERVAL_S,
) -> web.Application:
    """Build the whole daemon as one aiohttp app; nothing is opened until it starts."""
    compiled = compile_config(config, clock)
    for warning in compiled.warnings:
        log.warning("%s", warning)
    daemon = Daemon(compiled, clock, rng, out or sys.stdout, shutdown_grace_s, purge_interval_s)
    app = web.Application(client_max_size=config.limits.max_body_bytes)
    app[STORE] = daemon.store
    app.router.add_get("/healthz", daemon.healthz)
    app.router.add_get("/metrics", daemon.metrics_page)
    app.router.add_route("*", "/{tail:.*}", daemon.ingest.dispatch)
    app.cleanup_ctx.extend(daemon.contexts())
    return app
