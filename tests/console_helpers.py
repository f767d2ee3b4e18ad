"""relay with a guarded admin listener for the console's tests, and a signed-in client."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Receiver, Reply

TOKEN = "console-admin-token-0123456789"
TARGET_SECRET = "target-secret-0123456789"
CONFIG = """\
store: "sqlite:///relay.db"
admin: {{token: {token}}}
sources:
  in:
    path: /hooks/in
targets:
  out:
    kind: http
    url: "{url}/in"
    headers: {{Authorization: "Bearer {secret}"}}
    body: '{{"kind": {{{{ event.type | tojson }}}}}}'
    retry: {{max_attempts: 1}}
routes:
  - targets: [out]
"""
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def config_text(receiver: Receiver, token: str = TOKEN) -> str:
    return CONFIG.format(token=token, url=receiver.url, secret=TARGET_SECRET)


async def start_console(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> Relay:
    return await start_relay(write_config(config_text(receiver)))


def origin(client: TestClient[Any, Any]) -> str:
    return str(client.make_url("")).rstrip("/")


async def sign_in(relay: Relay, token: str = TOKEN) -> ClientResponse:
    return await relay.admin.post(
        "/sign-in",
        data={"token": token, "next": "/"},
        headers={"Origin": origin(relay.admin)},
        allow_redirects=False,
    )


async def csrf_of(relay: Relay, path: str = "/") -> str:
    page = await relay.admin.get(path)
    assert page.status == 200, await page.text()
    found = CSRF.search(await page.text())
    assert found is not None
    return found.group(1)


async def post_form(
    relay: Relay, path: str, fields: dict[str, str], csrf: str | None
) -> ClientResponse:
    data = dict(fields) if csrf is None else {**fields, "csrf": csrf}
    return await relay.admin.post(
        path, data=data, headers={"Origin": origin(relay.admin)}, allow_redirects=False
    )


async def dead_delivery(relay: Relay, receiver: Receiver, body: dict[str, Any]) -> int:
    """Post an event the receiver refuses (one attempt): its delivery goes dead."""
    receiver.default = Reply(status=500, body="down for maintenance")
    response = await relay.post("/hooks/in", body, headers={"X-Api-Key": "sender-key-0123"})
    assert response.status == 202, await response.text()
    dead = await relay.wait_for_deliveries(
        lambda rs: any(r.event_id == body["id"] and r.state == "dead" for r in rs), "dead"
    )
    receiver.default = Reply()
    return next(r.id for r in dead if r.event_id == body["id"])


async def page_until(relay: Relay, path: str, shows: str, timeout_s: float = 5.0) -> str:
    """GET `path` until its page contains `shows` (the workers note a target's last success
    and error once a second); fail on the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        text = await (await relay.admin.get(path)).text()
        if shows in text:
            return text
        if loop.time() > deadline:
            raise AssertionError(f"{path} did not show {shows!r} within {timeout_s}s")
        await asyncio.sleep(0.05)
