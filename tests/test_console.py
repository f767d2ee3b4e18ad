"""The web console over HTTP (aiohttp's client on a real socket): sign-in and sessions, CSRF,
the headers that keep pages inert, escaping of hostile event data, and every page.

tests/test_console_browser.py drives the same pages in a real browser.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path

import pytest
from markupsafe import escape

from relay import replaying
from relay.console import pages
from relay.console.headers import CONTENT_SECURITY_POLICY
from relay.console.session import SESSION_COOKIE, SIGN_IN_FAILURES, SIGN_IN_WINDOW_S
from relay.errors import StoreError
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.console_helpers import (
    TARGET_SECRET,
    TOKEN,
    config_text,
    csrf_of,
    dead_delivery,
    origin,
    page_until,
    post_form,
    sign_in,
    start_console,
)
from tests.receiver import Receiver
from tests.stores import store_urls

XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=1">'


@pytest.fixture
async def relay(write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver) -> Relay:
    return await start_console(write_config, start_relay, receiver)


@pytest.fixture
async def signed_in(relay: Relay) -> Relay:
    assert (await sign_in(relay)).status == 303
    return relay


# -- sign-in and sessions ---------------------------------------------------------------------


async def test_pages_send_the_browser_to_sign_in_first(relay: Relay) -> None:
    for path in ("/", "/deliveries?state=dead", "/deliveries/1", "/dead", "/config"):
        response = await relay.admin.get(path, allow_redirects=False)
        assert response.status == 303, path
        assert response.headers["Location"].startswith("/sign-in?next=%2F")
    page = await relay.admin.get("/sign-in")
    assert page.status == 200
    assert 'type="password"' in await page.text()


async def test_signing_in_sets_an_opaque_http_only_strict_cookie(relay: Relay) -> None:
    refused = await sign_in(relay, "not-the-token")
    assert refused.status == 401
    assert "That is not the admin token." in await refused.text()
    assert SESSION_COOKIE not in refused.cookies
    response = await sign_in(relay)
    assert (response.status, response.headers["Location"]) == (303, "/")
    cookie = response.cookies[SESSION_COOKIE]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/"
    assert TOKEN not in cookie.value
    assert len(cookie.value) >= 40
    assert (await relay.admin.get("/")).status == 200


async def test_sign_in_returns_to_the_page_asked_for_and_never_to_another_site(
    relay: Relay,
) -> None:
    for asked, lands in [("/dead?target=out", "/dead?target=out"), ("//evil.example/", "/")]:
        response = await relay.admin.post(
            "/sign-in",
            data={"token": TOKEN, "next": asked},
            headers={"Origin": origin(relay.admin)},
            allow_redirects=False,
        )
        assert response.headers["Location"] == lands


async def test_the_api_takes_the_bearer_token_and_not_the_console_cookie(signed_in: Relay) -> None:
    assert (await signed_in.admin.get("/api/targets")).status == 401
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert (await signed_in.admin.get("/api/targets", headers=bearer)).status == 200
    assert (await signed_in.admin.get("/readyz")).status == 200


async def test_signing_out_ends_the_session(signed_in: Relay) -> None:
    csrf = await csrf_of(signed_in)
    cookie = signed_in.admin.session.cookie_jar.filter_cookies(signed_in.admin.make_url("/"))
    old = cookie[SESSION_COOKIE].value
    assert (await post_form(signed_in, "/sign-out", {}, csrf)).status == 303
    again = await signed_in.admin.get("/", cookies={SESSION_COOKIE: old}, allow_redirects=False)
    assert again.status == 303


async def test_a_new_admin_token_ends_sessions_opened_with_the_old_one(
    signed_in: Relay, write_config: ConfigWriter, receiver: Receiver
) -> None:
    path = write_config(config_text(receiver, token="a-new-admin-token-9876543210"))
    assert (await signed_in.daemon.reload(path)).ok
    assert (await signed_in.admin.get("/", allow_redirects=False)).status == 303


# -- CSRF and origin --------------------------------------------------------------------------


async def test_a_post_without_the_sessions_csrf_token_changes_nothing(signed_in: Relay) -> None:
    for csrf in (None, "forged"):
        response = await post_form(signed_in, "/targets/out/pause", {}, csrf)
        assert response.status == 403
        assert "CSRF token" in await response.text()
    assert await signed_in.store.target_pause("out") is None


async def test_a_post_from_another_origin_changes_nothing(signed_in: Relay) -> None:
    csrf = await csrf_of(signed_in)
    for headers in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Referer": "http://evil.example/page"},
        {},
    ):
        response = await signed_in.admin.post(
            "/targets/out/pause", data={"csrf": csrf}, headers=headers, allow_redirects=False
        )
        assert response.status == 403, headers
        assert "Origin does not match" in await response.text()
    assert await signed_in.store.target_pause("out") is None
    referer = {"Referer": f"{origin(signed_in.admin)}/"}
    response = await signed_in.admin.post(
        "/targets/out/pause", data={"csrf": csrf}, headers=referer, allow_redirects=False
    )
    assert response.status == 303


async def test_signing_in_from_another_origin_is_refused(relay: Relay) -> None:
    response = await relay.admin.post(
        "/sign-in", data={"token": TOKEN}, headers={"Origin": "http://evil.example"}
    )
    assert response.status == 403
    assert SESSION_COOKIE not in response.cookies


async def test_a_post_without_a_session_is_refused(relay: Relay) -> None:
    response = await post_form(relay, "/targets/out/pause", {}, "anything")
    assert response.status == 403
    assert await relay.store.target_pause("out") is None


# -- headers ----------------------------------------------------------------------------------


async def test_pages_and_api_answers_carry_a_strict_content_security_policy(
    signed_in: Relay,
) -> None:
    for path in ("/", "/sign-in", "/api/targets", "/static/console.js"):
        response = await signed_in.admin.get(path, allow_redirects=False)
        policy = response.headers["Content-Security-Policy"]
        assert policy == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy
        assert "script-src 'self'" in policy
        assert "frame-ancestors 'none'" in policy
        assert policy.startswith("default-src 'none'")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["Referrer-Policy"] == "same-origin"
    page = await signed_in.admin.get("/")
    assert page.headers["Cache-Control"] == "no-store"
    text = await page.text()
    assert "<script>" not in text
    assert "style=" not in text


async def test_the_assets_are_served_by_relay_itself(relay: Relay) -> None:
    css = await relay.admin.get("/static/console.css")
    assert (css.status, css.content_type) == (200, "text/css")
    js = await relay.admin.get("/static/console.js")
    assert (js.status, js.content_type) == (200, "text/javascript")
    assert (await relay.admin.get("/static/other.js")).status == 404
    page = await sign_in(relay)
    assert page.status == 303
    text = await (await relay.admin.get("/")).text()
    assert 'src="/static/console.js"' in text
    assert "http" not in text.split("<body>")[0]


# -- escaping ---------------------------------------------------------------------------------


async def test_hostile_event_data_is_shown_as_text_on_every_page(
    signed_in: Relay, receiver: Receiver
) -> None:
    body = {"id": f"x{XSS}", "type": f"T{XSS}", "note": XSS}
    delivery_id = await dead_delivery(signed_in, receiver, body)
    for path in ("/deliveries", f"/deliveries/{delivery_id}", "/dead", "/dead/replay", "/"):
        text = await (await signed_in.admin.get(path)).text()
        assert "<script>window" not in text, path
        assert "<img src=x" not in text, path
        assert "<img" not in text, path
    detail = await (await signed_in.admin.get(f"/deliveries/{delivery_id}")).text()
    assert str(escape(f"T{XSS}")) in detail  # Jinja's escaping: the type shown as text


# -- pages ------------------------------------------------------------------------------------


async def test_the_targets_page_shows_state_backlog_rate_and_the_last_error(
    signed_in: Relay, receiver: Receiver
) -> None:
    assert (await signed_in.post("/hooks/in", {"id": "ok1", "type": "t"})).status == 202
    await signed_in.wait_for_state("delivered")
    await dead_delivery(signed_in, receiver, {"id": "bad1", "type": "t"})
    text = await page_until(signed_in, "/", 'class="target health-failing"')
    assert "down for maintenance" in text
    assert '<td data-label="Per min (5 min)" class="num">0.2</td>' in text  # 1 in 5 minutes
    assert 'href="/dead?target=out"' in text
    assert "<time datetime=" in text
    assert 'title="20' in text


async def test_pause_and_resume_from_the_targets_page(signed_in: Relay) -> None:
    csrf = await csrf_of(signed_in)
    paused = await post_form(signed_in, "/targets/out/pause", {"reason": "vendor outage"}, csrf)
    assert (paused.status, paused.headers["Location"]) == (303, "/?done=paused&target=out")
    pause = await signed_in.store.target_pause("out")
    assert pause is not None
    assert pause.reason == "vendor outage"
    text = await (await signed_in.admin.get(paused.headers["Location"])).text()
    assert "Paused out: nothing is sent to it until it is resumed." in text
    assert "vendor outage" in text
    assert ">Resume</button>" in text
    resumed = await post_form(signed_in, "/targets/out/resume", {}, csrf)
    assert resumed.status == 303
    assert await signed_in.store.target_pause("out") is None
    unknown = await post_form(signed_in, "/targets/nope/pause", {}, csrf)
    assert unknown.status == 404
    assert "no target named" in await unknown.text()


async def test_notices_never_echo_text_from_the_url(signed_in: Relay) -> None:
    text = await (await signed_in.admin.get("/?done=paused&target=<b>evil</b>")).text()
    assert "Paused the target" in text
    assert "evil" not in text
    text = await (await signed_in.admin.get("/?done=anything-else")).text()
    assert 'role="status"' not in text


async def test_the_deliveries_page_filters_and_pages_newest_first(
    signed_in: Relay, receiver: Receiver
) -> None:
    for n in range(5):
        assert (await signed_in.post("/hooks/in", {"id": f"e{n}", "type": "CASE_OPENED"})).status
    await signed_in.wait_for_state("delivered", count=5)
    await dead_delivery(signed_in, receiver, {"id": "d1", "type": "ALERT"})
    text = await (await signed_in.admin.get("/deliveries?state=dead")).text()
    assert '<datalist id="target-names"><option value="out"></datalist>' in text
    # Ids are matched as the page shows them ("source / id"): a bare "e4" can
    # occur by chance inside the page's random CSRF token.
    assert "in / d1" in text
    assert "in / e4" not in text
    text = await (await signed_in.admin.get("/deliveries?type=CASE_*&limit=2")).text()
    assert text.index("in / e4") < text.index("in / e3")
    assert "in / e2" not in text
    assert "in / d1" not in text
    older = text.split('class="older" href="')[1].split('"')[0]
    assert "before=" in html.unescape(older)
    assert "type=CASE_" in html.unescape(older)
    page_two = await (await signed_in.admin.get(html.unescape(older))).text()
    assert "in / e2" in page_two
    assert "in / e1" in page_two
    assert "in / e4" not in page_two
    text = await (await signed_in.admin.get("/deliveries?event=e3&state=&target=")).text()
    assert "in / e3" in text
    assert "in / e2" not in text
    assert (
        "No deliveries match."
        in await (await signed_in.admin.get("/deliveries?end=2000-01-01T00:00")).text()
    )
    assert (
        "in / e0"
        in await (await signed_in.admin.get("/deliveries?start=2000-01-01T00:00:00")).text()
    )
    bad = await signed_in.admin.get("/deliveries?state=lost")
    assert bad.status == 400
    assert "parameter state" in await bad.text()


async def test_the_delivery_page_shows_event_headers_request_and_attempts_redacted(
    signed_in: Relay, receiver: Receiver
) -> None:
    delivery_id = await dead_delivery(
        signed_in, receiver, {"id": "d1", "type": "ALERT", "echo": f"Bearer {TARGET_SECRET}"}
    )
    text = await (await signed_in.admin.get(f"/deliveries/{delivery_id}")).text()
    assert "&#34;type&#34;: &#34;ALERT&#34;," in text  # indented JSON
    assert TARGET_SECRET not in text
    assert "sender-key-0123" not in text
    assert "x-api-key" in text
    assert "[redacted]" in text
    assert f"POST {receiver.url}/in" in text
    assert "authorization: [redacted]" in text.lower()
    assert "{&#34;kind&#34;: &#34;ALERT&#34;}" in text  # the body the target is sent
    assert "down for maintenance" in text
    assert ">500<" in text.replace("500 ", "500<")
    assert ">Replay</button>" in text
    missing = await signed_in.admin.get("/deliveries/99999")
    assert missing.status == 404


async def test_replaying_one_dead_delivery_sends_it_again(
    signed_in: Relay, receiver: Receiver
) -> None:
    delivery_id = await dead_delivery(signed_in, receiver, {"id": "d1", "type": "ALERT"})
    csrf = await csrf_of(signed_in, f"/deliveries/{delivery_id}")
    response = await post_form(signed_in, f"/deliveries/{delivery_id}/replay", {}, csrf)
    assert response.headers["Location"] == f"/deliveries/{delivery_id}?done=replayed&n=1"
    await signed_in.wait_for_state("delivered")
    again = await post_form(signed_in, f"/deliveries/{delivery_id}/replay", {}, csrf)
    assert again.headers["Location"] == f"/deliveries/{delivery_id}?done=not-dead"


async def test_dead_letters_are_counted_confirmed_and_replayed(
    signed_in: Relay, receiver: Receiver
) -> None:
    for n in range(3):
        await dead_delivery(signed_in, receiver, {"id": f"d{n}", "type": "A" if n else "B"})
    text = await (await signed_in.admin.get("/dead?target=out")).text()  # from the dead index
    assert '<strong class="big" id="dead-count">3</strong>' in text
    text = await (await signed_in.admin.get("/dead?type=A")).text()  # counted one by one
    assert '<strong class="big" id="dead-count">2</strong>' in text
    assert 'href="/dead/replay?type=A"' in text
    confirm = await (await signed_in.admin.get("/dead/replay?type=A")).text()
    assert "Replay 2 dead deliveries?" in confirm
    assert '<input type="hidden" name="type" value="A">' in confirm
    assert len(await signed_in.wait_for_state("dead", count=3)) == 3  # nothing changed yet
    csrf = await csrf_of(signed_in, "/dead/replay?type=A")
    done = await post_form(signed_in, "/dead/replay", {"type": "A"}, csrf)
    assert done.headers["Location"] == "/dead?type=A&done=replayed&n=2"
    await signed_in.wait_for_state("delivered", count=2)
    assert len(receiver.received) >= 2
    text = await (await signed_in.admin.get(done.headers["Location"])).text()
    assert "2 dead deliveries are pending again" in text


async def test_the_config_page_redacts_secrets_and_shows_the_last_reload(
    signed_in: Relay, write_config: ConfigWriter, receiver: Receiver
) -> None:
    text = await (await signed_in.admin.get("/config")).text()
    assert TARGET_SECRET not in text
    assert TOKEN not in text
    assert "No reload since relay started" in text
    path = write_config(config_text(receiver).replace("max_attempts: 1", "max_attempts: 0"))
    assert not (await signed_in.daemon.reload(path)).ok
    text = await (await signed_in.admin.get("/config")).text()
    assert "refused" in text
    assert "max_attempts" in text
    path = write_config(config_text(receiver).replace("max_attempts: 1", "max_attempts: 2"))
    assert (await signed_in.daemon.reload(path)).ok
    text = await (await signed_in.admin.get("/config")).text()
    assert "applied" in text
    assert "targets: changed out" in text


async def test_an_open_admin_listener_serves_the_console_with_a_warning_and_csrf(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start_relay(write_config(config_text(receiver).replace("admin: {token: ", "#")))
    page = await relay.admin.get("/")
    assert page.status == 200
    assert "admin.token is not set" in await page.text()
    assert (await post_form(relay, "/targets/out/pause", {}, None)).status == 403
    csrf = await csrf_of(relay)
    assert (await post_form(relay, "/targets/out/pause", {}, csrf)).status == 303


async def test_a_long_dead_count_stops_at_its_cap_and_says_so(
    signed_in: Relay, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "DEAD_COUNT_CAP", 2)
    monkeypatch.setattr(replaying, "REPLAY_PAGE", 1)
    for n in range(3):
        await dead_delivery(signed_in, receiver, {"id": f"d{n}", "type": "A"})
    text = await (await signed_in.admin.get("/dead?type=A")).text()
    assert '<strong class="big" id="dead-count">2+</strong>' in text
    confirm = await (await signed_in.admin.get("/dead/replay?type=A")).text()
    assert "More than 2 match: every one that matches when you confirm is replayed." in confirm


async def test_every_page_and_action_works_on_either_store(
    store_kind: str,
    tmp_path: Path,
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
) -> None:
    """The pages read only through the store's interface: SQLite and PostgreSQL alike."""
    async with store_urls(store_kind, tmp_path) as url:
        text = config_text(receiver).replace('"sqlite:///relay.db"', json.dumps(url))
        relay = await start_relay(write_config(text))
        try:
            assert (await sign_in(relay)).status == 303
            assert (await relay.post("/hooks/in", {"id": "ok1", "type": "A"})).status == 202
            await relay.wait_for_state("delivered")
            dead_id = await dead_delivery(relay, receiver, {"id": "d1", "type": "B"})
            await page_until(relay, "/", 'class="target health-failing"')
            assert ">0.2</td>" in await page_until(relay, "/", "health-failing")
            for path in (
                "/deliveries?type=B",
                "/deliveries?start=2000-01-01T00:00&end=2999-01-01T00:00",
                f"/deliveries/{dead_id}",
                "/dead?type=B",
                "/dead/replay",
                "/config",
            ):
                page = await relay.admin.get(path)
                assert page.status == 200, path
                assert "in / d1" in await page.text() or path == "/config", path
            csrf = await csrf_of(relay, "/dead/replay")
            done = await post_form(relay, "/dead/replay", {}, csrf)
            assert done.headers["Location"] == "/dead?done=replayed&n=1"
            await relay.wait_for_state("delivered", count=2)
        finally:
            await relay.admin.close()
            await relay.client.close()


async def test_a_store_that_cannot_answer_or_a_bug_is_a_page_saying_so(
    signed_in: Relay, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def unavailable(since: float) -> dict[str, int]:
        raise StoreError("store relay.db is locked")

    monkeypatch.setattr(signed_in.store, "delivered_since", unavailable)
    page = await signed_in.admin.get("/")
    assert page.status == 503
    assert "The store cannot answer right now: store relay.db is locked" in await page.text()

    async def broken(since: float) -> dict[str, int]:
        raise ValueError("a bug")

    monkeypatch.setattr(signed_in.store, "delivered_since", broken)
    with caplog.at_level(logging.ERROR, logger="relay.admin"):
        page = await signed_in.admin.get("/")
    assert page.status == 500
    assert "relay failed to show this page; see its log." in await page.text()
    assert "a bug" not in await page.text()
    assert any(record.exc_info for record in caplog.records)


async def test_without_a_token_there_is_no_sign_in(
    write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver
) -> None:
    relay = await start_relay(write_config(config_text(receiver).replace("admin: {token: ", "#")))
    for response in (
        await relay.admin.get("/sign-in", allow_redirects=False),
        await relay.admin.post("/sign-in", data={"token": "x"}, allow_redirects=False),
    ):
        assert (response.status, response.headers["Location"]) == (303, "/")


async def test_a_browser_asking_for_an_unknown_page_gets_a_page_an_api_client_json(
    signed_in: Relay,
) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    response = await signed_in.admin.get("/nope/<b>x</b>", headers=browser)
    assert response.status == 404
    assert response.content_type == "text/html"
    text = await response.text()
    assert "There is no page at /nope/&lt;b&gt;x&lt;/b&gt;." in text
    assert "<b>x</b>" not in text
    assert 'href="/"' in text
    plain = await signed_in.admin.get("/nope")
    assert plain.status == 404
    assert await plain.json() == {"error": "nothing at /nope (see README, Admin listener)"}
    missing_asset = await signed_in.admin.get("/static/nope.css", headers=browser)
    assert missing_asset.status == 404
    assert missing_asset.content_type == "application/json"
    missing_api = await signed_in.admin.get("/api/nope", headers=browser)
    assert missing_api.status == 401  # the API wants its bearer token, not a session
    assert missing_api.content_type == "application/json"


async def test_an_address_giving_wrong_tokens_again_and_again_is_held_back(relay: Relay) -> None:
    for _ in range(SIGN_IN_FAILURES):
        assert (await sign_in(relay, "a-guess-at-the-token")).status == 401
    held = await sign_in(relay)  # even the right token, until the window ends
    assert held.status == 429
    assert 1 <= int(held.headers["Retry-After"]) <= SIGN_IN_WINDOW_S
    assert "Too many wrong tokens from your address: try again in" in await held.text()
    assert SESSION_COOKIE not in held.cookies
