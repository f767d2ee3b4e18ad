"""Inbound contract: every refusal has its status, its reason, and stores nothing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from relay.config import LimitsConfig
from relay.server import DIRECT_ROUTE
from tests.conftest import SECRET, ConfigWriter, Relay, RelayTestServer, StartRelay, hmac_hex
from tests.rawhttp import RawConnection
from tests.receiver import Receiver

CONFIG = """\
store: "sqlite:///relay.db"
limits: {{max_body_bytes: 1024}}
sources:
  shop:
    path: /hooks/shop
    verify: {{scheme: hmac-sha256, secret: {secret}, header: X-Signature}}
  open:
    path: /hooks/open
targets:
  out:
    kind: http
    url: "{url}/in"
routes:
  - targets: [out]
"""


@pytest.fixture
async def relay(write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver) -> Relay:
    return await start_relay(write_config(CONFIG.format(secret=SECRET, url=receiver.url)))


NOTHING_STORED = {"events": 0, "pending": 0, "delivered": 0, "dead": 0}


async def test_valid_event_is_stored_and_acknowledged_with_202(relay: Relay) -> None:
    response = await relay.post("/hooks/shop", {"id": "e1", "type": "order"}, secret=SECRET)
    assert response.status == 202
    assert await response.json() == {"id": "e1", "deliveries": 1}
    counts = await relay.counts()
    assert counts["events"] == 1


async def test_repeated_id_is_a_duplicate_and_stores_nothing_new(relay: Relay) -> None:
    first = await relay.post("/hooks/shop", {"id": "e1", "n": 1}, secret=SECRET)
    again = await relay.post("/hooks/shop", {"id": "e1", "n": 2}, secret=SECRET)
    assert first.status == 202
    assert again.status == 200
    assert await again.json() == {"id": "e1", "duplicate": True}
    assert (await relay.counts())["events"] == 1


async def test_same_bytes_without_id_are_deduplicated_by_body_hash(relay: Relay) -> None:
    body = b'{"hello": "world"}'
    first = await relay.post("/hooks/open", body)
    again = await relay.post("/hooks/open", body)
    first_json = await first.json()
    assert first.status == 202
    assert again.status == 200
    assert (await again.json())["id"] == first_json["id"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing signature header X-Signature"),
        ({"X-Signature": "00" * 32}, "signature in X-Signature does not match the body"),
        (
            {"X-Signature": hmac_hex("wrong-secret", b'{"id": "e1"}')},
            "signature in X-Signature does not match the body",
        ),
    ],
)
async def test_bad_signature_is_401_and_stores_nothing(
    relay: Relay, headers: dict[str, str], reason: str
) -> None:
    response = await relay.post("/hooks/shop", b'{"id": "e1"}', headers=headers)
    assert response.status == 401
    assert await response.json() == {"error": reason}
    assert await relay.counts() == NOTHING_STORED


async def test_tampered_body_is_401(relay: Relay) -> None:
    signature = hmac_hex(SECRET, b'{"id": "e1", "amount": 1}')
    response = await relay.post(
        "/hooks/shop", b'{"id": "e1", "amount": 1000}', headers={"X-Signature": signature}
    )
    assert response.status == 401
    assert await relay.counts() == NOTHING_STORED


async def test_broken_json_is_400_with_the_parse_error(relay: Relay) -> None:
    response = await relay.post("/hooks/shop", b'{"id": ', secret=SECRET)
    assert response.status == 400
    error = (await response.json())["error"]
    assert error.startswith("body is not valid JSON: Expecting value: line 1 column 8")
    assert await relay.counts() == NOTHING_STORED


async def test_oversize_body_is_413_naming_the_limit(relay: Relay) -> None:
    body = json.dumps({"id": "big", "pad": "x" * 2000}).encode()
    response = await relay.post("/hooks/shop", body, secret=SECRET)
    assert response.status == 413
    assert await response.json() == {
        "error": "body is larger than 1024 bytes (limits.max_body_bytes)"
    }
    assert await relay.counts() == NOTHING_STORED


async def test_oversize_chunked_body_without_length_is_413(relay: Relay) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"x" * 500

    response = await relay.client.post("/hooks/open", data=chunks())
    assert response.status == 413
    assert await relay.counts() == NOTHING_STORED


async def test_unknown_path_is_404_as_json(relay: Relay) -> None:
    response = await relay.post("/hooks/nope", b"{}")
    assert response.status == 404
    assert await response.json() == {"error": "no source is configured at /hooks/nope"}
    assert await relay.counts() == NOTHING_STORED


async def test_other_method_is_405_as_json(relay: Relay) -> None:
    response = await relay.client.get("/hooks/shop")
    assert response.status == 405
    assert await response.json() == {"error": "method GET is not allowed on /hooks/shop; use POST"}


async def test_health_and_metrics_endpoints(relay: Relay) -> None:
    assert (await relay.client.get("/healthz")).status == 200
    await relay.post("/hooks/shop", {"id": "m1"}, secret=SECRET)
    await relay.post("/hooks/shop", {"id": "m1"}, secret=SECRET)
    await relay.post("/hooks/shop", {"id": "m2"})
    text = await (await relay.admin.get("/metrics")).text()
    assert 'relay_inbound_requests_total{result="accepted",source="shop"} 1.0' in text
    assert 'relay_inbound_requests_total{result="duplicate",source="shop"} 1.0' in text
    assert 'relay_inbound_requests_total{result="signature",source="shop"} 1.0' in text
    posted = await relay.client.post("/healthz")
    assert posted.status == 405
    assert await posted.json() == {"error": "method POST is not allowed on /healthz; use GET"}


@pytest.mark.parametrize(
    ("method", "path", "headers", "direct"),
    [
        ("POST", "/hooks/shop", {}, True),
        ("POST", "/hooks/open", {}, True),
        ("GET", "/hooks/shop", {}, False),  # the router answers 405
        ("POST", "/hooks/nope", {}, False),  # the router answers 404
        ("GET", "/healthz", {}, False),
        ("POST", "/hooks/shop", {"Expect": "100-continue"}, False),  # the router answers 100
    ],
)
async def test_only_a_post_to_a_source_path_skips_the_router(
    relay: Relay, method: str, path: str, headers: dict[str, str], direct: bool
) -> None:
    request = make_mocked_request(method, path, headers=headers)
    assert (relay.daemon.ingest.direct(request) is not None) is direct


async def test_the_server_asks_the_direct_route_first_then_the_router() -> None:
    async def routed(request: web.Request) -> web.Response:
        return web.Response(text=f"routed {request.match_info['tail']}")

    async def direct(request: web.Request) -> web.Response:
        return web.Response(text="direct")

    app = web.Application()
    app.router.add_get("/{tail:.*}", routed)
    app[DIRECT_ROUTE] = lambda request: direct if request.path == "/fast" else None
    client: TestClient[Any, Any] = TestClient(RelayTestServer(app, LimitsConfig()))
    await client.start_server()
    try:
        assert await (await client.get("/fast")).text() == "direct"
        assert await (await client.get("/slow")).text() == "routed slow"
    finally:
        await client.close()


async def test_an_expect_100_continue_post_goes_through_the_router_and_is_stored(
    relay: Relay,
) -> None:
    connection = await RawConnection.open(relay.client.port)
    body = b'{"id": "continue-1"}'
    await connection.send(
        b"POST /hooks/open HTTP/1.1\r\nHost: relay\r\nExpect: 100-continue\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    )
    interim = await connection.reader.readuntil(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
    await connection.send(body)
    response = await connection.response()
    connection.close()
    assert response.status == 202
    assert response.json() == {"id": "continue-1", "deliveries": 1}
