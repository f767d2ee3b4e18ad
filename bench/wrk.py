"""Optional cross-check with wrk (C, one thread), used only when `wrk` is on PATH.

wrk has no HMAC in its Lua, so the same signed requests the Python generator sends are written
to a file first and wrk_prebuilt.lua sends them in order. wrk has no warm-up phase: its figures
cover the whole run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from payloads import RequestFactory
from procs import BENCH_DIR, HOST, BenchError, stop_with_parent


def available() -> str | None:
    return shutil.which("wrk")


@dataclass(frozen=True)
class Load:
    port: int
    path: str
    secret: str
    header: str
    connections: int
    duration_s: float


def write_requests(load: Load, request_count: int, work_dir: Path) -> Path:
    """The requests wrk_prebuilt.lua sends, separated by NUL bytes."""
    factory = RequestFactory(HOST, load.port, load.path, load.secret, load.header)
    requests_file = work_dir / f"wrk-requests-{load.port}.bin"
    with requests_file.open("wb") as out:
        for i in range(request_count):
            out.write(factory.request(i))
            out.write(b"\0")
    return requests_file


def run_wrk(wrk: str, load: Load, requests_file: Path, request_count: int) -> dict[str, Any]:
    argv = [
        wrk,
        "-t1",
        f"-c{load.connections}",
        f"-d{max(1, round(load.duration_s))}s",
        "-s",
        str(BENCH_DIR / "wrk_prebuilt.lua"),
        f"http://{HOST}:{load.port}{load.path}",
        "--",
        str(requests_file),
    ]
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            timeout=load.duration_s + 60,
            check=False,
            preexec_fn=stop_with_parent,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError("wrk did not finish in time") from exc
    finally:
        requests_file.unlink(missing_ok=True)
    output = done.stdout.decode(errors="replace")
    line = next((s for s in output.splitlines() if s.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{output}{done.stderr.decode()}")
    result: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["completed"] = result["requests"]
    result["latency_ms"] = {
        "p50": result["p50_us"] / 1000,
        "p99": result["p99_us"] / 1000,
        "max": result["max_us"] / 1000,
    }
    result["exhausted"] = result["requests"] + load.connections > request_count
    result["errors"] = sum(
        result[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return result
