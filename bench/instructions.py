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

Delivery is counted the same way, against the bare client loop of `make bench` scenario 5:
relay with one http target (the receiver, not under valgrind) delivers warm-up events, then
the target is paused (admin API) while the measured events are posted, and the count covers
its resumption and their delivery until the receiver has every one. The client loop
(bench/client_loop.py) runs under callgrind too, counted from after its warm-up posts to its
last answer.

    .venv/bin/python bench/instructions.py [--what ingest|delivery|both] [--requests N]
        [--warmup N] [--runs N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from baselines import post_admin
from ingest import (
    closed_loop,
    http_target,
    store_counts,
    wait_for_receiver,
    write_config,
    write_relay_config,
)
from procs import BENCH_DIR, REPO_DIR, BenchError, Server, free_port, helper_server, running

START_TIMEOUT_S = 300.0  # start-up is not instrumented, but valgrind still runs it ~5x slower
CONTROL_TIMEOUT_S = 60.0
LOAD_TIMEOUT_S = 1800.0  # a closed loop that ends when its requests run out, well before this
EXPECTED_STATUS = {"bare": "200", "relay": "202"}


# `--relay-src DIR`: count the relay package in DIR (a scratch copy of another commit)
relay_src: Path | None = None


def relay_env() -> tuple[dict[str, str], Path | None]:
    """The environment and working directory relay runs with (None: the repository's)."""
    env = dict(os.environ, PYTHONHASHSEED="0")  # the same dict layouts in every run
    if relay_src is None:
        return env, None
    return dict(env, PYTHONPATH=str(relay_src)), relay_src


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
        f"--log-file={out_prefix}.%p.log",
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
    env, cwd = relay_env()
    if server == "bare":
        env, cwd = dict(os.environ, PYTHONHASHSEED="0"), None
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
    context = running(
        server, argv, port, log, cwd=cwd or REPO_DIR, env=env, start_timeout_s=START_TIMEOUT_S
    )
    return context, out_prefix


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


# -- delivery --------------------------------------------------------------------------------


def relay_program(config: Path) -> list[str]:
    return [sys.executable, "-m", "relay", "--log-level", "warning", "run", "-c", str(config)]


def count_relay_delivery(work: Path, warmup: int, events: int) -> Count:
    """Instructions per delivery: resuming a paused target and delivering `events`."""
    work.mkdir(parents=True, exist_ok=True)
    out_prefix = work / "callgrind"
    env, cwd = relay_env()
    with helper_server("receiver", work) as receiver:
        config = write_config(work / "relay", {"sink": http_target(receiver.port, 32)})
        argv = callgrind_argv(out_prefix, relay_program(config.path))
        log = work / "relay.log"
        with running(
            "relay",
            argv,
            config.port,
            log,
            cwd=cwd or REPO_DIR,
            env=env,
            start_timeout_s=START_TIMEOUT_S,
        ) as relay:
            load(relay, warmup)
            wait_for_receiver(receiver, warmup, LOAD_TIMEOUT_S)
            post_admin(config.admin_port, "/api/targets/sink/pause")
            load(relay, events)
            pid = relay.process.pid
            control(pid, "--instr=on")
            control(pid, "--zero")
            post_admin(config.admin_port, "/api/targets/sink/resume")
            stats = wait_for_receiver(receiver, warmup + events, LOAD_TIMEOUT_S)
            control(pid, "--dump")
            instructions = read_dump(out_prefix, pid)
    if stats["events"] != warmup + events:
        raise BenchError(f"relay delivered {stats['events']} of {warmup + events} events")
    return Count("relay delivery", instructions, events)


def count_client_loop(work: Path, warmup: int, events: int) -> Count:
    """Instructions per post of the bare client loop, after its warm-up posts."""
    work.mkdir(parents=True, exist_ok=True)
    out_prefix = work / "callgrind"
    env = dict(os.environ, PYTHONHASHSEED="0")
    with helper_server("receiver", work) as receiver:
        script = [sys.executable, str(BENCH_DIR / "client_loop.py"), "--port", str(receiver.port)]
        script += ["--events", str(events), "--warmup", str(warmup), "--handshake"]
        process = subprocess.Popen(
            callgrind_argv(out_prefix, script),
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdin, stdout = process.stdin, process.stdout
        try:
            if stdin is None or stdout is None:
                raise BenchError("the client loop has no pipes")
            expect_line(process, "warm")
            control(process.pid, "--instr=on")
            control(process.pid, "--zero")
            stdin.write("go\n")
            stdin.flush()
            expect_line(process, "done")
            control(process.pid, "--dump")
            instructions = read_dump(out_prefix, process.pid)
            stdin.write("exit\n")
            stdin.flush()
            result = json.loads(stdout.read())
            process.wait(CONTROL_TIMEOUT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    if result["statuses"] != {"200": events}:
        raise BenchError(f"client loop: expected {events} x 200, got {result['statuses']}")
    return Count("client loop", instructions, events)


def expect_line(process: subprocess.Popen[str], line: str) -> None:
    """Read the process's stderr until `line`, within LOAD_TIMEOUT_S."""
    stderr = process.stderr
    if stderr is None:
        raise BenchError("the client loop has no stderr pipe")
    deadline = time.monotonic() + LOAD_TIMEOUT_S
    while time.monotonic() < deadline:
        got = stderr.readline()
        if not got:
            raise BenchError(f"client loop exited before saying {line!r}")
        if got.strip() == line:
            return
    raise BenchError(f"client loop did not say {line!r} within {LOAD_TIMEOUT_S:g}s")


# -- report ----------------------------------------------------------------------------------


def report_pair(title: str, counts: list[Count], names: tuple[str, str], what: str) -> None:
    """Both servers' runs, and the ratio of the first's median to the second's."""
    print(f"\n{title}")
    medians = {}
    for name in names:
        runs = [c for c in counts if c.server == name]
        values = [c.per_request for c in runs]
        medians[name] = statistics.median(values)
        spread = (max(values) - min(values)) / medians[name] * 100
        shown = ", ".join(f"{v:,.0f}" for v in values)
        totals = ", ".join(f"{c.instructions:,}" for c in runs)
        print(f"  {name:<15}{medians[name]:>10,.0f}   runs: {shown} (totals {totals});", end="")
        print(f" spread {spread:.2f} %")
    base, relay = names
    ratio = medians[base] / medians[relay]
    extra = medians[relay] - medians[base]
    print(f"  ratio {base}/{relay} {ratio:.3f}x; relay's own work {extra:,.0f} instructions/{what}")


Counter = Callable[[Path, int, int], Count]  # (work dir, warm-up, measured) -> count
COUNTERS: dict[str, tuple[str, Counter]] = {  # --only NAME: (what it counts, how)
    "bare": ("ingest", lambda work, warmup, n: count("bare", work, warmup, n)),
    "relay": ("ingest", lambda work, warmup, n: count("relay", work, warmup, n)),
    "loop": ("delivery", count_client_loop),
    "delivery": ("delivery", count_relay_delivery),
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--what", choices=["ingest", "delivery", "both"], default="both")
    parser.add_argument("--requests", type=int, default=2_000, help="measured, per run")
    parser.add_argument("--warmup", type=int, default=1_000, help="requests before counting")
    parser.add_argument("--runs", type=int, default=2, help="runs per server, alternating")
    parser.add_argument("--only", choices=list(COUNTERS), help="count one of them only")
    parser.add_argument("--keep", action="store_true", help="keep callgrind's files and logs")
    parser.add_argument("--relay-src", type=Path, help="count the relay package in this directory")
    args = parser.parse_args()
    global relay_src
    relay_src = args.relay_src.resolve() if args.relay_src else None
    names = [n for n, (what, _) in COUNTERS.items() if args.what in (what, "both")]
    names = [args.only] if args.only else names
    counts: list[Count] = []
    with contextlib.ExitStack() as stack:
        if args.keep:
            work = Path(tempfile.mkdtemp(prefix="relay-instructions-"))
            print(f"keeping {work}")
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="relay-instr-")))
        try:
            for run in range(1, args.runs + 1):
                for name in names:
                    started = time.monotonic()
                    counter = COUNTERS[name][1]
                    result = counter(work / f"{name}-{run}", args.warmup, args.requests)
                    counts.append(result)
                    print(
                        f"[{time.strftime('%H:%M:%S')}] {result.server} run {run}: "
                        f"{result.per_request:,.0f} instructions per request "
                        f"({time.monotonic() - started:.0f} s)",
                        flush=True,
                    )
        except BenchError as exc:
            print(f"bench failed: {exc}", flush=True)
            return 1
    measured = f"{args.requests:,} after {args.warmup:,} of warm-up"
    if {"bare", "relay"} <= set(names):
        title = f"ingest: instructions per request (callgrind Ir, {measured}, 32 connections)"
        report_pair(title, counts, ("bare", "relay"), "request")
    if {"loop", "delivery"} <= set(names):
        title = f"delivery: instructions per event delivered ({measured}, 32 in flight)"
        report_pair(title, counts, ("client loop", "relay delivery"), "delivery")
    return 0


if __name__ == "__main__":
    sys.exit(main())
