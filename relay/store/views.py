"""What operators read from the SQLite store: deliveries by filter, newest first, and one
delivery with its event and attempts.

Each filter is answered by walking one index newest first and stopping after `limit` rows,
so a listing reads about as many rows as it shows however large the store is:

- a state: `deliveries_state (state, id)`; a target: `deliveries_target (target, id)`;
  neither: the deliveries table itself, from its newest row.
- an event id: that event under each source (the `(source, event_id)` key).
- a source or a type glob: the store's distinct (source, type) pairs are read from
  `events_kind` by a loose index scan (a seek or two per pair), the matching ones kept, and each
  pair's events walked newest first on the same index, whose entries for one pair are in pk
  order; the newest rows of all the walks are merged. When more than MAX_KINDS pairs match
  (or MAX_KINDS_SCANNED are read: a sender may make up a type per event), the walk goes
  over every delivery newest first instead, checking each.
- since and until: the first event received at or after each is found by bisecting the
  events' pks (events are numbered in the order they arrived, which retention relies on too),
  and they bound the walk at both ends.

A second filter is checked on the rows the first one's walk reads. An event's deliveries are
inserted with it, so delivery ids and event pks grow together: "newest first" is one order
whichever index a walk takes.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from relay.store.base import (
    AttemptRecord,
    DeliveryDetail,
    DeliveryFilter,
    DeliveryRecord,
    DeliveryState,
    StoredEvent,
)

MAX_KINDS = 64  # (source, type) pairs walked one by one; past that, one walk checks each row
MAX_KINDS_SCANNED = 4096  # distinct pairs read while looking for those that match

_COLUMNS = (
    "d.id, e.source, e.event_id, e.type, d.target, d.state, d.attempts, d.next_attempt_at,"
    " d.last_status, d.last_error, e.received_at"
)
_BY_DELIVERY = "deliveries d JOIN events e ON e.pk = d.event_pk"
_BY_EVENT = "events e CROSS JOIN deliveries d ON d.event_pk = e.pk"  # events first
TYPE_GLOB_FUNCTION = "relay_type_glob"


class Query:
    """A SELECT over deliveries and their events: conditions with their parameters."""

    def __init__(self, state: DeliveryState | None, target: str | None) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []
        self.where("d.state = ?", state)
        self.where("d.target = ?", target)

    def where(self, condition: str, *params: Any) -> Query:
        """Add `condition` unless its one parameter is None."""
        if len(params) == 1 and params[0] is None:
            return self
        self.conditions.append(condition)
        self.params.extend(params)
        return self

    def copy(self) -> Query:
        query = Query(None, None)
        query.conditions, query.params = list(self.conditions), list(self.params)
        return query

    def rows(self, db: sqlite3.Connection, tables: str, order: str, limit: int) -> list[Any]:
        where = f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""
        sql = f"SELECT {_COLUMNS} FROM {tables}{where} ORDER BY {order} LIMIT ?"
        return db.execute(sql, [*self.params, limit]).fetchall()


def list_deliveries(
    db: sqlite3.Connection,
    state: DeliveryState | None,
    limit: int,
    where: DeliveryFilter,
    before_id: int | None,
) -> list[DeliveryRecord]:
    """Deliveries in `state` (any if None) that match `where`, newest first."""
    if limit <= 0:
        return []
    db.create_function(TYPE_GLOB_FUNCTION, 2, _type_glob_matches, deterministic=True)
    since_pk = None if where.since is None else first_pk_since(db, where.since)
    if where.since is not None and since_pk is None:
        return []
    until_pk = None if where.until is None else first_pk_since(db, where.until)
    query = Query(state, where.target).where("d.id < ?", before_id).where("e.pk < ?", until_pk)
    rows = _selective_rows(db, query, where, since_pk, before_id, limit)
    if rows is None:
        rows = _walk_deliveries(db, query, where, (since_pk, until_pk), limit)
    return [DeliveryRecord(*row) for row in rows]


def _selective_rows(
    db: sqlite3.Connection,
    query: Query,
    where: DeliveryFilter,
    since_pk: int | None,
    before_id: int | None,
    limit: int,
) -> list[Any] | None:
    """Rows found from the ids, the event id or the (source, type) pairs the filter names;
    None when it names none of those (or too many pairs)."""
    if where.delivery_ids is not None:
        ids = sorted(where.delivery_ids)
        query.where(f"d.id IN ({_marks(ids)})", *ids).where("e.event_id = ?", where.event_id)
        return _checking_events(query, where.source, where.type_glob, since_pk).rows(
            db, _BY_DELIVERY, "d.id DESC", limit
        )
    if where.event_id is not None:
        sources = [where.source] if where.source is not None else distinct_sources(db)
        query.where(f"e.source IN ({_marks(sources)})", *sources)
        query.where("e.event_id = ?", where.event_id)
        return _checking_events(query, None, where.type_glob, since_pk).rows(
            db, _BY_DELIVERY, "d.id DESC", limit
        )
    if where.source is None and where.type_glob is None:
        return None
    kinds = matching_kinds(db, where.source, where.type_glob)
    if kinds is None:
        return None
    return _walk_kinds(db, query, kinds, since_pk, before_id, limit)


def _walk_kinds(
    db: sqlite3.Connection,
    query: Query,
    kinds: Sequence[tuple[str, str]],
    since_pk: int | None,
    before_id: int | None,
    limit: int,
) -> list[Any]:
    """The newest `limit` deliveries of events of these (source, type) pairs."""
    max_pk = None
    if before_id is not None:
        max_pk = _scalar(
            db, "SELECT event_pk FROM deliveries WHERE id < ? ORDER BY id DESC LIMIT 1", before_id
        )
        if max_pk is None:
            return []
    query.where("e.pk >= ?", since_pk).where("e.pk <= ?", max_pk)
    rows: list[Any] = []
    for source, event_type in kinds:
        kind = query.copy().where("e.source = ?", source).where("e.type = ?", event_type)
        rows += kind.rows(db, _BY_EVENT, "e.pk DESC, d.id DESC", limit)
    rows.sort(key=lambda row: row[0], reverse=True)
    return rows[:limit]


def _walk_deliveries(
    db: sqlite3.Connection,
    query: Query,
    where: DeliveryFilter,
    pks: tuple[int | None, int | None],
    limit: int,
) -> list[Any]:
    """Every delivery newest first (by state or target if given), checking the rest; the
    walk starts at the events before `until` and stops at those since `since` (`pks`)."""
    since_pk, until_pk = pks
    if since_pk is not None:
        since_id = _first_delivery_from(db, since_pk)
        if since_id is None:
            return []
        query.where("d.id >= ?", since_id)
    if until_pk is not None:
        query.where("d.id < ?", _first_delivery_from(db, until_pk))
    query = _checking_events(query, where.source, where.type_glob, None)
    return query.rows(db, _BY_DELIVERY, "d.id DESC", limit)


def _first_delivery_from(db: sqlite3.Connection, event_pk: int) -> int | None:
    """The first delivery of an event at or after `event_pk` (ids grow with event pks)."""
    first: int | None = _scalar(
        db, "SELECT id FROM deliveries WHERE event_pk >= ? ORDER BY event_pk LIMIT 1", event_pk
    )
    return first


def _checking_events(
    query: Query, source: str | None, type_glob: str | None, since_pk: int | None
) -> Query:
    """The event-side filters, checked on each row read."""
    query.where("e.source = ?", source).where("e.pk >= ?", since_pk)
    return query.where(f"{TYPE_GLOB_FUNCTION}(?, e.type)", type_glob)


def first_pk_since(db: sqlite3.Connection, since: float) -> int | None:
    """The smallest pk from which on every event was received at or after `since` (events
    arrive in pk order); None if none was."""
    # Apart: SQLite finds MIN or MAX alone at one end of the table, but not both at once.
    lowest = _scalar(db, "SELECT MIN(pk) FROM events")
    highest = _scalar(db, "SELECT MAX(pk) FROM events")
    if highest is None or _received_from(db, highest) < since:
        return None
    while lowest < highest:
        middle = (lowest + highest) // 2
        if _received_from(db, middle) >= since:
            highest = middle
        else:
            lowest = middle + 1
    return int(lowest)


def _received_from(db: sqlite3.Connection, pk: int) -> float:
    """When the first event at or after `pk` arrived."""
    received_at: float = _scalar(
        db, "SELECT received_at FROM events WHERE pk >= ? ORDER BY pk LIMIT 1", pk
    )
    return received_at


def distinct_sources(db: sqlite3.Connection) -> list[str]:
    """Every source that has events, one index seek each."""
    sources: list[str] = []
    source = _scalar(db, "SELECT source FROM events ORDER BY source LIMIT 1")
    while source is not None:
        sources.append(source)
        source = _scalar(
            db, "SELECT source FROM events WHERE source > ? ORDER BY source LIMIT 1", source
        )
    return sources


def matching_kinds(
    db: sqlite3.Connection, source: str | None, type_glob: str | None
) -> list[tuple[str, str]] | None:
    """The (source, type) pairs of stored events that match; None if there are too many to
    walk one by one."""
    if type_glob is not None and not has_magic(type_glob):
        sources = [source] if source is not None else distinct_sources(db)
        return [(name, type_glob) for name in sources]
    matches = type_matcher(type_glob or "*")
    found: list[tuple[str, str]] = []
    kind = _first_kind(db, source)
    for _ in range(MAX_KINDS_SCANNED):
        if kind is None:
            return found
        if matches(kind[1]):
            found.append(kind)
            if len(found) > MAX_KINDS:
                return None
        kind = _next_kind(db, kind, source)
    return None


def _first_kind(db: sqlite3.Connection, source: str | None) -> tuple[str, str] | None:
    if source is None:
        row = db.execute("SELECT source, type FROM events ORDER BY source, type LIMIT 1")
    else:
        row = db.execute(
            "SELECT source, type FROM events WHERE source = ? ORDER BY type LIMIT 1", (source,)
        )
    found: tuple[str, str] | None = row.fetchone()
    return found


def _next_kind(
    db: sqlite3.Connection, kind: tuple[str, str], source: str | None
) -> tuple[str, str] | None:
    """The pair after `kind`: the source's next type, else (unless `source` holds it to one)
    the next source's first. Two seeks, as SQLite seeks a row value `(source, type) > (?, ?)`
    by its source alone and would read every event of the last pair's type."""
    found: tuple[str, str] | None = db.execute(
        "SELECT source, type FROM events WHERE source = ? AND type > ? ORDER BY type LIMIT 1",
        kind,
    ).fetchone()
    if found is None and source is None:
        found = db.execute(
            "SELECT source, type FROM events WHERE source > ? ORDER BY source, type LIMIT 1",
            (kind[0],),
        ).fetchone()
    return found


def delivery_detail(db: sqlite3.Connection, delivery_id: int) -> DeliveryDetail | None:
    row = db.execute(
        f"SELECT {_COLUMNS}, {DETAIL_COLUMNS} FROM {_BY_DELIVERY} WHERE d.id = ?", (delivery_id,)
    ).fetchone()
    if row is None:
        return None
    attempts = db.execute(ATTEMPTS_OF_DELIVERY.replace("$1", "?"), (delivery_id,)).fetchall()
    return assemble_detail(row, attempts)


# What a delivery's detail reads beside its listed columns, and its attempts, oldest first (a
# PostgreSQL parameter; SQLite's `?` is put in its place): the same in both stores.
DETAIL_COLUMNS = "e.created_at, e.headers, e.body, e.data_key"
ATTEMPTS_OF_DELIVERY = (
    "SELECT number, started_at, duration_s, result, status, error, response, retry_after"
    " FROM attempts WHERE delivery_id = $1 ORDER BY id"
)


def assemble_detail(row: Sequence[Any], attempts: Iterable[Sequence[Any]]) -> DeliveryDetail:
    """A delivery's detail from its row (the listed columns, then DETAIL_COLUMNS) and the rows
    of ATTEMPTS_OF_DELIVERY."""
    *listed, created_at, headers, body, data_key = tuple(row)
    record = DeliveryRecord(*listed)
    event = StoredEvent(
        record.source,
        record.event_id,
        record.event_type,
        record.received_at,
        created_at,
        stored_headers(headers),
        bytes(body),
        data_key,
    )
    return DeliveryDetail(record, event, [AttemptRecord(*attempt) for attempt in attempts])


def stored_headers(text: str) -> dict[str, str]:
    """The stored headers; whatever cannot be read as such is shown as one value."""
    try:
        headers = json.loads(text)
    except ValueError:
        return {"(unreadable)": text}
    if not isinstance(headers, dict):
        return {"(unreadable)": text}
    return {str(name): str(value) for name, value in headers.items()}


@functools.lru_cache(maxsize=64)
def type_matcher(glob: str) -> Callable[[str], Any]:
    """A route's kind of type glob: fnmatch, case-sensitive, the whole type."""
    return re.compile(fnmatch.translate(glob)).fullmatch


def _type_glob_matches(glob: str, event_type: str) -> bool:
    return type_matcher(glob)(event_type) is not None


def has_magic(glob: str) -> bool:
    return any(char in glob for char in "*?[")


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _scalar(db: sqlite3.Connection, sql: str, *params: Any) -> Any:
    row = db.execute(sql, params).fetchone()
    return None if row is None else row[0]
