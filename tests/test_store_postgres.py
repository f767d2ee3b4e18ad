"""What only a store shared by replicas does: two stores on one PostgreSQL schema stand for two
replicas (leases, SKIP LOCKED claims, dedup, NOTIFY, one send rate, migrations at once)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.cli import main
from relay.errors import StoreError
from relay.events import Event
from relay.store import pg_schema
from relay.store.base import AttemptResult
from relay.store.pg_ratelimit import SharedRateLimiter
from relay.store.pg_schema import MIGRATIONS, VERSION_TABLE
from relay.store.postgres import CLAIM, RECORD, PostgresStore
from relay.store.url import PostgresUrl, parse_store_url
from tests.clock import FakeClock
from tests.pg import Postgres, postgres, with_query
from tests.receiver import wait_until


def event(event_id: str) -> Event:
    return Event("src", event_id, "t", 1_000.0, b"{}", {}, {})


@pytest.fixture
async def pg() -> AsyncIterator[Postgres]:
    async with postgres() as pg:
        yield pg


@pytest.fixture
async def url(pg: Postgres) -> PostgresUrl:
    parsed = parse_store_url(with_query(pg.url, schema=await pg.new_schema()))
    assert isinstance(parsed, PostgresUrl)
    return parsed


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def replicas(url: PostgresUrl, clock: FakeClock) -> AsyncIterator[list[PostgresStore]]:
    """Two stores on one schema, opened at the same moment on an empty schema."""
    stores = [PostgresStore(url, clock), PostgresStore(url, clock)]
    await asyncio.gather(*(store.open() for store in stores))
    yield stores
    for store in stores:
        await store.close()


async def test_replicas_opened_at_once_on_an_empty_schema_migrate_it_once(
    replicas: list[PostgresStore], pg: Postgres, url: PostgresUrl
) -> None:
    versions = await pg.fetch(f'SELECT version FROM "{url.schema}".{VERSION_TABLE}')
    assert versions == [(number,) for number in range(1, len(MIGRATIONS) + 1)]
    assert await replicas[0].migrate() == 0  # `relay migrate` on an up-to-date schema
    await replicas[0].ingest(event("e1"), ["a"])
    assert (await replicas[1].counts())["events"] == 1


async def test_a_schema_newer_than_this_relay_is_refused_with_what_to_do(
    replicas: list[PostgresStore], pg: Postgres, url: PostgresUrl, clock: FakeClock
) -> None:
    newer = len(MIGRATIONS) + 1
    await pg.execute(f'INSERT INTO "{url.schema}".{VERSION_TABLE} VALUES ({newer})')
    older_binary = PostgresStore(url, clock)
    with pytest.raises(StoreError) as refused:
        await older_binary.open()
    message = str(refused.value)
    assert f"is at version {newer}, newer than this relay knows (up to {len(MIGRATIONS)})" in (
        message
    )
    assert "Run that version of relay (or newer)" in message


async def test_a_schema_written_by_an_older_relay_is_migrated_with_its_rows(
    url: PostgresUrl, pg: Postgres, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as older:
        older.setattr(pg_schema, "MIGRATIONS", MIGRATIONS[:1])
        first_release = PostgresStore(url, clock)
        await first_release.open()
        await first_release.ingest(event("e1"), ["a"])
        await first_release.close()
    upgraded = PostgresStore(url, clock, replica="host-a:8080")
    await upgraded.open()
    try:
        versions = await pg.fetch(f'SELECT version FROM "{url.schema}".{VERSION_TABLE}')
        assert versions == [(number,) for number in range(1, len(MIGRATIONS) + 1)]
        (delivery,) = await upgraded.claim("a", 10, lease_s=30)
        assert delivery.event.id == "e1"
    finally:
        await upgraded.close()


async def test_the_workers_pool_commits_without_waiting_and_plans_once(
    replicas: list[PostgresStore],
) -> None:
    """Ingest's connections wait for the disk and plan as PostgreSQL chooses; the worker's
    (claims, results, rate slots) do neither: see relay/store/postgres.py."""
    store = replicas[0]
    settings = (
        "SELECT current_setting('synchronous_commit') || ' ' || current_setting('plan_cache_mode')"
    )
    async with store._acquire() as conn:
        assert await conn.fetchval(settings) == "on auto"
    async with store._acquire_relaxed() as conn:
        assert await conn.fetchval(settings) == "off force_generic_plan"


async def test_the_workers_plans_read_deliveries_by_index_even_made_on_a_small_table(
    replicas: list[PostgresStore],
) -> None:
    """A plan cached while the table is small must not scan it whole once it has grown: the
    results statement did, until autovacuum analysed the table (docs/benchmarks.md)."""
    store = replicas[0]
    for i in range(20):
        await store.ingest(event(f"e{i}"), ["a"])
    record_args = "'{1}', '{delivered}', '{NULL}', '{200}', '{NULL}', 1, '{1}', '{1}', '{0.1}',"
    record_args += " '{delivered}', '{NULL}', '{NULL}'"
    statements = [
        (RECORD, record_args),
        (CLAIM, "1, 31, 'a', 8, 'host-a:8080'"),
    ]
    async with store._acquire_relaxed() as conn:
        for number, (statement, args) in enumerate(statements):
            async with conn.transaction():
                await conn.execute(f"PREPARE plan_{number} AS {statement}")
                plan = await conn.fetch(f"EXPLAIN EXECUTE plan_{number}({args})")
                await conn.execute(f"DEALLOCATE plan_{number}")
            text = "\n".join(row[0] for row in plan)
            assert "Seq Scan on deliveries" not in text, text
            assert "Index Scan using deliveries_" in text, text


async def test_a_password_never_appears_in_a_connection_error(clock: FakeClock) -> None:
    parsed = parse_store_url("postgresql://relay:hunter2@127.0.0.1:1/relay")
    assert isinstance(parsed, PostgresUrl)
    store = PostgresStore(parsed, clock, connect_timeout_s=2)
    with pytest.raises(StoreError) as refused:
        await store.open()
    assert "hunter2" not in str(refused.value)
    assert "postgresql://relay:***@127.0.0.1:1/relay" in str(refused.value)


async def test_an_event_posted_to_both_replicas_is_stored_once(
    replicas: list[PostgresStore],
) -> None:
    results = await asyncio.gather(
        *(store.ingest(event(f"e{i}"), ["a"]) for i in range(20) for store in replicas)
    )
    assert sorted(r.duplicate for r in results) == [False] * 20 + [True] * 20
    assert await replicas[0].counts() == {"events": 20, "pending": 20, "delivered": 0, "dead": 0}


async def test_replicas_claiming_at_once_never_claim_the_same_delivery(
    replicas: list[PostgresStore],
) -> None:
    for i in range(60):
        await replicas[0].ingest(event(f"e{i}"), ["a"])
    claims = await asyncio.gather(
        *(store.claim("a", 7, lease_s=30) for _ in range(6) for store in replicas)
    )
    ids = [d.id for claim in claims for d in claim]
    assert len(ids) == len(set(ids)) == 60


async def test_a_lease_outlives_a_restart_and_then_any_replica_claims_the_delivery(
    replicas: list[PostgresStore], url: PostgresUrl, clock: FakeClock
) -> None:
    first, second = replicas
    await first.ingest(event("e1"), ["a"])
    assert len(await first.claim("a", 10, lease_s=30)) == 1
    await first.close()  # as if the replica died holding the lease
    restarted = PostgresStore(url, clock)
    await restarted.open()  # does not release it: another replica may be sending it
    try:
        assert await restarted.claim("a", 10, lease_s=30) == []
        assert await second.claim("a", 10, lease_s=30) == []
        clock.advance(31)
        (again,) = await second.claim("a", 10, lease_s=30)
        assert again.attempt == 2
        await second.record([AttemptResult(again.id, "delivered", status=200, attempt=2)])
        assert await restarted.claim("a", 10, lease_s=30) == []
    finally:
        await restarted.close()


async def test_a_replica_restarted_under_its_name_releases_its_own_leases_at_once(
    url: PostgresUrl, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "relay.store")
    first = PostgresStore(url, clock, replica="host-a:8080")
    other = PostgresStore(url, clock, replica="host-b:8080")
    await asyncio.gather(first.open(), other.open())
    opened = [first, other]
    try:
        for event_id in ("e1", "e2", "e3"):
            await first.ingest(event(event_id), ["a"])
        (mine,) = await first.claim("a", 1, lease_s=30)
        (theirs,) = await other.claim("a", 1, lease_s=30)
        twin = PostgresStore(url, clock, replica="host-a:8080")  # a live namesake
        opened.append(twin)
        await twin.open()  # releases nothing of the first's
        assert "replica host-a:8080: another live relay uses this name" in caplog.text
        (twins,) = await twin.claim("a", 10, lease_s=30)
        await first.close()  # as if it died holding its lease; the twin lives on
        restarted = PostgresStore(url, clock, replica="host-a:8080")
        opened.append(restarted)
        await restarted.open()
        assert "replica host-a:8080: released 1 leases its previous run held" in caplog.text
        (again,) = await restarted.claim("a", 10, lease_s=30)  # at once, not in 30 s
        assert (again.event.id, again.attempt) == (mine.event.id, 2)
        # The other replica's lease holds, and so does the live namesake's.
        assert len({mine.event.id, theirs.event.id, twins.event.id}) == 3
        assert await restarted.claim("a", 10, lease_s=30) == []
    finally:
        for store in opened:
            await store.close()


async def test_a_pause_made_on_one_replica_holds_on_the_other(
    replicas: list[PostgresStore],
) -> None:
    first, second = replicas
    await first.ingest(event("e1"), ["a"])
    await first.pause_target("a", "maintenance")
    assert await second.claim("a", 10, 30) == []
    assert (await second.target_pause("a")) is not None
    await second.resume_target("a")
    assert len(await first.claim("a", 10, 30)) == 1


async def test_an_ingest_on_one_replica_wakes_the_other_for_its_targets(
    replicas: list[PostgresStore],
) -> None:
    woken: list[str] = []
    replicas[1].on_new_deliveries(woken.extend)
    await replicas[0].ingest(event("e1"), ["a", "b"])
    await wait_until(lambda: sorted(woken) == ["a", "b"])
    await replicas[0].ingest(event("e1"), ["a", "b"])  # a duplicate stores nothing: no wake
    await replicas[0].ingest(event("e2"), ["c"])
    await wait_until(lambda: "c" in woken)
    assert sorted(woken) == ["a", "b", "c"]


def shared(store: PostgresStore, target: str) -> SharedRateLimiter:
    limiter = store.rate_limiter(target, 5.0)
    assert isinstance(limiter, SharedRateLimiter)
    return limiter


async def test_one_send_rate_for_the_target_across_replicas(
    replicas: list[PostgresStore], clock: FakeClock
) -> None:
    """Slots taken from either replica follow each other at the interval; a slot past is not
    saved up (a quiet spell gives no burst)."""
    limiters = [shared(store, "slack") for store in replicas]
    waits = []
    for i in range(6):
        waits.append(await limiters[i % 2].reserve())
    assert waits == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    clock.advance(10)
    assert await limiters[1].reserve() == 0.0
    assert await limiters[0].reserve() == pytest.approx(0.2)
    assert await shared(replicas[0], "other").reserve() == 0.0


async def test_the_store_lives_in_its_schema_alone(
    replicas: list[PostgresStore], pg: Postgres, url: PostgresUrl, tmp_path: Path
) -> None:
    tables = await pg.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = $1"
        " ORDER BY table_name",
        url.schema,
    )
    assert [t for (t,) in tables] == [
        "attempts",
        "deliveries",
        "events",
        "rate_slots",
        "relay_schema",
        "targets",
    ]


async def test_relay_migrate_brings_the_schema_up_to_date_and_says_so(
    pg: Postgres, url: PostgresUrl, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text(f'store: "{url}"\n', encoding="utf-8")
    assert await asyncio.to_thread(main, ["migrate", "-c", str(config)]) == 0
    assert "the store's schema is up to date" in capsys.readouterr().out
    versions = await pg.fetch(f'SELECT max(version) FROM "{url.schema}".{VERSION_TABLE}')
    assert versions == [(len(MIGRATIONS),)]
    assert await asyncio.to_thread(main, ["migrate", "-c", str(config)]) == 0  # nothing to do


async def test_the_operator_commands_work_on_the_shared_store(
    replicas: list[PostgresStore],
    url: PostgresUrl,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`relay targets pause` from an operator's machine reaches every replica; `relay
    deliveries` lists what they stored."""
    config = tmp_path / "relay.yaml"
    config.write_text(
        f'store: "{url}"\ntargets:\n  a: {{kind: console}}\nroutes:\n  - targets: [a]\n',
        encoding="utf-8",
    )
    await replicas[0].ingest(event("e1"), ["a"])

    def run(*argv: str) -> str:
        assert main([*argv, "-c", str(config)]) == 0
        return capsys.readouterr().out

    assert "a is paused" in await asyncio.to_thread(run, "targets", "pause", "a")
    assert await replicas[1].claim("a", 10, 30) == []
    printed = await asyncio.to_thread(run, "deliveries", "--json")
    listed = [json.loads(line) for line in printed.splitlines()]
    assert [(d["event_id"], d["state"]) for d in listed] == [("e1", "pending")]
