"""What relay's server (relay/server.py: read deadline, connection cap, JSON refusals) costs per
request: the bare handler (read the body, answer 200) served by aiohttp's AppRunner and by
relay's RelayRunner, closed loop at 32 connections, rounds alternating. CPU time per request is
the figure to read on a shared machine; throughput moves with the neighbours.

    .venv/bin/python bench/server_overhead.py [--rounds N] [--duration-s S]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from ingest import MAX_BUILT_REQUESTS, closed_loop, cpu_us_per_request, metered
from procs import BENCH_DIR, Server, free_port, running

SERVERS = ("aiohttp", "relay")


def bare(server: str, log_dir: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "servers.py"), "bare", "--port", str(port)]
    return running("bare", [*argv, "--server", server], port, log_dir / f"{server}-{port}.log")


def one_run(server: str, log_dir: Path, warmup_s: float, duration_s: float) -> dict[str, Any]:
    with bare(server, log_dir) as process:
        run = metered(
            [process], lambda: closed_loop(process.port, MAX_BUILT_REQUESTS, warmup_s, duration_s)
        )
    statuses = run["statuses"]
    if set(statuses) != {"200"}:
        raise SystemExit(f"{server}: unexpected statuses {statuses}")
    run["cpu_us_per_req"] = cpu_us_per_request(run, "bare", run["completed"])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=4.0)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {server: [] for server in SERVERS}
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as work:
        print("round  server    req/s   CPU us/req  p50/p99 ms   others")
        for number in range(1, args.rounds + 1):
            for server in SERVERS:
                run = one_run(server, Path(work), args.warmup_s, args.duration_s)
                runs[server].append(run)
                latency = run["latency_ms"]
                print(
                    f"{number:>5}  {server:<8}{run['rps']:>8,.0f}{run['cpu_us_per_req']:>12.1f}"
                    f"  {latency['p50']:.1f} / {latency['p99']:.1f}"
                    f"{run['cpu']['others_cores']:>9.2f}",
                    flush=True,
                )
    cpu = {s: statistics.median(r["cpu_us_per_req"] for r in runs[s]) for s in SERVERS}
    rps = {s: statistics.median(r["rps"] for r in runs[s]) for s in SERVERS}
    print(
        f"median CPU per request: aiohttp {cpu['aiohttp']:.1f} us, relay {cpu['relay']:.1f} us "
        f"(+{cpu['relay'] - cpu['aiohttp']:.1f} us); median req/s: aiohttp {rps['aiohttp']:,.0f}, "
        f"relay {rps['relay']:,.0f}"
    )


if __name__ == "__main__":
    main()
