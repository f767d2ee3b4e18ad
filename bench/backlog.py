"""Store files holding a backlog, and `make bench-backlog`: relay beside a million pending
deliveries.

The files are written with relay's own schema (migrations) but straight through SQL, in one
transaction: ~150,000 events a second instead of the ~10,000 relay's ingest would take.

- `write_backlog`: old, delivered events (Flagright-shaped bodies, payloads.py, one delivered
  delivery each, `age_s` old), which relay's default retention purges (`make bench`,
  scenario 4).
- `write_pending`: events with one pending delivery each to the target `sink`, due at a
  given time: a retry backlog (due tomorrow) or a backlog to drain (due now).

`make bench-backlog` (this file as a script) runs relay as `make bench` does, one http
target of concurrency 32 sending to bench/servers.py's receiver, in rounds that run each kind
in turn (so a busy moment of the shared machine falls on all of them alike):

1. Ingest latency at a fixed rate (open loop, default 300 events/s for 1 s + 10 s, every
   event delivered by the same relay), on an empty store and on a store holding 1,000,000
   pending deliveries of the same target that are not due for a day (aim: p99 within 2x).
2. Draining: delivered events per second from relay's start, until the receiver has 20,000,
   with only those 20,000 due in the store and with 1,000,000 due (aim: within 20 %).

For each run, relay's resident memory at its peak (aim: < 150 MB), and the CPU relay used
per event delivered while measured (ingest included in 1). Each store is written
once and copied for every run.

    .venv/bin/python bench/backlog.py [--backlog N] [--rounds R] [--relay-src DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payloads import EVENT_TYPE, RequestFactory
from procs import (
    REPO_DIR,
    BenchError,
    Server,
    get_json,
    helper_server,
    memory_bytes,
    others_busy_cores,
    process_cpu_s,
    relay_server,
)

BACKLOG_AGE_S = 30 * 86_400.0
HEADERS = json.dumps({"content-type": "application/json", "x-signature": "0" * 64})


def write_backlog(path: Path, events: int, age_s: float = BACKLOG_AGE_S) -> int:
    """Write the file; return its size in bytes."""
    sys.path.insert(0, str(REPO_DIR))
    from relay.store.schema import migrate

    factory = RequestFactory("127.0.0.1", 0, "/", "secret", "X-Signature")
    settled_at = time.time() - age_s
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        migrate(db)
        db.execute("BEGIN")
        for i in range(events):
            body = factory.body(i)
            event_id = json.loads(body)["id"]
            pk = db.execute(
                "INSERT INTO events (source, event_id, type, received_at, body, headers)"
                " VALUES ('flagright', ?, ?, ?, ?, ?)",
                (event_id, EVENT_TYPE, settled_at, body, HEADERS),
            ).lastrowid
            db.execute(
                "INSERT INTO deliveries (event_pk, target, state, attempts, next_attempt_at,"
                " first_attempt_at, last_status, updated_at)"
                " VALUES (?, 'sink', 'delivered', 1, ?, ?, 200, ?)",
                (pk, settled_at, settled_at, settled_at),
            )
        db.execute("COMMIT")
    return path.stat().st_size


def backlog_left(path: Path, events: int) -> int:
    """How many backlog events are still in the store (they have the first `events` pks, and
    retention deletes oldest first)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (oldest,) = db.execute("SELECT MIN(pk) FROM events").fetchone()
    return 0 if oldest is None else max(0, events - oldest + 1)


def events_after_backlog(path: Path, events: int) -> int:
    """Events the run stored: the backlog has the first `events` pks, later ones are new."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM events WHERE pk > ?", (events,)).fetchone()
    return int(count)


# -- a backlog of pending deliveries -----------------------------------------------------------

PENDING_TARGET = "sink"
PENDING_BODY = (
    '{"id":"%s","type":"CASE_OPENED","data":{"caseId":"C-%010d","status":"OPEN",'
    '"userId":"U-7d3c0a8e-5b2f-4c61-9f0e-2a4b6c8d1e3f","comment":"%s"}}'
)
GROUP_ROWS = 50_000


def write_pending(path: Path, events: int, due_at: float, source: Path = REPO_DIR) -> int:
    """`events` events of source `flagright` (bodies of 256 bytes), each with one pending
    delivery to `sink` due at `due_at`, never attempted; the schema is the one of the relay
    package in `source`. Return the file's size in bytes."""
    received_at = time.time() - 3600  # young: retention's first pass stops at once
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        _migrate_as(source, db)
        db.execute("BEGIN")
        for first in range(0, events, GROUP_ROWS):
            numbers = range(first, min(events, first + GROUP_ROWS))
            db.executemany(
                "INSERT INTO events (pk, source, event_id, type, received_at, body, headers)"
                " VALUES (?, 'flagright', ?, 'CASE_OPENED', ?, ?, ?)",
                ((n + 1, f"backlog-{n}", received_at, _pending_body(n), HEADERS) for n in numbers),
            )
            db.executemany(
                "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?)",
                ((n + 1, PENDING_TARGET, due_at, received_at) for n in numbers),
            )
        db.execute("COMMIT")
    return path.stat().st_size


def _pending_body(number: int) -> bytes:
    event_id = f"backlog-{number}"
    size = len(PENDING_BODY % (event_id, number, ""))
    return (PENDING_BODY % (event_id, number, "x" * (256 - size))).encode()


def _migrate_as(source: Path, db: sqlite3.Connection) -> None:
    """relay's migrations as the package in `source` has them (a copy of an older commit may
    have fewer, and its queries name the indexes of its own)."""
    spec = importlib.util.spec_from_file_location(
        "relay_schema_under_test", source / "relay" / "store" / "schema.py"
    )
    if spec is None or spec.loader is None:
        raise BenchError(f"no relay/store/schema.py in {source}")
    schema = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schema)
    schema.migrate(db)


# -- make bench-backlog ------------------------------------------------------------------------

DAY_S = 86_400.0
RSS_AIM_BYTES = 150 * 10**6
P99_RATIO_AIM = 2.0
DRAIN_RATIO_AIM = 0.8


@dataclass(frozen=True)
class Kind:
    """One kind of run: its store (None: empty), and whether it measures ingest or draining."""

    name: str
    store: Path | None
    drain: bool


def write_stores(args: argparse.Namespace, work: Path) -> list[Kind]:
    """The stores every round copies: written once, with the schema of the relay under test."""
    files = {
        "not-due.db": (args.backlog, time.time() + DAY_S),
        "due-small.db": (args.drain_events, time.time() - 60),
        "due-large.db": (args.backlog, time.time() - 60),
    }
    for name, (events, due_at) in files.items():
        started = time.monotonic()
        size = write_pending(work / name, events, due_at, args.source)
        took = time.monotonic() - started
        print(f"  {name}: {events:,} pending deliveries, {size / 2**20:.0f} MiB, {took:.1f} s")
    return [
        Kind("ingest, empty store", None, drain=False),
        Kind(f"ingest, {args.backlog:,} pending not due", work / "not-due.db", drain=False),
        Kind(f"drain, {args.drain_events:,} due", work / "due-small.db", drain=True),
        Kind(f"drain, {args.backlog:,} due", work / "due-large.db", drain=True),
    ]


def run(args: argparse.Namespace, kind: Kind, work_dir: Path, problems: Any) -> dict[str, Any]:
    """One run of `kind` in a fresh directory (a copy of its store), beside a receiver."""
    import ingest

    work_dir.mkdir(parents=True)
    if kind.store is not None:
        shutil.copyfile(kind.store, work_dir / "relay.db")
    os.sync()  # the copy's dirty pages would otherwise be written out during the run
    with helper_server("receiver", work_dir) as receiver:
        config, port = ingest.write_relay_config(work_dir, receiver.port, args.concurrency)
        with relay_server(config, port, args.relay_src) as relay:
            cpu_s, delivered = process_cpu_s(relay.process.pid), receiver_events(receiver)
            if kind.drain:
                result = drain(args, receiver, problems, kind.name)
            else:
                result = paced(args, port, receiver, problems, kind.name)
            cpu_s = process_cpu_s(relay.process.pid) - cpu_s
            delivered = receiver_events(receiver) - delivered
            result["relay_cpu_us_per_delivery"] = cpu_s / delivered * 1e6 if delivered else None
            result["memory"] = memory_bytes(relay.process.pid)
            result["wal_bytes"] = ingest.wal_bytes(config)
    ingest.check_wal(problems, kind.name, result)
    return result


def receiver_events(receiver: Server) -> int:
    events: int = get_json(f"{receiver.url}/stats")["events"]
    return events


def paced(
    args: argparse.Namespace, port: int, receiver: Server, problems: Any, what: str
) -> dict[str, Any]:
    """Ingest at the fixed rate, every event delivered by the same relay."""
    import ingest

    result = ingest.open_loop(port, args.rate, args.warmup_s, args.duration_s)
    stats = ingest.wait_for_receiver(receiver, result["sent"], timeout_s=60.0)
    problems.expect_statuses(what, result, "202")
    result["delivered"] = stats["events"]
    problems.expect(
        stats["events"] == result["sent"],
        f"{what}: {stats['events']} of {result['sent']} delivered",
    )
    return result


def drain(args: argparse.Namespace, receiver: Server, problems: Any, what: str) -> dict[str, Any]:
    """Deliveries per second from the first to arrive until the receiver has
    `args.drain_events` of them."""
    import ingest

    stats = ingest.wait_for_receiver(receiver, args.drain_events, timeout_s=300.0)
    problems.expect(
        stats["events"] >= args.drain_events,
        f"{what}: the receiver got {stats['events']} of {args.drain_events} events",
    )
    seconds = stats["last_new_at"] - stats["first_at"]
    return {
        "events": stats["events"],
        "seconds": seconds,
        "delivered_per_s": stats["events"] / seconds if seconds > 0 else 0.0,
    }


def print_results(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> None:
    print(
        f"\nIngest at {args.rate:g} events/s offered ({args.warmup_s:g} s + {args.duration_s:g} s)"
    )
    print("with every event delivered by the same relay; then draining due deliveries")
    print(f"(concurrency {args.concurrency}); {args.rounds} rounds, kinds alternating:")
    figures: dict[str, float] = {}
    for name, runs in results.items():
        if "drain" in name:
            rates = [r["delivered_per_s"] for r in runs]
            figures[name] = statistics.median(rates)
            shown = ", ".join(f"{rate:,.0f}" for rate in rates)
            print(f"  {name:36} delivered/s {shown} (median {figures[name]:,.0f})")
        else:
            p99s = [r["latency_ms"]["p99"] for r in runs]
            figures[name] = statistics.median(p99s)
            p50s = ", ".join(f"{r['latency_ms']['p50']:.1f}" for r in runs)
            shown = ", ".join(f"{p99:.1f}" for p99 in p99s)
            print(f"  {name:36} p99 ms {shown} (median {figures[name]:.1f}); p50 ms {p50s}")
        peaks = ", ".join(f"{r['memory'].get('peak_rss', 0) / 1e6:.0f}" for r in runs)
        cpu = ", ".join(f"{r['relay_cpu_us_per_delivery'] or 0:.0f}" for r in runs)
        print(f"  {'':36} relay's peak RSS MB {peaks}; relay CPU us per delivery {cpu}")
    empty, full, small, large = figures.values()
    p99_ratio, drain_ratio = full / empty, large / small
    peak = max(r["memory"].get("peak_rss", 0) for runs in results.values() for r in runs)
    print(f"\np99 beside the backlog / empty store: {p99_ratio:.2f}x", end="")
    print(f" (aim <= {P99_RATIO_AIM:g}x: {_aim(p99_ratio <= P99_RATIO_AIM)})")
    print(f"drain rate with the large backlog / small: {drain_ratio:.2f}", end="")
    print(f" (aim >= {DRAIN_RATIO_AIM:g}: {_aim(drain_ratio >= DRAIN_RATIO_AIM)})")
    print(f"relay's peak RSS {peak / 1e6:.0f} MB (aim < 150 MB: {_aim(peak < RSS_AIM_BYTES)})")


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _aim(ok: bool) -> str:
    return "met" if ok else "MISSED"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2, help="of each kind, alternating")
    parser.add_argument("--rate", type=float, default=300.0, help="ingest events/s offered")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--drain-events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32, help="the target's")
    parser.add_argument("--relay-src", type=Path, help="run the relay package in this directory")
    parser.add_argument("--json", metavar="PATH", help="also write every result here")
    args = parser.parse_args()
    args.relay_src = args.relay_src.resolve() if args.relay_src else None
    args.source = args.relay_src or REPO_DIR
    return args


def main() -> int:
    import ingest
    import report

    args = parse_args()
    signal.signal(signal.SIGTERM, _exit_on_signal)  # the temporary stores go too
    problems = ingest.Problems()
    print(f"relay from {args.source}; {report.machine()}")
    print(f"others busy: {others_busy_cores():.2f} cores")
    with tempfile.TemporaryDirectory(prefix="relay-backlog-bench-") as scratch:
        work = Path(scratch)
        try:
            kinds = write_stores(args, work)
            results: dict[str, list[dict[str, Any]]] = {kind.name: [] for kind in kinds}
            for number in range(args.rounds):
                for index, kind in enumerate(kinds):
                    ingest.step(f"round {number + 1}: {kind.name}")
                    results[kind.name].append(run(args, kind, work / f"{number}-{index}", problems))
        except BenchError as exc:
            print(f"bench failed: {exc}", flush=True)
            return 1
        except KeyboardInterrupt:
            print("interrupted: servers stopped, temporary files removed", flush=True)
            return 130
    print_results(args, results)
    if args.json:
        dump = {"results": results, "problems": problems.items}
        Path(args.json).write_text(json.dumps(dump, indent=2), encoding="utf-8")
    for problem in problems.items:
        print(f"PROBLEM: {problem}")
    return 1 if problems.items else 0


if __name__ == "__main__":
    sys.exit(main())
