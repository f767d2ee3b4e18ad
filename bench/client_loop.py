"""The bare client loop relay's delivery is compared with, run in its own process: one aiohttp
ClientSession (keep-alive, the same connector settings as relay's) posting N bodies to the
receiver with C requests in flight, each with its own Relay-Event-Id. What delivering costs
with no store, no claim, no rendering and no retry decision.

Prints one JSON object: events, seconds from the first post to the last answer, per second,
and the statuses seen. With `--warmup N --handshake` (bench/instructions.py counts its
instructions) it first posts N other bodies, then says "warm" on stderr and waits for a line on
stdin before the measured posts, and for another after them before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
import uuid

import aiohttp
import uvloop
from payloads import RequestFactory

HOST = "127.0.0.1"
TIMEOUT_S = 10.0  # relay's http target default


async def post_all(
    port: int, bodies: list[bytes], concurrency: int, warmup: int = 0, handshake: bool = False
) -> dict[str, object]:
    url = f"http://{HOST}:{port}/sink"
    run = uuid.uuid4().hex[:12]
    statuses: collections.Counter[int] = collections.Counter()
    next_index = iter(range(len(bodies)))
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in next_index:
            headers = {"Content-Type": "application/json", "Relay-Event-Id": f"loop-{run}-{i}"}
            async with session.post(url, data=bodies[i], headers=headers) as response:
                await response.read()
                statuses[response.status] += 1

    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector, trust_env=False, timeout=timeout
    ) as session:
        if warmup:
            next_index = iter(range(len(bodies) - warmup, len(bodies)))  # the last ones
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            next_index = iter(range(len(bodies) - warmup))
            statuses.clear()
        if handshake:
            await wait_for_go("warm")
        started = time.monotonic()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        seconds = time.monotonic() - started
        if handshake:
            await wait_for_go("done")
    bodies = bodies[: len(bodies) - warmup]
    return {
        "events": len(bodies),
        "concurrency": concurrency,
        "seconds": seconds,
        "per_s": len(bodies) / seconds,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


async def wait_for_go(said: str) -> None:
    """Say `said` on stderr, and wait for a line on stdin (off the loop: nothing else runs)."""
    print(said, file=sys.stderr, flush=True)
    await asyncio.to_thread(sys.stdin.readline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="the receiver's")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=0, help="posts before the measured ones")
    parser.add_argument("--handshake", action="store_true", help="wait on stdin: see above")
    args = parser.parse_args()
    factory = RequestFactory(HOST, args.port, "/sink", "unused", "X-Signature")
    bodies = [factory.body(i) for i in range(args.events + args.warmup)]
    run = post_all(args.port, bodies, args.concurrency, args.warmup, args.handshake)
    result = uvloop.run(run)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
