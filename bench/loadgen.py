"""A small HTTP/1.1 load generator on raw asyncio protocols (uvloop), run in its own process.

  closed  N keep-alive connections, each sending its next request as soon as the previous
          response is complete (like `wrk -c N`), for warm-up + duration seconds or until the
          pre-built requests run out. Latency is measured from send to complete response.
  open    Requests leave at a fixed rate whatever the server does (open loop), on a pool of
          keep-alive connections that grows when all are busy. Latency is measured from the
          time a request was *due*, so a stalled server cannot hide its queue (no coordinated
          omission).

Every request is built and signed before the clock starts (see payloads.py). The result is one
JSON object on stdout; times named *_at are on the monotonic clock shared by this machine's
processes. Traffic goes to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import uvloop
from payloads import RequestFactory

HOST = "127.0.0.1"
DRAIN_S = 15.0  # how long to wait for responses still in flight once sending has stopped

OnResponse = Callable[["Connection", int], None]
OnLost = Callable[["Connection", Exception | None], None]


class ProtocolError(Exception):
    pass


def parse_head(head: bytes) -> tuple[int, int]:
    """Status and Content-Length of a response head (aiohttp always sends a length here)."""
    status = int(head[9:12])
    lower = head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start < 0:
        if b"\r\ntransfer-encoding:" in lower:
            raise ProtocolError("chunked responses are not supported")
        return status, 0
    end = lower.find(b"\r\n", start + 2)
    return status, int(lower[start + 17 : end if end >= 0 else len(lower)])


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self, on_response: OnResponse, on_lost: OnLost) -> None:
        self._on_response = on_response
        self._on_lost = on_lost
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._need = -1  # the whole response's length once its head is in, else -1
        self._status = 0
        self.due_at = 0.0
        self.sent_at = 0.0
        self.busy = False  # a request is in flight

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def send(self, request: bytes, due_at: float) -> None:
        if self._transport is None:
            raise ProtocolError("send before the connection is made")
        self.due_at = due_at
        self.sent_at = time.monotonic()
        self.busy = True
        self._transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            if self._need < 0:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._status, length = parse_head(bytes(buffer[:end]))
                self._need = end + 4 + length
            if len(buffer) < self._need:
                return
            del buffer[: self._need]
            self._need = -1
            self.busy = False
            self._on_response(self, self._status)

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost(self, exc)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


class Recorder:
    """Per-request times, and the counts of statuses and lost connections."""

    def __init__(self) -> None:
        self.due: list[float] = []
        self.sent: list[float] = []
        self.done: list[float] = []
        self.statuses: collections.Counter[int] = collections.Counter()
        self.lost = 0

    def record(self, conn: Connection, status: int) -> float:
        now = time.monotonic()
        self.due.append(conn.due_at)
        self.sent.append(conn.sent_at)
        self.done.append(now)
        self.statuses[status] += 1
        return now


def percentiles_ms(values_s: list[float]) -> dict[str, float | None]:
    """Nearest-rank percentiles, in milliseconds."""
    if not values_s:
        return {"p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values_s)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))] * 1000

    return {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": ordered[-1] * 1000}


async def open_connections(
    count: int, port: int, on_response: OnResponse, on_lost: OnLost
) -> list[Connection]:
    loop = asyncio.get_running_loop()
    conns = []
    for _ in range(count):
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: Connection(on_response, on_lost), HOST, port), 5.0
        )
        conns.append(conn)
    return conns


class ClosedLoop:
    def __init__(
        self, requests: list[bytes], connections: int, warmup_s: float, duration_s: float
    ) -> None:
        self._requests = requests
        self._connections = connections
        self._warmup_s = warmup_s
        self._duration_s = duration_s
        self._next_index = 0
        self._stopped: set[Connection] = set()
        self._stop_sending_at = 0.0
        self._sending_stopped_at: float | None = None
        self._finished: asyncio.Future[None] | None = None
        self.rec = Recorder()

    async def run(self, port: int) -> dict[str, Any]:
        self._finished = asyncio.get_running_loop().create_future()
        conns = await open_connections(self._connections, port, self._on_response, self._lost)
        started_at = time.monotonic()
        warm_at = started_at + self._warmup_s
        self._stop_sending_at = warm_at + self._duration_s
        for conn in conns:
            self._send_next(conn)
        try:
            await asyncio.wait_for(self._finished, self._warmup_s + self._duration_s + DRAIN_S)
        except TimeoutError:
            pass  # reported as unfinished
        finally:
            for conn in conns:
                conn.close()
        return self._summary(started_at, warm_at)

    def _send_next(self, conn: Connection) -> None:
        now = time.monotonic()
        if self._next_index < len(self._requests) and now < self._stop_sending_at:
            conn.send(self._requests[self._next_index], now)
            self._next_index += 1
            return
        if self._sending_stopped_at is None:
            self._sending_stopped_at = now
        self._retire(conn)

    def _retire(self, conn: Connection) -> None:
        self._stopped.add(conn)
        finished = self._finished
        if len(self._stopped) == self._connections and finished and not finished.done():
            finished.set_result(None)

    def _on_response(self, conn: Connection, status: int) -> None:
        self.rec.record(conn, status)
        self._send_next(conn)

    def _lost(self, conn: Connection, exc: Exception | None) -> None:
        if conn not in self._stopped:
            self.rec.lost += 1  # its request in flight, if any, is lost with it
            self._retire(conn)

    def _summary(self, started_at: float, warm_at: float) -> dict[str, Any]:
        rec = self.rec
        end_at = self._sending_stopped_at or time.monotonic()
        window_s = max(end_at - warm_at, 1e-9)
        in_window = sum(1 for d in rec.done if warm_at <= d <= end_at)
        latencies = [d - s for s, d in zip(rec.sent, rec.done, strict=True) if s >= warm_at]
        return {
            "mode": "closed",
            "connections": self._connections,
            "sent": self._next_index,
            "completed": len(rec.done),
            "exhausted": self._next_index >= len(self._requests),
            "window_s": window_s,
            "rps": in_window / window_s,
            "latency_ms": percentiles_ms(latencies),
            "statuses": {str(k): v for k, v in sorted(rec.statuses.items())},
            "lost_connections": rec.lost,
            "unfinished": self._next_index - len(rec.done) - rec.lost,
            "first_sent_at": min(rec.sent, default=started_at),
            "last_done_at": max(rec.done, default=end_at),
        }


class OpenLoop:
    def __init__(
        self,
        requests: list[bytes],
        rate: float,
        warmup_s: float,
        connections: int,
        max_connections: int,
    ) -> None:
        self._requests = requests
        self._rate = rate
        self._warmup_s = warmup_s
        self._connections = connections
        self._max_connections = max_connections
        self._idle: list[Connection] = []
        self._all: list[Connection] = []
        self._queue: collections.deque[tuple[bytes, float]] = collections.deque()
        self._outstanding = 0
        self._opening: set[asyncio.Task[None]] = set()
        self._drained: asyncio.Event | None = None
        self._port = 0
        self.rec = Recorder()

    async def run(self, port: int) -> dict[str, Any]:
        self._port = port
        self._drained = asyncio.Event()
        conns = await open_connections(self._connections, port, self._on_response, self._lost)
        self._all.extend(conns)
        self._idle.extend(conns)
        started_at = time.monotonic() + 0.01
        try:
            for i, request in enumerate(self._requests):
                due_at = started_at + i / self._rate
                delay = due_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # may wake up to 0.5 ms early (uvloop rounds)
                self._dispatch(request, due_at)
            self._drained.clear()  # it was set each time the pipeline emptied on the way
            if self._outstanding:
                with contextlib.suppress(TimeoutError):  # what is left is reported unfinished
                    await asyncio.wait_for(self._drained.wait(), DRAIN_S)
        finally:
            for task in self._opening:
                task.cancel()
            for conn in self._all:
                conn.close()
        return self._summary(started_at)

    def _dispatch(self, request: bytes, due_at: float) -> None:
        self._outstanding += 1
        if self._idle:
            self._idle.pop().send(request, due_at)
            return
        self._queue.append((request, due_at))
        if len(self._all) + len(self._opening) < self._max_connections:
            task = asyncio.create_task(self._open_one())
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open_one(self) -> None:
        try:
            (conn,) = await open_connections(1, self._port, self._on_response, self._lost)
        except (OSError, TimeoutError):
            self.rec.lost += 1
            if self._queue:  # the request that asked for this connection fails
                self._queue.popleft()
                self._settle()
            return
        self._all.append(conn)
        self._free(conn)

    def _free(self, conn: Connection) -> None:
        if self._queue:
            request, due_at = self._queue.popleft()
            conn.send(request, due_at)
        else:
            self._idle.append(conn)

    def _on_response(self, conn: Connection, status: int) -> None:
        self.rec.record(conn, status)
        self._settle()
        self._free(conn)

    def _settle(self) -> None:
        self._outstanding -= 1
        if self._outstanding == 0 and self._drained is not None:
            self._drained.set()

    def _lost(self, conn: Connection, exc: Exception | None) -> None:
        if conn in self._idle:
            self._idle.remove(conn)
        if conn.busy:  # the server dropped a request in flight
            self.rec.lost += 1
            self._settle()

    def _summary(self, started_at: float) -> dict[str, Any]:
        rec = self.rec
        warm_at = started_at + self._warmup_s
        rows = [r for r in zip(rec.due, rec.sent, rec.done, strict=True) if r[0] >= warm_at]
        measured_s = (len(self._requests) / self._rate) - self._warmup_s
        return {
            "mode": "open",
            "rate": self._rate,
            "sent": len(self._requests),
            "completed": len(rec.done),
            "measured": len(rows),
            "achieved_rps": len(rows) / measured_s if measured_s > 0 else None,
            "connections_used": len(self._all),
            "latency_ms": percentiles_ms([done - due for due, _, done in rows]),
            "service_ms": percentiles_ms([done - sent for _, sent, done in rows]),
            "send_lag_ms": percentiles_ms([sent - due for due, sent, _ in rows]),
            "statuses": {str(k): v for k, v in sorted(rec.statuses.items())},
            "lost_connections": rec.lost,
            "unfinished": self._outstanding,
            "first_sent_at": min(rec.sent, default=started_at),
            "last_done_at": max(rec.done, default=started_at),
            "started_at": started_at,  # request i was due at started_at + i / rate
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["closed", "open"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--header", default="X-Signature")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=50_000, help="closed: how many to build")
    parser.add_argument("--rate", type=float, default=500.0, help="open: requests per second")
    parser.add_argument("--max-connections", type=int, default=256, help="open: pool limit")
    parser.add_argument("--warmup-s", type=float, default=1.0)
    parser.add_argument("--duration-s", type=float, default=5.0)
    args = parser.parse_args()

    factory = RequestFactory(HOST, args.port, args.path, args.secret, args.header)
    if args.mode == "closed":
        requests = factory.build(args.requests)
        runner: ClosedLoop | OpenLoop = ClosedLoop(
            requests, args.connections, args.warmup_s, args.duration_s
        )
    else:
        requests = factory.build(round(args.rate * (args.warmup_s + args.duration_s)))
        runner = OpenLoop(
            requests, args.rate, args.warmup_s, args.connections, args.max_connections
        )
    result = uvloop.run(runner.run(args.port))
    result["body_bytes"] = len(factory.body(0))
    result["id_prefix"] = factory.id_prefix
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
