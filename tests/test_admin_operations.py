"""The admin API acts as the commands do: replay (by id, by filter, dry run) and pause and
resume a target, which the running daemon's workers follow at once."""

from __future__ import annotations

import pytest

from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Receiver, Reply
from tests.test_admin import BEARER, TOKEN, answer, start


@pytest.fixture
async def relay(write_config: ConfigWriter, start_relay: StartRelay, receiver: Receiver) -> Relay:
    return await start(write_config, start_relay, receiver, f"admin: {{token: {TOKEN}}}")


async def dead_events(relay: Relay, receiver: Receiver, *ids: str) -> None:
    receiver.default = Reply(status=500, body="down")  # max_attempts: 1, so each goes dead
    for event_id in ids:
        assert (await relay.post("/hooks/in", {"id": event_id, "type": "t"})).status == 202
    await relay.wait_for_state("dead", count=len(ids))
    receiver.default = Reply()


async def test_replay_by_filter_dry_run_changes_nothing_then_replays(
    relay: Relay, receiver: Receiver
) -> None:
    await dead_events(relay, receiver, "e1", "e2")
    status, dry = await answer(
        await relay.admin.post("/api/deliveries/replay?target=out&dry_run=true", headers=BEARER)
    )
    assert status == 200
    assert (dry["dry_run"], dry["count"]) == (True, 2)
    assert [d["event_id"] for d in dry["deliveries"]] == ["e2", "e1"]
    assert len(await relay.wait_for_state("dead", count=2)) == 2
    status, done = await answer(
        await relay.admin.post("/api/deliveries/replay?target=out", headers=BEARER)
    )
    assert (status, done) == (200, {"dry_run": False, "count": 2, "skipped": []})
    await relay.wait_for_state("delivered", count=2)


async def test_replay_by_id_names_what_it_left_alone(relay: Relay, receiver: Receiver) -> None:
    await dead_events(relay, receiver, "e1")
    (dead,) = await relay.wait_for_state("dead")
    status, done = await answer(
        await relay.admin.post(f"/api/deliveries/replay?ids={dead.id},999", headers=BEARER)
    )
    assert (status, done["count"], done["skipped"]) == (200, 1, ["no delivery 999"])
    bad = await answer(await relay.admin.post("/api/deliveries/replay?ids=1;2", headers=BEARER))
    assert bad == (
        400,
        {"error": "parameter ids: Value error, must be delivery ids separated by commas"},
    )
    refused = await relay.admin.post("/api/deliveries/replay?ids=1")
    assert refused.status == 401


async def test_pause_holds_deliveries_and_resume_sends_them(
    relay: Relay, receiver: Receiver
) -> None:
    status, paused = await answer(
        await relay.admin.post("/api/targets/out/pause?reason=maintenance", headers=BEARER)
    )
    assert (status, paused) == (200, {"target": "out", "paused": True})
    assert (await relay.post("/hooks/in", {"id": "p1", "type": "t"})).status == 202
    _, listed = await answer(await relay.admin.get("/api/targets", headers=BEARER))
    (out,) = listed["targets"]
    assert (out["target"], out["state"], out["pending"]) == ("out", "paused", 1)
    assert out["paused_reason"] == "maintenance"
    assert receiver.received == []
    status, resumed = await answer(
        await relay.admin.post("/api/targets/out/resume", headers=BEARER)
    )
    assert (status, resumed) == (200, {"target": "out", "paused": False, "was_paused": True})
    await receiver.wait_for(1)
    await relay.wait_for_state("delivered")


async def test_an_unknown_target_is_404(relay: Relay) -> None:
    assert await answer(await relay.admin.post("/api/targets/nope/pause", headers=BEARER)) == (
        404,
        {"error": "no target named 'nope'"},
    )


async def test_a_control_character_in_any_parameter_is_refused_and_nothing_changes(
    relay: Relay,
) -> None:
    """Values reach the store (PostgreSQL's text cannot hold NUL), filters and pages."""
    paused = await answer(
        await relay.admin.post("/api/targets/out/pause?reason=a%00b", headers=BEARER)
    )
    assert paused == (
        400,
        {
            "error": "parameter reason: Value error, holds U+0000 at position 1;"
            " only printable text is allowed"
        },
    )
    _, targets = await answer(await relay.admin.get("/api/targets", headers=BEARER))
    assert [t["state"] for t in targets["targets"]] == ["active"]
    listed = await answer(
        await relay.admin.get("/api/deliveries?event=e%0A1&target=out", headers=BEARER)
    )
    assert listed == (
        400,
        {
            "error": "parameter event: Value error, holds U+000A at position 1;"
            " only printable text is allowed"
        },
    )
