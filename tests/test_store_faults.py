"""The SQLite store under faults: its file deleted, replaced or corrupt while relay runs or
before it starts. A failed store refuses every read and write, says why once, and stays failed.

tests/test_recovery.py runs the same faults against a real `relay run` process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.errors import StoreError
from relay.store.base import RetentionPolicy
from relay.store.groupcommit import GroupCommit
from relay.store.health import StoreHealth
from relay.store.schema import migrate
from relay.store.sqlite import SqliteStore
from tests.conftest import ConfigWriter, StartRelay
from tests.test_store import Clock, event

FAIL_WITHIN_S = 5.0


@pytest.fixture
async def watched(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "relay.db", Clock(), file_check_interval_s=0.05)
    await store.open()
    yield store
    await store.close()


def error_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def assert_refuses_everything(store: SqliteStore) -> None:
    refused = "store relay.db can no longer be used"
    with pytest.raises(StoreError, match=refused):
        await store.ingest(event("refused"), ["a"])
    with pytest.raises(StoreError, match=refused):
        await store.claim("a", 10, lease_s=30)
    with pytest.raises(StoreError, match=refused):
        await store.counts()


def lost_copies(directory: Path) -> list[Path]:
    return list(directory.glob("relay.db.lost-*"))


def side_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("relay.db-*"))


def read_ids(path: Path) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {row[0] for row in db.execute("SELECT event_id FROM events")}


# -- the file deleted or replaced ---------------------------------------------------------------


async def test_a_deleted_file_fails_the_store_and_what_it_held_is_copied_beside_it(
    watched: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await watched.ingest(event("e1"), ["a"])
    watched.path.unlink()
    await watched.ingest(event("e2"), ["a"])  # acknowledged into the deleted file
    failure = await asyncio.wait_for(watched.wait_failed(), FAIL_WITHIN_S)

    assert str(failure) == ("store relay.db can no longer be used (see the error logged before)")
    await assert_refuses_everything(watched)
    await watched.close()
    (copy,) = lost_copies(tmp_path)
    assert read_ids(copy) == {"e1", "e2"}
    (failure_line,) = error_lines(caplog)
    assert failure_line == (
        f"store {watched.path} was deleted while relay was running: relay no longer"
        f" acknowledges events and stops. relay copies what the lost file holds to {copy}:"
        f" move that copy to {watched.path} before starting relay again to keep the events"
        f" it holds. Started again, relay uses whatever file is at {watched.path} then"
        " (a new, empty one if there is none)"
    )
    assert not watched.path.exists()
    assert side_files(tmp_path) == []  # the deleted file's WAL went with it


async def test_a_file_replaced_by_another_fails_the_store(
    watched: SqliteStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await watched.ingest(event("e1"), ["a"])
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as db, db:
        db.execute("CREATE TABLE mine (x)")
        db.execute("INSERT INTO mine VALUES ('kept')")
    os.replace(other, watched.path)
    await asyncio.wait_for(watched.wait_failed(), FAIL_WITHIN_S)
    await assert_refuses_everything(watched)
    await watched.close()
    (failure_line,) = error_lines(caplog)
    assert "was replaced by another file while relay was running" in failure_line
    (copy,) = lost_copies(tmp_path)
    assert read_ids(copy) == {"e1"}
    # relay's WAL is not left beside the new file, to be replayed into it at the next open
    assert side_files(tmp_path) == []
    with contextlib.closing(sqlite3.connect(watched.path)) as db:
        assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)]
        assert db.execute("SELECT x FROM mine").fetchall() == [("kept",)]


async def test_ingest_answers_503_once_the_store_file_is_gone(
    write_config: ConfigWriter, start_relay: StartRelay, tmp_path: Path
) -> None:
    config = """\
store: "sqlite:///relay.db"
sources:
  app: {path: /hooks/app}
"""
    relay = await start_relay(write_config(config))
    assert (await relay.post("/hooks/app", {"id": "before"})).status == 202
    (tmp_path / "relay.db").unlink()
    await asyncio.wait_for(relay.store.wait_failed(), FAIL_WITHIN_S)
    for event_id in ("after", "before"):
        response = await relay.post("/hooks/app", {"id": event_id})
        assert response.status == 503
        assert await response.json() == {
            "error": "relay cannot store the event right now; retry later"
        }


# -- the file corrupt ---------------------------------------------------------------------------


def write_store(path: Path, events: int) -> None:
    """A real store file with `events` events of ~1 KB, each with a delivered delivery."""
    with sqlite3.connect(path, isolation_level=None) as db:
        migrate(db)
        db.execute("BEGIN")
        for i in range(events):
            pk = db.execute(
                "INSERT INTO events (source, event_id, type, received_at, body, headers)"
                " VALUES ('src', ?, 't', 1000, ?, '{}')",
                (f"old-{i}", b'{"pad": "%s"}' % (b"x" * 1000)),
            ).lastrowid
            db.execute(
                "INSERT INTO deliveries (event_pk, target, state, next_attempt_at, updated_at)"
                " VALUES (?, 'a', 'delivered', 1000, 1000)",
                (pk,),
            )
        db.execute("COMMIT")
    db.close()


def write_garbage_in_the_middle(path: Path, size: int = 64 * 1024) -> None:
    with path.open("r+b") as file:
        file.seek(path.stat().st_size // 2)
        file.write(os.urandom(size))


CORRUPT = "is corrupt"


async def test_a_corrupt_file_is_refused_at_open_naming_the_file_and_the_way_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relay.db"
    write_store(path, 5_000)
    write_garbage_in_the_middle(path)
    store = SqliteStore(path, Clock())
    with pytest.raises(StoreError) as refused:
        await store.open()
    message = str(refused.value)
    assert message.startswith(f"store {path} is corrupt (")
    assert message.endswith(
        f"With relay stopped, keep a copy of the file, then recover what it holds with `sqlite3"
        f' {path} ".recover" | sqlite3 {path}.recovered` and move the result to {path}, or'
        " restore a backup"
    )
    with pytest.raises(StoreError, match=CORRUPT):  # the lock was let go: refused the same way
        await SqliteStore(path, Clock()).open()


async def test_a_file_that_is_not_a_database_is_refused_at_open(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    path.write_bytes(b"not a database " * 1000)
    with pytest.raises(StoreError, match=rf"store {path} is corrupt \(file is not a database\)"):
        await SqliteStore(path, Clock()).open()


async def test_corruption_met_while_running_fails_the_store_once_and_for_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The file is checked at open; a disk that goes bad later is met by the next statement
    that reads a bad page."""
    path = tmp_path / "relay.db"
    write_store(path, 20_000)  # ~20 MB: far more pages than the connection caches
    store = SqliteStore(path, Clock())
    await store.open()
    try:
        write_garbage_in_the_middle(path)
        with pytest.raises(StoreError, match="can no longer be used"):
            await store.deliveries(limit=100_000)  # reads every event's row
        await asyncio.wait_for(store.wait_failed(), FAIL_WITHIN_S)
        await assert_refuses_everything(store)
        with pytest.raises(StoreError, match="can no longer be used"):
            await store.purge(RetentionPolicy(delivered_s=1.0, dead_s=1.0))
    finally:
        await store.close()
    (failure_line,) = error_lines(caplog)
    assert failure_line.startswith(f"store {path} is corrupt (database disk image is malformed)")


async def test_corruption_in_a_group_fails_the_group_at_once_without_retrying_each_write(
    tmp_path: Path,
) -> None:
    not_a_database = tmp_path / "garbage.db"
    not_a_database.write_bytes(b"garbage " * 512)
    with pytest.raises(sqlite3.DatabaseError) as raised:
        sqlite3.connect(not_a_database).execute("SELECT 1 FROM sqlite_master")
    health = StoreHealth(tmp_path / "relay.db")
    db = sqlite3.connect(":memory:", isolation_level=None)
    writes = GroupCommit(lambda: db, health)
    ran: list[str] = []

    def good(cur: sqlite3.Cursor) -> None:
        ran.append("good")

    def corrupt(cur: sqlite3.Cursor) -> None:
        ran.append("corrupt")
        raise raised.value

    futures = [writes.submit(good), writes.submit(corrupt), writes.submit(good)]
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 5)
    assert all(isinstance(r, StoreError) for r in results), results
    assert ran == ["good", "corrupt"]  # the group's one try; no write tried again alone
    assert health.failed
    with pytest.raises(StoreError, match="can no longer be used"):
        writes.submit(good)
    db.close()
