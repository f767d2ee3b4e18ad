"""A store file holding a backlog of old, delivered events, for the retention scenario.

The file is written with relay's own schema (migrations) but straight through SQL, in one
transaction: ~150,000 events a second instead of the ~10,000 relay's ingest would take. Each
event has a Flagright-shaped body (payloads.py) and one delivered delivery, both `age_s` old,
so relay's default retention (7 days) purges every one of them.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from pathlib import Path

from payloads import EVENT_TYPE, RequestFactory
from procs import REPO_DIR

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
