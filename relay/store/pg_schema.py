"""The PostgreSQL store's schema, as numbered migrations run under an advisory lock.

Replicas starting at once on an empty database all call `migrate`: the first to take the lock
brings the schema up to date and the others, once they hold it, find nothing left to do. A
relay older than the schema it finds refuses to run rather than write rows it does not know.
"""

from __future__ import annotations

import asyncpg

from relay.errors import StoreError

# Each entry brings the schema from the previous version to its own; `relay_schema` records
# the version. Append, never edit: operators' databases are at every version.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE events (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        source text NOT NULL,
        event_id text NOT NULL,
        type text NOT NULL,
        received_at double precision NOT NULL,
        body bytea NOT NULL,
        headers text NOT NULL,
        data_key text,
        created_at double precision,
        UNIQUE (source, event_id)
    );
    CREATE TABLE deliveries (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        event_pk bigint NOT NULL REFERENCES events (pk),
        target text NOT NULL,
        state text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at double precision NOT NULL,
        first_attempt_at double precision,
        lease_until double precision NOT NULL DEFAULT 0,
        last_status integer,
        last_error text,
        updated_at double precision NOT NULL,
        order_key text
    );
    CREATE INDEX deliveries_due ON deliveries (target, next_attempt_at) WHERE state = 'pending';
    CREATE INDEX deliveries_state ON deliveries (state, id);
    CREATE INDEX deliveries_target ON deliveries (target, id);
    CREATE INDEX deliveries_event ON deliveries (event_pk);
    CREATE INDEX deliveries_order ON deliveries (target, order_key, id)
        WHERE state = 'pending' AND order_key IS NOT NULL;
    CREATE INDEX deliveries_dead ON deliveries (target) WHERE state = 'dead';
    CREATE INDEX deliveries_delivered ON deliveries (updated_at, target)
        WHERE state = 'delivered';
    CREATE INDEX events_kind ON events (source, type, pk);
    CREATE INDEX events_received ON events (received_at);
    CREATE TABLE attempts (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id bigint NOT NULL REFERENCES deliveries (id),
        number integer NOT NULL,
        started_at double precision NOT NULL,
        duration_s double precision,
        result text NOT NULL,
        status integer,
        error text,
        response text,
        retry_after text
    );
    CREATE INDEX attempts_delivery ON attempts (delivery_id);
    CREATE TABLE targets (
        name text PRIMARY KEY,
        paused_at double precision,
        paused_reason text,
        last_success_at double precision,
        last_error_at double precision,
        last_error text
    );
    -- A target's next free send slot, shared by every replica (max_per_second).
    CREATE TABLE rate_slots (
        target text PRIMARY KEY,
        next_at double precision NOT NULL
    );
    """,
    # Which replica holds a delivery's lease, so a replica restarted after a crash releases
    # its own at once (it holds its name's advisory lock: no live process holds them).
    """
    ALTER TABLE deliveries ADD COLUMN leased_by text;
    CREATE INDEX deliveries_leased_by ON deliveries (leased_by)
        WHERE state = 'pending' AND leased_by IS NOT NULL;
    """,
)

VERSION_TABLE = "relay_schema"


async def schema_version(conn: asyncpg.Connection) -> int:
    """The schema's version in the connection's search path (0: none yet)."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE)
    if not exists:
        return 0
    version: int | None = await conn.fetchval(f"SELECT max(version) FROM {VERSION_TABLE}")
    return version or 0


def too_new_message(found: int, shown_url: str, schema: str) -> str:
    return (
        f"store {shown_url}: schema {schema} is at version {found}, newer than this relay"
        f" knows (up to {len(MIGRATIONS)}): a newer relay migrated it. Run that version of"
        " relay (or newer) against this database; an older one must not write to it"
    )


async def migrate(conn: asyncpg.Connection, schema: str, shown_url: str) -> int:
    """Bring `schema` to the newest version, one transaction per step, holding the advisory
    lock of the schema meanwhile; how many steps ran. StoreError if the schema is newer."""
    await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", f"relay:{schema}")
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        version = await schema_version(conn)
        if version > len(MIGRATIONS):
            raise StoreError(too_new_message(version, shown_url, schema))
        if version == 0:
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version integer)")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            async with conn.transaction():
                await conn.execute(script)
                await conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES ($1)", number)
        return len(MIGRATIONS) - version
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", f"relay:{schema}")
