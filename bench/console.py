"""What the console's pages cost on a store of a million deliveries (about a minute).

    .venv/bin/python bench/console.py [--events N] [--rounds R]

The store is written with relay's schema straight through SQL: N events (default 500,000)
received over the last hour from two sources in four types, each with two deliveries: `crm`
delivered, `billing` dead for one event in 25 and delivered otherwise (2N deliveries; about a
twelfth of them delivered within the last five minutes). Then, through relay's own
SqliteStore and in-process relay with its admin listener on a real loopback socket:

1. each store call a page makes, median and max of R calls: `delivered_since` for the last
   five minutes (the Targets page's rate) and since the start (every delivered one: as if a
   million were delivered within five minutes, the worst case), `target_statuses_aside`,
   `deliveries` for a page of 51 with each filter and deep in the listing, and the dead count
   of the Dead letters page (paged to its cap of 10,000);
2. every page over HTTP (signed in, as a browser asks for it), median and max of R.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from relay.admin import create_admin_app
from relay.app import DAEMON, create_app
from relay.console.pages import DEAD_COUNT_CAP
from relay.loading import load_config
from relay.replaying import dead_pages
from relay.store.base import DeliveryFilter
from relay.store.sqlite import SqliteStore

TOKEN = "bench-admin-token-0123456789"
KINDS = (("shop", "order.created"), ("shop", "invoice.paid"), ("crm-app", "customer.updated"))
KINDS += (("crm-app", "CASE_OPENED"),)
CONFIG = """\
store: "sqlite:///{db}"
admin: {{token: {token}}}
sources:
  shop: {{path: /hooks/shop}}
  crm-app: {{path: /hooks/crm-app}}
targets:
  crm: {{kind: http, url: "http://127.0.0.1:9/crm"}}
  billing: {{kind: http, url: "http://127.0.0.1:9/billing"}}
routes:
  - targets: [crm, billing]
"""


def write_store(path: Path, events: int, now: float) -> None:
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("BEGIN")
        for n in range(events):
            source, kind = KINDS[n % len(KINDS)]
            received_at = now - 3600 + n * 3600 / events
            body = json.dumps({"id": f"evt-{n:07d}", "type": kind, "data": {"n": n}})
            pk = db.execute(
                "INSERT INTO events (source, event_id, type, received_at, body, headers)"
                " VALUES (?, ?, ?, ?, ?, '{}')",
                (source, f"evt-{n:07d}", kind, received_at, body.encode()),
            ).lastrowid
            billing = "dead" if n % 25 == 0 else "delivered"
            db.executemany(
                "INSERT INTO deliveries (event_pk, target, state, attempts, next_attempt_at,"
                " updated_at, last_status) VALUES (?, ?, ?, 1, ?, ?, ?)",
                [
                    (pk, "crm", "delivered", received_at, received_at + 0.5, 200),
                    (pk, "billing", billing, received_at, received_at + 0.5, 500),
                ],
            )
        db.execute("COMMIT")
        db.execute("ANALYZE")


def index_bytes(path: Path, name: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as db:
        (size,) = db.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = ?", (name,)).fetchone()
        return int(size)


async def timed(rounds: int, call: Callable[[], Awaitable[Any]]) -> tuple[float, float]:
    """Median and max milliseconds of `rounds` calls."""
    took = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        took.append((time.perf_counter() - started) * 1000)
    return statistics.median(took), max(took)


async def store_calls(store: SqliteStore, events: int, now: float, rounds: int) -> None:
    middle = events  # a delivery id halfway through the listing

    async def count_dead() -> int:
        count = 0
        async for page in dead_pages(store, DeliveryFilter(), (), []):
            count += len(page)
            if count >= DEAD_COUNT_CAP:
                break
        return count

    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "delivered_since(last 5 min)": lambda: store.delivered_since(now - 300),
        "delivered_since(all)": lambda: store.delivered_since(0),
        "target_statuses_aside": store.target_statuses_aside,
        "deliveries(51)": lambda: store.deliveries(None, 51),
        "deliveries(51, state=dead)": lambda: store.deliveries("dead", 51),
        "deliveries(51, target=billing)": lambda: store.deliveries(
            None, 51, where=DeliveryFilter(target="billing")
        ),
        "deliveries(51, type=CASE_*)": lambda: store.deliveries(
            None, 51, where=DeliveryFilter(type_glob="CASE_*")
        ),
        "deliveries(51, event id)": lambda: store.deliveries(
            None, 51, where=DeliveryFilter(event_id="evt-0123456")
        ),
        "deliveries(51, 30 min ago to 20 min ago)": lambda: store.deliveries(
            None, 51, where=DeliveryFilter(since=now - 1800, until=now - 1200)
        ),
        "deliveries(51, before the middle id)": lambda: store.deliveries(
            None, 51, before_id=middle
        ),
        f"dead count (to {DEAD_COUNT_CAP:,})": count_dead,
    }
    print(f"store calls, ms (median / max of {rounds}):")
    for name, call in calls.items():
        median_ms, max_ms = await timed(rounds, call)
        print(f"  {name:44s} {median_ms:8.1f} / {max_ms:8.1f}")
    recent = sum((await store.delivered_since(now - 300)).values())
    print(f"  (delivered in the last 5 min: {recent:,})")


async def pages(config_path: Path, rounds: int) -> None:
    config = load_config(config_path)
    app = await create_app(config)
    ingest = TestClient(TestServer(app, host="127.0.0.1"))
    await ingest.start_server()
    admin = TestClient(TestServer(create_admin_app(app[DAEMON]), host="127.0.0.1"))
    await admin.start_server()
    try:
        origin = str(admin.make_url("")).rstrip("/")
        signed = await admin.post("/sign-in", data={"token": TOKEN}, headers={"Origin": origin})
        assert signed.status == 200, signed.status
        dead = (await app[DAEMON].store.deliveries("dead", 1))[0].id
        paths = [
            "/",
            "/deliveries",
            "/deliveries?state=dead&target=billing",
            "/deliveries?type=CASE_*&start=2000-01-01T00:00",
            f"/deliveries/{dead}",
            "/dead",
            "/dead/replay?target=billing",
            "/config",
        ]
        print(f"pages over HTTP, ms (median / max of {rounds}):")
        for path in paths:

            async def get(path: str = path) -> None:
                response = await admin.get(path)
                assert response.status == 200, (path, response.status)
                await response.read()

            median_ms, max_ms = await timed(rounds, get)
            print(f"  GET {path:44s} {median_ms:8.1f} / {max_ms:8.1f}")
    finally:
        await admin.close()
        await ingest.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=500_000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "relay.db"
        store = SqliteStore(path, time.time)
        await store.open()  # the schema
        await store.close()
        now = time.time()
        started = time.perf_counter()
        write_store(path, args.events, now)
        size_mb = path.stat().st_size / 1e6
        print(
            f"{args.events:,} events, {2 * args.events:,} deliveries, {size_mb:,.0f} MB"
            f" (written in {time.perf_counter() - started:.0f}s); the rate's index:"
            f" {index_bytes(path, 'deliveries_delivered') / 1e6:.1f} MB"
        )
        store = SqliteStore(path, time.time)
        await store.open()
        try:
            await store_calls(store, args.events, now, args.rounds)
        finally:
            await store.close()
        config_path = Path(directory) / "relay.yaml"
        config_path.write_text(CONFIG.format(db=path, token=TOKEN), encoding="utf-8")
        await pages(config_path, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
