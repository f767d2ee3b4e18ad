"""The admin listener in-process: what each port serves, readiness, the token, and the JSON API.

tests/test_admin_process.py runs the same listeners in a real `relay run`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from relay.admin import create_admin_app, store_problem
from relay.api import Call, Endpoint, JsonObject, Params
from relay.endpoints import ENDPOINTS
from relay.errors import InboundError, StoreError
from relay.store.sqlite import SqliteStore
from tests.conftest import ConfigWriter, Relay, RelayTestServer, StartRelay
from tests.receiver import Receiver, Reply

TOKEN = "admin-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}

CONFIG = """\
store: "sqlite:///relay.db"
{admin}
sources:
  in:
    path: /hooks/in
targets:
  out:
    kind: http
    url: "{url}/in"
    retry: {{max_attempts: 1}}
routes:
  - targets: [out]
"""


async def start(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver, admin: str = ""
) -> Relay:
    return await start_relay(write_config(CONFIG.format(admin=admin, url=receiver.url)))


@pytest.fixture
async def relay(write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver) -> Relay:
    return await start(write_config, start_relay, receiver)


@pytest.fixture
async def guarded(write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver) -> Relay:
    return await start(write_config, start_relay, receiver, f"admin: {{token: {TOKEN}}}")


async def answer(response: ClientResponse) -> tuple[int, Any]:
    assert response.content_type == "application/json"
    return response.status, await response.json()


async def readiness_until(
    relay: Relay, done: Callable[[int], bool], timeout_s: float = 5.0
) -> tuple[int, Any]:
    """GET /readyz until `done(status)`; fail on the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        status, body = await answer(await relay.admin.get("/readyz"))
        if done(status):
            return status, body
        if loop.time() > deadline:
            raise AssertionError(f"readiness still {status} {body} after {timeout_s}s")
        await asyncio.sleep(0.02)


# -- what each port serves --------------------------------------------------------------------


async def test_the_ingest_port_serves_only_its_sources_and_healthz(relay: Relay) -> None:
    assert await answer(await relay.client.get("/healthz")) == (200, {"status": "ok"})
    for path in ("/metrics", "/readyz", "/api/deliveries", "/api/config", "/api/"):
        assert await answer(await relay.client.get(path)) == (
            404,
            {"error": f"no source is configured at {path}"},
        )
    assert (await relay.post("/hooks/in", {"id": "e1", "type": "t"})).status == 202


async def test_the_admin_port_serves_health_readiness_and_metrics(relay: Relay) -> None:
    await relay.post("/hooks/in", {"id": "e1", "type": "t"})
    assert await answer(await relay.admin.get("/healthz")) == (200, {"status": "ok"})
    assert await answer(await relay.admin.get("/readyz")) == (200, {"status": "ready"})
    metrics = await relay.admin.get("/metrics")
    assert metrics.status == 200
    text = await metrics.text()
    assert 'relay_inbound_requests_total{result="accepted",source="in"} 1.0' in text
    assert await answer(await relay.admin.get("/hooks/in")) == (
        404,
        {"error": "nothing at /hooks/in (see README, Admin listener)"},
    )
    assert await answer(await relay.admin.post("/api/config")) == (
        405,
        {"error": "method POST is not allowed on /api/config; use GET"},
    )


# -- readiness --------------------------------------------------------------------------------


async def test_readiness_is_503_from_the_moment_relay_begins_to_shut_down(relay: Relay) -> None:
    assert await answer(await relay.admin.get("/readyz")) == (200, {"status": "ready"})
    relay.daemon.begin_shutdown()
    assert await answer(await relay.admin.get("/readyz")) == (
        503,
        {"status": "not ready", "reasons": ["relay is shutting down"]},
    )
    assert await answer(await relay.admin.get("/healthz")) == (200, {"status": "ok"})


async def test_readiness_is_503_once_the_store_file_is_gone_and_the_api_answers_503(
    relay: Relay, tmp_path: Path
) -> None:
    await readiness_until(relay, lambda status: status == 200)
    (tmp_path / "relay.db").unlink()
    refused = "store relay.db can no longer be used (see the error logged before)"
    assert await readiness_until(relay, lambda status: status == 503) == (
        503,
        {"status": "not ready", "reasons": [refused]},
    )
    assert await answer(await relay.admin.get("/api/deliveries")) == (
        503,
        {"error": f"the store cannot answer right now: {refused}"},
    )


async def test_a_store_that_answers_late_or_not_at_all_is_a_reason(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.db", lambda: 0.0)
    ticks = iter([10.0, 11.5])  # the store took 1.5 s to answer
    assert await store_problem(store, lambda: next(ticks)) == "store relay.db is not open"
    await store.open()
    try:
        assert await store_problem(store, iter([10.0, 10.001]).__next__) is None
        assert await store_problem(store, iter([10.0, 11.5]).__next__) == (
            "the store took 1.5s to answer a trivial query (more than 1s)"
        )
    finally:
        await store.close()


# -- the token ----------------------------------------------------------------------------------


async def test_the_api_refuses_a_missing_or_wrong_token_and_never_logs_one(
    guarded: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-0123456789abcdef"
    refusals = [
        ({}, "this needs Authorization: Bearer <admin.token>"),
        ({"Authorization": f"Basic {TOKEN}"}, "Authorization must be Bearer <admin.token>"),
        ({"Authorization": f"Bearer {wrong}"}, "the bearer token is not admin.token"),
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, "the bearer token is not admin.token"),
        ({"Authorization": "Bearer"}, "the bearer token is not admin.token"),
    ]
    for path in ("/api/deliveries", "/api/config", "/api/nope"):
        for headers, reason in refusals:
            response = await guarded.admin.get(path, headers=headers)
            assert await answer(response) == (401, {"error": reason})
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="relay admin"'
    status, listed = await answer(await guarded.admin.get("/api/deliveries", headers=BEARER))
    assert (status, listed) == (200, {"deliveries": []})
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert (await guarded.admin.get("/api/config", headers=lower)).status == 200
    assert await answer(await guarded.admin.get("/api/nope", headers=BEARER)) == (
        404,
        {"error": "nothing at /api/nope (see README, Admin listener)"},
    )
    for path in ("/healthz", "/readyz", "/metrics"):  # probes and scrapers need none
        assert (await guarded.admin.get(path)).status == 200
    assert "refused GET /api/config from 127.0.0.1: the bearer token is not admin.token" in (
        caplog.text
    )
    assert TOKEN not in caplog.text
    assert TOKEN[:-1] not in caplog.text
    assert wrong not in caplog.text


async def test_without_a_token_the_loopback_api_is_open(relay: Relay) -> None:
    status, config = await answer(await relay.admin.get("/api/config"))
    assert status == 200
    assert config["admin"] == {"listen": "127.0.0.1:9090", "token": None}


async def test_a_reload_rotates_the_token_for_the_next_request(
    guarded: Relay, write_config: ConfigWriter, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rotated = "rotated-token-0123456789abcdef"
    path = write_config(CONFIG.format(admin=f"admin: {{token: {rotated}}}", url=receiver.url))
    result = await guarded.daemon.reload(path)
    assert result.ok, result.problems
    assert (await guarded.admin.get("/api/config", headers=BEARER)).status == 401
    new = {"Authorization": f"Bearer {rotated}"}
    status, config = await answer(await guarded.admin.get("/api/config", headers=new))
    assert (status, config["admin"]["token"]) == (200, "**********")
    assert "admin.token changed" in caplog.text
    assert TOKEN not in caplog.text
    assert rotated not in caplog.text


# -- the API's endpoints ----------------------------------------------------------------------


async def test_deliveries_are_listed_newest_first_and_filtered(
    relay: Relay, receiver: Receiver
) -> None:
    receiver.script = [Reply(status=500, body="down")]  # e1 goes dead (max_attempts: 1)
    for event_id in ("e1", "e2", "e3"):
        assert (await relay.post("/hooks/in", {"id": event_id, "type": "order.paid"})).status == 202
        await relay.wait_for_deliveries(
            lambda records: all(r.state != "pending" for r in records), f"{event_id} settled"
        )
    status, listed = await answer(await relay.admin.get("/api/deliveries"))
    assert status == 200
    assert [(d["event_id"], d["state"]) for d in listed["deliveries"]] == [
        ("e3", "delivered"),
        ("e2", "delivered"),
        ("e1", "dead"),
    ]
    dead = listed["deliveries"][2]
    assert set(dead) == {
        "id",
        "source",
        "event_id",
        "type",
        "target",
        "target_configured",
        "state",
        "received_at",
        "attempts",
        "next_attempt_at",
        "waits_for_its_key",
        "last_status",
        "last_error",
    }
    assert (dead["source"], dead["target"], dead["type"]) == ("in", "out", "order.paid")
    assert (dead["attempts"], dead["last_status"]) == (1, 500)
    assert "500" in dead["last_error"]
    assert dead["next_attempt_at"] is None  # only a pending delivery has a next attempt
    assert dead["received_at"].endswith("Z")
    _, only_dead = await answer(await relay.admin.get("/api/deliveries?state=dead"))
    assert [d["event_id"] for d in only_dead["deliveries"]] == ["e1"]
    _, newest = await answer(await relay.admin.get("/api/deliveries?limit=1&state=delivered"))
    assert [d["event_id"] for d in newest["deliveries"]] == ["e3"]
    _, page = await answer(
        await relay.admin.get(f"/api/deliveries?before={newest['deliveries'][0]['id']}&limit=1")
    )
    assert [d["event_id"] for d in page["deliveries"]] == ["e2"]
    _, by_event = await answer(await relay.admin.get("/api/deliveries?event=e2&since=1h"))
    assert [d["event_id"] for d in by_event["deliveries"]] == ["e2"]
    status, detail = await answer(await relay.admin.get(f"/api/deliveries/{dead['id']}"))
    assert status == 200
    assert detail["event"]["id"] == "e1"
    assert [(a["number"], a["status"]) for a in detail["attempts"]] == [(1, 500)]
    assert await answer(await relay.admin.get("/api/deliveries/999")) == (
        404,
        {"error": "no delivery 999"},
    )


DELIVERIES_PARAMS = "state, target, source, type, event, since, before, limit"


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("state=lost", "parameter state: must be 'pending', 'delivered' or 'dead'"),
        ("limit=0", "parameter limit: must be greater than or equal to 1"),
        ("limit=1001", "parameter limit: must be less than or equal to 1000"),
        (
            "limit=ten",
            "parameter limit: must be a valid integer, unable to parse string as an integer",
        ),
        (
            "colour=red",
            f"unknown parameter colour (this endpoint takes: {DELIVERIES_PARAMS})",
        ),
        ("limit=1&limit=2", "parameter limit is given more than once"),
        (
            "state=lost&limit=0",
            "parameter state: must be 'pending', 'delivered' or 'dead';"
            " parameter limit: must be greater than or equal to 1",
        ),
        (
            "x" * 100 + "=1",
            f"unknown parameter {'x' * 64}... (this endpoint takes: {DELIVERIES_PARAMS})",
        ),
    ],
)
async def test_deliveries_parameters_are_checked_with_400(
    relay: Relay, query: str, error: str
) -> None:
    assert await answer(await relay.admin.get(f"/api/deliveries?{query}")) == (
        400,
        {"error": error},
    )


async def test_config_takes_no_parameters(relay: Relay) -> None:
    assert await answer(await relay.admin.get("/api/config?verbose=1")) == (
        400,
        {"error": "unknown parameter verbose (this endpoint takes: none)"},
    )


async def test_config_is_the_running_config_with_its_credentials_redacted(
    write_config: ConfigWriter, start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "hook-secret-value")
    monkeypatch.setenv("OUT_TOKEN", "out-token-value")
    monkeypatch.setenv("RELAY_ADMIN_TOKEN", TOKEN)
    path = write_config(
        """\
        store: "sqlite:///relay.db"
        admin: {token: "${RELAY_ADMIN_TOKEN}"}
        sources:
          in:
            path: /hooks/in
            verify: {scheme: hmac-sha256, secret: "${HOOK_SECRET}", header: X-Signature}
        targets:
          out:
            kind: http
            url: "http://127.0.0.1:9/in"
            headers: {Authorization: "Bearer ${OUT_TOKEN}", X-Kind: relay}
        routes:
          - targets: [out]
        """
    )
    relay = await start_relay(path)
    response = await relay.admin.get("/api/config", headers=BEARER)
    text = await response.text()
    for secret in ("hook-secret-value", "out-token-value", TOKEN):
        assert secret not in text
    status, config = await answer(response)
    assert status == 200
    assert config["admin"]["token"] == "**********"
    assert config["sources"]["in"]["verify"]["secret"] == "**********"
    assert config["targets"]["out"]["headers"] == {
        "Authorization": "[redacted]",
        "X-Kind": "relay",
    }
    assert config["targets"]["out"]["url"] == "http://127.0.0.1:9/in"
    assert config["store"] == f"sqlite:///{path.parent / 'relay.db'}"


# -- the framework: an endpoint is one function and one line ------------------------------------


class EchoParams(Params):
    name: str
    times: int = 1


async def echo(call: Call[EchoParams]) -> JsonObject:
    if call.params.name == "conflict":
        raise InboundError("already there", 409)
    if call.params.name == "store":
        raise StoreError("store relay.db: disk I/O error")
    if call.params.name == "bug":
        raise RuntimeError("a bug")
    return {
        "name": call.params.name,
        "times": call.params.times,
        "targets": list(call.daemon.config.targets),
    }


async def test_an_endpoint_is_one_function_and_one_line(
    relay: Relay, caplog: pytest.LogCaptureFixture
) -> None:
    endpoints = [*ENDPOINTS, Endpoint("GET", "/api/echo/{name}", echo, EchoParams)]
    app = create_admin_app(relay.daemon, endpoints)
    client: TestClient[Any, Any] = TestClient(RelayTestServer(app, relay.config.limits))
    await client.start_server()
    try:
        assert await answer(await client.get("/api/echo/x?times=2")) == (
            200,
            {"name": "x", "times": 2, "targets": ["out"]},
        )
        assert await answer(await client.get("/api/echo/x?name=y")) == (
            400,
            {"error": "parameter name is given more than once"},
        )
        assert await answer(await client.get("/api/echo/conflict")) == (
            409,
            {"error": "already there"},
        )
        assert await answer(await client.get("/api/echo/store")) == (
            503,
            {"error": "the store cannot answer right now: store relay.db: disk I/O error"},
        )
        assert await answer(await client.get("/api/echo/bug")) == (
            500,
            {"error": "relay failed to answer this request; see its log"},
        )
        assert (await client.get("/api/deliveries")).status == 200
    finally:
        await client.close()
    (bug,) = [r for r in caplog.records if r.exc_info is not None]
    assert bug.getMessage() == "admin API GET /api/echo/{name}: unexpected error"
