"""Hostile bytes at the inbound edge: each is stored losslessly or refused with a 4xx before the
store, every request gets an answer, and a bad request never holds up the others."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest

from relay.sources.base import EventIdentity
from relay.textsafety import MAX_IDENTIFIER_CHARS
from tests.conftest import SECRET, ConfigWriter, Relay, StartRelay, hmac_hex
from tests.receiver import Receiver

CONFIG = """\
store: "sqlite:///relay.db"
sources:
  open: {{path: /hooks/open}}
  shop:
    path: /hooks/shop
    verify: {{scheme: hmac-sha256, secret: {secret}, header: X-Signature}}
  billing:
    path: /hooks/billing
    verify: {{scheme: standard-webhooks, secret: "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="}}
targets:
  out:
    kind: http
    url: "{url}/in"
    body: >-
      {{{{ {{"id": event.id, "x": event.payload.get("x"), "via": event.headers.get("x-via")}}
      | json }}}}
    headers: {{X-Via: '{{{{ event.headers.get("x-via", "-") }}}}'}}
routes:
  - sources: [open]
    targets: [out]
"""

NOTHING_STORED = {"events": 0, "pending": 0, "delivered": 0, "dead": 0}


@pytest.fixture
async def relay(write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver) -> Relay:
    return await start_relay(write_config(CONFIG.format(secret=SECRET, url=receiver.url)))


async def raw_exchange(relay: Relay, request: bytes, timeout_s: float = 10.0) -> bytes:
    """Send bytes exactly as given on a fresh connection; return the whole answer."""
    server = relay.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), timeout_s)
    finally:
        writer.close()


def raw_post(path: str, body: bytes, *headers: bytes) -> bytes:
    head = [
        f"POST {path} HTTP/1.1".encode(),
        b"Host: relay",
        b"Connection: close",
        b"Content-Type: application/json",
        f"Content-Length: {len(body)}".encode(),
        *headers,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def status_and_json(answer: bytes) -> tuple[int, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


# -- ids and types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_id", "reason"),
    [
        ("a\nb", "event id holds U+000A at position 1; only printable text is allowed"),
        ("a\rb", "event id holds U+000D at position 1; only printable text is allowed"),
        ("a\x00b", "event id holds U+0000 at position 1; only printable text is allowed"),
        ("\x1b[31mred", "event id holds U+001B at position 0; only printable text is allowed"),
        ("del\x7f", "event id holds U+007F at position 3; only printable text is allowed"),
        ("p-\ud800", "event id holds U+D800 at position 2; only printable text is allowed"),
        ("line\u2028sep", "event id holds U+2028 at position 4; only printable text is allowed"),
        ("tab\there", "event id holds U+0009 at position 3; only printable text is allowed"),
        (
            "x" * (MAX_IDENTIFIER_CHARS + 1),
            "event id is 257 characters long; at most 256 are allowed",
        ),
    ],
)
async def test_an_id_that_is_not_printable_text_is_refused_before_the_store(
    relay: Relay, event_id: str, reason: str
) -> None:
    # json.dumps writes a lone surrogate as the escape "\ud800": valid JSON, not valid text.
    response = await relay.post("/hooks/open", {"id": event_id, "type": "t"})
    assert response.status == 400
    assert await response.json() == {"error": reason}
    assert await relay.counts() == NOTHING_STORED


async def test_types_are_held_to_the_same_rule(relay: Relay) -> None:
    response = await relay.post("/hooks/open", {"id": "e1", "type": "CASE_\nOPENED"})
    assert response.status == 400
    assert await response.json() == {
        "error": "event type holds U+000A at position 5; only printable text is allowed"
    }
    long_type = await relay.post("/hooks/open", {"id": "e2", "type": "T" * 300})
    assert (await long_type.json())["error"] == (
        "event type is 300 characters long; at most 256 are allowed"
    )
    assert await relay.counts() == NOTHING_STORED


async def test_printable_unicode_ids_up_to_the_limit_are_accepted(relay: Relay) -> None:
    for event_id in ["x" * MAX_IDENTIFIER_CHARS, "café — 事件 #1 😀", "with space"]:
        response = await relay.post("/hooks/open", {"id": event_id, "type": "t"})
        assert response.status == 202, await response.text()
        assert (await response.json())["id"] == event_id


async def test_a_refused_id_holds_up_no_other_request(relay: Relay, receiver: Receiver) -> None:
    """Bad and good requests at once: each gets its answer, the good ones are stored."""
    bodies = [{"id": f"p-\ud800{i}" if i % 2 else f"ok-{i}", "type": "t"} for i in range(40)]
    responses = await asyncio.gather(*(relay.post("/hooks/open", b) for b in bodies))
    assert [r.status for r in responses] == [400 if i % 2 else 202 for i in range(40)]
    assert (await relay.counts())["events"] == 20
    await receiver.wait_for(20)


async def test_a_standard_webhooks_id_from_a_header_is_checked_too(relay: Relay) -> None:
    # aiohttp refuses control bytes in headers itself; byte 0x85 is NEL once read as Latin-1.
    body, timestamp = b'{"type": "t"}', str(int(time.time()))
    signed = f"msg\u0085x.{timestamp}.".encode() + body
    key = base64.b64decode("c2VjcmV0LWtleS1mb3ItdGVzdHM=")
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    answer = await raw_exchange(
        relay,
        raw_post(
            "/hooks/billing",
            body,
            b"webhook-id: msg\x85x",
            b"webhook-timestamp: " + timestamp.encode(),
            b"webhook-signature: v1," + signature,
        ),
    )
    assert status_and_json(answer) == (
        400,
        {"error": "event id holds U+0085 at position 3; only printable text is allowed"},
    )
    assert await relay.counts() == NOTHING_STORED


# -- headers ---------------------------------------------------------------------------------


async def test_a_header_that_is_not_utf8_is_stored_as_latin1_and_delivered(
    relay: Relay, receiver: Receiver
) -> None:
    answer = await raw_exchange(
        relay, raw_post("/hooks/open", b'{"id": "h1", "type": "t", "x": 1}', b"X-Via: caf\xe9")
    )
    assert status_and_json(answer) == (202, {"id": "h1", "deliveries": 1})
    (got,) = await receiver.wait_for(1)
    assert json.loads(got.body) == {"id": "h1", "x": 1, "via": "café"}
    assert got.headers["X-Via"].encode("utf-8", "surrogateescape") == "café".encode()
    await relay.wait_for_state("delivered")


async def test_many_requests_with_broken_header_bytes_at_once_are_all_answered(
    relay: Relay,
) -> None:
    requests = [
        raw_post("/hooks/open", b'{"id": "b%d", "type": "t"}' % i, b"X-Via: \xff\xfe%d" % i)
        for i in range(30)
    ]
    answers = await asyncio.gather(*(raw_exchange(relay, r) for r in requests))
    assert [status_and_json(a)[0] for a in answers] == [202] * 30
    assert (await relay.counts())["events"] == 30


# -- bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"id": "deep", "big": 12345678901234567890, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"id": "deep", "nan": NaN, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"a": ' * 2000 + b"1" + b"}" * 2000,
    ],
    ids=["arrays", "with-a-big-integer", "with-nan", "objects"],
)
async def test_json_nested_too_deeply_is_400(relay: Relay, body: bytes) -> None:
    response = await relay.post("/hooks/shop", body, secret=SECRET)
    assert response.status == 400
    assert await response.json() == {
        "error": "body is not valid JSON: JSON nested deeper than 1024 levels"
    }
    assert await relay.counts() == NOTHING_STORED


async def test_json_nested_to_the_limit_is_accepted(relay: Relay) -> None:
    body = b'{"id": "d1", "x": ' + b"[" * 1023 + b"]" * 1023 + b"}"
    response = await relay.post("/hooks/shop", body, secret=SECRET)
    assert response.status == 202


async def test_a_lone_surrogate_in_the_data_is_kept_and_rendered_as_a_replacement_character(
    relay: Relay, receiver: Receiver
) -> None:
    body = b'{"id": "s1", "type": "t", "x": "broken \\ud83d emoji"}'
    response = await relay.post("/hooks/open", body)
    assert response.status == 202
    (got,) = await receiver.wait_for(1)
    assert json.loads(got.body)["x"] == "broken \ufffd emoji"
    await relay.wait_for_state("delivered")


async def test_signed_body_with_hostile_bytes_is_verified_on_the_bytes_received(
    relay: Relay,
) -> None:
    body = b'{"id": "k1", "type": "t", "x": "\\u0000\\u001b\\ud800"}'
    response = await relay.post(
        "/hooks/shop", body, headers={"X-Signature": hmac_hex(SECRET, body)}
    )
    assert response.status == 202


@pytest.mark.parametrize("created_at", [1e40, -1e40, float("nan"), float("inf")])
def test_a_sender_time_no_datetime_can_hold_counts_as_absent(created_at: float) -> None:
    identity = EventIdentity("e1", "t", None, created_at)
    event = identity.to_event("s", 1_700_000_000.0, b"{}", {}, {})
    assert event.created_at is None
    assert event.template_context()["created_at"] is None
