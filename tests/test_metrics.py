"""Metric vocabularies (refusal reasons, answer classes) and the per-target gauges, read from a
real SQLite store."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.errors import InboundError, StoreError, VerificationError
from relay.events import Delivered, Event, Failed, Outcome, Retry
from relay.gauges import TargetGauges
from relay.inbound import INBOUND_RESULTS, refusal_result
from relay.metrics import Metrics, result_class
from relay.store.base import AttemptResult, DeliveryState
from relay.store.schema import migrate
from relay.store.sqlite import SqliteStore
from relay.store.sqlite_targets import DEAD_BY_TARGET, PENDING_BY_TARGET
from tests.clock import FakeClock

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: bytes) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition.decode())
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found[name, frozenset(labels.items())]


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (Delivered(200), "2xx"),
        (Delivered(), "ok"),  # console, warehouse: no HTTP status
        (Failed("HTTP 302", 302), "3xx"),
        (Failed("HTTP 404: no such hook", 404), "4xx"),
        (Retry("HTTP 429", 429, 20.0), "4xx"),
        (Retry("HTTP 503", 503), "5xx"),
        (Retry("timed out after 10s"), "transient_error"),
        (Retry("connection error: refused"), "transient_error"),
        (Failed("targets.out.template: 'x' is undefined"), "permanent_error"),
    ],
)
def test_an_answer_is_counted_by_its_class(outcome: Outcome, expected: str) -> None:
    assert result_class(outcome) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (VerificationError("signature in X-Signature does not match the body"), "signature"),
        (InboundError("address 10.0.0.1 is not allowed to post to /hooks/a", 403), "forbidden"),
        (InboundError("request body not complete within 10s", 408), "body_timeout"),
        (InboundError("body is larger than 1024 bytes", 413), "too_large"),
        (InboundError("Content-Encoding 'br' is not supported", 415), "unsupported_encoding"),
        (InboundError("the client closed the connection", 499), "client_left"),
        (InboundError("at capacity; retry later", 503), "over_capacity"),
        (InboundError("a Flagright event needs a string id"), "invalid_event"),
        (InboundError("body is not valid JSON: ...", kind="invalid_json"), "invalid_json"),
        (InboundError("malformed body", kind="malformed_body"), "malformed_body"),
        (InboundError("cannot store", 503, "store_unavailable"), "store_unavailable"),
        (InboundError("teapot", 418), "invalid_event"),
        (InboundError("gateway", 502), "internal_error"),
    ],
)
def test_a_refusal_is_counted_by_a_reason_from_a_fixed_set(
    error: InboundError, expected: str
) -> None:
    assert refusal_result(error) == expected
    assert expected in INBOUND_RESULTS


def test_inbound_results_name_each_reason_once() -> None:
    assert len(set(INBOUND_RESULTS)) == len(INBOUND_RESULTS)
    assert all(result.isidentifier() for result in INBOUND_RESULTS)


# -- per-target gauges, from a real store ---------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "relay.db", FakeClock())
    await store.open()
    yield store
    await store.close()


def event(event_id: str, received_at: float) -> Event:
    body = b'{"id": "%s"}' % event_id.encode()
    return Event("src", event_id, "t", received_at, body, {"id": event_id}, {})


async def settle(store: SqliteStore, target: str, state: DeliveryState) -> None:
    (delivery,) = await store.claim(target, 1, 30)
    await store.record([AttemptResult(delivery.id, state)])


def by_target(found: Samples, name: str, targets: list[str]) -> dict[str, float]:
    return {target: value(found, name, target=target) for target in targets}


async def test_gauges_show_pending_dead_and_the_oldest_pending_age_per_target(
    store: SqliteStore,
) -> None:
    clock = FakeClock()
    await store.ingest(event("e1", clock.now - 300), ["slow", "gone"])
    await store.ingest(event("e2", clock.now - 60), ["slow", "gone", "fine"])
    await store.ingest(event("e3", clock.now - 10), ["removed"])
    await settle(store, "gone", "dead")
    await settle(store, "gone", "dead")
    await settle(store, "fine", "delivered")
    gauges = TargetGauges(store, lambda: ["slow", "gone", "fine", "idle"], clock)
    metrics = Metrics()
    metrics.registry.register(gauges)

    await gauges.refresh()
    clock.advance(5)  # ages run to the scrape
    found = samples(metrics.exposition())

    # Configured ones first, at 0 when nothing waits; then one no longer configured.
    targets = ["slow", "gone", "fine", "idle", "removed"]
    assert by_target(found, "relay_target_pending_deliveries", targets) == {
        "slow": 2,
        "gone": 0,
        "fine": 0,
        "idle": 0,
        "removed": 1,
    }
    assert by_target(found, "relay_target_dead_deliveries", targets) == {
        "slow": 0,
        "gone": 2,
        "fine": 0,
        "idle": 0,
        "removed": 0,
    }
    assert by_target(found, "relay_target_oldest_pending_age_seconds", targets) == {
        "slow": 305,
        "gone": 0,
        "fine": 0,
        "idle": 0,
        "removed": 15,
    }
    assert by_target(found, "relay_target_paused", targets) == dict.fromkeys(targets, 0)

    await store.pause_target("idle", "maintenance")  # paused, and holding no delivery
    await gauges.refresh()
    paused = by_target(samples(metrics.exposition()), "relay_target_paused", targets)
    assert paused == {**dict.fromkeys(targets, 0), "idle": 1}


async def test_gauges_show_the_last_reading_until_the_next(store: SqliteStore) -> None:
    clock = FakeClock()
    gauges = TargetGauges(store, lambda: ["a"], clock)
    metrics = Metrics()
    metrics.registry.register(gauges)
    await store.ingest(event("e1", clock.now), ["a"])
    assert value(samples(metrics.exposition()), "relay_target_pending_deliveries", target="a") == 0
    await gauges.refresh()
    assert value(samples(metrics.exposition()), "relay_target_pending_deliveries", target="a") == 1


def test_the_gauge_queries_read_an_index_alone(tmp_path: Path) -> None:
    """Neither count reads a table row: each scans only the partial indexes of its state
    (whose entries hold the target and the delivery id)."""
    queries = {
        PENDING_BY_TARGET: ["deliveries_waiting", "deliveries_leased"],
        DEAD_BY_TARGET: ["deliveries_dead"],
    }
    with contextlib.closing(sqlite3.connect(tmp_path / "relay.db")) as db:
        migrate(db)
        for sql, indexes in queries.items():
            plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for index in indexes:
                assert f"USING INDEX {index}" in plan
            # (addr, opcode, p1, p2, p3, p4, ...): a table's OpenRead has a column count as
            # p4, an index's its key, "k(...)". A Column read from the table reads its rows.
            program = db.execute(f"EXPLAIN {sql}").fetchall()
            tables = {row[2] for row in program if row[1] == "OpenRead" and row[5][:2] != "k("}
            assert tables, program
            assert not [row for row in program if row[1] == "Column" and row[2] in tables]


async def test_the_gauges_reading_never_creates_a_store_file_that_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SqliteStore(path, FakeClock(), file_check_interval_s=3600)
    await store.open()
    try:
        for side in (path, path.with_name("relay.db-wal"), path.with_name("relay.db-shm")):
            side.unlink(missing_ok=True)
        with pytest.raises(StoreError):
            await store.target_statuses_aside()
        assert not path.exists()
    finally:
        await store.close()


def test_inbound_counts_are_kept_across_reloads_and_exported_as_a_counter() -> None:
    metrics = Metrics()
    counts = metrics.requests.of_source("shop", INBOUND_RESULTS)
    counts["accepted"] += 2
    again = metrics.requests.of_source("shop", INBOUND_RESULTS)  # what a reload does
    again["signature"] += 1
    found = samples(metrics.exposition())
    shop = {
        dict(labels)["result"]: value
        for (name, labels), value in found.items()
        if name == "relay_inbound_requests_total"
    }
    assert shop == {**dict.fromkeys(INBOUND_RESULTS, 0.0), "accepted": 2.0, "signature": 1.0}
