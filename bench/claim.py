"""What a worker's store queries cost with a backlog of pending deliveries of one target.

Each scenario's store is built through `SqliteStore.ingest` (as relay stores events); then the
worker's two queries are timed, on the event loop as relay runs them, in rounds that visit
every scenario in turn, so that a busy moment of the machine falls on all of them alike:

- `claim(limit=4)` (then `release`, so that every round finds the same backlog), and
- `next_due_at`, which a worker asks after every claim that found nothing.

Scenarios: every delivery due, no ordering; the same with `ordering` over 1,000 keys of 200
deliveries each; ordering where one key holds the whole backlog behind a failing head (its
retry an hour away); a target that is down, no ordering (every retry an hour away); every
delivery due with 1,000 of them leased (attempts in flight). Then
ingest with and without ordering keys, 50 events per group commit, runs alternating.

    .venv/bin/python bench/claim.py [--backlog 200000] [--relay-src DIR]

`--relay-src` runs the relay package found in DIR (a copy of an older commit) instead; the
scenarios it cannot run (ordering) are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parent.parent
ROUNDS = 1000
DUE_ROUNDS = 200  # next_due_at took tens of ms before it was indexed
INGEST_EVENTS = 20_000
INGEST_GROUP = 50
KEYS = 1000
IN_FLIGHT = 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--relay-src", type=Path, help="run the relay package in this directory")
    args = parser.parse_args()
    source = (args.relay_src or REPO_DIR).resolve()
    sys.path.insert(0, str(source))
    from relay.store.sqlite import SqliteStore

    ordering = hasattr(SqliteStore, "forget_order_keys")
    print(f"relay from {source}; backlog {args.backlog:,}")
    with tempfile.TemporaryDirectory(prefix="relay-claim-bench-") as scratch:
        asyncio.run(run_all(Path(scratch), args.backlog, ordering))


Build = Callable[[Any, int], Awaitable[None]]


async def run_all(scratch: Path, backlog: int, ordering: bool) -> None:
    scenarios: list[tuple[str, Build, bool]] = [
        ("all due, no ordering", lambda store, n: ingest(store, n, None), True),
        ("all due, ordering by 1,000 keys", lambda s, n: ingest(s, n, by_key), ordering),
        ("ordering, one key behind a failing head", one_key, ordering),
        ("target down, no ordering", down, True),
        (f"all due, {IN_FLIGHT:,} in flight", in_flight, True),
    ]
    stores: dict[str, Any] = {}
    for number, (name, build, runnable) in enumerate(scenarios):
        if not runnable:
            print(f"{name}: skipped (this relay has no ordering)")
            continue
        stores[name] = store = await open_store(scratch / f"{number}.db")
        await build(store, backlog)
    try:
        await time_rounds(stores)
    finally:
        for store in stores.values():
            await store.close()
    await time_ingest(scratch, ordering)


def by_key(number: int) -> str:
    return f"k{number % KEYS}"


async def open_store(path: Path) -> Any:
    """A store as `relay targets` opens one: no lock file, no checkpointer thread."""
    from relay.store.sqlite import SqliteStore

    store = SqliteStore(path, time.time)
    await store.open(daemon=False)
    return store


def event(number: int) -> Any:
    from relay.events import Event

    body = b'{"id": "e%d", "type": "t", "data": {"userId": "u"}}' % number
    return Event("src", f"e{number}", "t", time.time(), body, {}, {})


async def ingest(
    store: Any, count: int, key: Callable[[int], str] | None, group: int = 500
) -> None:
    """`count` events to target `t`, `group` of them at once (one group commit each)."""
    for start in range(0, count, group):
        numbers = range(start, min(count, start + group))
        if key is None:
            await asyncio.gather(*(store.ingest(event(n), ["t"]) for n in numbers))
        else:
            await asyncio.gather(*(store.ingest(event(n), ["t"], {"t": key(n)}) for n in numbers))


async def one_key(store: Any, count: int) -> None:
    from relay.store.base import AttemptResult

    await ingest(store, count, lambda n: "k")
    (head,) = await store.claim("t", 4, 30.0)
    await store.record([AttemptResult(head.id, "pending", time.time() + 3600, 503, "down")])


async def in_flight(store: Any, count: int) -> None:
    """Every delivery due and the oldest IN_FLIGHT leased for an hour: attempts in flight to a
    slow target of high concurrency (or warehouse batches)."""
    await ingest(store, count, None)
    await store.claim("t", IN_FLIGHT, 3600.0)


async def down(store: Any, count: int) -> None:
    await ingest(store, count, None)
    with sqlite3.connect(store.path) as db:  # as if every delivery had failed once
        db.execute("UPDATE deliveries SET attempts = 1, next_attempt_at = ?", (time.time() + 3600,))


async def time_rounds(stores: dict[str, Any]) -> None:
    claims: dict[str, list[float]] = {name: [] for name in stores}
    dues: dict[str, list[float]] = {name: [] for name in stores}
    claimed: dict[str, int] = {}
    for number in range(ROUNDS):
        for name, store in stores.items():
            started = time.perf_counter()
            deliveries = await store.claim("t", 4, 30.0)
            claims[name].append(time.perf_counter() - started)
            claimed[name] = len(deliveries)
            await store.release([d.id for d in deliveries])
            if number < DUE_ROUNDS:
                started = time.perf_counter()
                await store.next_due_at("t")
                dues[name].append(time.perf_counter() - started)
    for name in stores:
        print(
            f"{name}: claim {statistics.median(claims[name]) * 1e6:.1f} us"
            f" ({claimed[name]} claimed; median of {ROUNDS}),"
            f" next_due_at {statistics.median(dues[name]) * 1e6:.1f} us (of {DUE_ROUNDS})"
        )


async def time_ingest(scratch: Path, ordering: bool) -> None:
    """us per event through SqliteStore.ingest, 50 events per group; runs alternate."""
    kinds = ["no ordering", "ordering"] if ordering else ["no ordering"]
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    for run in range(4):
        for kind in kinds:
            store = await open_store(scratch / f"ingest-{run}-{kind}.db")
            key = by_key if kind == "ordering" else None
            started = time.perf_counter()
            await ingest(store, INGEST_EVENTS, key, INGEST_GROUP)
            results[kind].append((time.perf_counter() - started) / INGEST_EVENTS * 1e6)
            await store.close()
    for kind, samples in results.items():
        runs = ", ".join(f"{s:.1f}" for s in samples)
        print(f"ingest, {kind}: {statistics.median(samples):.1f} us/event (runs: {runs})")


if __name__ == "__main__":
    main()
