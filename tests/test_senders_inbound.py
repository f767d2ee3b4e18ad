"""Each sender end to end over HTTP: accepted as it signs, refused when forged, never stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from relay import samples
from relay.cli import main
from relay.send import serialise
from tests.conftest import ConfigWriter, Relay, StartRelay

SW_SECRET = "whsec_" + base64.b64encode(b"relay-standard-webhooks-key!").decode()
SW_OLD = "whsec_" + base64.b64encode(b"the key before the rotation").decode()

CONFIG = f"""\
store: "sqlite:///relay.db"
sources:
  flagright:
    path: /hooks/flagright
    verify: {{scheme: flagright, secret: [fr-new, fr-old]}}
  flagsmith:
    path: /hooks/flagsmith
    verify: {{scheme: flagsmith, secret: fs-secret}}
  flipt:
    path: /hooks/flipt
    verify: {{scheme: flipt, secret: flipt-secret}}
  billing:
    path: /hooks/billing
    verify: {{scheme: standard-webhooks, secret: ["{SW_SECRET}", "{SW_OLD}"], tolerance: 5m}}
  locked:
    path: /hooks/locked
    allow_ips: [flagright-sandbox]
  unsigned_flagsmith:
    path: /hooks/unsigned-flagsmith
    sender: flagsmith
  proxied:
    path: /hooks/proxied
    allow_ips: [flagright-production]
    trusted_proxies: [127.0.0.1/32]
targets:
  out: {{kind: console, body: '{{{{ event.type }}}} {{{{ event.id }}}}'}}
routes:
  - targets: [out]
"""
NOTHING = {"events": 0, "pending": 0, "delivered": 0, "dead": 0}


@pytest.fixture
async def relay(write_config: ConfigWriter, start_relay: StartRelay) -> Relay:
    return await start_relay(write_config(CONFIG))


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post(relay: Relay, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    response = await relay.client.post(path, data=body, headers=headers)
    return response.status, await response.json()


@pytest.mark.parametrize("sample", samples.samples("flagright"), ids=lambda s: s.name)
async def test_every_flagright_sample_is_accepted_as_flagright_signs_it(
    relay: Relay, sample: samples.Sample
) -> None:
    body = json.dumps(sample.payload, separators=(",", ":"), ensure_ascii=False).encode()
    signatures = f"{hex_hmac('expired', body)},{hex_hmac('fr-old', body)}"
    status, answer = await post(
        relay, "/hooks/flagright", body, {"x-flagright-signature": signatures}
    )
    assert (status, answer) == (202, {"id": sample.payload["id"], "deliveries": 1})
    (record,) = await relay.wait_for_state("delivered")
    assert record.event_type == sample.payload["type"]


@pytest.mark.parametrize("sample", samples.samples("flagsmith"), ids=lambda s: s.name)
async def test_every_flagsmith_sample_is_accepted_as_flagsmith_serialises_it(
    relay: Relay, sample: samples.Sample
) -> None:
    body = json.dumps(sample.payload, sort_keys=True).encode()  # Flagsmith's exact bytes
    headers = {"X-Flagsmith-Signature": hex_hmac("fs-secret", body)}
    status, answer = await post(relay, "/hooks/flagsmith", body, headers)
    assert (status, answer) == (202, {"id": hashlib.sha256(body).hexdigest(), "deliveries": 1})
    (record,) = await relay.wait_for_state("delivered")
    assert record.event_type == sample.name


@pytest.mark.parametrize("sample", samples.samples("flipt"), ids=lambda s: s.name)
async def test_every_flipt_sample_is_accepted_with_its_type_and_action(
    relay: Relay, sample: samples.Sample
) -> None:
    body = serialise("flipt", sample.payload)
    headers = {"X-Flipt-Webhook-Signature": hex_hmac("flipt-secret", body)}
    status, _ = await post(relay, "/hooks/flipt", body, headers)
    assert status == 202
    (record,) = await relay.wait_for_state("delivered")
    assert record.event_type == f"{sample.payload['type']}:{sample.payload['action']}"


async def test_flipt_body_with_non_ascii_text_verifies(relay: Relay) -> None:
    payload = samples.sample("flipt", "flag-created").payload
    body = serialise("flipt", payload)
    assert "✓".encode() in body
    headers = {"X-Flipt-Webhook-Signature": hex_hmac("flipt-secret", body)}
    assert (await post(relay, "/hooks/flipt", body, headers))[0] == 202


async def test_a_senders_retry_of_the_same_bytes_is_one_event(relay: Relay) -> None:
    body = json.dumps(samples.sample("flagsmith", "FLAG_DELETED").payload, sort_keys=True).encode()
    headers = {"X-Flagsmith-Signature": hex_hmac("fs-secret", body)}
    first = await post(relay, "/hooks/flagsmith", body, headers)
    again = await post(relay, "/hooks/flagsmith", body, headers)
    assert first[0] == 202
    assert again == (200, {"id": first[1]["id"], "duplicate": True})
    assert (await relay.counts())["events"] == 1


def sw_headers(secret: str, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, when, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


SW_BODY = b'{"type":"invoice.paid","timestamp":"2026-11-23T10:00:00Z","data":{"amount":5}}'


async def test_standard_webhooks_accepted_with_a_rotated_secret(relay: Relay) -> None:
    headers = sw_headers(SW_OLD, "msg_abc", datetime.now(UTC), SW_BODY)
    status, answer = await post(relay, "/hooks/billing", SW_BODY, headers)
    assert (status, answer) == (202, {"id": "msg_abc", "deliveries": 1})
    (record,) = await relay.wait_for_state("delivered")
    assert record.event_type == "invoice.paid"
    assert relay.out.getvalue() == "invoice.paid msg_abc\n"


@pytest.mark.parametrize(
    ("offset_s", "reason"), [(-400, "is too old (more than 300s ago)"), (400, "is too new")]
)
async def test_standard_webhooks_stale_or_future_timestamp_is_401(
    relay: Relay, offset_s: int, reason: str
) -> None:
    when = datetime.fromtimestamp(time.time() + offset_s, UTC)
    status, answer = await post(
        relay, "/hooks/billing", SW_BODY, sw_headers(SW_SECRET, "m", when, SW_BODY)
    )
    assert status == 401
    assert reason in answer["error"]
    assert await relay.counts() == NOTHING


FORGERIES = [
    (
        "/hooks/flagright",
        {"x-flagright-signature": "ab" * 32},
        "signature in x-flagright-signature does not match the body",
    ),
    (
        "/hooks/flagright",
        {},
        "missing signature header x-flagright-signature or x-webhook-signature",
    ),
    (
        "/hooks/flagsmith",
        {"X-Flagsmith-Signature": "not-hex"},
        "signature in x-flagsmith-signature does not match the body",
    ),
    ("/hooks/flagsmith", {}, "missing signature header X-Flagsmith-Signature"),
    (
        "/hooks/flipt",
        {"X-Flipt-Webhook-Signature": hex_hmac("wrong", b"{}")},
        "signature in x-flipt-webhook-signature does not match the body",
    ),
    (
        "/hooks/billing",
        {"webhook-id": "m", "webhook-timestamp": "1", "webhook-signature": "x"},
        'malformed webhook-signature entry "x"',
    ),
    ("/hooks/billing", {}, "missing header(s): webhook-id, webhook-timestamp, webhook-signature"),
]


@pytest.mark.parametrize(("path", "headers", "reason"), FORGERIES)
async def test_forged_or_malformed_requests_are_401_with_a_reason(
    relay: Relay, path: str, headers: dict[str, str], reason: str
) -> None:
    body = json.dumps(samples.sample("flagright", "CASE_CLOSED").payload).encode()
    assert await post(relay, path, body, headers) == (401, {"error": reason})
    assert await relay.counts() == NOTHING


async def test_tampered_flagright_body_is_refused(relay: Relay) -> None:
    body = json.dumps(samples.sample("flagright", "CASE_CLOSED").payload).encode()
    signature = hex_hmac("fr-new", body)
    tampered = body.replace(b"CASE_CLOSED", b"CASE_OPENED")
    status, _ = await post(
        relay, "/hooks/flagright", tampered, {"x-flagright-signature": signature}
    )
    assert status == 401
    assert await relay.counts() == NOTHING


async def test_request_from_outside_the_allowlist_is_403(relay: Relay) -> None:
    status, answer = await post(relay, "/hooks/locked", b'{"id": "x"}', {})
    assert status == 403
    assert answer == {"error": "address 127.0.0.1 is not allowed to post to /hooks/locked"}
    assert await relay.counts() == NOTHING


async def test_forwarded_for_from_an_untrusted_peer_cannot_spoof_the_address(relay: Relay) -> None:
    spoof = {"X-Forwarded-For": "3.66.58.17"}  # a Flagright sandbox address
    status, answer = await post(relay, "/hooks/locked", b'{"id": "x"}', spoof)
    assert status == 403
    assert answer == {"error": "address 127.0.0.1 is not allowed to post to /hooks/locked"}
    assert await relay.counts() == NOTHING


async def test_forwarded_for_from_a_trusted_proxy_is_honoured(relay: Relay) -> None:
    inside = {"X-Forwarded-For": "203.0.113.5, 35.155.123.185"}
    assert (await post(relay, "/hooks/proxied", b'{"id": "ok"}', inside))[0] == 202
    outside = {"X-Forwarded-For": "35.155.123.185, 203.0.113.5"}
    status, answer = await post(relay, "/hooks/proxied", b'{"id": "no"}', outside)
    assert (status, answer) == (
        403,
        {"error": "address 203.0.113.5 is not allowed to post to /hooks/proxied"},
    )
    assert (await relay.counts())["events"] == 1


async def test_relay_send_posts_a_sample_as_the_sender_would(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(relay.client.make_url("/hooks/flagright"))
    config = str(tmp_path / "relay.yaml")
    argv = ["send", "-c", config, "--source", "flagright", "--sample", "CASE_OPENED", "--url", url]
    assert await asyncio.to_thread(main, argv) == 0
    sample_id = samples.sample("flagright", "CASE_OPENED").payload["id"]
    assert capsys.readouterr().out == f'202 {{"id": "{sample_id}", "deliveries": 1}}\n'
    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out == f'200 {{"id": "{sample_id}", "duplicate": true}}\n'


@pytest.mark.parametrize(
    ("source", "path"), [("billing", "/hooks/billing"), ("flipt", "/hooks/flipt")]
)
async def test_relay_send_signs_a_file_event_for_each_scheme(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, path: str
) -> None:
    event = tmp_path / "event.json"
    payload = {"type": "flag", "action": "updated", "payload": {"key": "a&b <c>"}, "data": {}}
    event.write_text(json.dumps(payload))
    url = str(relay.client.make_url(path))
    argv = [
        "send",
        "-c",
        str(tmp_path / "relay.yaml"),
        "--source",
        source,
        str(event),
        "--url",
        url,
    ]
    assert await asyncio.to_thread(main, argv) == 0
    assert capsys.readouterr().out.startswith("202 ")


async def test_relay_send_reports_a_refusal_with_exit_1(
    relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = str(relay.client.make_url("/hooks/locked"))
    argv = [
        "send",
        "-c",
        str(tmp_path / "relay.yaml"),
        "--source",
        "flagright",
        "--sample",
        "CASE_CLOSED",
        "--url",
        url,
    ]
    assert await asyncio.to_thread(main, argv) == 1
    assert capsys.readouterr().out.startswith("403 ")


async def test_a_source_without_verify_can_still_read_as_its_sender(relay: Relay) -> None:
    body = json.dumps(samples.sample("flagsmith", "AUDIT_LOG_CREATED").payload, sort_keys=True)
    status, _ = await post(relay, "/hooks/unsigned-flagsmith", body.encode(), {})
    assert status == 202
    (record,) = await relay.wait_for_state("delivered")
    assert record.event_type == "AUDIT_LOG_CREATED"
