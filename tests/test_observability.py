"""A scripted scenario read back from the metrics and the JSON log lines: accepted, duplicate
and refused requests; a target that fails and then delivers; one whose delivery goes dead
(echoing its credential and a control character); one still waiting. In relay's own time (a
FakeClock), so ages and latencies are exact."""

from __future__ import annotations

import io
import json
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay import __version__, logs
from relay.inbound import INBOUND_RESULTS
from relay.logs import JsonFormatter
from relay.redaction import config_secrets
from tests.clock import FakeClock, wake
from tests.conftest import SECRET, ConfigWriter, Relay, StartRelay, hmac_hex
from tests.process import RelayProcess, free_port, stored_deliveries
from tests.receiver import Receiver, Reply, wait_until
from tests.test_metrics import Samples, samples, value
from tests.test_reload import daemon_of

API_KEY = "key-0f9e8d7c6b5a"

CONFIG = """\
store: "sqlite:///relay.db"
sources:
  shop:
    path: /hooks/shop
    verify: {{scheme: hmac-sha256, secret: {secret}, header: X-Signature}}
targets:
  flaky:
    kind: http
    url: "{flaky}/in"
  broken:
    kind: http
    url: "{broken}/in"
    headers: {{X-Api-Key: "{api_key}"}}
  stuck:
    kind: http
    url: "{stuck}/in"
    retry: {{initial: 1h, max_interval: 1h}}
routes:
  - targets: [flaky, broken, stuck]
"""


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """relay's log lines, debug included, as `relay --log-format json` writes them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root, relay_logger = logging.getLogger(), logging.getLogger("relay")
    level = relay_logger.level
    root.addHandler(handler)
    relay_logger.setLevel(logging.DEBUG)
    yield stream
    relay_logger.setLevel(level)
    root.removeHandler(handler)


@pytest.fixture
async def receivers() -> AsyncIterator[dict[str, Receiver]]:
    started = {name: Receiver() for name in ("flaky", "broken", "stuck")}
    for receiver in started.values():
        await receiver.start()
    yield started
    for receiver in started.values():
        await receiver.stop()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    parsed = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [line for line in parsed if line["logger"].startswith("relay")]


async def run_scenario(relay: Relay, receivers: dict[str, Receiver], clock: FakeClock) -> None:
    receivers["flaky"].script = [Reply(status=503, headers={"Retry-After": "30"})]
    receivers["broken"].default = Reply(status=400, body=f"unknown key {API_KEY}\x1b[31m")
    receivers["stuck"].default = Reply(status=503)

    assert (await relay.post("/hooks/shop", {"id": "m1"}, secret=SECRET)).status == 202
    assert (await relay.post("/hooks/shop", {"id": "m1"}, secret=SECRET)).status == 200
    assert (await relay.post("/hooks/shop", {"id": "m2"})).status == 401
    assert (await relay.post("/hooks/shop", b"{not json", secret=SECRET)).status == 400
    assert (await relay.post("/hooks/shop", {"id": "a\u0085b"}, secret=SECRET)).status == 400

    await relay.wait_for_deliveries(
        lambda records: (
            {r.target: (r.state, r.last_status) for r in records}
            == {"flaky": ("pending", 503), "broken": ("dead", 400), "stuck": ("pending", 503)}
        ),
        "flaky and stuck retrying, broken dead",
    )
    clock.advance(30)  # flaky's Retry-After
    wake(relay, "flaky")
    await relay.wait_for_deliveries(
        lambda records: {r.target: r.state for r in records}["flaky"] == "delivered",
        "flaky delivered",
    )
    await daemon_of(relay).target_gauges.refresh()


@pytest.fixture
async def scenario(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receivers: dict[str, Receiver],
    json_log: io.StringIO,
) -> tuple[Samples, list[dict[str, Any]]]:
    clock = FakeClock()
    urls = {name: receiver.url for name, receiver in receivers.items()}
    config = write_config(CONFIG.format(secret=SECRET, api_key=API_KEY, **urls))
    relay = await start_relay(config, clock=clock, rng=lambda: 0.5)
    logs.redact_secrets(config_secrets(relay.config))  # as `relay run` does once it is loaded
    await run_scenario(relay, receivers, clock)
    return samples(daemon_of(relay).metrics.exposition()), lines(json_log)


def test_requests_are_counted_by_source_and_result(scenario: tuple[Samples, Any]) -> None:
    found, _ = scenario
    counted = {
        result: value(found, "relay_inbound_requests_total", source="shop", result=result)
        for result in INBOUND_RESULTS
    }
    expected = dict.fromkeys(INBOUND_RESULTS, 0.0)  # every reason is there from the start
    expected.update(accepted=1, duplicate=1, signature=1, invalid_json=1, invalid_event=1)
    assert counted == expected


def counted(found: Samples, name: str, *label_names: str) -> dict[tuple[str, ...], float]:
    """The samples of `name` above 0, by the values of these labels."""
    return {
        tuple(dict(labels)[label] for label in label_names): count
        for (sample, labels), count in found.items()
        if sample == name and count > 0
    }


def test_deliveries_and_attempts_are_counted_by_target(scenario: tuple[Samples, Any]) -> None:
    found, _ = scenario
    assert counted(found, "relay_deliveries_total", "target", "outcome") == {
        ("flaky", "delivered"): 1,
        ("broken", "dead"): 1,
    }
    assert counted(found, "relay_delivery_attempts_total", "target", "result", "class") == {
        ("flaky", "retry", "5xx"): 1,
        ("flaky", "delivered", "2xx"): 1,
        ("broken", "dead", "4xx"): 1,
        ("stuck", "retry", "5xx"): 1,
    }


def test_latency_from_arrival_to_delivery_includes_the_retry_wait(
    scenario: tuple[Samples, Any],
) -> None:
    found, _ = scenario
    histogram = "relay_delivery_latency_seconds"
    assert value(found, f"{histogram}_count", target="flaky") == 1
    assert value(found, f"{histogram}_sum", target="flaky") == 30  # relay's clock: exact
    assert value(found, f"{histogram}_bucket", target="flaky", le="10.0") == 0
    assert value(found, f"{histogram}_bucket", target="flaky", le="30.0") == 1
    assert value(found, f"{histogram}_count", target="broken") == 0


def test_gauges_show_what_waits_per_target(scenario: tuple[Samples, Any]) -> None:
    found, _ = scenario
    gauges = {
        name.removeprefix("relay_target_"): {
            target: value(found, name, target=target) for target in ("flaky", "broken", "stuck")
        }
        for name in (
            "relay_target_pending_deliveries",
            "relay_target_dead_deliveries",
            "relay_target_oldest_pending_age_seconds",
            "relay_target_paused",
        )
    }
    assert gauges == {
        "pending_deliveries": {"flaky": 0, "broken": 0, "stuck": 1},
        "dead_deliveries": {"flaky": 0, "broken": 1, "stuck": 0},
        "oldest_pending_age_seconds": {"flaky": 0, "broken": 0, "stuck": 30},
        "paused": {"flaky": 0, "broken": 0, "stuck": 0},
    }


def test_a_refused_request_is_one_info_line(scenario: tuple[Any, list[dict[str, Any]]]) -> None:
    _, logged = scenario
    refused = [line for line in logged if line["msg"].startswith("source shop: refused")]
    assert [(line["level"], line["status"], line["result"]) for line in refused] == [
        ("info", 401, "signature"),
        ("info", 400, "invalid_json"),
        ("info", 400, "invalid_event"),
    ]
    assert all(line["source"] == "shop" and line["remote"] == "127.0.0.1" for line in refused)
    assert refused[0]["reason"] == "missing signature header X-Signature"
    assert (
        refused[2]["reason"]
        == "event id holds U+0085 at position 1; only printable text is allowed"
    )


def test_a_retry_is_one_warning_line_with_the_attempt(
    scenario: tuple[Any, list[dict[str, Any]]],
) -> None:
    _, logged = scenario
    (retry,) = [
        line for line in logged if line.get("target") == "flaky" and line.get("result") == "retry"
    ]
    assert retry["level"] == "warning"
    assert retry["msg"] == "target flaky: event m1 attempt 1: HTTP 503: ok; retrying in 30.0s"
    assert {k: retry[k] for k in ("event_id", "source", "attempt", "status", "reason")} == {
        "event_id": "m1",
        "source": "shop",
        "attempt": 1,
        "status": 503,
        "reason": "HTTP 503: ok",
    }
    assert isinstance(retry["delivery_id"], int)
    assert retry["duration_ms"] >= 0


def test_a_delivery_is_a_debug_line(scenario: tuple[Any, list[dict[str, Any]]]) -> None:
    _, logged = scenario
    (delivered,) = [line for line in logged if line.get("result") == "delivered"]
    assert delivered["level"] == "debug"
    assert (delivered["target"], delivered["event_id"], delivered["attempt"]) == ("flaky", "m1", 2)
    assert delivered["status"] == 200


def test_a_dead_delivery_is_one_warning_line_without_the_secret_it_echoed(
    scenario: tuple[Any, list[dict[str, Any]]], json_log: io.StringIO
) -> None:
    _, logged = scenario
    (dead,) = [line for line in logged if line.get("result") == "dead"]
    assert dead["level"] == "warning"
    assert dead["target"] == "broken"
    assert dead["status"] == 400
    assert dead["reason"] == "HTTP 400: unknown key [redacted]\x1b[31m"
    raw = json_log.getvalue()
    assert API_KEY not in raw
    assert "\x1b" not in raw
    assert "\\u001b[31m" in raw


async def test_the_gauges_follow_the_store_on_their_own_timer(
    write_config: ConfigWriter, start_relay: StartRelay, receivers: dict[str, Receiver]
) -> None:
    urls = {name: receiver.url for name, receiver in receivers.items()}
    config = write_config(CONFIG.format(secret=SECRET, api_key=API_KEY, **urls))
    relay = await start_relay(config, gauge_interval_s=0.05, rng=lambda: 0.5)
    receivers["stuck"].default = Reply(status=503)
    assert (await relay.post("/hooks/shop", {"id": "t1"}, secret=SECRET)).status == 202

    def pending(target: str) -> float:
        found = samples(daemon_of(relay).metrics.exposition())
        return value(found, "relay_target_pending_deliveries", target=target)

    await wait_until(lambda: pending("stuck") == 1, describe=lambda: "stuck pending, read")


# -- relay run --log-format json, as a child process -----------------------------------------

PROCESS_CONFIG = """\
listen: "127.0.0.1:{port}"
store: "sqlite:///relay.db"
sources:
  shop:
    path: /hooks/shop
    verify: {{scheme: hmac-sha256, secret: {secret}, header: X-Signature}}
targets:
  broken:
    kind: http
    url: "{url}/in"
    headers: {{X-Api-Key: "{api_key}"}}
routes:
  - targets: [broken]
"""


@pytest.fixture
def relay_process(tmp_path: Path, receiver: Receiver) -> Iterator[RelayProcess]:
    port = free_port()
    config = tmp_path / "relay.yaml"
    config.write_text(
        PROCESS_CONFIG.format(port=port, secret=SECRET, url=receiver.url, api_key=API_KEY)
    )
    process = RelayProcess(config, port, tmp_path / "relay.log")
    yield process
    process.stop_now()


async def test_relay_run_in_json_writes_only_json_lines_without_secrets(
    relay_process: RelayProcess, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_LOG_FORMAT", "json")  # the child inherits it
    receiver.default = Reply(status=400, body=f"unknown key {API_KEY}")
    relay_process.start()
    await relay_process.wait_ready()
    body = json.dumps({"id": "p1"}).encode()
    async with aiohttp.ClientSession() as session:
        url = f"{relay_process.url}/hooks/shop"
        async with session.post(url, data=body) as unsigned:
            assert unsigned.status == 401
        signed = {"X-Signature": hmac_hex(SECRET, body)}
        async with session.post(url, data=body, headers=signed) as accepted:
            assert accepted.status == 202
    db = relay_process.config.parent / "relay.db"
    await wait_until(
        lambda: [d.state for d in stored_deliveries(db)] == ["dead"], describe=relay_process.output
    )
    relay_process.send_signal(signal.SIGTERM)
    assert await relay_process.wait_exit() == 0, relay_process.output()

    text = relay_process.log.read_text(encoding="utf-8")
    assert API_KEY not in text, relay_process.output()
    logged = [json.loads(line) for line in text.splitlines() if not line.startswith("-----")]
    assert any(line["msg"].startswith(f"relay {__version__} listening on") for line in logged)
    (refused,) = [line for line in logged if line.get("result") == "signature"]
    assert (refused["level"], refused["status"], refused["source"]) == ("info", 401, "shop")
    (dead,) = [line for line in logged if line.get("result") == "dead"]
    assert (dead["level"], dead["target"], dead["event_id"]) == ("warning", "broken", "p1")
    assert dead["reason"] == "HTTP 400: unknown key [redacted]"
