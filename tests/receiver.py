"""A real HTTP target for tests: records every request; can be told to fail, hang or answer 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.monotonic() on arrival
    raw_path: str = ""  # the request target as it came on the wire: path and query, undecoded
    query_items: tuple[tuple[str, str], ...] = ()  # the query as the server parsed it, in order


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: str = "ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # wait this long before answering (longer than a client timeout = a hang)
    hold: asyncio.Event | None = None  # answer only once the test sets it (a hang it ends)


class Receiver:
    """Replies come from `reply_to` where it gives one (say, by event), else from `script` in
    order, then `default` for every later request."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Reply] = []
        self.default = Reply()
        self.reply_to: Callable[[Received], Reply | None] = lambda received: None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._handle)  # any path, even with "\n"
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = _bound_port(self._runner)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        received = Received(
            request.method,
            request.path,
            request.query_string,
            dict(request.headers),
            body,
            time.monotonic(),
            raw_path=request.raw_path,
            query_items=tuple(request.query.items()),
        )
        reply = self.reply_to(received)
        if reply is None:
            reply = self.script.pop(0) if self.script else self.default
        async with self._changed:
            self.received.append(received)
            self._changed.notify_all()
        if reply.hang_s:
            await asyncio.sleep(reply.hang_s)
        if reply.hold is not None:
            await reply.hold.wait()
        return web.Response(status=reply.status, text=reply.body, headers=reply.headers)

    async def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Received]:
        """Wait until at least `count` requests arrived; fail the test on the deadline."""
        await wait_until(
            lambda: len(self.received) >= count,
            timeout_s,
            lambda: f"receiver got {len(self.received)} of {count} requests",
        )
        return self.received


def _bound_port(runner: web.AppRunner) -> int:
    (address, *_) = runner.addresses
    port: int = address[1]
    return port


async def wait_until(
    predicate: Callable[[], bool],
    timeout_s: float = 5.0,
    describe: Callable[[], str] = lambda: "condition",
) -> None:
    """Poll `predicate` until true; raise AssertionError with `describe()` at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {describe()}")
        await asyncio.sleep(0.01)
