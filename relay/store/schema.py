"""The SQLite store's schema, as numbered migrations."""

from __future__ import annotations

import sqlite3

from relay.errors import StoreError

# Each entry brings the schema from the previous version to its own; the file records its
# version in `PRAGMA user_version`. Append, never edit: operators' files are at every version.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        pk INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        event_id TEXT NOT NULL,
        type TEXT NOT NULL,
        received_at REAL NOT NULL,
        body BLOB NOT NULL,
        headers TEXT NOT NULL,
        data_key TEXT,
        UNIQUE (source, event_id)
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        event_pk INTEGER NOT NULL REFERENCES events (pk),
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        first_attempt_at REAL,
        lease_until REAL NOT NULL DEFAULT 0,
        last_status INTEGER,
        last_error TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (target, next_attempt_at) WHERE state = 'pending';
    CREATE INDEX deliveries_state ON deliveries (state, id);
    """,
    "ALTER TABLE events ADD COLUMN created_at REAL;",
    # Retention reads and deletes an event's deliveries by event.
    "CREATE INDEX deliveries_event ON deliveries (event_pk);",
    # The attempt history, and what `relay deliveries` filters by (newest first): a target's
    # deliveries by id, an event's source and type (each pair's events by pk).
    """
    CREATE TABLE attempts (
        id INTEGER PRIMARY KEY,
        delivery_id INTEGER NOT NULL REFERENCES deliveries (id),
        number INTEGER NOT NULL,
        started_at REAL NOT NULL,
        duration_s REAL,
        result TEXT NOT NULL,
        status INTEGER,
        error TEXT,
        response TEXT,
        retry_after TEXT
    );
    CREATE INDEX attempts_delivery ON attempts (delivery_id);
    CREATE INDEX deliveries_target ON deliveries (target, id);
    CREATE INDEX events_kind ON events (source, type);
    """,
    # Target control and ordering by key: a target's pause and its last success and error
    # (`relay targets`), and each delivery's ordering key with the pending ones by key.
    """
    CREATE TABLE targets (
        name TEXT PRIMARY KEY,
        paused_at REAL,
        paused_reason TEXT,
        last_success_at REAL,
        last_error_at REAL,
        last_error TEXT
    );
    ALTER TABLE deliveries ADD COLUMN order_key TEXT;
    CREATE INDEX deliveries_order ON deliveries (target, order_key, id)
        WHERE state = 'pending' AND order_key IS NOT NULL;
    """,
    # The dead gauge counts them per target; ingest writes only pending rows, so never this.
    "CREATE INDEX deliveries_dead ON deliveries (target) WHERE state = 'dead';",
    # A worker's queries walk no pending delivery that it cannot claim: the due index holds
    # the pending deliveries nobody has leased, in the order they come due, and a leased one
    # moves to an index of its own, by when its lease runs out. Claims and `next_due_at` then
    # read a few index entries however large the backlog and however many attempts are in
    # flight (the shared due index made them step over every leased delivery, reading its row).
    # The price: a claim moves an index entry, 20-30 us and two pages of WAL more per delivery
    # at low concurrency (docs/benchmarks.md).
    """
    DROP INDEX deliveries_due;
    CREATE INDEX deliveries_waiting ON deliveries (target, next_attempt_at)
        WHERE state = 'pending' AND lease_until = 0;
    CREATE INDEX deliveries_leased ON deliveries (target, lease_until)
        WHERE state = 'pending' AND lease_until > 0;
    """,
    # The console's deliveries per minute: those delivered since a time, by target (state
    # too, so that the index covers the query).
    "CREATE INDEX deliveries_delivered ON deliveries (updated_at, target, state)"
    " WHERE state = 'delivered';",
)


def migrate(db: sqlite3.Connection, name: str = "the store") -> None:
    """Bring the file to the newest schema, one transaction per step. A file a newer relay
    has migrated is refused: this one would misread it (a rollback restores the backup
    taken before the upgrade)."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StoreError(newer_schema_message(name, version, len(MIGRATIONS)))
    if version == 0 and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'events'").fetchone():
        version = 1  # written before versions were recorded
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        db.executescript(f"BEGIN IMMEDIATE; {script} PRAGMA user_version = {number}; COMMIT;")


def newer_schema_message(name: str, version: int, known: int) -> str:
    return (
        f"{name} is at schema version {version}, newer than this relay knows ({known}): "
        "a newer relay migrated it. Run that version, or restore the backup taken before "
        "the upgrade"
    )
