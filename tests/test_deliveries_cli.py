"""`relay deliveries [list | show | replay]` and `relay replay`, run beside a daemon serving the
same store: every filter, what `show` prints, replay by id and by filter with and without
`--dry-run`, the alias, and the arguments each refuses."""

from __future__ import annotations

import asyncio
import json
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from relay.cli import main
from relay.store.base import DeliveryRecord
from tests.clock import FakeClock, wake
from tests.conftest import ConfigWriter, Relay, StartRelay
from tests.receiver import Receiver, Reply

API_KEY = "key-0f9e8d7c6b"
HOUR_S = 3600.0


@dataclass
class Setup:
    relay: Relay
    path: Path
    clock: FakeClock
    good: Receiver
    bad: Receiver


@pytest.fixture
async def bad() -> AsyncIterator[Receiver]:
    server = Receiver()
    server.default = Reply(status=400, body="rejected")
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def setup(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    receiver: Receiver,
    bad: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> Setup:
    """Sources shop (to targets ok and bad) and crm (to bad); bad refuses everything (400),
    so its deliveries are dead at once. relay's clock runs two hours behind until moved."""
    monkeypatch.setenv("API_KEY", API_KEY)
    config = f"""\
        store: "sqlite:///relay.db"
        sources:
          shop: {{path: /hooks/shop}}
          crm: {{path: /hooks/crm}}
        targets:
          ok: {{kind: http, url: "{receiver.url}/in"}}
          bad:
            kind: http
            url: "{bad.url}/in"
            headers: {{X-Api-Key: "${{API_KEY}}"}}
        routes:
          - sources: [shop]
            targets: [ok, bad]
          - sources: [crm]
            targets: [bad]
        """
    clock = FakeClock(time.time() - 2 * HOUR_S)
    path = write_config(textwrap.dedent(config))
    relay = await start_relay(path, clock=clock)
    return Setup(relay, path, clock, receiver, bad)


async def post_events(setup: Setup) -> list[DeliveryRecord]:
    """Two hours ago: shop o1 (CASE_OPENED), crm c1 (CASE_CLOSED); now: shop o2 (order.paid).
    Deliveries 1-5, newest first: 5 bad/o2 dead, 4 ok/o2 delivered, 3 bad/c1 dead, 2 bad/o1
    dead, 1 ok/o1 delivered."""
    relay = setup.relay
    headers = {"X-Api-Key": "sent", "Content-Type": "application/json"}
    await relay.post("/hooks/shop", {"id": "o1", "type": "CASE_OPENED"}, headers)
    await relay.post("/hooks/crm", {"id": "c1", "type": "CASE_CLOSED"})
    await relay.wait_for_deliveries(lambda rs: len(rs) == 3 and all_settled(rs), "3 settled")
    setup.clock.now = time.time()
    await relay.post("/hooks/shop", {"id": "o2", "type": "order.paid"})
    return await relay.wait_for_deliveries(lambda rs: len(rs) == 5 and all_settled(rs), "5")


def all_settled(records: list[DeliveryRecord]) -> bool:
    return all(r.state != "pending" for r in records)


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def ids(self) -> list[int]:
        """The delivery ids of the lines printed (text or JSON)."""
        ids = []
        for line in self.out.splitlines():
            if line.startswith("{"):
                ids.append(json.loads(line)["id"])
            elif "\t" in line:
                ids.append(int(line.split("\t")[0]))
        return ids


Cli = Callable[..., Awaitable[Ran]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    """Run `relay ARGS...` in a thread while the daemon serves on this loop."""

    async def run(*args: str) -> Ran:
        capsys.readouterr()
        try:
            code = await asyncio.to_thread(main, list(args))
        except SystemExit as exc:  # argparse refusing the arguments
            code = exc.code if isinstance(exc.code, int) else 1
        printed = capsys.readouterr()
        return Ran(code, printed.out, printed.err)

    return run


async def test_without_a_subcommand_it_lists_newest_first_and_list_is_the_same(
    setup: Setup, cli: Cli
) -> None:
    await post_events(setup)
    config = str(setup.path)
    listed = await cli("deliveries", "-c", config)
    assert (listed.code, listed.ids) == (0, [5, 4, 3, 2, 1])
    assert (await cli("deliveries", "list", "-c", config)).out == listed.out
    assert (await cli("deliveries", "-c", config, "list")).out == listed.out
    line = listed.out.splitlines()[2]
    assert line.split("\t") == [
        "3",
        "dead",
        "bad",
        "crm/c1",
        "CASE_CLOSED",
        "attempts=1",
        "status=400",
        "due=-",
        "HTTP 400: rejected",
    ]


@pytest.mark.parametrize(
    ("filters", "ids"),
    [
        (["--state", "dead"], [5, 3, 2]),
        (["--state", "delivered"], [4, 1]),
        (["--state", "pending"], []),
        (["--target", "ok"], [4, 1]),
        (["--source", "crm"], [3]),
        (["--type", "CASE_*"], [3, 2, 1]),
        (["--type", "order.paid"], [5, 4]),
        (["--event", "o1"], [2, 1]),
        (["--since", "1h"], [5, 4]),
        (["--limit", "2"], [5, 4]),
        (["--state", "dead", "--source", "shop", "--since", "3h"], [5, 2]),
        (["--target", "bad", "--type", "CASE_*", "--limit", "1"], [3]),
    ],
)
async def test_each_filter_lists_what_it_names(
    setup: Setup, cli: Cli, filters: list[str], ids: list[int]
) -> None:
    await post_events(setup)
    ran = await cli("deliveries", "-c", str(setup.path), *filters)
    assert (ran.code, ran.ids, ran.err) == (0, ids, "")


async def test_json_lists_one_object_per_line(setup: Setup, cli: Cli) -> None:
    records = await post_events(setup)
    ran = await cli("deliveries", "-c", str(setup.path), "--json", "--target", "bad")
    first, *rest = [json.loads(line) for line in ran.out.splitlines()]
    assert len(rest) == 2
    newest = records[0]
    assert first == {
        "id": 5,
        "state": "dead",
        "target": "bad",
        "target_configured": True,
        "source": "shop",
        "event_id": "o2",
        "type": "order.paid",
        "received_at": first["received_at"],
        "attempts": 1,
        "last_status": 400,
        "next_attempt_at": None,
        "waits_for_its_key": False,
        "last_error": "HTTP 400: rejected",
    }
    assert first["received_at"].endswith("Z")
    assert abs(_epoch(first["received_at"]) - newest.received_at) < 0.001


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_show_prints_the_event_without_credentials_and_every_attempt(
    setup: Setup, cli: Cli
) -> None:
    await post_events(setup)
    setup.bad.default = Reply(status=400, body=f"no: {API_KEY}\x1b[2J")
    await cli("deliveries", "replay", "-c", str(setup.path), "2")
    setup.clock.now = time.time() + 1
    wake(setup.relay, "bad")
    await setup.relay.wait_for_deliveries(
        lambda rs: [r.attempts for r in rs if r.id == 2] == [1] and all_settled(rs), "replayed"
    )
    ran = await cli("deliveries", "show", "2", "-c", str(setup.path))
    assert ran.code == 0
    lines = ran.out.splitlines()
    assert lines[0].split("\t")[:4] == ["2", "dead", "bad", "shop/o1"]
    assert "event shop/o1, type CASE_OPENED" in lines
    assert "    x-api-key: [redacted]" in lines  # a credential header, whatever it held
    assert "    content-type: application/json" in lines
    assert '    {"id": "o1", "type": "CASE_OPENED"}' in lines
    assert "  body (35 bytes):" in lines
    assert "2 attempt(s) recorded" in lines
    attempts = [line for line in lines if line.startswith("  #")]
    assert [a.split()[0] for a in attempts] == ["#1", "#1"]
    assert [a.split()[2:4] for a in attempts] == [["dead", "status=400"]] * 2
    assert "  replayed" in lines
    assert lines[-1] == "    response: no: [redacted]\\x1b[2J"
    assert API_KEY not in ran.out
    assert "sent" not in ran.out  # the value of the sender's own X-Api-Key


async def test_show_as_json_and_a_missing_id(setup: Setup, cli: Cli) -> None:
    await post_events(setup)
    ran = await cli("deliveries", "-c", str(setup.path), "show", "3", "--json")
    shown = json.loads(ran.out)
    assert shown["delivery"]["id"] == 3
    assert shown["event"]["id"] == "c1"
    assert shown["event"]["body_bytes"] == len(b'{"id": "c1", "type": "CASE_CLOSED"}')
    assert shown["event"]["body_preview"] == '{"id": "c1", "type": "CASE_CLOSED"}'
    (attempt,) = shown["attempts"]
    assert attempt["number"] == 1
    assert (attempt["result"], attempt["status"], attempt["response"]) == ("dead", 400, "rejected")
    assert attempt["duration_ms"] >= 0
    missing = await cli("deliveries", "-c", str(setup.path), "show", "99")
    assert (missing.code, missing.out, missing.err) == (
        1,
        "",
        "relay deliveries show: no delivery 99\n",
    )


async def states(relay: Relay) -> dict[int, str]:
    return {r.id: r.state for r in await relay.store.deliveries(limit=100)}


async def test_replay_by_id_with_dry_run_changes_nothing_and_without_it_redelivers(
    setup: Setup, cli: Cli
) -> None:
    await post_events(setup)
    before = await states(setup.relay)
    dry = await cli("deliveries", "replay", "-c", str(setup.path), "3", "4", "9", "--dry-run")
    assert (dry.code, dry.ids) == (0, [3])
    assert dry.out.splitlines()[-1] == (
        "1 dead deliveries would be pending again (dry run: nothing changed)"
    )
    assert dry.err == "delivery 4 is delivered, not dead: left as it is\nno delivery 9\n"
    assert await states(setup.relay) == before
    sent_before = len(setup.bad.received)

    setup.bad.default = Reply(status=200)
    ran = await cli("deliveries", "replay", "-c", str(setup.path), "3", "4")
    assert (ran.code, ran.out) == (0, "1 dead deliveries are pending again\n")
    setup.clock.now = time.time() + 1
    wake(setup.relay, "bad")
    await setup.bad.wait_for(sent_before + 1)
    await setup.relay.wait_for_deliveries(lambda rs: all_settled(rs), "the replay delivered")
    assert await states(setup.relay) == {**before, 3: "delivered"}


async def test_replay_by_filter_with_dry_run_changes_nothing_and_without_it_replays_them(
    setup: Setup, cli: Cli
) -> None:
    await post_events(setup)
    config = str(setup.path)
    before = await states(setup.relay)
    filters = ["--state", "dead", "--target", "bad", "--source", "shop"]
    dry = await cli("deliveries", "replay", "-c", config, *filters, "--dry-run")
    assert (dry.code, dry.ids) == (0, [5, 2])
    assert await states(setup.relay) == before
    recent = await cli("deliveries", "replay", "-c", config, *filters, "--since", "1h", "--dry-run")
    assert recent.ids == [5]
    as_json = await cli("deliveries", "replay", "-c", config, *filters, "--dry-run", "--json")
    assert as_json.ids == [5, 2]
    assert as_json.err == "2 dead deliveries would be pending again (dry run: nothing changed)\n"
    assert await states(setup.relay) == before

    ran = await cli("deliveries", "replay", "-c", config, *filters)
    assert (ran.code, ran.out, ran.ids) == (0, "2 dead deliveries are pending again\n", [])
    now = await states(setup.relay)
    assert {i: s for i, s in now.items() if s != before[i]} == {5: "pending", 2: "pending"}


async def test_replay_is_also_relay_replay_with_its_flags(setup: Setup, cli: Cli) -> None:
    await post_events(setup)
    config = str(setup.path)
    before = await states(setup.relay)
    dry = await cli("replay", "-c", config, "--all-dead", "--dry-run")
    assert (dry.code, dry.ids) == (0, [5, 3, 2])
    assert await states(setup.relay) == before
    by_id = await cli("replay", "-c", config, "2")
    assert by_id.out == "1 dead deliveries are pending again\n"
    every = await cli("replay", "-c", config, "--all-dead")
    assert every.out == "2 dead deliveries are pending again\n"
    assert sorted(i for i, s in (await states(setup.relay)).items() if s == "pending") == [2, 3, 5]


async def test_replay_pages_through_more_dead_deliveries_than_one_transaction_takes(
    setup: Setup, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("relay.replaying.REPLAY_PAGE", 2)
    await post_events(setup)
    ran = await cli("replay", "-c", str(setup.path), "--state", "dead")
    assert ran.out == "3 dead deliveries are pending again\n"
    assert sorted(s for s in (await states(setup.relay)).values()) == [
        "delivered",
        "delivered",
        "pending",
        "pending",
        "pending",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deliveries", "replay"], "name what to replay: give delivery ids or --state dead"),
        (
            ["deliveries", "replay", "--target", "bad"],
            "name what to replay: --target applies only with --state dead;"
            " give delivery ids or --state dead",
        ),
        (["replay", "3", "--state", "dead"], "give delivery ids or --state dead with filters"),
        (["deliveries", "--state", "pending", "replay"], "only dead deliveries are replayed"),
        (["deliveries", "list", "--since", "1y"], 'invalid duration "1y"'),
        (["deliveries", "--limit", "0"], "must be at least 1, got 0"),
    ],
)
async def test_arguments_that_say_nothing_clear_are_refused(
    setup: Setup, cli: Cli, args: list[str], message: str
) -> None:
    ran = await cli(*args, "-c", str(setup.path))
    assert ran.code == 2
    assert message in ran.err


async def test_the_config_is_required_before_or_after_the_subcommand(cli: Cli) -> None:
    ran = await cli("deliveries", "show", "1")
    assert ran.code == 2
    assert "the following arguments are required: -c/--config" in ran.err
