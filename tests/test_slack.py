"""The Slack target against a local receiver that answers like Slack."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from relay.errors import RenderError
from relay.events import Delivered, Failed, Gone, Retry
from relay.targets.slack import MAX_TEXT_CHARS, TRUNCATION_MARKER, check_message, classify_slack
from tests.clock import FakeClock, wake
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Received, Receiver, Reply

MESSAGE = '{"text": {{ ("Event " ~ event.id) | json }}}'
# asyncio may end a sleep up to the clock's resolution early; far less than this.
CLOCK_SLACK_S = 0.001


async def start(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    extra: str = "",
    body: str = MESSAGE,
    **relay_options: Any,
) -> Relay:
    config = f"""\
store: "sqlite:///relay.db"
sources:
  app: {{path: /hooks/app}}
targets:
  slack:
    kind: slack
    url: "{receiver.url}/services/T000/B000/XXXX"
    body: '{body}'
    retry: {{initial: 10ms, max_interval: 50ms, max_elapsed: 30s}}
{extra}
routes:
  - targets: [slack]
"""
    receiver.default = Reply(status=200, body="ok")
    return await start_relay(write_config(config), **relay_options)


async def test_message_is_posted_as_json_to_the_webhook(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver)
    await relay.post("/hooks/app", {"id": "e1"})
    (got,) = await receiver.wait_for(1)
    assert got.path == "/services/T000/B000/XXXX"
    assert json.loads(got.body) == {"text": "Event e1"}
    assert got.headers["Content-Type"] == "application/json"
    await relay.wait_for_state("delivered")


async def test_bursts_are_queued_at_the_rate_limit_and_none_is_lost(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver, "    max_per_second: 20")
    started = time.monotonic()
    for i in range(10):
        assert (await relay.post("/hooks/app", {"id": f"e{i}"})).status == 202
    received = await receiver.wait_for(10)
    assert_not_before_their_slots(received, started, interval_s=1 / 20)
    assert sorted(json.loads(r.body)["text"] for r in received) == sorted(
        f"Event e{i}" for i in range(10)
    )
    await relay.wait_for_state("delivered", count=10)


def assert_not_before_their_slots(
    received: list[Received], started: float, interval_s: float
) -> None:
    """The k-th send starts no earlier than `k` intervals after the first could (`started`).

    A bound the limiter keeps by construction, however loaded the machine: load only delays
    sends. (Gaps between two arrivals are not bounded: a late send shortens the next gap.)
    """
    for k, request in enumerate(received):
        earliest = started + k * interval_s - CLOCK_SLACK_S
        assert request.at >= earliest, f"send {k} came {earliest - request.at:.3f}s early"


@pytest.mark.slow
async def test_default_rate_is_one_message_per_second(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver)
    started = time.monotonic()
    for i in range(3):
        await relay.post("/hooks/app", {"id": f"e{i}"})
    received = await receiver.wait_for(3, timeout_s=10)
    assert_not_before_their_slots(received, started, interval_s=1.0)


@pytest.mark.parametrize(
    ("status", "word"),
    [
        (400, "invalid_payload"),
        (403, "action_prohibited"),
        (404, "channel_not_found"),
        (404, "no_team"),
        (400, "no_text"),
    ],
)
async def test_slack_error_words_fail_at_once_with_the_word(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver, status: int, word: str
) -> None:
    relay = await start(write_config, start_relay, receiver)
    receiver.default = Reply(status=status, body=word)
    await relay.post("/hooks/app", {"id": "e1"})
    (record,) = await relay.wait_for_state("dead")
    assert record.last_error == f"slack: {word} (HTTP {status})"
    assert record.attempts == 1


async def test_an_archived_channel_pauses_the_target_and_keeps_the_message(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    """Slack's 410 is gone for good until someone unarchives the channel: the target pauses,
    as for any 410, rather than dead-lettering every message."""
    relay = await start(write_config, start_relay, receiver)
    receiver.default = Reply(status=410, body="channel_is_archived")
    await relay.post("/hooks/app", {"id": "e1"})
    (record,) = await relay.wait_for_deliveries(
        lambda rs: rs[0].last_status == 410, "the 410 recorded"
    )
    assert (record.state, record.last_error) == ("pending", "slack: channel_is_archived (HTTP 410)")
    pause = await relay.store.target_pause("slack")
    assert pause is not None
    assert pause.reason == "slack: channel_is_archived (HTTP 410)"


async def test_on_gone_dead_makes_an_archived_channel_fail_the_message(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver, "    on_gone: dead")
    receiver.default = Reply(status=410, body="channel_is_archived")
    await relay.post("/hooks/app", {"id": "e1"})
    (record,) = await relay.wait_for_state("dead")
    assert record.last_error == "slack: channel_is_archived (HTTP 410)"
    assert await relay.store.target_pause("slack") is None


async def test_server_errors_retry(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver, "    max_per_second: 100")
    receiver.script = [Reply(status=500, body="rollup_error"), Reply(status=503, body="")]
    await relay.post("/hooks/app", {"id": "e1"})
    (record,) = await relay.wait_for_state("delivered")
    assert record.attempts == 3


async def test_429_waits_as_asked(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    clock = FakeClock()
    relay = await start(write_config, start_relay, receiver, "    max_per_second: 100", clock=clock)
    receiver.script = [Reply(status=429, body="rate_limited", headers={"Retry-After": "20"})]
    await relay.post("/hooks/app", {"id": "e1"})
    (record,) = await relay.wait_for_deliveries(
        lambda rs: rs[0].last_status == 429, "the 429 recorded"
    )
    assert record.state == "pending"
    assert record.next_attempt_at == clock.now + 20  # relay's clock has not moved
    assert len(receiver.received) == 1
    clock.advance(20)
    wake(relay, "slack")
    (record,) = await relay.wait_for_state("delivered")
    assert record.attempts == 2


async def test_a_message_without_text_or_blocks_fails_without_sending(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start(write_config, start_relay, receiver, body='{"attachments": []}')
    await relay.post("/hooks/app", {"id": "e1"})
    (record,) = await relay.wait_for_state("dead")
    assert record.last_error == 'a Slack message needs "text" or "blocks"'
    assert receiver.received == []


async def test_overlong_text_is_cut_with_a_visible_marker(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    body = '{"text": {{ event.payload.long | json }}}'
    relay = await start(write_config, start_relay, receiver, body=body)
    await relay.post("/hooks/app", {"id": "e1", "long": "x" * 50_000})
    (got,) = await receiver.wait_for(1)
    text = json.loads(got.body)["text"]
    assert len(text) == MAX_TEXT_CHARS
    assert text.endswith(TRUNCATION_MARKER)


def test_overlong_text_is_never_cut_inside_an_escaped_character() -> None:
    cut = MAX_TEXT_CHARS - len(TRUNCATION_MARKER)
    text = "x" * (cut - 2) + "&amp;" + "y" * 100  # the cut lands after "&a"
    checked = json.loads(check_message(json.dumps({"text": text}).encode()))["text"]
    assert checked == "x" * (cut - 2) + TRUNCATION_MARKER


def test_check_message_rules() -> None:
    assert check_message(b'{"text": "hi"}') == b'{"text": "hi"}'
    assert check_message(b'{"blocks": [{"type": "divider"}]}')
    blocks = json.dumps({"blocks": [{"type": "divider"}] * 51}).encode()
    with pytest.raises(RenderError, match="at most 50 blocks; this one has 51"):
        check_message(blocks)
    with pytest.raises(RenderError, match="must be a JSON object"):
        check_message(b"[]")
    with pytest.raises(RenderError, match='"text" of a Slack message must be a string'):
        check_message(b'{"text": 5}')
    with pytest.raises(RenderError, match="not valid JSON"):
        check_message(b"{")


def test_classify_slack() -> None:
    assert classify_slack(200, "ok", None, 0) == Delivered(200)
    assert classify_slack(429, "", "7", 0) == Retry("slack: rate limited (HTTP 429)", 429, 7.0)
    assert classify_slack(500, "rollup_error", None, 0) == Retry(
        "slack: HTTP 500 rollup_error", 500, None
    )
    assert classify_slack(302, "", None, 0) == Failed("slack: HTTP 302 (HTTP 302)", 302)
    archived = "slack: channel_is_archived (HTTP 410)"
    assert classify_slack(410, "channel_is_archived", None, 0) == Gone(archived, 410)
    assert classify_slack(410, "channel_is_archived", None, 0, "dead") == Failed(archived, 410)
