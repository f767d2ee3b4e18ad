"""The store, both implementations: group commit, dedup, leases, replay; then each one's own
(SQLite's lock file and old files, PostgreSQL's shared leases and migrations)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.errors import StoreError
from relay.events import Event
from relay.store.base import AttemptResult
from relay.store.schema import MIGRATIONS
from relay.store.sqlite import SqliteStore
from tests.conftest import ConfigWriter, StartRelay
from tests.stores import AnyStore, make_store, open_test_store, side_sql, store_urls


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def event(event_id: str) -> Event:
    body = b'{"id": "%s"}' % event_id.encode(errors="backslashreplace")
    return Event("src", event_id, "t", 1_000.0, body, {"id": event_id}, {"h": "v"})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def store(store_kind: str, tmp_path: Path, clock: Clock) -> AsyncIterator[AnyStore]:
    async with open_test_store(store_kind, tmp_path, clock) as store:
        yield store


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "relay.db", Clock())
    await store.open()
    yield store
    await store.close()


async def test_concurrent_ingests_share_one_commit(store: AnyStore) -> None:
    before = store.commits
    results = await asyncio.gather(*(store.ingest(event(f"e{i}"), ["a", "b"]) for i in range(50)))
    assert all(not r.duplicate and r.deliveries == 2 for r in results)
    assert store.commits - before == 1
    assert await store.counts() == {"events": 50, "pending": 100, "delivered": 0, "dead": 0}


async def test_duplicates_within_one_batch_store_once(store: AnyStore) -> None:
    first, second = await asyncio.gather(
        store.ingest(event("x"), ["a"]), store.ingest(event("x"), ["a"])
    )
    assert (first.duplicate, second.duplicate) == (False, True)
    assert (await store.counts())["events"] == 1


async def test_claim_leases_and_counts_an_attempt(store: AnyStore, clock: Clock) -> None:
    await store.ingest(event("e1"), ["a"])
    (claimed,) = await store.claim("a", 10, lease_s=30)
    assert (claimed.attempt, claimed.first_attempt_at, claimed.event.id) == (1, 1_000.0, "e1")
    assert claimed.event.headers == {"h": "v"}
    assert await store.claim("a", 10, lease_s=30) == []  # leased
    assert await store.next_due_at("a") is None  # leased: the worker's poll finds it
    clock.now += 31  # the lease ran out: the attempt is presumed lost
    due = await store.next_due_at("a")
    assert due is not None
    assert due <= clock.now
    (again,) = await store.claim("a", 10, lease_s=30)
    assert (again.attempt, again.first_attempt_at) == (2, 1_000.0)
    await store.record(
        [
            AttemptResult(
                again.id, "pending", next_attempt_at=clock.now + 5, status=503, error="busy"
            )
        ]
    )
    assert await store.claim("a", 10, lease_s=30) == []
    clock.now += 5
    assert len(await store.claim("a", 10, lease_s=30)) == 1


async def test_next_due_at_is_the_first_delivery_nobody_holds_a_lease_on(
    store: AnyStore, clock: Clock
) -> None:
    """Read from the due index in order, past the leased ones: a backlog costs it nothing."""
    assert await store.next_due_at("a") is None
    await store.ingest(event("e1"), ["a"])
    clock.now += 1
    await store.ingest(event("e2"), ["a"])
    assert await store.next_due_at("a") == 1_000.0
    (first,) = await store.claim("a", 1, lease_s=30)
    assert await store.next_due_at("a") == 1_001.0
    await store.record([AttemptResult(first.id, "pending", next_attempt_at=1_500.0)])
    (second,) = await store.claim("a", 1, lease_s=30)
    assert second.event.id == "e2"  # leased now: e1's retry is next
    assert await store.next_due_at("a") == 1_500.0


async def test_a_second_daemon_on_the_same_file_is_refused(sqlite_store: SqliteStore) -> None:
    other = SqliteStore(sqlite_store.path, Clock())
    with pytest.raises(StoreError, match="is in use by another relay process"):
        await other.open()


async def test_restart_releases_leases_of_the_crashed_run(tmp_path: Path) -> None:
    clock = Clock()
    first = SqliteStore(tmp_path / "relay.db", clock)
    await first.open()
    await first.ingest(event("e1"), ["a"])
    assert len(await first.claim("a", 10, lease_s=3600)) == 1
    await first.close()  # as if the process died with the lease held
    second = SqliteStore(tmp_path / "relay.db", clock)
    await second.open()
    try:
        (claimed,) = await second.claim("a", 10, lease_s=30)
        assert claimed.attempt == 2
    finally:
        await second.close()


async def test_a_store_from_before_the_leased_index_is_migrated_with_its_leases(
    tmp_path: Path,
) -> None:
    """The due index is split in two by the last migration: a delivery leased by the previous
    run moves to the leased index, and the daemon's start releases it as before."""
    path = tmp_path / "relay.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as old:
        before = next(n for n, script in enumerate(MIGRATIONS) if "deliveries_waiting" in script)
        for number, script in enumerate(MIGRATIONS[:before], start=1):
            old.executescript(f"BEGIN; {script} PRAGMA user_version = {number}; COMMIT;")
        old.execute(
            "INSERT INTO events (pk, source, event_id, type, received_at, body, headers)"
            " VALUES (1, 'src', 'e1', 't', 1000, X'7B7D', '{}')"
        )
        old.executemany(
            "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, lease_until,"
            " updated_at) VALUES (1, ?, 'pending', 1000, ?, 1000)",
            [("a", 0.0), ("b", 5_000.0)],  # b leased for long past now
        )
    store = SqliteStore(path, Clock())
    await store.open()
    try:
        assert await store.pending_by_target() == {"a": 1, "b": 1}
        assert [d.target for d in await store.claim("a", 10, lease_s=30)] == ["a"]
        assert [d.target for d in await store.claim("b", 10, lease_s=30)] == ["b"]
    finally:
        await store.close()
    with contextlib.closing(sqlite3.connect(path)) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        names = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    assert {"deliveries_waiting", "deliveries_leased"} <= names
    assert "deliveries_due" not in names


async def test_replay_revives_only_dead_deliveries(store: AnyStore) -> None:
    await store.ingest(event("e1"), ["a", "b"])
    first, second = await store.claim("a", 1, 30) + await store.claim("b", 1, 30)
    await store.record(
        [
            AttemptResult(first.id, "dead", status=400, error="HTTP 400"),
            AttemptResult(second.id, "delivered", status=200),
        ]
    )
    assert await store.replay() == 1
    (revived,) = await store.claim("a", 1, 30)
    assert revived.attempt == 1


async def test_pending_deliveries_are_counted_by_target(store: AnyStore) -> None:
    await store.ingest(event("e1"), ["a", "b"])
    await store.ingest(event("e2"), ["a", "c"])
    (delivered,) = await store.claim("c", 1, 30)
    await store.record([AttemptResult(delivered.id, "delivered", status=200)])
    await store.claim("b", 1, 30)  # leased, and still pending
    assert await store.pending_by_target() == {"a": 2, "b": 1}


async def test_ping_answers_while_the_store_is_open_and_refuses_once_it_is_closed(
    store_kind: str, tmp_path: Path
) -> None:
    async with store_urls(store_kind, tmp_path) as url:
        store = make_store(url, Clock())
        with pytest.raises(StoreError, match=r"store \S+ is not open"):
            await store.ping()
        await store.open()
        await store.ping()
        await store.close()
        with pytest.raises(StoreError, match=r"store \S+ is not open"):
            await store.ping()


async def test_ingest_answers_503_and_stores_nothing_when_the_store_cannot_commit(
    write_config: ConfigWriter, start_relay: StartRelay, tmp_path: Path
) -> None:
    config = """\
store: "sqlite:///relay.db?busy_timeout=50ms"
sources:
  app: {path: /hooks/app}
targets:
  out: {kind: console}
routes:
  - targets: [out]
"""
    relay = await start_relay(write_config(config))
    blocker = sqlite3.connect(tmp_path / "relay.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        response = await relay.post("/hooks/app", {"id": "e1"})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert response.status == 503
    assert await response.json() == {"error": "relay cannot store the event right now; retry later"}
    assert (await relay.counts())["events"] == 0
    again = await relay.post("/hooks/app", {"id": "e1"})
    assert again.status == 202


async def test_a_file_from_before_created_at_is_migrated(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "relay.db")
    old.executescript(MIGRATIONS[0])  # the first schema, before versions were recorded
    old.close()
    store = SqliteStore(tmp_path / "relay.db", Clock())
    await store.open()
    try:
        await store.ingest(event("e1"), ["a"])
        (claimed,) = await store.claim("a", 1, 30)
        assert claimed.event.created_at is None
    finally:
        await store.close()
    check = sqlite3.connect(tmp_path / "relay.db")
    assert check.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    check.close()


# -- one bad write fails alone ----------------------------------------------------------------


async def test_a_write_that_raises_anything_fails_alone_and_every_writer_gets_an_answer(
    store: AnyStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A lone surrogate in an id makes sqlite3 raise UnicodeEncodeError, not sqlite3.Error
    (asyncpg a DataError of its own)."""
    ids = ["ok-0", "ok-1", "bad-\ud800", "ok-2", "ok-3"]
    before = store.commits
    results = await asyncio.wait_for(
        asyncio.gather(*(store.ingest(event(i), ["a"]) for i in ids), return_exceptions=True),
        timeout=5,
    )
    bad = results.pop(2)
    assert isinstance(bad, StoreError)
    assert "surrogates not allowed" in str(bad)
    assert all(not isinstance(r, BaseException) and r.deliveries == 1 for r in results), results
    assert (await store.counts())["events"] == 4
    assert store.commits - before == 4  # the shared one rolled back; each good write alone
    if isinstance(store, SqliteStore):  # a bug in a write, logged: asyncpg's is a bad value
        assert [r.message for r in caplog.records if r.levelname == "ERROR"] == [
            "a store write raised UnicodeEncodeError('utf-8', 'bad-\\ud800', 4, 5,"
            " 'surrogates not allowed')"
        ]


async def test_a_lone_write_that_raises_gets_a_store_error(store: AnyStore) -> None:
    with pytest.raises(StoreError, match="surrogates not allowed"):
        await asyncio.wait_for(store.ingest(event("\udfff"), ["a"]), timeout=5)
    assert (await store.ingest(event("after"), ["a"])).deliveries == 1


async def test_an_event_that_cannot_be_read_back_is_dead_and_does_not_stall_its_target(
    store: AnyStore,
) -> None:
    for event_id in ("before", "flipped", "after"):
        await store.ingest(event(event_id), ["a"])
    await side_sql(store, "UPDATE events SET body = ? WHERE event_id = 'flipped'", b'{"id":')
    claimed = await store.claim("a", 10, lease_s=30)
    assert [d.event.id for d in claimed] == ["before", "after"]
    (dead,) = await store.deliveries("dead")
    assert dead.event_id == "flipped"
    assert dead.last_error is not None
    assert dead.last_error.startswith("the stored event cannot be read: ")
    assert await store.claim("a", 10, lease_s=30) == []


async def test_a_file_a_newer_relay_migrated_is_refused_with_what_to_do(tmp_path: Path) -> None:
    newer = sqlite3.connect(tmp_path / "relay.db")
    newer.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    newer.close()
    store = SqliteStore(tmp_path / "relay.db", Clock())
    with pytest.raises(StoreError) as refused:
        await store.open()
    assert str(refused.value) == (
        f"store {tmp_path / 'relay.db'} is at schema version {len(MIGRATIONS) + 1}, newer than "
        f"this relay knows ({len(MIGRATIONS)}): a newer relay migrated it. Run that version, "
        "or restore the backup taken before the upgrade"
    )


async def test_delivered_since_counts_each_targets_deliveries_settled_since(
    store: AnyStore, clock: Clock
) -> None:
    """The console's deliveries per minute."""
    for event_id in ("e1", "e2", "e3"):
        await store.ingest(event(event_id), ["a", "b"])
    early = await store.claim("a", 1, lease_s=30)
    await store.record([AttemptResult(d.id, "delivered") for d in early])
    clock.now += 60
    late = await store.claim("a", 2, lease_s=30) + await store.claim("b", 1, lease_s=30)
    await store.record([AttemptResult(d.id, "delivered") for d in late])
    assert await store.delivered_since(clock.now - 30) == {"a": 2, "b": 1}
    assert await store.delivered_since(clock.now - 90) == {"a": 3, "b": 1}
    assert await store.delivered_since(clock.now + 1) == {}


def test_none_is_bound_as_null_by_the_stores_adapter() -> None:
    """The SQLite store registers an adapter for None (Python's sqlite3 otherwise raises and
    formats an exception per None on its way to binding it): the value bound stays NULL."""
    assert sqlite3.adapters[(type(None), sqlite3.PrepareProtocol)](None) is None
    with contextlib.closing(sqlite3.connect(":memory:")) as db:
        row = db.execute("SELECT ? IS NULL, typeof(?)", (None, None)).fetchone()
        db.execute("CREATE TABLE t (a, b)")
        db.executemany("INSERT INTO t VALUES (?, ?)", [(None, 1), (2, None)])
        nulls = db.execute("SELECT COUNT(*) FROM t WHERE a IS NULL OR b IS NULL").fetchone()
    assert row == (1, "null")
    assert nulls == (2,)
