"""Delivery against a real receiver: headers, templates, signing, retries, dead letters, replay."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.clock import FakeClock, wake
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Receiver, Reply

FAST_RETRY = "{initial: 10ms, multiplier: 2, max_interval: 50ms, max_elapsed: 30s}"


async def start(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    target_yaml: str,
    templates: dict[str, str] | None = None,
    **relay_options: Any,
) -> Relay:
    config = f"""\
store: "sqlite:///relay.db"
sources:
  app:
    path: /hooks/app
targets:
  out:
    kind: http
{target_yaml}
routes:
  - targets: [out]
"""
    return await start_relay(write_config(config, templates), **relay_options)


async def test_default_body_is_the_received_bytes_with_relay_headers(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, f'    url: "{receiver.url}/in"')
    body = b'{"id": "e-1", "type": "order.paid",  "amount": 5}'
    assert (await relay.post("/hooks/app", body)).status == 202
    (got,) = await receiver.wait_for(1)
    assert got.method == "POST"
    assert got.path == "/in"
    assert got.body == body
    assert got.headers["Relay-Event-Id"] == "e-1"
    assert got.headers["Relay-Attempt"] == "1"
    assert got.headers["Content-Type"] == "application/json"
    (record,) = await relay.wait_for_state("delivered")
    assert record.last_status == 200


async def test_url_path_headers_and_body_are_rendered_from_the_event(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    target = f"""\
    url: "{receiver.url}/events/{{{{ event.type | lower }}}}?src={{{{ event.source }}}}"
    method: PUT
    headers:
      Authorization: "Bearer token-1"
      X-Event-Type: "{{{{ event.type }}}}"
    template: out.j2
"""
    templates = {"out.j2": '{"t": {{ target.name | json }}, "amount": {{ event.data.amount }}}'}
    relay = await start(write_config, start_relay, target, templates)
    response = await relay.post("/hooks/app", {"id": "e-2", "type": "ORDER", "data": {"amount": 7}})
    assert response.status == 202
    (got,) = await receiver.wait_for(1)
    assert got.method == "PUT"
    assert got.path == "/events/order"
    assert got.query == "src=app"
    assert got.headers["Authorization"] == "Bearer token-1"
    assert got.headers["X-Event-Type"] == "ORDER"
    assert json.loads(got.body) == {"t": "out", "amount": 7}


async def test_hmac_signing_header_is_the_hex_hmac_of_the_sent_body(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    target = f"""\
    url: "{receiver.url}/in"
    sign: {{scheme: hmac-sha256, secret: s3cret}}
"""
    relay = await start(write_config, start_relay, target)
    await relay.post("/hooks/app", {"id": "e-3"})
    (got,) = await receiver.wait_for(1)
    expected = hmac.new(b"s3cret", got.body, hashlib.sha256).hexdigest()
    assert got.headers["Relay-Signature"] == expected


async def test_standard_webhooks_signing_verifies_with_the_reference_library(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    target = f"""\
    url: "{receiver.url}/in"
    sign: {{scheme: standard-webhooks, secret: "{secret}"}}
    retry: {FAST_RETRY}
"""
    relay = await start(write_config, start_relay, target)
    receiver.script = [Reply(status=500)]
    await relay.post("/hooks/app", {"id": "e-4", "type": "t"})
    first, second = await receiver.wait_for(2)
    headers = {k.lower(): v for k, v in second.headers.items()}
    assert Webhook(secret).verify(second.body.decode(), headers) == {"id": "e-4", "type": "t"}
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # stable across retries
    assert "." not in headers["webhook-id"]


async def test_transient_failures_are_retried_until_delivered(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(
        write_config, start_relay, f'    url: "{receiver.url}/in"\n    retry: {FAST_RETRY}'
    )
    receiver.script = [Reply(status=500), Reply(status=503), Reply(status=429)]
    await relay.post("/hooks/app", {"id": "e-5"})
    received = await receiver.wait_for(4)
    assert [r.headers["Relay-Attempt"] for r in received] == ["1", "2", "3", "4"]
    (record,) = await relay.wait_for_state("delivered")
    assert record.attempts == 4


async def test_permanent_failure_is_dead_at_once_with_status_and_answer(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(
        write_config, start_relay, f'    url: "{receiver.url}/in"\n    retry: {FAST_RETRY}'
    )
    receiver.default = Reply(status=404, body="no such hook")
    await relay.post("/hooks/app", {"id": "e-6"})
    (record,) = await relay.wait_for_state("dead")
    assert record.attempts == 1
    assert record.last_status == 404
    assert record.last_error == "HTTP 404: no such hook"
    assert len(receiver.received) == 1


async def test_redirects_are_not_followed_and_fail(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, f'    url: "{receiver.url}/in"')
    receiver.default = Reply(status=302, body="", headers={"Location": f"{receiver.url}/other"})
    await relay.post("/hooks/app", {"id": "e-7"})
    (record,) = await relay.wait_for_state("dead")
    assert record.last_error == "HTTP 302"
    assert [r.path for r in receiver.received] == ["/in"]


async def test_retry_after_is_honoured(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    clock = FakeClock()
    relay = await start(
        write_config,
        start_relay,
        f'    url: "{receiver.url}/in"\n    retry: {FAST_RETRY}',
        clock=clock,
    )
    receiver.script = [Reply(status=429, headers={"Retry-After": "20"})]
    await relay.post("/hooks/app", {"id": "e-8"})
    (record,) = await relay.wait_for_deliveries(
        lambda rs: rs[0].last_status == 429, "the 429 recorded"
    )
    assert record.state == "pending"
    assert record.next_attempt_at == clock.now + 20  # not the 10ms backoff
    assert len(receiver.received) == 1
    clock.advance(20)
    wake(relay, "out")
    (record,) = await relay.wait_for_state("delivered")
    assert record.attempts == 2
    assert receiver.received[1].headers["Relay-Attempt"] == "2"


async def test_max_elapsed_bounds_the_retries_then_the_delivery_is_dead(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    target = f"""\
    url: "{receiver.url}/in"
    retry: {{initial: 20ms, multiplier: 2, max_interval: 100ms, max_elapsed: 600ms}}
"""
    # relay's clock moves only to each scheduled attempt; jitter draws its ceiling.
    clock = FakeClock()
    relay = await start(write_config, start_relay, target, clock=clock, rng=lambda: 1.0)
    receiver.default = Reply(status=503, body="busy")
    await relay.post("/hooks/app", {"id": "e-9"})
    first_attempt_at = clock.now
    scheduled: list[float] = []  # each retry, in seconds after the first attempt
    for _ in range(20):
        (record,) = await relay.wait_for_deliveries(
            lambda rs: rs[0].state == "dead" or rs[0].next_attempt_at > clock.now,
            "the attempt recorded: dead, or a retry scheduled",
        )
        if record.state == "dead":
            break
        scheduled.append(record.next_attempt_at - first_attempt_at)
        clock.now = record.next_attempt_at
        wake(relay, "out")
    assert record.state == "dead"
    assert record.last_status == 503
    assert record.last_error == "HTTP 503: busy; gave up: next attempt would pass max_elapsed 600ms"
    # Backoff 20, 40, 80, then 100ms (max_interval); the next would be at 640ms.
    assert scheduled == pytest.approx([0.02, 0.06, 0.14, 0.24, 0.34, 0.44, 0.54])
    assert record.attempts == len(receiver.received) == len(scheduled) + 1


async def test_a_hanging_target_times_out_and_is_retried(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    target = f"""\
    url: "{receiver.url}/in"
    timeout: 1s
    retry: {FAST_RETRY}
"""
    relay = await start(write_config, start_relay, target)
    answer = asyncio.Event()
    receiver.script = [Reply(hold=answer)]  # the first request is never answered in time
    try:
        await relay.post("/hooks/app", {"id": "e-10"})
        (record,) = await relay.wait_for_state("delivered")
    finally:
        answer.set()
    assert record.attempts >= 2  # on a loaded machine a second one may time out too
    assert record.last_status == 200


async def test_connection_refused_is_retried_then_dead_after_max_attempts(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    port = receiver.port
    await receiver.stop()
    target = f"""\
    url: "http://127.0.0.1:{port}/in"
    retry: {{initial: 10ms, max_interval: 20ms, max_elapsed: 30s, max_attempts: 3}}
"""
    relay = await start(write_config, start_relay, target)
    await relay.post("/hooks/app", {"id": "e-11"})
    (record,) = await relay.wait_for_state("dead")
    assert record.attempts == 3
    assert record.last_status is None
    assert record.last_error is not None
    assert record.last_error.startswith("connection error: ")
    assert record.last_error.endswith("; gave up after 3 attempts (max_attempts)")


async def test_undefined_name_in_template_fails_at_once_without_sending(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    templates = {"bad.j2": '{\n  "x": {{ event.payload.missing | json }}\n}'}
    relay = await start(
        write_config,
        start_relay,
        f'    url: "{receiver.url}/in"\n    template: bad.j2\n    retry: {FAST_RETRY}',
        templates,
    )
    await relay.post("/hooks/app", {"id": "e-12"})
    (record,) = await relay.wait_for_state("dead")
    assert record.attempts == 1
    assert record.last_error == "bad.j2 line 2: 'dict object' has no attribute 'missing'"
    assert receiver.received == []


async def test_body_sent_as_json_must_be_valid_json(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    target = f"""\
    url: "{receiver.url}/in"
    body: '{{"text": "{{{{ event.payload.text }}}}"}}'
"""
    relay = await start(write_config, start_relay, target)
    await relay.post("/hooks/app", {"id": "e-13", "text": 'say "hi"'})
    (record,) = await relay.wait_for_state("dead")
    assert record.last_error is not None
    assert record.last_error.startswith(
        "targets.out.body: rendered body is not valid JSON: Expecting ',' delimiter"
    )
    assert receiver.received == []


async def test_non_json_content_type_skips_the_json_check(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    target = f"""\
    url: "{receiver.url}/in"
    headers: {{Content-Type: text/plain}}
    body: "event {{{{ event.id }}}} arrived"
"""
    relay = await start(write_config, start_relay, target)
    await relay.post("/hooks/app", {"id": "e-14"})
    (got,) = await receiver.wait_for(1)
    assert got.body == b"event e-14 arrived"
    assert got.headers["Content-Type"] == "text/plain"


async def test_dead_delivery_can_be_replayed(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, f'    url: "{receiver.url}/in"')
    receiver.script = [Reply(status=400, body="bad")]
    await relay.post("/hooks/app", {"id": "e-15"})
    (dead,) = await relay.wait_for_state("dead")
    assert await relay.store.replay([dead.id]) == 1
    (delivered,) = await relay.wait_for_state("delivered")
    assert delivered.id == dead.id
    assert len(receiver.received) == 2
