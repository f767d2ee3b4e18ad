"""relay as a real child process (`python -m relay run`), and a look into its SQLite store.

Every wait here is a poll with a deadline and a bounded number of rounds: readiness is GET
/healthz answering 200, exit is `Popen.poll()` returning a code. The child's stdout and stderr
go to one log file that `output()` returns, for assertion messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from tests.receiver import Receiver

REPO_ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.02
READY_TIMEOUT_S = 20.0
EXIT_TIMEOUT_S = 15.0


def free_port() -> int:
    """A port nobody listens on right now (the kernel's pick; free until someone binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def listeners(port: int, admin_port: int) -> str:
    """The config's `listen` and `admin` lines, each on a port of its own: a relay child on the
    admin default (9090) would meet any other one running at the same time."""
    return f'listen: "127.0.0.1:{port}"\nadmin: {{listen: "127.0.0.1:{admin_port}"}}\n'


def relay_config(
    port: int,
    target_url: str,
    *,
    concurrency: int = 4,
    store: str = "relay.db",
    admin_port: int | None = None,
    store_url: str | None = None,
    max_per_second: float | None = None,
    retry: str = "{initial: 50ms, max_interval: 200ms, max_elapsed: 1m}",
) -> str:
    """One open source at /hooks/in routed to one http target, with short retries; the admin
    listener on `admin_port` (default: a free port). The store is the SQLite file `store`
    unless `store_url` names another."""
    admin_port = free_port() if admin_port is None else admin_port
    store_url = f"sqlite:///{store}" if store_url is None else store_url
    limit = "" if max_per_second is None else f"max_per_second: {max_per_second}"
    return listeners(port, admin_port) + textwrap.dedent(
        f"""\
        store: "{store_url}"
        sources:
          in:
            path: /hooks/in
        targets:
          out:
            kind: http
            url: "{target_url}/in"
            timeout: 5s
            concurrency: {concurrency}
            retry: {retry}
            {limit}
        routes:
          - targets: [out]
        """
    )


class RelayProcess:
    """One relay daemon config; `start()` may be called again after the previous run ended."""

    def __init__(self, config: Path, port: int, log: Path, admin_port: int | None = None) -> None:
        self.config = config
        self.port = port
        self.admin_port = admin_port  # where the config's admin.listen is, if the test asks
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        assert self.admin_port is not None, "this RelayProcess was not told its admin port"
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def pid(self) -> int:
        return self._proc().pid

    def _proc(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "relay was never started"
        return self.proc

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "relay is still running"
        self.runs += 1
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("ab") as out:
            out.write(f"----- run {self.runs}: relay run -c {self.config} -----\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "relay", "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.config.parent,
                env=env,
            )

    def output(self) -> str:
        """Everything every run wrote so far, framed for an assertion message."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = "(no output file)"
        return f"\n===== relay output ({self.log}) =====\n{text}===== end of relay output ====="

    def returncode(self) -> int | None:
        return self._proc().poll()

    async def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll GET /healthz until 200; fail at once if the process exits first."""
        deadline = time.monotonic() + timeout_s
        timeout = aiohttp.ClientTimeout(total=1.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for _ in range(int(timeout_s / POLL_S) + 1):
                code = self.returncode()
                if code is not None:
                    raise AssertionError(
                        f"relay exited with {code} before it was ready" + self.output()
                    )
                try:
                    async with session.get(f"{self.url}/healthz") as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(POLL_S)
        raise AssertionError(f"relay not ready on {self.url} after {timeout_s}s" + self.output())

    def send_signal(self, signum: signal.Signals) -> None:
        self._proc().send_signal(signum)

    async def wait_exit(self, timeout_s: float = EXIT_TIMEOUT_S) -> int:
        """The exit code (negative: killed by that signal); fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / POLL_S) + 1):
            code = self.returncode()
            if code is not None:
                return code
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(POLL_S)
        raise AssertionError(f"relay still running {timeout_s}s later" + self.output())

    async def kill(self) -> None:
        """SIGKILL, and wait until the kernel has reaped it (so its lock and port are free)."""
        self.send_signal(signal.SIGKILL)
        code = await self.wait_exit()
        assert code == -signal.SIGKILL, f"relay exited with {code} instead of dying" + self.output()

    def stop_now(self) -> None:
        """For teardown: SIGKILL whatever still runs and reap it (synchronously, bounded)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=EXIT_TIMEOUT_S)


# -- talking to relay -------------------------------------------------------------------------


async def post_event(
    session: aiohttp.ClientSession, relay: RelayProcess, event_id: str
) -> int | None:
    """POST one event to /hooks/in: the status, or None when relay could not be reached."""
    body = json.dumps({"id": event_id, "type": "test"}).encode()
    try:
        async with session.post(
            f"{relay.url}/hooks/in", data=body, headers={"Content-Type": "application/json"}
        ) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def post_until_refused(
    session: aiohttp.ClientSession,
    relay: RelayProcess,
    poster: int,
    max_posts: int,
    acked: set[str],
    refused: dict[str, int | None],
) -> None:
    """Post events p<poster>-0, -1, ... until one is not answered 202 (noted in `refused`)."""
    for i in range(max_posts):
        event_id = f"p{poster}-{i}"
        status = await post_event(session, relay, event_id)
        if status != 202:
            refused[event_id] = status
            return
        acked.add(event_id)


def event_ids(receiver: Receiver, start: int = 0) -> list[str]:
    """The Relay-Event-Id of every request the receiver got from index `start` on."""
    ids = []
    for received in receiver.received[start:]:
        headers = {name.lower(): value for name, value in received.headers.items()}
        ids.append(headers.get("relay-event-id", "(no Relay-Event-Id)"))
    return ids


class TimedReceiver(Receiver):
    """A Receiver that also notes when each request arrived (time.time(), the relay's clock)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[float] = []

    async def _handle(self, request: web.Request) -> web.Response:
        self.arrivals.append(time.time())
        return await super()._handle(request)


# -- looking into the store -------------------------------------------------------------------


@dataclass(frozen=True)
class StoredDelivery:
    event_id: str
    state: str
    attempts: int
    next_attempt_at: float
    lease_until: float
    last_status: int | None


def stored_deliveries(db: Path) -> list[StoredDelivery]:
    """Every delivery in the store, oldest first, read through a read-only connection.

    Read-only, so looking never checkpoints or otherwise repairs what a killed process left.
    """
    uri = f"file:{db}?mode=ro"
    connection = sqlite3.connect(uri, uri=True)
    try:
        rows = connection.execute(
            "SELECT e.event_id, d.state, d.attempts, d.next_attempt_at, d.lease_until,"
            " d.last_status FROM deliveries d JOIN events e ON e.pk = d.event_pk ORDER BY d.id"
        ).fetchall()
    finally:
        connection.close()
    return [StoredDelivery(*row) for row in rows]
