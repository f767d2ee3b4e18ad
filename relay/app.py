"""The composition root: config → compiled config → resources → workers → server.

`create_app` builds the ingest app, which owns the daemon's resources; the admin listener's
app (`relay.admin`) is a view of the same daemon.

Compiling is pure (`relay.compiled`); every resource is then opened in a cleanup context of
its own, in order, and closed in reverse: the HTTP client session, the store, the targets
bound to them, the delivery workers, the retention purger, the timer of the target gauges.

`Daemon.reload` runs a new config file in place of the running one (`relay run` does on
SIGHUP): loaded and compiled completely first, then swapped in one step, or not at all.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import aiohttp
from aiohttp import web

from relay import logs
from relay.addresses import parse_listen
from relay.compiled import CompiledConfig, compile_config
from relay.config import Config
from relay.delivery import SHUTDOWN_GRACE_S, Dispatcher
from relay.errors import ConfigError, StoreError
from relay.gauges import GAUGE_INTERVAL_S, TargetGauges
from relay.inbound import Ingest
from relay.loading import load_config
from relay.metrics import Metrics
from relay.redaction import Redactor, config_secrets
from relay.reload import ConfigChange, ReloadAttempt, ReloadResult, compare
from relay.retention import PURGE_INTERVAL_S, Purger, retention_policy
from relay.server import DIRECT_ROUTE
from relay.store import open_store
from relay.store.base import Store
from relay.store.pg_replica import replica_name
from relay.targets.base import Resources, Target

log = logging.getLogger("relay")

STORE = web.AppKey("store", Store)
DISPATCHER = web.AppKey("dispatcher", Dispatcher)
HEALTH_PATHS = {"/healthz": "GET"}  # for load balancers; the rest is on the admin listener


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
        gauge_interval_s: float = GAUGE_INTERVAL_S,
    ) -> None:
        self.compiled = compiled
        self.config = compiled.config
        self.store = open_store(
            self.config.store, clock, replica_name(parse_listen(self.config.listen)[1])
        )
        self.metrics = Metrics()
        self.target_gauges = TargetGauges(
            self.store, lambda: self.config.targets, clock, gauge_interval_s
        )
        self.metrics.registry.register(self.target_gauges)
        self._clock = clock
        self._rng = rng
        self._out = out
        self._grace_s = shutdown_grace_s
        self._purge_interval_s = purge_interval_s
        self._session: aiohttp.ClientSession | None = None
        self._resources: Resources | None = None
        self._targets: Mapping[str, Target] = {}
        self.dispatcher: Dispatcher | None = None
        self._purger: Purger | None = None
        # Every credential of every config run since start: an attempt that began under the
        # previous config may still echo one of its secrets.
        self._secrets = dict.fromkeys(config_secrets(self.config))
        self._reloading = asyncio.Lock()  # one reload at a time; the next waits its turn
        self.draining = False  # stopping: from the stop signal on, relay is not ready
        self.started_at = clock()
        self.last_reload: ReloadAttempt | None = None  # none since start
        self.metrics.last_reload_success.set(clock())
        limits = self.config.limits
        self.ingest = Ingest(
            self.store, self._notify, self.metrics, clock, limits.max_body_bytes, HEALTH_PATHS
        )
        self.ingest.configure(compiled.sources, compiled.router, compiled.order_keys)

    @property
    def clock(self) -> Callable[[], float]:
        return self._clock

    @property
    def started(self) -> bool:
        """Whether every resource is open and the workers run."""
        return self.dispatcher is not None

    def begin_shutdown(self) -> None:
        """Not ready from now on, and claim nothing more (`relay run` on SIGTERM or when the
        store fails); the cleanup contexts then finish what is in flight."""
        self.draining = True
        if self.dispatcher is not None:
            self.dispatcher.begin_shutdown()

    def redactor(self) -> Redactor:
        """Cuts out the secrets of every config run since start."""
        return Redactor(self._secrets)

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
            self._gauges,
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
        resources = self._resources = Resources(
            self._session, self._clock, self._out, self.store.rate_limiter
        )
        self._targets = {name: plan.bind(resources) for name, plan in self.compiled.targets.items()}
        yield
        for target in reversed(self._targets.values()):
            await target.close()

    async def _workers(self, app: web.Application) -> AsyncIterator[None]:
        self.dispatcher = Dispatcher(
            self._targets,
            self.store,
            self.metrics,
            self._clock,
            self._rng,
            Redactor(self._secrets),
            self._grace_s,
        )
        app[DISPATCHER] = self.dispatcher
        self.store.on_new_deliveries(self._notify)  # other replicas' events
        await self._forget_order_keys(self.config)
        self.dispatcher.start()
        await self._report_waiting(self.config)
        yield
        await self.dispatcher.stop()

    async def _retention(self, app: web.Application) -> AsyncIterator[None]:
        policy = retention_policy(self.config.retention)
        purger = self._purger = Purger(self.store, policy, self.metrics, self._purge_interval_s)
        purger.start()
        yield
        await purger.stop()

    async def _gauges(self, app: web.Application) -> AsyncIterator[None]:
        self.target_gauges.start()
        yield
        await self.target_gauges.stop()

    async def reload(self, path: Path) -> ReloadResult:
        """Run the config in `path` instead of the running one: loaded and compiled completely
        first, then swapped in at once; on any problem the running config stays. Either way
        the result is logged, counted in metrics and kept for the console."""
        async with self._reloading:
            result = await self._reload(path)
            self.last_reload = ReloadAttempt(self._clock(), str(path), result)
            return result

    async def _reload(self, path: Path) -> ReloadResult:
        try:
            compiled = await asyncio.to_thread(_load_compiled, path, self._clock)
        except ConfigError as exc:
            return self._not_reloaded(path, exc.problems)
        except Exception as exc:  # a bug: the running config stays all the same
            log.exception("config reload: unexpected error while loading %s", path)
            return self._not_reloaded(path, [f"{path}: unexpected error: {type(exc).__name__}"])
        change = compare(self.config, compiled.config)
        if change.refused:
            return self._not_reloaded(path, change.refused)
        if self.dispatcher is None or self.dispatcher.stopping:
            return self._not_reloaded(path, ["relay is starting or stopping; try again"])
        self._swap(compiled, change, self.dispatcher)
        self.metrics.reloads.labels("success").inc()
        self.metrics.last_reload_success.set(self._clock())
        log.info("config reloaded from %s: %s", path, change.summary())
        for warning in compiled.warnings:
            log.warning("%s", warning)
        await self._forget_order_keys(compiled.config)
        waiting = await self._report_waiting(compiled.config)
        return ReloadResult(change=change, waiting=waiting)

    def _not_reloaded(self, path: Path, problems: Sequence[str]) -> ReloadResult:
        self.metrics.reloads.labels("failure").inc()
        log.error(
            "config not reloaded from %s: %d problem(s); the running config stays",
            path,
            len(problems),
        )
        for problem in problems:
            log.error("config reload: %s", problem)
        return ReloadResult(problems=tuple(problems))

    def _swap(self, compiled: CompiledConfig, change: ConfigChange, dispatcher: Dispatcher) -> None:
        """Run `compiled` from now on, in one step of the event loop (nothing here awaits), so
        no request or claim sees half of it. Unchanged targets keep their runtime objects,
        and with them their connections."""
        assert self._resources is not None  # bound before the dispatcher was made
        resources, unchanged = self._resources, set(change.targets.unchanged)
        targets = {
            name: self._targets[name] if name in unchanged else plan.bind(resources)
            for name, plan in compiled.targets.items()
        }
        self._secrets.update(dict.fromkeys(config_secrets(compiled.config)))
        self.ingest.configure(compiled.sources, compiled.router, compiled.order_keys)
        dispatcher.configure(targets, Redactor(self._secrets))
        if self._purger is not None:
            self._purger.configure(retention_policy(compiled.config.retention))
        logs.redact_secrets(self._secrets)
        self._targets = targets
        self.compiled, self.config = compiled, compiled.config

    async def _forget_order_keys(self, config: Config) -> None:
        """Deliveries stored with a key for a target that no longer orders go unordered now:
        those held behind an older one of their key are due at once."""
        for name, target in config.targets.items():
            if target.ordering is not None:
                continue
            try:
                released = await self.store.forget_order_keys(name)
            except StoreError as exc:
                log.error("target %s: cannot drop its ordering keys: %s", name, exc)
                continue
            if released:
                log.info(
                    "target %s orders by key no more: %d deliveries that waited behind older"
                    " ones of their key go now",
                    name,
                    released,
                )

    async def _report_waiting(self, config: Config) -> dict[str, int]:
        """Log the pending deliveries of targets `config` does not have: they stay in the store
        until a target of their name is configured again."""
        try:
            pending = await self.store.pending_by_target()
        except StoreError as exc:
            log.error("cannot count pending deliveries: %s", exc)
            return {}
        waiting = {name: count for name, count in pending.items() if name not in config.targets}
        for name, count in waiting.items():
            log.warning(
                "target %s is not in the config: its %d pending deliveries wait until it is"
                " again (relay deliveries lists them)",
                name,
                count,
            )
        return waiting

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), content_type="text/plain")


DAEMON = web.AppKey("daemon", Daemon)


def _load_compiled(path: Path, clock: Callable[[], float]) -> CompiledConfig:
    """Load and compile: no side effects, so a reload runs it off the event loop."""
    return compile_config(load_config(path), clock)


async def create_app(
    config: Config,
    *,
    clock: Callable[[], float] = time.time,
    rng: Callable[[], float] = random.random,
    out: TextIO | None = None,
    shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    purge_interval_s: float = PURGE_INTERVAL_S,
    gauge_interval_s: float = GAUGE_INTERVAL_S,
) -> web.Application:
    """Build the whole daemon as one aiohttp app; nothing is opened until it starts."""
    compiled = compile_config(config, clock)
    for warning in compiled.warnings:
        log.warning("%s", warning)
    daemon = Daemon(
        compiled,
        clock,
        rng,
        out or sys.stdout,
        shutdown_grace_s,
        purge_interval_s,
        gauge_interval_s,
    )
    app = web.Application(client_max_size=config.limits.max_body_bytes)
    app[STORE] = daemon.store
    app[DAEMON] = daemon
    app[DIRECT_ROUTE] = daemon.ingest.direct  # a POST to a source path skips the router
    app.router.add_get("/healthz", daemon.healthz)
    app.router.add_route("*", "/{tail:.*}", daemon.ingest.dispatch)
    app.cleanup_ctx.extend(daemon.contexts())
    return app
