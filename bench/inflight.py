"""What a delivery costs the store with attempts in flight: a claim of one and the record of
one delivered, as a worker at full concurrency does when an attempt ends, against a backlog of
due deliveries of one target (written with bench/backlog.py's `write_pending`).

    .venv/bin/python bench/inflight.py [--backlog 200000] [--in-flight 32 512] [--relay-src DIR]

Per run: the CPU time of this thread per claim + record (on the event loop, as relay runs
them) and the WAL written per delivery (automatic checkpoints off for the measure). Run it for
this tree and for a copy of another commit (`--relay-src`) in turn: a busy machine moves the
CPU figures by tens of percent from one run to the next.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from backlog import PENDING_TARGET, write_pending
from procs import REPO_DIR

CYCLES = 3000


def size(path: Path) -> int:
    return path.stat().st_size


async def measure(store: Any, in_flight: int, wal: Path) -> tuple[float, float]:
    """(CPU us, WAL bytes) per claim + record with `in_flight` deliveries leased."""
    from relay.store.base import AttemptResult

    store._connection().execute("PRAGMA wal_autocheckpoint=0")
    leased = []
    for _ in range(in_flight):
        leased += await store.claim(PENDING_TARGET, 1, 35.0)
    wal_before, cpu_before = size(wal), time.thread_time()
    for _ in range(CYCLES):
        done = leased.pop(0)
        await store.record([AttemptResult(done.id, "delivered", status=200, attempt=1)])
        leased += await store.claim(PENDING_TARGET, 1, 35.0)
    cpu_s, wal_bytes = time.thread_time() - cpu_before, size(wal) - wal_before
    return cpu_s / CYCLES * 1e6, wal_bytes / CYCLES


async def run(source: Path, backlog: int, in_flight: int, scratch: Path) -> None:
    from relay.store.sqlite import SqliteStore

    path = scratch / f"inflight-{in_flight}.db"
    write_pending(path, backlog, time.time() - 60, source)
    store = SqliteStore(path, time.time)
    await store.open(daemon=False)
    try:
        cpu_us, wal_bytes = await measure(store, in_flight, Path(f"{path}-wal"))
    finally:
        await store.close()
    print(
        f"{in_flight:5} in flight: {cpu_us:6.0f} us CPU per claim + record,"
        f" {wal_bytes / 1024:.1f} KiB of WAL per delivery"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=200_000)
    parser.add_argument("--in-flight", type=int, nargs="+", default=[32, 512])
    parser.add_argument("--relay-src", type=Path, help="run the relay package in this directory")
    args = parser.parse_args()
    source = (args.relay_src or REPO_DIR).resolve()
    sys.path.insert(0, str(source))
    print(f"relay from {source}; {args.backlog:,} due deliveries of one target")
    with tempfile.TemporaryDirectory(prefix="relay-inflight-bench-") as scratch:
        for in_flight in args.in_flight:
            asyncio.run(run(source, args.backlog, in_flight, Path(scratch)))


if __name__ == "__main__":
    main()
