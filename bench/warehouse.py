"""Rows per second into PostgreSQL through relay's warehouse target, against a plain asyncpg
COPY loop writing the same rows in the same batch size, in one run (about 30 s).

    .venv/bin/python bench/warehouse.py [--rows N] [--batch B] [--rounds R] [--e2e-events E]

The same N rows (Flagright-shaped events, 8 columns of all six types) are written each way into
a fresh table with the same DDL, `UNIQUE (event_id)` included (relay needs the key; the
baseline pays for the same index):

- copy:   the baseline. One asyncpg connection, `copy_records_to_table(table, records=batch)`
          for each batch of B rows, one after another. Rows are ready-made Python values.
- writer: relay's PostgresWriter.write() for the same ready-made batches, all handed over at
          once as the Batcher does when they are full: per batch one statement, INSERT ...
          SELECT ... FROM unnest(one array per column) ON CONFLICT (key) DO NOTHING, relay's
          default of two batches at once on two connections.
- target: relay's delivery worker (TargetWorker) and WarehouseTarget for N prepared deliveries
          (events parsed, as the store hands them to a worker), handed out by an in-memory
          stand-in for the store: claimed groups of up to one batch (B deliveries), at most
          `concurrency` in flight, column mapping and type conversion per event, the Batcher
          (max_rows = B), the writer
          (relay's default of two batches at once), one recorded outcome per delivery.
          Everything relay does per row except the SQLite store's claim and record.
- target1: the same with `concurrency: 1` (one batch written at a time). Reported, not in
          the ratio.
- replay: the target path again over the same deliveries into the full table, i.e. every row
          redelivered: all ON CONFLICT no-ops. Reported, not in the ratio.
- map:    RowMapper.rows_for over the N events alone, no database. Reported, not in the ratio.
- e2e:    `python -m relay run` in its own process with this target (max_wait 100ms); the bench
          POSTs E events on 32 connections and times from the first post until PostgreSQL holds
          every row. Ingest, the SQLite store, the client and PostgreSQL share the machine's
          cores: the daemon's figure. Reported, not in the ratio.

Rounds run copy, writer, target, replay, target1, map back to back (fresh tables every round);
the figures are medians, and the ratio within each round is printed too (steadier on a shared
host). The prepared data is frozen out of the garbage collector's sight (gc.freeze) before
anything is timed, since a real worker holds only the deliveries in flight. After every run the
table must hold exactly N rows with N distinct keys, and the rows relay wrote must equal the
baseline's (md5 over the ordered rows), or the bench fails. PostgreSQL must be on 127.0.0.1
(or localhost); every table made is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import procs

from relay.delivery import TargetWorker
from relay.events import Delivered, Delivery, Event
from relay.metrics import Metrics
from relay.render import TemplateCompiler
from relay.store.base import AttemptResult, Store
from relay.targets.warehouse import WarehouseTarget, WarehouseTargetConfig, plan_warehouse_target
from relay.templatefields import COMPILER
from relay.warehouse.base import Writer
from relay.warehouse.postgres import PG_TYPES, PostgresWriter
from relay.warehouse.rows import Row, RowMapper

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
RUN_TIMEOUT_S = 60.0
AIM = 0.5
E2E_CONNECTIONS = 32

COLUMNS: dict[str, tuple[str, str]] = {
    "event_id": ("event.id", "text"),
    "type": ("event.type", "text"),
    "case_id": ("event.data.caseId", "text"),
    "priority": ("event.data.priority", "bigint"),
    "score": ("event.data.score", "double"),
    "escalated": ("event.data.escalated", "boolean"),
    "created_at": ("event.data.createdTimestamp", "timestamptz"),
    "detail": ("event.data.detail", "jsonb"),
}


@dataclass(frozen=True)
class Settings:
    url: str
    rows: int
    batch: int
    rounds: int
    e2e_events: int


def parse_args(argv: Sequence[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows per run (default 50000)")
    parser.add_argument("--batch", type=int, default=1000, help="rows per batch (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument(
        "--e2e-events",
        type=int,
        default=10_000,
        help="events for the end-to-end run through `relay run` (default 10000; 0: skip it)",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("RELAY_TEST_POSTGRES_URL") or DEFAULT_URL,
        help="PostgreSQL on this machine (default $RELAY_TEST_POSTGRES_URL or %(default)s)",
    )
    args = parser.parse_args(argv)
    if urlsplit(args.url).hostname not in LOCAL_HOSTS:
        parser.error(f"PostgreSQL must be on 127.0.0.1 for this bench, not {args.url}")
    if args.rows < 1 or args.batch < 1 or args.rounds < 1 or args.e2e_events < 0:
        parser.error("--rows, --batch and --rounds must be at least 1, --e2e-events at least 0")
    return Settings(args.url, args.rows, args.batch, args.rounds, args.e2e_events)


# -- the data ----------------------------------------------------------------------------------


def make_events(count: int) -> list[Event]:
    """Flagright CASE_OPENED-shaped events, as the store returns them to a worker."""
    now = time.time()
    events = []
    for i in range(count):
        payload = {
            "id": str(uuid.UUID(int=i)),
            "type": "CASE_OPENED",
            "data": {
                "caseId": f"C-{i}",
                "priority": i % 5,
                "score": (i % 1000) / 7.0,
                "escalated": i % 3 == 0,
                "createdTimestamp": 1_700_000_000_000 + i,
                "detail": {"users": [f"U-{i % 97}"], "rules": ["R-1", "R-8"], "note": "ünï"},
            },
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        parsed = json.loads(body)
        event_id, event_type = parsed["id"], parsed["type"]
        events.append(Event("flagright", event_id, event_type, now, body, parsed, {}, "data"))
    return events


def target_config(
    url: str,
    table: str,
    batch: int,
    concurrency: int | None = None,
    templates: Path = Path("templates"),
) -> WarehouseTargetConfig:
    """relay's defaults but for the batch size (and, for `target1`, one batch at a time)."""
    spec = {
        "kind": "warehouse",
        "url": url,
        "table": table,
        "columns": {name: {"value": v, "type": t} for name, (v, t) in COLUMNS.items()},
        "key": ["event_id"],
        "create_table": False,
        "batch": {"max_rows": batch, "max_wait": "1s"},
        "timeout": "30s",
    }
    if concurrency is not None:
        spec["concurrency"] = concurrency
    context = {COMPILER: TemplateCompiler(templates)}
    return WarehouseTargetConfig.model_validate(spec, context=context)


def build_target(
    url: str, table: str, batch: int, templates: Path, concurrency: int | None = None
) -> WarehouseTarget:
    spec = target_config(url, table, batch, concurrency, templates)
    return plan_warehouse_target("bench", spec).target()


def chunks(rows: Sequence[Row], size: int) -> list[Sequence[Row]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


# -- the database -------------------------------------------------------------------------------


class Tables:
    """Fresh tables with the same DDL; all dropped at the end."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.made: list[str] = []
        self.prefix = f"relay_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"

    async def fresh(self) -> str:
        name = f"{self.prefix}_{len(self.made) + 1}"
        self.made.append(name)
        columns = ", ".join(f'"{n}" {PG_TYPES[t]}' for n, (_, t) in COLUMNS.items())
        await self.conn.execute(f'CREATE TABLE "{name}" ({columns}, UNIQUE ("event_id"))')
        return name

    async def check(self, table: str, expected: int, what: str) -> None:
        total, distinct = await self.conn.fetchrow(
            f'SELECT count(*), count(DISTINCT "event_id") FROM "{table}"'
        )
        if (total, distinct) != (expected, expected):
            raise SystemExit(
                f"PROBLEM: {what} left {total} rows, {distinct} distinct keys (expected {expected})"
            )

    async def digest(self, table: str) -> str:
        value: str = await self.conn.fetchval(
            f'SELECT md5(string_agg(t::text, E\'\\n\' ORDER BY t."event_id")) FROM "{table}" t'
        )
        return value

    async def drop_all(self) -> None:
        for name in self.made:
            await self.conn.execute(f'DROP TABLE IF EXISTS "{name}"')


# -- the three writers -------------------------------------------------------------------------


async def run_copy(url: str, table: str, batches: list[Sequence[Row]]) -> float:
    conn = await asyncpg.connect(url)
    try:
        await conn.fetchval("SELECT 1")  # connected and warm before the clock starts
        columns = list(COLUMNS)
        started = time.perf_counter()
        for batch in batches:
            await conn.copy_records_to_table(table, records=batch, columns=columns)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def run_writer(url: str, table: str, batches: list[Sequence[Row]]) -> float:
    """Every batch handed over at once, as the Batcher does when they are full: the writer
    takes relay's default number at a time and queues the rest."""
    columns = [(name, kind) for name, (_, kind) in COLUMNS.items()]
    at_once = target_config(url, table, 1).batches_at_once
    writer = PostgresWriter(url, table, columns, ["event_id"], False, 30.0, at_once)

    async def write(batch: Sequence[Row]) -> None:
        results = await writer.write([[row] for row in batch])  # one row per delivery
        if any(result is not None for result in results):
            raise SystemExit(f"PROBLEM: writer failed rows: {results[:3]}")

    try:
        await connect_writer(writer, at_once)
        started = time.perf_counter()
        await asyncio.gather(*(write(batch) for batch in batches))
        return time.perf_counter() - started
    finally:
        await writer.close()


async def connect_writer(writer: Writer, at_once: int) -> None:
    """Every connection open and the table read before the clock starts."""
    answers = await asyncio.gather(*(writer.write([]) for _ in range(at_once)))
    if answers != [[]] * at_once:
        raise SystemExit(f"PROBLEM: an empty write did not answer []: {answers}")


class HandOut:
    """The store's side of a delivery worker, in memory: hands out the prepared deliveries in
    the groups the worker claims and counts what it records. The SQLite store's own cost is
    measured by the e2e path and by bench/ingest.py."""

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        self._pending = collections.deque(deliveries)
        self._expected = len(deliveries)
        self.recorded: dict[str, int] = {}
        self.problems: list[str] = []
        self.all_recorded = asyncio.Event()

    async def claim(self, target: str, limit: int, lease_s: float) -> list[Delivery]:
        count = min(limit, len(self._pending))
        return [self._pending.popleft() for _ in range(count)]

    async def record(self, results: Sequence[AttemptResult]) -> None:
        for result in results:
            self.recorded[result.state] = self.recorded.get(result.state, 0) + 1
            if result.state != "delivered" and len(self.problems) < 3:
                self.problems.append(repr(result))
        if sum(self.recorded.values()) == self._expected:
            self.all_recorded.set()

    async def next_due_at(self, target: str) -> float | None:
        return None

    async def release(self, delivery_ids: Sequence[int]) -> None:
        return None

    async def target_pause(self, target: str) -> None:
        return None  # never paused

    async def note_activity(self, target: str, activity: object) -> None:
        return None


async def run_target(target: WarehouseTarget, deliveries: list[Delivery]) -> float:
    """relay's own delivery worker (TargetWorker) driving the target, as `relay run` does:
    it claims up to `concurrency` deliveries, hands each claimed group to the target in one
    call and records every outcome."""
    store = HandOut(deliveries)
    worker = TargetWorker(target, cast(Store, store), Metrics(), time.time, random.random)
    started = time.perf_counter()
    worker.start()
    try:
        await store.all_recorded.wait()
        elapsed = time.perf_counter() - started
    finally:
        await worker.stop(grace_s=RUN_TIMEOUT_S)
    if store.recorded != {"delivered": len(deliveries)}:
        raise SystemExit(f"PROBLEM: recorded {store.recorded}: {store.problems}")
    return elapsed


async def warm_target(target: WarehouseTarget, delivery: Delivery, at_once: int) -> None:
    """Connect the target before the clock starts: one row of its own (deleted after), and
    every connection it will use."""
    outcome = await target.send(delivery)
    if not isinstance(outcome, Delivered):
        raise SystemExit(f"PROBLEM: warm-up delivery failed: {outcome}")
    await connect_writer(target.writer, at_once)


# -- end to end -------------------------------------------------------------------------------


async def run_e2e(settings: Settings, table: str, bodies: list[bytes], scratch: Path) -> float:
    """`python -m relay run` (its own process) with this target; the bench posts every body on
    32 connections; rows/s from the first post until PostgreSQL holds them all."""
    port = procs.free_port()
    spec = target_config(settings.url, table, settings.batch).model_dump(mode="json")
    spec["batch"]["max_wait"] = "100ms"
    spec["timeout"] = "30s"
    for name in ("retry",):
        spec.pop(name)
    document = {
        "listen": f"127.0.0.1:{port}",
        "admin": {"listen": f"127.0.0.1:{procs.free_port()}"},  # not 9090: another may have it
        "store": "sqlite:///relay.db",
        "sources": {"in": {"path": "/hooks/in"}},
        "targets": {"wh": spec},
        "routes": [{"targets": ["wh"]}],
    }
    folder = scratch / "e2e"
    folder.mkdir()
    config_path = folder / "relay.yaml"
    config_path.write_text(json.dumps(document, indent=2))
    conn = await asyncpg.connect(settings.url)
    try:
        with procs.relay_server(config_path, port) as server:
            pending = iter(bodies)
            statuses: dict[int, int] = {}
            timeout = aiohttp.ClientTimeout(total=30)
            connector = aiohttp.TCPConnector(limit=E2E_CONNECTIONS)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:

                async def post() -> None:
                    for body in pending:
                        async with session.post(
                            f"{server.url}/hooks/in",
                            data=body,
                            headers={"Content-Type": "application/json"},
                        ) as response:
                            await response.read()
                            statuses[response.status] = statuses.get(response.status, 0) + 1

                started = time.perf_counter()
                await asyncio.gather(*(post() for _ in range(E2E_CONNECTIONS)))
            if statuses != {202: len(bodies)}:
                raise SystemExit(f"PROBLEM: relay answered {statuses}")
            deadline = started + RUN_TIMEOUT_S
            while await conn.fetchval(f'SELECT count(*) FROM "{table}"') < len(bodies):
                server.check_alive()
                if time.perf_counter() > deadline:
                    raise SystemExit(f"PROBLEM: rows still missing after {RUN_TIMEOUT_S:.0f}s")
                await asyncio.sleep(0.01)
            return time.perf_counter() - started
    finally:
        await conn.close()


# -- the run -----------------------------------------------------------------------------------


async def timed(what: str, run: Awaitable[float]) -> float:
    try:
        return await asyncio.wait_for(run, RUN_TIMEOUT_S)
    except TimeoutError:
        raise SystemExit(f"PROBLEM: {what} took over {RUN_TIMEOUT_S:.0f}s") from None


def settle_heap() -> None:
    """Move the bench's own prepared data (all N events, deliveries and rows) out of the
    garbage collector's sight: a worker holds only the deliveries in flight, so its
    collections never walk N events. Same for every path measured."""
    gc.collect()
    gc.freeze()


def map_all(mapper: RowMapper, events: Sequence[Event]) -> tuple[list[Row], float]:
    started = time.perf_counter()
    rows = [row for event in events for row in mapper.rows_for(event)]
    return rows, time.perf_counter() - started


async def bench(settings: Settings) -> dict[str, list[float]]:
    n, size = settings.rows, settings.batch
    print(f"preparing {n:,} events ...", flush=True)
    events = make_events(n + 1)
    warm_event, events = events[0], events[1:]
    deliveries = [Delivery(i + 1, "bench", 1, e.received_at, e) for i, e in enumerate(events)]
    warm_delivery = Delivery(0, "bench", 1, warm_event.received_at, warm_event)
    paths = ("copy", "writer", "target", "replay", "target1", "map")
    rates: dict[str, list[float]] = {k: [] for k in paths}

    conn = await asyncpg.connect(settings.url)
    tables = Tables(conn)
    with tempfile.TemporaryDirectory(prefix="relay-bench-wh-") as scratch:
        templates = Path(scratch)
        # The baseline's rows are relay's own mapping of the same events, made beforehand.
        mapper = build_target(settings.url, "unused", size, templates).mapper
        rows, _ = map_all(mapper, events)
        batches = chunks(rows, size)
        settle_heap()
        try:
            digests: dict[str, str] = {}
            for round_no in range(1, settings.rounds + 1):
                table = await tables.fresh()
                seconds = await timed("copy", run_copy(settings.url, table, batches))
                await tables.check(table, n, "copy")
                rates["copy"].append(n / seconds)
                digests["copy"] = await tables.digest(table)

                table = await tables.fresh()
                seconds = await timed("writer", run_writer(settings.url, table, batches))
                await tables.check(table, n, "writer")
                rates["writer"].append(n / seconds)
                digests["writer"] = await tables.digest(table)

                for name, concurrency in (("target", None), ("target1", 1)):
                    table = await tables.fresh()
                    spec = target_config(settings.url, table, size, concurrency)
                    target = build_target(settings.url, table, size, templates, concurrency)
                    try:
                        await warm_target(target, warm_delivery, spec.batches_at_once)
                        await conn.execute(f'DELETE FROM "{table}"')
                        seconds = await timed(name, run_target(target, deliveries))
                        await tables.check(table, n, name)
                        rates[name].append(n / seconds)
                        digests[name] = await tables.digest(table)
                        if name == "target":  # again: every row is already there
                            seconds = await timed("replay", run_target(target, deliveries))
                            await tables.check(table, n, "replay (a redelivery of every row)")
                            rates["replay"].append(n / seconds)
                    finally:
                        await target.close()

                rates["map"].append(n / map_all(mapper, events)[1])
                print(
                    f"round {round_no}: "
                    + ", ".join(f"{k} {v[-1]:,.0f} rows/s" for k, v in rates.items()),
                    flush=True,
                )
            if len(set(digests.values())) != 1:
                raise SystemExit(f"PROBLEM: the tables differ: {digests}")

            if settings.e2e_events:
                count = settings.e2e_events
                print(f"end to end: {count:,} events through `relay run` ...", flush=True)
                table = await tables.fresh()
                bodies = [event.body for event in make_events(count)]
                settle_heap()
                seconds = await run_e2e(settings, table, bodies, Path(scratch))
                await tables.check(table, count, "end to end")
                rates["e2e"] = [count / seconds]
        finally:
            gc.unfreeze()  # let the interpreter free everything at exit
            with contextlib.suppress(Exception):
                await tables.drop_all()
            await conn.close()
    return rates


LABELS = {
    "copy": "plain asyncpg copy_records_to_table, one connection: the baseline",
    "writer": "relay PostgresWriter.write: INSERT ... unnest ON CONFLICT DO NOTHING, 2 at once",
    "target": "relay TargetWorker + WarehouseTarget: mapping, Batcher, writer (defaults)",
    "replay": "the same deliveries again: every row a conflict (no-op)",
    "target1": "the target path with `concurrency: 1`: one batch written at a time",
    "map": "RowMapper.rows_for alone (path lookups, Jinja where needed, conversion), no database",
    "e2e": f"POST to `relay run` ({E2E_CONNECTIONS} connections) until all rows are in",
}


def report(settings: Settings, rates: dict[str, list[float]], server: str) -> None:
    median = {k: statistics.median(v) for k, v in rates.items()}
    base = median["copy"]
    python = sys.version.split()[0]
    print()
    print(f"PostgreSQL {server} on 127.0.0.1; Python {python}; {os.cpu_count()} CPUs")
    print(
        f"{settings.rows:,} rows per run, batches of {settings.batch:,}, "
        f"median of {settings.rounds} round(s)"
    )
    print(f"{'path':<7} {'rows/s':>9}  {'/ copy':>6}  what (runs)")
    for key, value in median.items():
        runs = ", ".join(f"{r:,.0f}" for r in rates[key])
        print(f"{key:<7} {value:>9,.0f}  {value / base:>5.2f}x  {LABELS[key]} ({runs})")
    for key in ("writer", "target"):
        ratio = median[key] / base
        verdict = "meets" if ratio >= AIM else "MISSES"
        # Each round runs copy and relay back to back: their ratio within a round is less
        # exposed to a noisy neighbour than the ratio of medians.
        paired = [r / c for r, c in zip(rates[key], rates["copy"], strict=True)]
        rounds = ", ".join(f"{p:.2f}" for p in paired)
        print(
            f"{key} / copy = {ratio:.2f}x ({verdict} the aim of >= {AIM}x);"
            f" round by round {rounds} (median {statistics.median(paired):.2f}x)"
        )


async def server_version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        version: str = await conn.fetchval("SHOW server_version")
        return version
    finally:
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_args(argv)
    with contextlib.suppress(ImportError):
        import uvloop  # relay runs on uvloop; so does the bench, baseline included

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    try:
        server = asyncio.run(server_version(settings.url))
    except (OSError, asyncpg.PostgresError) as exc:
        print(f"cannot reach PostgreSQL at {settings.url}: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        rates = asyncio.run(bench(settings))
    except procs.BenchError as exc:
        print(f"PROBLEM: {exc}", file=sys.stderr)
        return 1
    report(settings, rates, server)
    print(f"(bench took {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
