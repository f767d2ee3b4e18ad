"""Shared fixtures: a recording receiver, config files in a temp dir, relay on a real socket."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import json
import os
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings

from relay.admin import create_admin_app
from relay.app import DAEMON, STORE, Daemon, create_app
from relay.config import Config, LimitsConfig
from relay.connections import Connections
from relay.loading import load_config
from relay.server import RelayRunner
from relay.store.base import DeliveryRecord, Store
from tests.receiver import Receiver
from tests.stores import STORE_KINDS

SECRET = "test-secret"

# Property tests draw the same examples on every run: a failure is one anyone can reproduce,
# and no run passes or fails by the luck of the draw. Nothing is timed either (no deadline,
# no too_slow health check): a loaded machine is slower, not wrong. HYPOTHESIS_PROFILE=explore
# draws new examples each run, to look for failures by hand; one found becomes an @example.
settings.register_profile(
    "relay",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", settings.get_profile("relay"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "relay"))


def hmac_hex(secret: str, body: bytes) -> str:
    """Computed here, independently of relay.signing, so tests pin the scheme."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Run the test once against each store implementation (tests/stores.py)."""
    kind: str = request.param
    return kind


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    server = Receiver()
    await server.start()
    yield server
    await server.stop()


ConfigWriter = Callable[..., Path]


@pytest.fixture
def write_config(tmp_path: Path) -> ConfigWriter:
    """Write a YAML config (dedented) and optional templates into tmp_path."""

    def write(yaml_text: str, templates: dict[str, str] | None = None) -> Path:
        (tmp_path / "templates").mkdir(exist_ok=True)
        for name, text in (templates or {}).items():
            (tmp_path / "templates" / name).write_text(text, encoding="utf-8")
        path = tmp_path / "relay.yaml"
        path.write_text(textwrap.dedent(yaml_text), encoding="utf-8")
        return path

    return write


@dataclass
class Relay:
    """relay running in-process: ingest (`client`) and the admin listener (`admin`), each on a
    real loopback socket of its own."""

    client: TestClient[Any, Any]
    config: Config
    out: io.StringIO
    admin: TestClient[Any, Any]

    @property
    def daemon(self) -> Daemon:
        app = self.client.app
        assert app is not None
        daemon: Daemon = app[DAEMON]
        return daemon

    @property
    def store(self) -> Store:
        app = self.client.app
        assert app is not None
        store: Store = app[STORE]
        return store

    async def post(
        self,
        path: str,
        body: bytes | dict[str, Any] | list[Any],
        headers: dict[str, str] | None = None,
        secret: str | None = None,
        header: str = "X-Signature",
    ) -> ClientResponse:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers = dict(headers or {})
        if secret is not None:
            all_headers[header] = hmac_hex(secret, raw)
        return await self.client.post(path, data=raw, headers=all_headers)

    @property
    def connections(self) -> Connections:
        runner = self.client.server.runner
        assert isinstance(runner, RelayRunner)
        return runner.connections

    async def counts(self) -> dict[str, int]:
        return await self.store.counts()

    async def wait_for_state(
        self, state: str, count: int = 1, timeout_s: float = 5.0
    ) -> list[DeliveryRecord]:
        """Poll the store until `count` deliveries are in `state`; fail on the deadline."""
        records = await self.wait_for_deliveries(
            lambda rs: sum(r.state == state for r in rs) >= count, f"{count} {state}", timeout_s
        )
        return [r for r in records if r.state == state]

    async def wait_for_deliveries(
        self,
        done: Callable[[list[DeliveryRecord]], bool],
        what: str,
        timeout_s: float = 5.0,
    ) -> list[DeliveryRecord]:
        """Poll the store until `done(deliveries)` (newest first); fail on the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            records = await self.store.deliveries(limit=1000)
            if done(records):
                return records
            if loop.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {records}")
            await asyncio.sleep(0.01)


class RelayTestServer(TestServer):
    """A TestServer serving through relay's own runner, as `relay run` does."""

    def __init__(self, app: web.Application, limits: LimitsConfig) -> None:
        super().__init__(app, host="127.0.0.1")
        self.limits = limits

    async def _make_runner(self, **kwargs: Any) -> RelayRunner:
        return RelayRunner(self.app, self.limits)


StartRelay = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def start_relay() -> AsyncIterator[StartRelay]:
    clients: list[TestClient[Any, Any]] = []

    async def start(config_path: Path, **options: Any) -> Relay:
        config = load_config(config_path)
        out = io.StringIO()
        app = await create_app(config, out=out, **options)
        client: TestClient[Any, Any] = TestClient(RelayTestServer(app, config.limits))
        await client.start_server()  # opens the daemon's resources
        clients.append(client)
        admin_app = create_admin_app(app[DAEMON])
        admin: TestClient[Any, Any] = TestClient(RelayTestServer(admin_app, config.limits))
        await admin.start_server()
        clients.append(admin)
        return Relay(client, config, out, admin)

    yield start
    for client in reversed(clients):
        await client.close()
