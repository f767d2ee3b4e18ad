"""`make bench`: relay's ingest and delivery figures on this machine, in one run (~4 minutes).

1. Ingest throughput: relay (HMAC verify + JSON parse + durable SQLite commit + 202) against a
   bare aiohttp handler (read the body, answer 200), both closed-loop at 32 connections with
   784-byte Flagright-shaped bodies, each with a unique id and a valid signature. Rounds
   alternate bare / relay; the ratio relay / bare is the figure to compare across machines.
2. End to end: N events posted to relay, delivered by one `http` target to a bare receiver;
   delivered events per second from the first post until the receiver has all N.
3. Ingest latency at a fixed offered rate (open loop, default 500 events/s for 5 s), with the
   delivery of those events running in the same process, and again with no route.
4. Ingest latency at that rate while retention purges a backlog of old delivered events
   (default 200,000, ~225 MB: bench/backlog.py), against the same store and rate with a
   retention that purges nothing.
5-8. Baselines side by side (bench/baselines.py): a bare aiohttp client loop, the naive relay
   (Flask + requests under gunicorn), fan-out to 1, 5 and 20 targets, and isolation from a
   target that hangs.

Each server runs in its own process on a free 127.0.0.1 port (relay as `python -m relay run`),
the load generator in another (bench/loadgen.py, the same for relay and the bare handler). If
`wrk` is installed, scenario 1 is repeated once with wrk as a cross-check of the generator.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import report
import wrk
import yaml
from backlog import backlog_left, events_after_backlog, write_backlog
from procs import (
    BenchError,
    CpuMeter,
    Server,
    free_port,
    get_json,
    helper_server,
    others_busy_cores,
    relay_server,
    run_loadgen,
)

SOURCE_PATH = "/hooks/flagright"
SECRET = "bench-secret"
SIGNATURE_HEADER = "X-Signature"
CONNECTIONS = 32
MAX_BUILT_REQUESTS = 150_000  # closed-loop runs end early (and say so) if a server is faster
# SQLite's own auto-checkpoint keeps the WAL near 4 MB (1,000 pages); a WAL far past that means
# checkpoints no longer complete and the file grows with every event until relay stops.
WAL_LIMIT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    rounds: int
    warmup_s: float
    duration_s: float
    events: int
    delivery_concurrency: int
    naive_events: int
    fanout_events: int
    rate: float
    rate_duration_s: float
    purge_events: int
    use_wrk: bool
    relay_src: Path | None
    ingest_only: bool = False


def parse_settings(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="bare/relay pairs in scenario 1")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=4.0, help="measured, per run")
    parser.add_argument("--events", type=int, default=20_000, help="scenario 2 event count")
    parser.add_argument("--delivery-concurrency", type=int, default=32)
    parser.add_argument("--naive-events", type=int, default=5_000, help="scenario 6 events")
    parser.add_argument(
        "--fanout-events", type=int, default=2_000, help="scenario 7 events (x1, x5, x20)"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="scenario 3 events/s")
    parser.add_argument("--rate-duration-s", type=float, default=5.0)
    parser.add_argument(
        "--purge-events", type=int, default=200_000, help="scenario 4 backlog to purge"
    )
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk cross-check")
    parser.add_argument(
        "--ingest-only", action="store_true", help="scenario 1 only: to compare a change"
    )
    parser.add_argument("--quick", action="store_true", help="short runs, for trying changes")
    parser.add_argument(
        "--relay-src", type=Path, help="run the relay package in this directory (a scratch copy)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write every result here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, databases)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration_s, args.events, args.rate_duration_s = 1, 2.0, 5_000, 2.0
        args.purge_events, args.naive_events, args.fanout_events = 30_000, 1_000, 500
    settings = Settings(
        rounds=max(1, args.rounds),
        warmup_s=args.warmup_s,
        duration_s=args.duration_s,
        events=args.events,
        delivery_concurrency=args.delivery_concurrency,
        naive_events=args.naive_events,
        fanout_events=args.fanout_events,
        rate=args.rate,
        rate_duration_s=args.rate_duration_s,
        purge_events=args.purge_events,
        use_wrk=not args.no_wrk,
        relay_src=args.relay_src.resolve() if args.relay_src else None,
        ingest_only=args.ingest_only,
    )
    return settings, args


# -- relay under test ------------------------------------------------------------------------


@dataclass(frozen=True)
class RelayConfig:
    path: Path
    port: int
    admin_port: int


def write_config(
    work_dir: Path,
    targets: dict[str, dict[str, Any]],
    retention: dict[str, str] | None = None,
) -> RelayConfig:
    """A config in `work_dir` (store and templates beside it), routing every event to every
    one of `targets` (none: no route)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "templates").mkdir()
    port, admin_port = free_port(), free_port()  # admin not on 9090: another may have it
    verify = {"scheme": "hmac-sha256", "secret": SECRET, "header": SIGNATURE_HEADER}
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "admin": {"listen": f"127.0.0.1:{admin_port}"},
        "store": "sqlite:///relay.db",
        "templates_dir": "templates",
        "sources": {"flagright": {"path": SOURCE_PATH, "verify": verify}},
    }
    if retention is not None:
        config["retention"] = retention
    if targets:
        config["targets"] = targets
        config["routes"] = [{"sources": ["flagright"], "targets": list(targets)}]
    path = work_dir / "relay.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return RelayConfig(path, port, admin_port)


def http_target(port: int, concurrency: int, path: str = "/sink") -> dict[str, Any]:
    return {"kind": "http", "url": f"http://127.0.0.1:{port}{path}", "concurrency": concurrency}


def write_relay_config(
    work_dir: Path,
    receiver_port: int | None,
    concurrency: int,
    retention: dict[str, str] | None = None,
) -> tuple[Path, int]:
    """A config in `work_dir`; one target, the receiver, only with a receiver."""
    targets = {} if receiver_port is None else {"sink": http_target(receiver_port, concurrency)}
    config = write_config(work_dir, targets, retention)
    return config.path, config.port


def wal_bytes(config: Path) -> int:
    """Size of relay's WAL file now (read while relay still runs: a clean stop removes it)."""
    try:
        return (config.parent / "relay.db-wal").stat().st_size
    except FileNotFoundError:
        return 0


def check_wal(problems: Problems, what: str, result: dict[str, Any]) -> None:
    size = result["wal_bytes"]
    problems.expect(
        size <= WAL_LIMIT_BYTES,
        f"{what}: relay's WAL grew to {size / 2**20:.0f} MiB (SQLite's auto-checkpoint keeps it"
        f" near 4 MiB): checkpoints are not completing",
    )


def store_counts(config: Path) -> dict[str, int]:
    """Rows relay committed: the check that every 202 was a stored event."""
    db = config.parent / "relay.db"
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        counts = {"events": conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]}
        for state, n in conn.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state"):
            counts[state] = n
    return counts


# -- load ------------------------------------------------------------------------------------


def closed_loop(port: int, requests: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    args = ["closed", "--port", str(port), "--path", SOURCE_PATH, "--secret", SECRET]
    args += ["--header", SIGNATURE_HEADER, "--connections", str(CONNECTIONS)]
    args += ["--requests", str(requests), "--warmup-s", str(warmup_s)]
    args += ["--duration-s", str(duration_s)]
    return run_loadgen(args, timeout_s=warmup_s + duration_s + 60)


def open_loop(port: int, rate: float, warmup_s: float, duration_s: float) -> dict[str, Any]:
    args = ["open", "--port", str(port), "--path", SOURCE_PATH, "--secret", SECRET]
    args += ["--header", SIGNATURE_HEADER, "--rate", str(rate), "--connections", "8"]
    args += ["--warmup-s", str(warmup_s), "--duration-s", str(duration_s)]
    return run_loadgen(args, timeout_s=warmup_s + duration_s + 60)


def metered(servers: list[Server], load: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `load` and add the CPU each server, the generator and other processes used."""
    meter = CpuMeter(servers)
    result = load()
    result["cpu"] = meter.stop()
    return result


def wait_for_receiver(
    receiver: Server, events: int, timeout_s: float, counting: str = "events"
) -> dict[str, Any]:
    """The receiver's stats once its `counting` figure (distinct "events" or all "requests")
    reaches `events`, or at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats: dict[str, Any] = get_json(f"{receiver.url}/stats")
        if stats[counting] >= events or time.monotonic() > deadline:
            return stats
        receiver.check_alive()
        time.sleep(0.05)


class Problems:
    """What went wrong in a run (not a missed aim): makes `make bench` exit non-zero."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def expect_statuses(self, what: str, result: dict[str, Any], status: str) -> None:
        other = {k: v for k, v in result["statuses"].items() if k != status}
        lost, unfinished = result.get("lost_connections"), result.get("unfinished")
        if other or lost or unfinished:
            self.items.append(
                f"{what}: unexpected statuses {other}, {lost} lost connections or requests, "
                f"{unfinished} requests unanswered"
            )

    def expect(self, ok: bool, message: str) -> None:
        if not ok:
            self.items.append(message)


# -- scenario 1: ingest against a bare handler -------------------------------------------------


def cpu_us_per_request(run: dict[str, Any], server: str, requests: int) -> float | None:
    cpu_s = run["cpu"].get(f"{server}_cpu_s", 0.0)
    return cpu_s / requests * 1e6 if cpu_s > 0 and requests else None


def ingest_round(s: Settings, work: Path, tag: str, problems: Problems) -> dict[str, Any]:
    def load(port: int) -> Callable[[], dict[str, Any]]:
        return lambda: closed_loop(port, MAX_BUILT_REQUESTS, s.warmup_s, s.duration_s)

    with helper_server("bare", work) as bare:
        bare_run = metered([bare], load(bare.port))
    problems.expect_statuses(f"bare {tag}", bare_run, "200")
    config, port = write_relay_config(work / f"ingest-{tag}", None, 1)
    with relay_server(config, port, s.relay_src) as relay:
        relay_run = metered([relay], load(relay.port))
        relay_run["wal_bytes"] = wal_bytes(config)
    problems.expect_statuses(f"relay {tag}", relay_run, "202")
    check_wal(problems, f"relay {tag}", relay_run)
    stored = store_counts(config)["events"]
    accepted = relay_run["statuses"].get("202", 0)
    problems.expect(stored == accepted, f"relay {tag}: {accepted} answered 202, {stored} stored")
    return pair(bare_run, relay_run, bare_run["completed"], relay_run["completed"], stored)


def pair(
    bare: dict[str, Any], relay: dict[str, Any], bare_n: int, relay_n: int, stored: int
) -> dict[str, Any]:
    bare["cpu_us_per_req"] = cpu_us_per_request(bare, "bare", bare_n)
    relay["cpu_us_per_req"] = cpu_us_per_request(relay, "relay", relay_n)
    cpu_ratio = None
    if bare["cpu_us_per_req"] and relay["cpu_us_per_req"]:
        cpu_ratio = bare["cpu_us_per_req"] / relay["cpu_us_per_req"]
    return {
        "bare": bare,
        "relay": relay,
        "relay_stored": stored,
        "ratio": relay["rps"] / bare["rps"],
        "cpu_ratio": cpu_ratio,
    }


def ingest_wrk(s: Settings, wrk_path: str, work: Path, problems: Problems) -> dict[str, Any]:
    total_s = s.warmup_s + s.duration_s

    def measure(server: Server) -> dict[str, Any]:
        load = wrk.Load(server.port, SOURCE_PATH, SECRET, SIGNATURE_HEADER, CONNECTIONS, total_s)
        requests_file = wrk.write_requests(load, MAX_BUILT_REQUESTS, work)
        return metered(
            [server], lambda: wrk.run_wrk(wrk_path, load, requests_file, MAX_BUILT_REQUESTS)
        )

    with helper_server("bare", work) as bare:
        bare_run = measure(bare)
    config, port = write_relay_config(work / "ingest-wrk", None, 1)
    with relay_server(config, port, s.relay_src) as relay:
        relay_run = measure(relay)
        relay_run["wal_bytes"] = wal_bytes(config)
    check_wal(problems, "wrk relay", relay_run)
    stored = store_counts(config)["events"]
    for name, run in (("bare", bare_run), ("relay", relay_run)):
        problems.expect(run["errors"] == 0, f"wrk {name}: {run['errors']} errors")
    # wrk does not count requests in flight at the end; had it run out of pre-built requests
    # and sent some twice, relay would have stored fewer events than it answered
    unanswered = stored - relay_run["requests"]
    problems.expect(
        0 <= unanswered <= CONNECTIONS,
        f"wrk relay: {relay_run['requests']} responses but {stored} events stored",
    )
    return pair(bare_run, relay_run, bare_run["requests"], stored, stored)


# -- scenario 2: end to end --------------------------------------------------------------------


def end_to_end(s: Settings, work: Path, problems: Problems) -> dict[str, Any]:
    with helper_server("receiver", work) as receiver:
        config, port = write_relay_config(work / "e2e", receiver.port, s.delivery_concurrency)
        with relay_server(config, port, s.relay_src) as relay:
            meter = CpuMeter([relay, receiver])
            load = closed_loop(relay.port, s.events, 0.0, 120.0)
            stats = wait_for_receiver(receiver, s.events, timeout_s=120.0)
            cpu = meter.stop()
            wal = wal_bytes(config)
    problems.expect_statuses("end to end", load, "202")
    complete = stats["events"] >= s.events
    problems.expect(complete, f"end to end: receiver got {stats['events']} of {s.events} events")
    check_wal(problems, "end to end", {"wal_bytes": wal})
    finished_at = stats["last_new_at"] or load["last_done_at"]
    total_s = finished_at - load["first_sent_at"]
    ingest_s = load["last_done_at"] - load["first_sent_at"]
    return {
        "events": s.events,
        "delivery_concurrency": s.delivery_concurrency,
        "complete": complete,
        "seconds": total_s,
        "delivered_per_s": stats["events"] / total_s,
        "ingest_seconds": ingest_s,
        "ingest_per_s": s.events / ingest_s,
        "drain_after_last_post_s": finished_at - load["last_done_at"],
        "receiver_requests": stats["requests"],
        "store": store_counts(config),
        "ingest_latency_ms": load["latency_ms"],
        "relay_cpu_us_per_event": cpu["relay_cpu_s"] / s.events * 1e6,
        "cpu": cpu,
        "wal_bytes": wal,
    }


# -- scenario 3: latency at a fixed rate -------------------------------------------------------


def paced(s: Settings, work: Path, with_delivery: bool, problems: Problems) -> dict[str, Any]:
    tag = "paced-delivering" if with_delivery else "paced-ingest-only"
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(helper_server("receiver", work)) if with_delivery else None
        receiver_port = receiver.port if receiver else None
        config, port = write_relay_config(work / tag, receiver_port, s.delivery_concurrency)
        relay = stack.enter_context(relay_server(config, port, s.relay_src))
        servers = [relay] if receiver is None else [relay, receiver]
        result = metered(servers, lambda: open_loop(port, s.rate, s.warmup_s, s.rate_duration_s))
        if receiver is not None:
            stats = wait_for_receiver(receiver, result["sent"], timeout_s=30.0)
            result["delivered"] = stats["events"]
        result["wal_bytes"] = wal_bytes(config)
    problems.expect_statuses(tag, result, "202")
    check_wal(problems, tag, result)
    if with_delivery:
        problems.expect(
            result["delivered"] == result["sent"],
            f"{tag}: {result['delivered']} of {result['sent']} delivered",
        )
    result["store"] = store_counts(config)
    return result


# -- scenario 4: latency while retention purges a backlog --------------------------------------

# Retention that keeps the backlog: the same store and passes, nothing old enough to delete.
KEEP_ALL = {"delivered": "3650d", "dead": "3650d"}


def purging(
    s: Settings, work: Path, backlog: Path, purge: bool, problems: Problems
) -> dict[str, Any]:
    """Open-loop ingest on a copy of the backlog store; relay's first purge pass starts as it
    starts, before the load, so the load meets it from its first request."""
    tag = "purging" if purge else "not-purging"
    work_dir = work / tag
    work_dir.mkdir(parents=True)
    shutil.copyfile(backlog, work_dir / "relay.db")
    config, port = write_relay_config(work_dir, None, 1, None if purge else KEEP_ALL)
    db = work_dir / "relay.db"
    with relay_server(config, port, s.relay_src) as relay:
        left_at_start = backlog_left(db, s.purge_events)
        result = metered([relay], lambda: open_loop(port, s.rate, s.warmup_s, s.rate_duration_s))
        result["backlog_left"] = [left_at_start, backlog_left(db, s.purge_events)]
        result["wal_bytes"] = wal_bytes(config)
    problems.expect_statuses(tag, result, "202")
    check_wal(problems, tag, result)
    if purge:
        problems.expect(
            result["backlog_left"][0] > 0,
            f"{tag}: the purge ended before the load began; raise --purge-events",
        )
    accepted, stored = result["statuses"].get("202", 0), events_after_backlog(db, s.purge_events)
    problems.expect(stored == accepted, f"{tag}: {accepted} answered 202, {stored} new stored")
    result["file_bytes"] = db.stat().st_size
    result["store"] = store_counts(config)
    return result


def purge_scenario(s: Settings, work: Path, problems: Problems) -> dict[str, Any]:
    backlog = work / "backlog.db"
    started = time.monotonic()
    size = write_backlog(backlog, s.purge_events)
    built_s = time.monotonic() - started
    runs = {
        "no purge (retention 10y)": purging(s, work, backlog, False, problems),
        "purging the backlog": purging(s, work, backlog, True, problems),
    }
    return {"events": s.purge_events, "file_bytes": size, "built_s": built_s, "runs": runs}


# -- main ------------------------------------------------------------------------------------


def run_all(s: Settings, work: Path, problems: Problems) -> dict[str, Any]:
    results: dict[str, Any] = {"settings": asdict(s), "machine": report.machine()}
    results["others_cores_before"] = others_busy_cores()
    report.print_header(results, s.relay_src)
    step("scenario 1: ingest, relay vs bare handler")
    rounds = []
    for i in range(s.rounds):
        rounds.append(ingest_round(s, work, str(i + 1), problems))
        step(f"  round {i + 1}: ratio {rounds[-1]['ratio']:.2f}")
    results["ingest"] = rounds
    wrk_path = wrk.available() if s.use_wrk else None
    if wrk_path:
        step("scenario 1 again with wrk")
    results["ingest_wrk"] = ingest_wrk(s, wrk_path, work, problems) if wrk_path else None
    if s.ingest_only:
        report.print_ingest(rounds, results["ingest_wrk"], s, CONNECTIONS, s.use_wrk)
        return results
    step("scenario 2: end to end")
    results["end_to_end"] = end_to_end(s, work, problems)
    step("scenario 3: latency at a fixed rate")
    results["paced"] = {
        "with delivery running": paced(s, work, True, problems),
        "ingest only (no route)": paced(s, work, False, problems),
    }
    step("scenario 4: latency while retention purges a backlog")
    results["purge"] = purge_scenario(s, work, problems)
    import baselines  # here: it imports this module's pieces

    step("scenario 5: the bare client loop")
    results["client_loop"] = baselines.client_loop(s, work, problems)
    step("scenario 6: the naive relay (Flask + requests under gunicorn)")
    results["naive"] = baselines.naive(s, work, problems)
    step("scenario 7: fan-out to 1, 5 and 20 targets")
    results["fanout"] = baselines.fanout(s, work, problems)
    step("scenario 8: isolation from a hanging target")
    results["isolation"] = baselines.isolation(s, work, problems)
    report.print_results(results, s, CONNECTIONS, wrk_wanted=s.use_wrk)
    baselines.print_baselines(results, CONNECTIONS)
    return results


def step(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    settings, args = parse_settings(argv)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    problems = Problems()
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
            print(f"keeping {work}")
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-bench-")))
        try:
            results = run_all(settings, work, problems)
        except BenchError as exc:
            print(f"bench failed: {exc}", flush=True)
            return 1
        except KeyboardInterrupt:
            print("interrupted: servers stopped, temporary files removed", flush=True)
            return 130
    results["problems"] = problems.items
    print(f"\ntook {time.monotonic() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    for problem in problems.items:
        print(f"PROBLEM: {problem}")
    return 1 if problems.items else 0


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
