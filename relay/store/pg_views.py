"""What operators read from the PostgreSQL store: deliveries by filter, newest first, one
delivery with its event and attempts, and each target's backlog.

A listing is one keyset query, `d.id < before ORDER BY d.id DESC LIMIT n`, with every filter
in its WHERE; the planner walks the index that fits (`deliveries_state`, `deliveries_target`,
the (source, event_id) key, `events_kind`, `events_received`). A type glob with wildcards
cannot be said in SQL with fnmatch's exact meaning: its literal start narrows the query
(`LIKE 'CASE\\_%'`) and each row read is checked with the same matcher as the SQLite store's,
page by page, until `limit` rows match.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from relay.store.base import (
    DeliveryDetail,
    DeliveryFilter,
    DeliveryRecord,
    DeliveryState,
    TargetStatus,
)
from relay.store.sqlite_targets import assemble_statuses
from relay.store.views import (
    ATTEMPTS_OF_DELIVERY,
    DETAIL_COLUMNS,
    assemble_detail,
    has_magic,
    type_matcher,
)

COLUMNS = (
    "d.id, e.source, e.event_id, e.type, d.target, d.state, d.attempts, d.next_attempt_at,"
    " d.last_status, d.last_error, e.received_at"
)
FROM = "deliveries d JOIN events e ON e.pk = d.event_pk"
GLOB_PAGE_ROWS = 500  # rows read per page while a wildcard type glob is checked in Python


def conditions(state: DeliveryState | None, where: DeliveryFilter) -> tuple[list[str], list[Any]]:
    """The WHERE conditions (numbered $1...) and their parameters for a filter."""
    found: list[str] = []
    params: list[Any] = []

    def add(sql: str, value: Any) -> None:
        if value is not None:
            params.append(value)
            found.append(sql.replace("?", f"${len(params)}"))

    add("d.state = ?", state)
    add("d.target = ?", where.target)
    add("e.source = ?", where.source)
    add("e.event_id = ?", where.event_id)
    add("e.received_at >= ?", where.since)
    add("e.received_at < ?", where.until)
    add("d.id = ANY(?::bigint[])", sorted(where.delivery_ids) if where.delivery_ids else None)
    if where.delivery_ids is not None and not where.delivery_ids:
        found.append("FALSE")
    glob = where.type_glob
    if glob is not None and not has_magic(glob):
        add("e.type = ?", glob)
    elif glob is not None:
        add("e.type LIKE ?", _like_prefix(glob))
    return found, params


def _like_prefix(glob: str) -> str:
    """A LIKE pattern of the glob's literal start: every type the glob matches matches it."""
    cut = min(i for i, char in enumerate(glob) if char in "*?[")
    literal = glob[:cut].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{literal}%"


async def list_deliveries(
    conn: asyncpg.Connection,
    state: DeliveryState | None,
    limit: int,
    where: DeliveryFilter,
    before_id: int | None,
) -> list[DeliveryRecord]:
    """Deliveries in `state` (any if None) that match `where`, newest first."""
    if limit <= 0:
        return []
    found, params = conditions(state, where)
    matches = type_matcher(where.type_glob) if where.type_glob else None
    page = limit if matches is None else max(limit, GLOB_PAGE_ROWS)
    records: list[DeliveryRecord] = []
    while len(records) < limit:
        keyset = [*found, f"d.id < ${len(params) + 1}"] if before_id is not None else found
        sql = (
            f"SELECT {COLUMNS} FROM {FROM}"
            + (f" WHERE {' AND '.join(keyset)}" if keyset else "")
            + f" ORDER BY d.id DESC LIMIT {page}"
        )
        rows = await conn.fetch(sql, *params, *([before_id] if before_id is not None else []))
        records += [DeliveryRecord(*row) for row in rows if matches is None or matches(row["type"])]
        if len(rows) < page:
            break
        before_id = rows[-1]["id"]
    return records[:limit]


async def delivery_detail(conn: asyncpg.Connection, delivery_id: int) -> DeliveryDetail | None:
    row = await conn.fetchrow(
        f"SELECT {COLUMNS}, {DETAIL_COLUMNS} FROM {FROM} WHERE d.id = $1", delivery_id
    )
    if row is None:
        return None
    attempts = await conn.fetch(ATTEMPTS_OF_DELIVERY, delivery_id)
    return assemble_detail(tuple(row), [tuple(attempt) for attempt in attempts])


async def target_statuses(conn: asyncpg.Connection) -> list[TargetStatus]:
    """Every target that holds deliveries or state, by name, from the partial indexes."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):  # one snapshot
        pending = {
            row[0]: (row[1], row[2])
            for row in await conn.fetch(
                "SELECT target, count(*), min(id) FROM deliveries WHERE state = 'pending'"
                " GROUP BY target"
            )
        }
        dead = {
            row[0]: row[1]
            for row in await conn.fetch(
                "SELECT target, count(*) FROM deliveries WHERE state = 'dead' GROUP BY target"
            )
        }
        stored = {
            row[0]: tuple(row[1:])
            for row in await conn.fetch(
                "SELECT name, paused_at, paused_reason, last_success_at, last_error_at,"
                " last_error FROM targets"
            )
        }
        received = await _received_at_of(conn, [oldest for _, oldest in pending.values()])
    return assemble_statuses(pending, dead, stored, received)


async def _received_at_of(
    conn: asyncpg.Connection, delivery_ids: Sequence[int]
) -> dict[int, float]:
    if not delivery_ids:
        return {}
    rows = await conn.fetch(
        "SELECT d.id, e.received_at FROM deliveries d JOIN events e ON e.pk = d.event_pk"
        " WHERE d.id = ANY($1::bigint[])",
        list(delivery_ids),
    )
    return {row[0]: row[1] for row in rows}
