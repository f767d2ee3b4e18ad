"""Running the servers under test and the load generator as child processes, and cleaning up.

Every child gets a log file in the run's temporary directory, is waited for with a deadline,
and is stopped with SIGTERM (then SIGKILL) when its `with` block ends, even on an error.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
HOST = "127.0.0.1"
PR_SET_PDEATHSIG = 1  # Linux prctl option
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0  # relay gives deliveries in flight up to 10 s on SIGTERM

# No proxy from the environment may see loopback traffic.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(Exception):
    pass


_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime, stime


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat.

    Busy is process time plus time stolen by the hypervisor; interrupt time is left out, as
    most of it is the kernel's loopback TCP work for our own processes.
    """
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0, 0.0
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    busy = user + nice + system + steal
    return busy / _TICKS_PER_S, (busy + idle + iowait + irq + softirq) / _TICKS_PER_S


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU used during a measurement: by each server, by the load generator, by everything else.

    "Others" is the machine's busy time minus ours: other processes on a shared machine. It is
    what makes throughput figures noisy; CPU time per request barely depends on it.
    """

    def __init__(self, servers: Sequence[Server]) -> None:
        self._servers = list(servers)
        self._start_servers = [process_cpu_s(s.process.pid) for s in self._servers]
        self._start_children = children_cpu_s()
        self._start_machine = machine_cpu_s()
        self._start_wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        """Call after the load generator has been reaped, while the servers still run."""
        wall = time.monotonic() - self._start_wall
        servers = {
            s.name: process_cpu_s(s.process.pid) - start
            for s, start in zip(self._servers, self._start_servers, strict=True)
        }
        loadgen = children_cpu_s() - self._start_children
        busy0, total0 = self._start_machine
        busy1, total1 = machine_cpu_s()
        others = (busy1 - busy0) - sum(servers.values()) - loadgen
        result = {f"{name}_cpu_s": v for name, v in servers.items()}
        result.update(
            {
                "loadgen_cpu_s": loadgen,
                "wall_s": wall,
                "machine_cores": (total1 - total0) / wall if wall > 0 else 0.0,
                "others_cores": max(0.0, others) / wall if wall > 0 else 0.0,
            }
        )
        return result


def others_busy_cores(sample_s: float = 1.0) -> float:
    """How many cores other processes keep busy right now (sampled before we start anything)."""
    busy0, _ = machine_cpu_s()
    time.sleep(sample_s)
    busy1, _ = machine_cpu_s()
    return (busy1 - busy0) / sample_s


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def get_json(url: str, timeout_s: float = 2.0) -> Any:
    with _opener.open(url, timeout=timeout_s) as response:
        return json.loads(response.read())


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.name} exited with {self.process.returncode}:\n{log_tail(self.log)}"
            )


def stop_with_parent() -> None:
    """In the child: get SIGTERM if the bench dies without cleaning up (even by SIGKILL)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait_ready(server: Server, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        server.check_alive()
        try:
            with _opener.open(f"{server.url}/healthz", timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"{server.name} not ready after {timeout_s:g}s")
        time.sleep(0.05)


def _stop(server: Server) -> None:
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5.0)


@contextlib.contextmanager
def running(
    name: str,
    argv: Sequence[str],
    port: int,
    log: Path,
    cwd: Path = REPO_DIR,
    env: dict[str, str] | None = None,
    start_timeout_s: float = START_TIMEOUT_S,
) -> Iterator[Server]:
    """Start `argv`, wait for GET /healthz on `port`, yield; stop it however the block ends."""
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            preexec_fn=stop_with_parent,  # the bench has no threads: safe
        )
    server = Server(name, port, process, log)
    try:
        _wait_ready(server, start_timeout_s)
        yield server
    finally:
        _stop(server)


def helper_server(kind: str, log_dir: Path) -> contextlib.AbstractContextManager[Server]:
    """The bare handler or the receiver (bench/servers.py), on a free port."""
    port = free_port()
    argv = [sys.executable, str(BENCH_DIR / "servers.py"), kind, "--port", str(port)]
    return running(kind, argv, port, log_dir / f"{kind}-{port}.log")


def relay_server(
    config: Path, port: int, source_dir: Path | None = None
) -> contextlib.AbstractContextManager[Server]:
    """relay as an operator runs it: `python -m relay run -c CONFIG` (uvloop, no access log).

    `source_dir` runs the `relay` package found there instead (a scratch copy to compare).
    """
    argv = [sys.executable, "-m", "relay", "--log-level", "warning", "run", "-c", str(config)]
    log = config.parent / "relay.log"
    if source_dir is None:
        return running("relay", argv, port, log)
    env = dict(os.environ, PYTHONPATH=str(source_dir))
    return running("relay", argv, port, log, cwd=source_dir, env=env)


def run_loadgen(args: Sequence[str], timeout_s: float) -> dict[str, Any]:
    """Run bench/loadgen.py to completion and return the JSON it prints."""
    return run_script("loadgen.py", args, timeout_s)


def run_script(script: str, args: Sequence[str], timeout_s: float = 300.0) -> dict[str, Any]:
    """Run a script of bench/ to completion and return the JSON it prints."""
    argv = [sys.executable, str(BENCH_DIR / script), *args]
    try:
        done = subprocess.run(
            argv,
            cwd=REPO_DIR,
            capture_output=True,
            timeout=timeout_s,
            check=False,
            preexec_fn=stop_with_parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{script} did not finish within {timeout_s:g}s") from exc
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")[-2000:]
        raise BenchError(f"{script} failed ({done.returncode}):\n{stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def memory_bytes(pid: int) -> dict[str, int]:
    """A running process's resident memory now (`rss`) and its peak so far (`peak_rss`), from
    /proc (Linux; empty elsewhere)."""
    fields = {"VmRSS:": "rss", "VmHWM:": "peak_rss"}
    memory = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, *value = line.split()
            if name in fields and value:
                memory[fields[name]] = int(value[0]) * 1024  # kB
    return memory
