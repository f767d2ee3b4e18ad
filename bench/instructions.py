"""`make bench-instructions`: CPU instructions per ingested request, relay against the bare
handler, counted by callgrind. Unlike req/s, the count barely moves with what else the machine
runs, so it is the figure to compare a change with on a shared machine.

Each server (relay with one `hmac-sha256` source and no route, as in `make bench` scenario 1,
and bench/servers.py's bare handler) runs under `valgrind --tool=callgrind --instr-atstart=no`:
nothing is counted while it starts. The load generator (another process, not under valgrind)
sends warm-up requests; then `callgrind_control` switches instrumentation on and zeroes the
counters, the generator sends the measured requests (closed loop, 32 connections, the same
signed 784-byte bodies as `make bench`), and `callgrind_control --dump` writes the total.
What is counted is the server's whole process (the event loop and relay's threads) while it
handles those requests, including the timers that tick meanwhile.

    .venv/bin/python bench/instructions.py [--requests N] [--warmup N] [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ingest import closed_loop, store_counts, write_relay_config
from procs import BENCH_DIR, BenchError, Server, free_port, running

START_TIMEOUT_S = 300.0  # start-up is not instrumented, but valgrind still runs it ~5x slower
CONTROL_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 1800.0  # a closed loop that ends when its requests run out, well before this
SERVERS = ("bare", "relay")
EXPECTED_STATUS = {"bare": "200", "relay": "202"}


@dataclass(frozen=True)
class Count:
    server: str
    instructions: int
    requests: int

    @property
    def per_request(self) -> float:
        return self.instructions / self.requests


def callgrind_argv(out_prefix: Path, program: list[str]) -> list[str]:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise BenchError("valgrind is not installed (apt-get install valgrind)")
    return [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={out_prefix}.%p",
        *program,
    ]


def control(pid: int, *options: str) -> None:
    """Run callgrind_control against `pid`; fail loudly if it did not reach the process."""
    done = subprocess.run(
        ["callgrind_control", *options, str(pid)],
        capture_output=True,
        timeout=CONTROL_TIMEOUT_S,
        check=False,
    )
    output = (done.stdout + done.stderr).decode(errors="replace")
    if done.returncode != 0 or "OK" not in output:
        raise BenchError(f"callgrind_control {' '.join(options)} {pid} failed:\n{output}")


def read_dump(out_prefix: Path, pid: int) -> int:
    """The instructions (Ir) in callgrind's first dump of `pid`."""
    dump = Path(f"{out_prefix}.{pid}.1")
    deadline = time.monotonic() + CONTROL_TIMEOUT_S
    while True:
        with contextlib.suppress(FileNotFoundError):
            for line in dump.read_text(encoding="utf-8", errors="replace").splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        if time.monotonic() > deadline:
            raise BenchError(f"no totals in {dump} after {CONTROL_TIMEOUT_S:g}s")
        time.sleep(0.1)


def serve(server: str, work: Path) -> tuple[contextlib.AbstractContextManager[Server], Path]:
    """The server under callgrind, and the prefix of its callgrind files."""
    work.mkdir(parents=True, exist_ok=True)
    out_prefix = work / "callgrind"
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts in every run
    if server == "bare":
        port = free_port()
        program = [sys.executable, str(BENCH_DIR / "servers.py"), "bare", "--port", str(port)]
        program += ["--max-s", str(LOAD_TIMEOUT_S)]
        log = work / "bare.log"
    else:
        config, port = write_relay_config(work, None, 1)
        program = [sys.executable, "-m", "relay", "--log-level", "warning", "run", "-c"]
        program.append(str(config))
        log = work / "relay.log"
    argv = callgrind_argv(out_prefix, program)
    return running(server, argv, port, log, env=env, start_timeout_s=START_TIMEOUT_S), out_prefix


def load(server: Server, requests: int) -> None:
    result = closed_loop(server.port, requests, 0.0, LOAD_TIMEOUT_S)
    statuses = result["statuses"]
    expected = EXPECTED_STATUS[server.name]
    if statuses != {expected: requests}:
        raise BenchError(f"{server.name}: expected {requests} x {expected}, got {statuses}")


def count(server_name: str, work: Path, warmup: int, requests: int) -> Count:
    context, out_prefix = serve(server_name, work)
    with context as server:
        pid = server.process.pid
        load(server, warmup)
        control(pid, "--instr=on")
        control(pid, "--zero")
        load(server, requests)
        control(pid, "--dump")
        instructions = read_dump(out_prefix, pid)
    if server_name == "relay":
        stored = store_counts(work / "relay.yaml")["events"]
        if stored != warmup + requests:
            raise BenchError(f"relay answered {warmup + requests} x 202 but stored {stored}")
    return Count(server_name, instructions, requests)


def report(counts: list[Count], requests: int, warmup: int) -> None:
    print(
        f"\ninstructions per request (callgrind Ir, {requests:,} requests after {warmup:,} of"
        " warm-up, closed loop at 32 connections)"
    )
    medians = {}
    for server in SERVERS:
        runs = [c for c in counts if c.server == server]
        values = [c.per_request for c in runs]
        medians[server] = statistics.median(values)
        spread = (max(values) - min(values)) / medians[server] * 100
        shown = ", ".join(f"{v:,.0f}" for v in values)
        totals = ", ".join(f"{c.instructions:,}" for c in runs)
        print(f"  {server:<6}{medians[server]:>10,.0f}   runs: {shown} (totals {totals});", end="")
        print(f" spread {spread:.2f} %")
    ratio = medians["bare"] / medians["relay"]
    extra = medians["relay"] - medians["bare"]
    print(f"  ratio bare/relay {ratio:.3f}x; relay's own work {extra:,.0f} instructions/request")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2_000, help="measured, per run")
    parser.add_argument("--warmup", type=int, default=1_000, help="requests before counting")
    parser.add_argument("--runs", type=int, default=2, help="runs per server, alternating")
    parser.add_argument("--only", choices=SERVERS, help="count one server only")
    parser.add_argument("--keep", action="store_true", help="keep callgrind's files and logs")
    args = parser.parse_args()
    servers = (args.only,) if args.only else SERVERS
    counts: list[Count] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = Path(tempfile.mkdtemp(prefix="relay-instructions-"))
            print(f"keeping {work}")
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-instr-")))
        try:
            for run in range(1, args.runs + 1):
                for server in servers:
                    started = time.monotonic()
                    result = count(server, work / f"{server}-{run}", args.warmup, args.requests)
                    counts.append(result)
                    print(
                        f"[{time.strftime('%H:%M:%S')}] {server} run {run}: "
                        f"{result.per_request:,.0f} instructions/request "
                        f"({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
        except BenchError as exc:
            print(f"bench failed: {exc}", flush=True)
            return 1
    if args.only is None:
        report(counts, args.requests, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
