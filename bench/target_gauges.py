"""What the per-target gauges cost: `Store.target_statuses_aside` on a store with a 200,000 backlog,
and ingest into that store with and without the gauges being read (about 40 s).

    .venv/bin/python bench/target_gauges.py [--events N] [--seconds S] [--rounds R]

The store is written with relay's schema straight through SQL: N events, each with a pending
delivery (targets `a` and `b`, half each), a dead one (`gone`) and a delivered one (`done`):
N pending, N dead and N delivered rows. Then, in one process on uvloop, through relay's own
SqliteStore:

1. the query plans (each must read an index alone: COVERING INDEX), and the time of
   `target_statuses_aside()` (median and max of R calls);
2. ingest: 32 coroutines each storing events one after another (one pending delivery each)
   for S seconds, measured per event, in rounds that alternate: no gauges; the gauges read
   every second (five times as often as the daemon does); the gauges read back to back the
   whole time (the worst case: a core kept busy counting). Also the event loop's longest
   stall (how late a 1 ms sleep wakes up).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import uvloop
from payloads import EVENT_TYPE, RequestFactory

from relay.events import Event
from relay.store.schema import migrate
from relay.store.sqlite import SqliteStore
from relay.store.sqlite_targets import DEAD_BY_TARGET, PENDING_BY_TARGET

INGESTERS = 32
HEADERS = json.dumps({"content-type": "application/json"})


def write_store(path: Path, events: int) -> None:
    factory = RequestFactory("127.0.0.1", 0, "/", "secret", "X-Signature")
    now = time.time()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        migrate(db)
        db.execute("BEGIN")
        for i in range(events):
            body = factory.body(i)
            received_at = now - 3600 + i * 3600 / events
            pk = db.execute(
                "INSERT INTO events (source, event_id, type, received_at, body, headers)"
                " VALUES ('flagright', ?, ?, ?, ?, ?)",
                (json.loads(body)["id"], EVENT_TYPE, received_at, body, HEADERS),
            ).lastrowid
            rows = [
                ("a" if i % 2 else "b", "pending", received_at + 600),
                ("gone", "dead", received_at),
                ("done", "delivered", received_at),
            ]
            db.executemany(
                "INSERT INTO deliveries (event_pk, target, state, attempts, next_attempt_at,"
                " updated_at) VALUES (?, ?, ?, 1, ?, ?)",
                [(pk, target, state, at, at) for target, state, at in rows],
            )
        db.execute("COMMIT")
        db.execute("ANALYZE")


def query_plans(path: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [
            " / ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in (PENDING_BY_TARGET, DEAD_BY_TARGET)
        ]


async def time_stats(store: SqliteStore, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await store.target_statuses_aside()
        times.append(time.perf_counter() - started)
    return times


def event(run: str, i: int) -> Event:
    body = b'{"id": "%s-%d", "type": "bench"}' % (run.encode(), i)
    payload = json.loads(body)
    return Event("bench", payload["id"], "bench", time.time(), body, payload, {})


MODES = {"no gauges": None, "gauges every 1 s": 1.0, "gauges back to back": 0.0}


async def ingest_round(
    store: SqliteStore, seconds: float, gauge_interval_s: float | None
) -> dict[str, float]:
    run = uuid.uuid4().hex[:12]
    latencies: list[float] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds
    stall = 0.0

    async def ingester() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await store.ingest(event(run, next(counter)), ["a"])
            latencies.append(time.perf_counter() - started)

    async def ticker() -> None:
        nonlocal stall
        while time.perf_counter() < deadline:
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            stall = max(stall, time.perf_counter() - before - 0.001)

    async def gauges() -> int:
        reads = 0
        while gauge_interval_s is not None and time.perf_counter() < deadline:
            await store.target_statuses_aside()
            reads += 1
            await asyncio.sleep(gauge_interval_s)
        return reads

    tasks = [ingester() for _ in range(INGESTERS)]
    *_, reads = await asyncio.gather(*tasks, ticker(), gauges())
    latencies.sort()
    return {
        "events_per_s": len(latencies) / seconds,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "stall_ms": stall * 1000,
        "gauge_reads": float(reads or 0),
    }


async def measure(path: Path, rounds: int, seconds: float) -> None:
    store = SqliteStore(path, time.time)
    await store.open()
    try:
        stats = await store.target_statuses_aside()
        print("   readings:", {s.name: (s.pending, s.dead) for s in stats})
        times = await time_stats(store, rounds)
        print(
            f"2. target_statuses_aside(): median {statistics.median(times) * 1000:.1f} ms,"
            f" max {max(times) * 1000:.1f} ms ({rounds} calls)"
        )
        print(f"3. ingest, {INGESTERS} coroutines, {seconds:g} s per round:")
        for i in range(rounds):
            for label, interval_s in MODES.items():
                result = await ingest_round(store, seconds, interval_s)
                print(
                    f"   round {i + 1} {label:20} {result['events_per_s']:8,.0f} events/s"
                    f"  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms"
                    f"  loop stall max {result['stall_ms']:.1f} ms"
                    + (f"  ({result['gauge_reads']:.0f} reads)" if interval_s is not None else "")
                )
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="relay-gauges-") as tmp:
        path = Path(tmp) / "relay.db"
        started = time.perf_counter()
        write_store(path, args.events)
        size_mib, took_s = path.stat().st_size / 2**20, time.perf_counter() - started
        print(
            f"store: {args.events:,} events, {args.events:,} pending, dead and delivered"
            f" deliveries each, {size_mib:.0f} MiB (written in {took_s:.0f} s)"
        )
        for plan in query_plans(path):
            print(f"1. plan: {plan}")
        uvloop.run(measure(path, args.rounds, args.seconds))


if __name__ == "__main__":
    main()
