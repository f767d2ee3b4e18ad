"""What recording attempt results costs the SQLite store, the attempt history included: a
warehouse target records a group of results per batch (1,000 rows by default) in one write.

    .venv/bin/python bench/record.py [--deliveries N] [--group G] [--rounds R] [--response-bytes B]
    .venv/bin/python bench/record.py --relay-src DIR   # the same against another copy of relay

A fresh store holds N pending deliveries of one target (written straight through SQL); the
bench claims them G at a time as a worker does and times `Store.record` of each group alone,
its results built beforehand as the worker builds them (with the history's fields when the
relay under test has them: attempt number, start, duration, and B bytes of answer). It prints
results recorded per second (median of R rounds, fresh store each) of wall time and of the
CPU time of the thread that runs the loop (the steadier figure on a shared machine: SQLite
does its work there), and, with the history, what the attempts table and its index take per
attempt (SQLite's dbstat).

Run it with `--relay-src` pointing at a copy of the previous commit's tree (e.g.
`git archive HEAD~1 relay | tar -x -C /tmp/relay-before`) to compare: both runs use this
script, only the `relay` package differs.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RECEIVED_AT = 1_700_000_000.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=50_000)
    parser.add_argument("--group", type=int, default=1000, help="results per record() call")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--response-bytes", type=int, default=0, help="answer kept per attempt")
    parser.add_argument("--relay-src", type=Path, help="import relay from this directory")
    return parser.parse_args()


def populate(path: Path, deliveries: int) -> None:
    db = sqlite3.connect(path)
    with db:
        db.executemany(
            "INSERT INTO events (pk, source, event_id, type, received_at, body, headers)"
            " VALUES (?, 'src', ?, 't', ?, x'7b7d', '{}')",
            [(n, f"e{n}", RECEIVED_AT) for n in range(1, deliveries + 1)],
        )
        db.executemany(
            "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at)"
            " VALUES (?, 'wh', 'pending', ?, ?)",
            [(n, RECEIVED_AT, RECEIVED_AT) for n in range(1, deliveries + 1)],
        )
    db.close()


async def one_round(args: argparse.Namespace, directory: Path) -> tuple[float, float, float | None]:
    """Results recorded per second of wall time and per second of the loop thread's CPU, and
    bytes per attempt in the history (None without one)."""
    from relay.store.base import AttemptResult
    from relay.store.sqlite import SqliteStore

    path = directory / "relay.db"
    store = SqliteStore(path, time.time)
    await store.open()
    await store.close()
    populate(path, args.deliveries)
    store = SqliteStore(path, time.time)
    await store.open()
    history = "response" in AttemptResult.__dataclass_fields__
    answer = "x" * args.response_bytes if args.response_bytes else None
    took_s = cpu_s = 0.0
    try:
        while True:
            claimed = await store.claim("wh", args.group, lease_s=60.0)
            if not claimed:
                break
            results = [AttemptResult(d.id, "delivered") for d in claimed]
            if history:
                for result, delivery in zip(results, claimed, strict=True):
                    _as_the_worker_does(result, delivery.attempt, answer)
            started, started_cpu = time.perf_counter(), time.thread_time()
            await store.record(results)
            took_s += time.perf_counter() - started
            cpu_s += time.thread_time() - started_cpu
        size = _bytes_per_attempt(store._connection(), args.deliveries) if history else None
    finally:
        await store.close()
    return args.deliveries / took_s, args.deliveries / cpu_s, size


def _as_the_worker_does(result: Any, attempt: int, answer: str | None) -> None:
    result.attempt = attempt
    result.started_at = time.time()
    result.duration_s = 0.012
    result.response = answer


def _bytes_per_attempt(db: sqlite3.Connection, attempts: int) -> float:
    (used,) = db.execute(
        "SELECT SUM(pgsize - unused) FROM dbstat WHERE name IN ('attempts', 'attempts_delivery')"
    ).fetchone()
    return float(used) / attempts


def main() -> None:
    args = parse_args()
    if args.relay_src is not None:
        sys.path.insert(0, str(args.relay_src.resolve()))
    import relay

    print(f"relay from {Path(relay.__file__).parent}")
    rates, cpu_rates, sizes = [], [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as directory:
            rate, cpu_rate, size = asyncio.run(one_round(args, Path(directory)))
        rates.append(rate)
        cpu_rates.append(cpu_rate)
        if size is not None:
            sizes.append(size)
    print(f"{args.deliveries:,} results in groups of {args.group:,}, median of {args.rounds}:")
    for what, figures in [("wall time", rates), ("loop thread CPU", cpu_rates)]:
        shown = " · ".join(f"{rate:,.0f}" for rate in figures)
        print(f"  {statistics.median(figures):,.0f} results/s of {what} ({shown})")
    if sizes:
        print(f"history: {statistics.median(sizes):.0f} bytes per attempt (table and index)")


if __name__ == "__main__":
    main()
