"""The two servers the benchmark runs beside relay, each in its own process, on uvloop like relay.

  bare      POST anywhere: read the body, answer 200. The ceiling relay's ingest is compared to.
  receiver  The delivery target: read the body, answer 200, count distinct Relay-Event-Id
            values; GET /stats tells how many arrived and when the last new one did (on the
            monotonic clock, which every process of this machine shares), GET /arrivals when
            each event first arrived.
  hang      A target that never answers: each request waits until the client gives up.

Both stop on SIGTERM or SIGINT, or by themselves after --max-s seconds. `--server relay` serves
them through relay's own runner (bench/server_overhead.py compares the two).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time

import uvloop
from aiohttp import web

from relay.config import LimitsConfig
from relay.server import RelayRunner


async def bare_handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=200)


async def hang_handler(request: web.Request) -> web.Response:
    await request.read()
    await asyncio.sleep(3600)  # the client's timeout ends it, or the server's shutdown
    return web.Response(status=200)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(status=200, text="ok")


class Receiver:
    def __init__(self) -> None:
        self.requests = 0
        self.arrivals: dict[str, float] = {}  # event id -> when it first arrived
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.last_new_at: float | None = None

    async def sink(self, request: web.Request) -> web.Response:
        await request.read()
        now = time.monotonic()
        self.requests += 1
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        event_id = request.headers.get("Relay-Event-Id", "")
        if event_id not in self.arrivals:
            self.arrivals[event_id] = now
            self.last_new_at = now
        return web.Response(status=200)

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "requests": self.requests,
                "events": len(self.arrivals),
                "first_at": self.first_at,
                "last_at": self.last_at,
                "last_new_at": self.last_new_at,
            }
        )

    async def arrivals_page(self, request: web.Request) -> web.Response:
        return web.json_response(self.arrivals)


def build_app(kind: str) -> web.Application:
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    if kind == "bare":
        app.router.add_post("/{tail:.*}", bare_handler)
    elif kind == "hang":
        app.router.add_post("/{tail:.*}", hang_handler)
    else:
        receiver = Receiver()
        app.router.add_get("/stats", receiver.stats)
        app.router.add_get("/arrivals", receiver.arrivals_page)
        app.router.add_post("/{tail:.*}", receiver.sink)
    return app


def build_runner(app: web.Application, server: str) -> web.AppRunner:
    """aiohttp's own runner, or relay's (read deadline, connection cap, JSON refusals)."""
    if server == "relay":
        return RelayRunner(app, LimitsConfig())
    # a hanging request is cut at shutdown, not waited for
    return web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)


async def serve(kind: str, port: int, max_s: float, server: str = "aiohttp") -> None:
    runner = build_runner(build_app(kind), server)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            await asyncio.wait_for(stop.wait(), max_s)
        except TimeoutError:
            print(f"{kind}: stopping by itself after {max_s:g}s", file=sys.stderr)
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["bare", "receiver", "hang"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-s", type=float, default=300.0, help="stop by itself after this")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--server", choices=["aiohttp", "relay"], default="aiohttp")
    args = parser.parse_args()
    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    run(serve(args.kind, args.port, args.max_s, args.server))


if __name__ == "__main__":
    main()
