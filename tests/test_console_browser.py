"""The console in a real browser (headless chromium, tests/browser.py): an operator signs in,
finds a dead delivery, opens it and replays it, and the receiver gets it; pauses and resumes a
target; hostile event data stays inert in the page's JavaScript state. Every page is saved as
a screenshot at 360 and 1440 pixels wide under test-output/console/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.store.base import DeliveryRecord
from tests.browser import Browser, chromium
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Received, Receiver, Reply, wait_until

TOKEN = "browser-admin-token-0123456789"
CONFIG = """\
store: "sqlite:///relay.db"
admin: {{token: {token}}}
sources:
  shop:
    path: /hooks/shop
  crm-app:
    path: /hooks/crm-app
targets:
  crm:
    kind: http
    url: "{url}/crm"
    retry: {{max_attempts: 1}}
  billing:
    kind: http
    url: "{url}/billing"
    headers: {{Authorization: "Bearer billing-secret-0123456789"}}
    retry: {{max_attempts: 1}}
  audit:
    kind: http
    url: "{url}/audit"
    retry: {{max_attempts: 1}}
routes:
  - targets: [crm, billing, audit]
"""
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'
WIDTHS = (360, 1440)
HIDE_FOLDER = """
for (const node of document.querySelectorAll("pre, code, li")) {
  node.textContent = node.textContent.split(FOLDER).join("/srv/relay");
}
"""


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    yield from chromium()


class Billing:
    """The receiver's /billing answers 500 while `down`."""

    def __init__(self, receiver: Receiver) -> None:
        self.down = True
        receiver.reply_to = self.reply

    def reply(self, received: Received) -> Reply | None:
        if self.down and received.path == "/billing":
            return Reply(status=500, body="billing API unavailable: upstream timeout after 30s")
        return None


@pytest.fixture
async def relay(write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver) -> Relay:
    return await start_relay(write_config(CONFIG.format(token=TOKEN, url=receiver.url)))


@pytest.fixture
async def browser(driver: Any, relay: Relay) -> Browser:
    await Browser(driver, "").call(driver.delete_all_cookies)
    return Browser(driver, str(relay.admin.make_url("")).rstrip("/"))


async def send(relay: Relay, source: str, event_id: str, event_type: str, **data: Any) -> None:
    body = {"id": event_id, "type": event_type, "data": data}
    response = await relay.post(f"/hooks/{source}", body, headers={"X-Request-Id": event_id})
    assert response.status == 202, await response.text()


async def settled(relay: Relay, count: int) -> list[DeliveryRecord]:
    """Wait until `count` deliveries are delivered or dead."""
    return await relay.wait_for_deliveries(
        lambda rs: sum(r.state != "pending" for r in rs) >= count, f"{count} settled"
    )


async def sign_in(browser: Browser, then: str = "/") -> None:
    await browser.open(then)
    await browser.wait_for("the sign-in form", lambda d: "/sign-in" in d.current_url)
    field = await browser.find("#token")
    await browser.call(field.send_keys, TOKEN)
    await browser.click("button[type=submit]")
    await browser.wait_for("the page asked for", lambda d: "/sign-in" not in d.current_url)


async def reload_until(browser: Browser, what: str, css: str) -> None:
    """Reload until an element matching `css` is on the page (the workers note a target's
    last success and error once a second)."""

    def present(driver: Any) -> bool:
        from selenium.webdriver.common.by import By

        if driver.find_elements(By.CSS_SELECTOR, css):
            return True
        driver.refresh()
        return False

    await browser.wait_for(what, present)


async def test_sign_in_find_a_dead_delivery_replay_it_and_the_receiver_gets_it(
    relay: Relay, receiver: Receiver, browser: Browser
) -> None:
    billing = Billing(receiver)
    await send(relay, "shop", "inv-1001", "invoice.paid", amount=4200, currency="EUR")
    await settled(relay, 3)
    await sign_in(browser)
    await reload_until(browser, "billing failing", 'tr[data-target="billing"].health-failing')
    assert "upstream timeout" in await browser.text('tr[data-target="billing"]')
    await browser.click('tr[data-target="billing"] a.dead-count')
    await browser.wait_for("the dead letters", lambda d: "/dead?target=billing" in d.current_url)
    assert await browser.text("#dead-count") == "1"
    await browser.click("table.deliveries td[data-label=Delivery] a")
    await browser.wait_for("the delivery", lambda d: "/deliveries/" in d.current_url)
    assert await browser.text("#event-type") == "invoice.paid"
    assert "billing-secret" not in await browser.text("#rendered")
    billing.down = False
    await browser.click("button.replay")
    await browser.wait_for("the notice", lambda d: "done=replayed" in d.current_url)
    assert "pending again" in await browser.text(".banner.ok")
    await wait_until(lambda: any(r.path == "/billing" and r.body for r in receiver.received[1:]))
    got = [r for r in receiver.received if r.path == "/billing"]
    assert len(got) == 2
    assert b'"inv-1001"' in got[-1].body
    await reload_until(browser, "the delivery delivered", "h1 .badge.delivered")


async def test_pause_and_resume_a_target(
    relay: Relay, receiver: Receiver, browser: Browser
) -> None:
    await sign_in(browser)
    reason = await browser.find('tr[data-target="audit"] input[name=reason]')
    await browser.call(reason.send_keys, "audit store migration")
    await browser.click('tr[data-target="audit"] button.pause')
    await browser.wait_for("the pause", lambda d: "done=paused" in d.current_url)
    assert "Paused audit" in await browser.text(".banner.ok")
    row = await browser.text('tr[data-target="audit"]')
    assert "paused" in row
    assert "audit store migration" in row
    pause = await relay.store.target_pause("audit")
    assert pause is not None
    assert pause.reason == "audit store migration"
    await send(relay, "shop", "ord-1", "order.created")
    await settled(relay, 2)  # crm and billing; audit waits
    assert not any(r.path == "/audit" for r in receiver.received)
    await browser.click('tr[data-target="audit"] button.resume')
    await browser.wait_for("the resume", lambda d: "done=resumed" in d.current_url)
    await wait_until(lambda: any(r.path == "/audit" for r in receiver.received))
    assert await relay.store.target_pause("audit") is None


async def test_hostile_event_data_stays_inert_text(
    relay: Relay, receiver: Receiver, browser: Browser
) -> None:
    Billing(receiver)
    body = {"id": f"evt{XSS}", "type": f"T{XSS}", "data": {"note": XSS}}
    response = await relay.post("/hooks/shop", body, headers={"X-Note": XSS})
    assert response.status == 202
    (dead,) = await relay.wait_for_state("dead")
    await settled(relay, 3)
    await sign_in(browser)
    for path in ("/", "/deliveries", f"/deliveries/{dead.id}", "/dead", "/dead/replay"):
        await browser.open(path)
        await browser.find("main")
        assert await browser.script("return window.__xss === undefined") is True, path
        assert await browser.script("return document.images.length") == 0, path
        scripts = await browser.script(
            "return Array.from(document.scripts).map(s => s.getAttribute('src'))"
        )
        assert scripts == ["/static/console.js"], path
    await browser.open(f"/deliveries/{dead.id}")
    assert await browser.text("#event-type") == f"T{XSS}"
    assert json.dumps(XSS) in await browser.text("#event-body")  # the JSON, as text
    assert XSS in await browser.text("table.kv")


async def test_every_page_at_both_widths(
    relay: Relay, receiver: Receiver, browser: Browser, write_config: ConfigWriter, tmp_path: Path
) -> None:
    """Screenshots for docs/console/: a failing target, a paused one with a backlog, a
    refused reload. The test's temporary folder is shown as /srv/relay in them."""
    Billing(receiver)
    await browser.open("/sign-in")
    for width in WIDTHS:
        await browser.screenshot("sign-in", width)
    for n, (source, kind) in enumerate(
        [("shop", "order.created"), ("crm-app", "customer.updated"), ("shop", "invoice.paid")]
    ):
        await send(relay, source, f"evt-{n:04d}", kind, customer=f"cus_{n:03d}", total=n * 1250)
    await settled(relay, 9)
    await relay.store.pause_target("audit", "audit store migration, back at 04:00 UTC")
    await send(relay, "shop", "evt-0003", "order.refunded", customer="cus_003")
    await settled(relay, 11)
    (dead, *_) = await relay.wait_for_state("dead", count=4)
    await sign_in(browser)
    await reload_until(browser, "billing failing", 'tr[data-target="billing"].health-failing')
    pages = {
        "targets": "/",
        "deliveries": "/deliveries",
        "delivery": f"/deliveries/{dead.id}",
        "dead-letters": "/dead",
        "dead-letters-confirm": "/dead/replay?target=billing",
        "config": "/config",
    }
    broken = CONFIG.format(token=TOKEN, url=receiver.url).replace(
        "max_attempts: 1", "max_attempts: 0"
    )
    assert not (await relay.daemon.reload(write_config(broken))).ok
    for name, path in pages.items():
        await browser.open(path)
        await browser.find("main")
        await browser.script(HIDE_FOLDER.replace("FOLDER", json.dumps(str(tmp_path))))
        for width in WIDTHS:
            shot = await browser.screenshot(name, width)
            assert shot.stat().st_size > 5000, shot
