"""What the indexes behind `relay deliveries` filters cost ingest: relay's own ingest statements
(an event of 784 bytes, and one delivery per target), 50 events per transaction as group commit
makes them, on relay's schema with and without `events_kind` and `deliveries_target`.

    .venv/bin/python bench/store_indexes.py [--rounds R] [--events N]

Both stores live in one process and take turns, round by round, so a busy machine slows both
alike; the figure is the CPU time of this thread per event (median of R rounds of N events),
without and with one delivery per event.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from relay.store.schema import migrate

LISTING_INDEXES = ("events_kind", "deliveries_target")
GROUP = 50
BODY = b'{"x":' + b"1" * 777 + b"}"
HEADERS = '{"content-type":"application/json","x-signature":"' + "ab" * 32 + '"}'


def store(directory: Path, name: str, indexes: bool) -> sqlite3.Connection:
    db = sqlite3.connect(directory / name, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    migrate(db)
    if not indexes:
        for index in LISTING_INDEXES:
            db.execute(f"DROP INDEX {index}")
    return db


def ingest(db: sqlite3.Connection, first: int, events: int, targets: list[str]) -> float:
    """Loop CPU seconds per event for `events` events in groups of GROUP."""
    cur = db.cursor()
    cpu_s = 0.0
    for group_start in range(first, first + events, GROUP):
        started = time.thread_time()
        cur.execute("BEGIN IMMEDIATE")
        for n in range(group_start, group_start + GROUP):
            cur.execute(
                "INSERT INTO events (source, event_id, type, received_at, body, headers,"
                " data_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (source, event_id) DO NOTHING",
                (
                    "flagright",
                    f"{n * 7919 % 1_000_003:07d}-{n}",
                    "CASE_OPENED",
                    time.time(),
                    BODY,
                    HEADERS,
                    "data",
                    None,
                ),
            )
            cur.executemany(
                "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at)"
                " VALUES (?, ?, 'pending', ?, ?)",
                [(cur.lastrowid, target, 1.0, 1.0) for target in targets],
            )
        cur.execute("COMMIT")
        cpu_s += time.thread_time() - started
    return cpu_s / events


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args()
    for targets in ([], ["audit"]):
        with tempfile.TemporaryDirectory() as directory:
            stores = {
                indexes: store(Path(directory), f"{indexes}.db", indexes)
                for indexes in (False, True)
            }
            figures: dict[bool, list[float]] = {False: [], True: []}
            for round_number in range(args.rounds):
                for indexes, db in stores.items():
                    first = round_number * args.events
                    figures[indexes].append(ingest(db, first, args.events, targets) * 1e6)
            for db in stores.values():
                db.close()
        without, with_ = (statistics.median(figures[flag]) for flag in (False, True))
        deliveries = f"{len(targets)} delivery" if targets else "no delivery"
        print(
            f"{deliveries} per event: {without:.1f} us without the listing indexes,"
            f" {with_:.1f} us with them ({with_ - without:+.1f} us per event)"
        )


if __name__ == "__main__":
    main()
