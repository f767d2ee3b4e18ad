"""`make bench-postgres`: the SQLite store beside PostgreSQL with one replica and with two, in
one run (~2 min). Needs PostgreSQL ($RELAY_TEST_POSTGRES_URL, default
postgresql://postgres@127.0.0.1:5432/test); each setup gets a schema of its own, dropped after.

For each setup (relay processes as `python -m relay run`, each replica with its own load
generator, bench/loadgen.py, and one receiver, bench/servers.py):

1. ingest rate: closed loop, 32 connections per replica, no route (events stored, nothing
   delivered); events answered 202 per second, all replicas together.
2. end to end: N events posted (closed loop), delivered by one http target to the receiver;
   delivered events per second from the first post until the receiver has all N.
3. ingest-to-delivery latency at a fixed offered rate (open loop, default 200 events/s in all,
   split evenly across replicas): for each event, from the moment its POST was due to its
   arrival at the receiver (one monotonic clock: every process is on this machine); p50, p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import report
import yaml
from ingest import wait_for_receiver
from loadgen import percentiles_ms
from procs import BenchError, Server, free_port, get_json, helper_server, relay_server, run_loadgen

SOURCE_PATH = "/hooks/flagright"
SECRET = "bench-secret"
SIGNATURE_HEADER = "X-Signature"
CONNECTIONS = 32
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
P99_AIM_MS = 50.0


@dataclass(frozen=True)
class Setup:
    label: str
    store: str  # "sqlite" or "postgres"
    replicas: int


SETUPS = (
    Setup("SQLite, 1 relay", "sqlite", 1),
    Setup("PostgreSQL, 1 replica", "postgres", 1),
    Setup("PostgreSQL, 2 replicas", "postgres", 2),
)


def write_config(work: Path, name: str, store_url: str, receiver_port: int | None) -> Path:
    directory = work / name
    directory.mkdir(parents=True)
    (directory / "templates").mkdir()
    verify = {"scheme": "hmac-sha256", "secret": SECRET, "header": SIGNATURE_HEADER}
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{free_port()}",
        "admin": {"listen": f"127.0.0.1:{free_port()}"},
        "store": store_url,
        "sources": {"flagright": {"path": SOURCE_PATH, "verify": verify}},
    }
    if receiver_port is not None:
        url = f"http://127.0.0.1:{receiver_port}/sink"
        config["targets"] = {"sink": {"kind": "http", "url": url, "concurrency": 32}}
        config["routes"] = [{"sources": ["flagright"], "targets": ["sink"]}]
    path = directory / "relay.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def port_of(config: Path) -> int:
    listen: str = yaml.safe_load(config.read_text(encoding="utf-8"))["listen"]
    return int(listen.rsplit(":", 1)[1])


@contextlib.contextmanager
def relays(
    setup: Setup, work: Path, tag: str, store_url: str, receiver: Server | None
) -> Iterator[list[Server]]:
    """The setup's replicas, started together on one store."""
    receiver_port = receiver.port if receiver is not None else None
    with contextlib.ExitStack() as stack:
        servers = []
        for n in range(setup.replicas):
            config = write_config(work, f"{tag}-{n}", store_url, receiver_port)
            servers.append(stack.enter_context(relay_server(config, port_of(config))))
        yield servers


def load_args(mode: str, port: int, *options: str) -> list[str]:
    args = [mode, "--port", str(port), "--path", SOURCE_PATH, "--secret", SECRET]
    return [*args, "--header", SIGNATURE_HEADER, *options]


def in_parallel(argvs: list[list[str]], timeout_s: float) -> list[dict[str, Any]]:
    """One load generator per replica, all at once."""
    with ThreadPoolExecutor(len(argvs)) as pool:
        return list(pool.map(lambda argv: run_loadgen(argv, timeout_s), argvs))


def ingest_rate(setup: Setup, work: Path, store_url: str, s: argparse.Namespace) -> dict[str, Any]:
    with relays(setup, work, f"{setup.store}{setup.replicas}-ingest", store_url, None) as servers:
        runs = in_parallel(
            [
                load_args(
                    "closed",
                    server.port,
                    *("--connections", str(CONNECTIONS), "--requests", "150000"),
                    *("--warmup-s", "1", "--duration-s", str(s.duration_s)),
                )
                for server in servers
            ],
            timeout_s=s.duration_s + 90,
        )
    return {
        "rps": sum(run["rps"] for run in runs),
        "statuses": _statuses(runs),
        "latency_ms": [run["latency_ms"] for run in runs],
    }


def end_to_end(setup: Setup, work: Path, store_url: str, s: argparse.Namespace) -> dict[str, Any]:
    per_replica = s.events // setup.replicas
    with (
        helper_server("receiver", work) as receiver,
        relays(setup, work, f"{setup.store}{setup.replicas}-e2e", store_url, receiver) as servers,
    ):
        runs = in_parallel(
            [
                load_args(
                    "closed",
                    server.port,
                    *("--connections", str(CONNECTIONS), "--requests", str(per_replica)),
                    *("--warmup-s", "0", "--duration-s", "120"),
                )
                for server in servers
            ],
            timeout_s=180,
        )
        total = per_replica * setup.replicas
        stats = wait_for(receiver, total, timeout_s=120)
    first = min(run["first_sent_at"] for run in runs)
    last_post = max(run["last_done_at"] for run in runs)
    finished = stats["last_new_at"] or last_post
    return {
        "events": total,
        "delivered": stats["events"],
        "delivered_per_s": stats["events"] / (finished - first),
        "ingest_per_s": total / (last_post - first),  # while delivering
        "drain_after_last_post_s": finished - last_post,
        "statuses": _statuses(runs),
    }


def paced(setup: Setup, work: Path, store_url: str, s: argparse.Namespace) -> dict[str, Any]:
    rate = s.rate / setup.replicas
    with (
        helper_server("receiver", work) as receiver,
        relays(setup, work, f"{setup.store}{setup.replicas}-paced", store_url, receiver) as servers,
    ):
        runs = in_parallel(
            [
                load_args(
                    "open",
                    server.port,
                    *("--rate", str(rate), "--connections", "8"),
                    *("--warmup-s", str(s.warmup_s), "--duration-s", str(s.rate_duration_s)),
                )
                for server in servers
            ],
            timeout_s=s.warmup_s + s.rate_duration_s + 90,
        )
        sent = sum(run["sent"] for run in runs)
        wait_for(receiver, sent, timeout_s=60)
        arrivals: dict[str, float] = get_json(f"{receiver.url}/arrivals", timeout_s=10)
    latencies = delivery_latencies(runs, arrivals, rate, s.warmup_s)
    return {
        "offered_per_s": s.rate,
        "sent": sent,
        "delivered": len(arrivals),
        "measured": len(latencies),
        "delivery_latency_ms": percentiles_ms(latencies),
        "ingest_latency_ms": [run["latency_ms"] for run in runs],
        "statuses": _statuses(runs),
    }


def delivery_latencies(
    runs: list[dict[str, Any]], arrivals: dict[str, float], rate: float, warmup_s: float
) -> list[float]:
    """Seconds from each event's due time (its load generator's schedule) to its arrival,
    past the warm-up."""
    latencies = []
    for run in runs:
        prefix, started_at = run["id_prefix"], run["started_at"]
        for event_id, arrived_at in arrivals.items():
            if event_id.startswith(prefix):
                due_at = started_at + int(event_id[len(prefix) :], 16) / rate
                if due_at >= started_at + warmup_s:
                    latencies.append(arrived_at - due_at)
    return latencies


def wait_for(receiver: Server, events: int, timeout_s: float) -> dict[str, Any]:
    stats = wait_for_receiver(receiver, events, timeout_s)
    if stats["events"] < events:
        raise BenchError(f"receiver got {stats['events']} of {events} events")
    return stats


def _statuses(runs: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for run in runs:
        for status, count in run["statuses"].items():
            total[status] = total.get(status, 0) + count
    return total


# -- PostgreSQL schemas ----------------------------------------------------------------------


def postgres_url() -> str:
    return os.environ.get("RELAY_TEST_POSTGRES_URL") or DEFAULT_POSTGRES


def store_url_for(setup: Setup, work: Path, schema: str) -> str:
    if setup.store == "sqlite":
        return f"sqlite:///{work / (schema + '.db')}"
    separator = "&" if "?" in postgres_url() else "?"
    return f"{postgres_url()}{separator}schema={schema}"


def drop_schema(schema: str) -> None:
    async def drop() -> None:
        conn = await asyncpg.connect(postgres_url(), timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()

    asyncio.run(drop())


# -- main ------------------------------------------------------------------------------------


def run_setup(setup: Setup, work: Path, s: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, scenario in (("ingest", ingest_rate), ("e2e", end_to_end), ("paced", paced)):
        schema = f"relay_bench_{uuid.uuid4().hex[:8]}"
        try:
            results[name] = scenario(setup, work, store_url_for(setup, work, schema), s)
        finally:
            if setup.store == "postgres":
                drop_schema(schema)
    return results


def print_table(results: dict[str, dict[str, Any]], s: argparse.Namespace) -> None:
    print(
        f"\n{'setup':<24} {'ingest/s':>9} {'e2e/s':>7}  "
        f"latency at {s.rate:g}/s p50 / p99 ms (aim p99 < {P99_AIM_MS:g})"
    )
    for label, r in results.items():
        latency = r["paced"]["delivery_latency_ms"]
        p99 = latency.get("p99")
        met = report.aim(p99 is not None and p99 < P99_AIM_MS)
        print(
            f"{label:<24} {r['ingest']['rps']:>9,.0f} {r['e2e']['delivered_per_s']:>7,.0f}  "
            f"{report.ms(latency, 'p50')} / {report.ms(latency, 'p99')}  ({met})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration-s", type=float, default=4.0, help="ingest, measured")
    parser.add_argument("--events", type=int, default=10_000, help="end to end, in all")
    parser.add_argument("--rate", type=float, default=200.0, help="paced, events/s in all")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--rate-duration-s", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="short runs, for trying changes")
    parser.add_argument("--json", metavar="PATH", help="also write every result here")
    parser.add_argument(
        "--setup", action="append", choices=[x.label for x in SETUPS], help="only these setups"
    )
    s = parser.parse_args(argv)
    if s.quick:
        s.duration_s, s.events, s.rate_duration_s = 2.0, 2_000, 3.0
    print(f"relay bench-postgres: {report.machine()} at {time.strftime('%Y-%m-%d %H:%M')}")
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="relay-bench-pg-") as tmp:
        try:
            for setup in [x for x in SETUPS if not s.setup or x.label in s.setup]:
                print(f"[{time.strftime('%H:%M:%S')}] {setup.label}", flush=True)
                results[setup.label] = run_setup(setup, Path(tmp), s)
        except BenchError as exc:
            print(f"bench failed: {exc}", flush=True)
            return 1
    print_table(results, s)
    problems = [
        f"{label}: {scenario} answered {r[scenario]['statuses']}"
        for label, r in results.items()
        for scenario in ("ingest", "e2e", "paced")
        if set(r[scenario]["statuses"]) - {"202"}
    ]
    for problem in problems:
        print(f"PROBLEM: {problem}")
    if s.json:
        Path(s.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
