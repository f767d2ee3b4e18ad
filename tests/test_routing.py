"""Routes: source sets, type globs, `when` expressions; each target once per event."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from relay.config import RouteConfig
from relay.errors import RenderError
from relay.render import TemplateCompiler
from relay.router import compile_routes, compile_type_globs
from relay.templatefields import COMPILER
from tests.conftest import ConfigWriter, StartRelay

CONFIG = """\
store: "sqlite:///relay.db"
sources:
  flagright: {path: /hooks/flagright}
  other: {path: /hooks/other}
targets:
  cases: {kind: console, body: 'cases {{ event.id }}'}
  big: {kind: console, body: 'big {{ event.id }}'}
  all: {kind: console, body: 'all {{ event.id }}'}
routes:
  - sources: [flagright]
    types: ["CASE_*", "ALERT_OPENED"]
    targets: [cases, all]
  - when: "event.payload.amount is defined and event.payload.amount > 100"
    targets: [big, all]
  - sources: [other]
    targets: [all]
"""


@pytest.mark.parametrize(
    ("path", "event", "expected"),
    [
        ("/hooks/flagright", {"id": "1", "type": "CASE_OPENED"}, ["cases 1", "all 1"]),
        ("/hooks/flagright", {"id": "2", "type": "ALERT_OPENED"}, ["cases 2", "all 2"]),
        ("/hooks/flagright", {"id": "3", "type": "ALERT_CLOSED"}, []),
        ("/hooks/flagright", {"id": "4", "type": "case_opened"}, []),
        (
            "/hooks/flagright",
            {"id": "5", "type": "CASE_CLOSED", "amount": 500},
            ["cases 5", "all 5", "big 5"],
        ),
        ("/hooks/other", {"id": "6", "type": "CASE_OPENED", "amount": 5}, ["all 6"]),
        ("/hooks/other", {"id": "7", "amount": 101}, ["big 7", "all 7"]),
    ],
)
async def test_event_goes_to_the_union_of_matching_routes_each_once(
    write_config: ConfigWriter,
    start_relay: StartRelay,
    path: str,
    event: dict[str, object],
    expected: list[str],
) -> None:
    relay = await start_relay(write_config(CONFIG))
    response = await relay.post(path, event)
    assert response.status == 202
    assert (await response.json())["deliveries"] == len(expected)
    if expected:
        await relay.wait_for_state("delivered", count=len(expected))
    assert sorted(relay.out.getvalue().splitlines()) == sorted(expected)


async def test_when_that_fails_to_evaluate_does_not_match(
    write_config: ConfigWriter, start_relay: StartRelay
) -> None:
    config = CONFIG.replace(
        "event.payload.amount is defined and event.payload.amount > 100",
        "event.payload.amount > 100",
    )
    relay = await start_relay(write_config(config))
    response = await relay.post("/hooks/other", {"id": "8"})
    assert (await response.json())["deliveries"] == 1  # only the unconditional route


def test_type_globs_are_anchored_and_case_sensitive() -> None:
    pattern = compile_type_globs(["CASE_*", "flag:*", "*:created", "USER_?TATE"])
    assert pattern.fullmatch("CASE_OPENED")
    assert pattern.fullmatch("flag:deleted")
    assert pattern.fullmatch("segment:created")
    assert pattern.fullmatch("USER_STATE")
    assert not pattern.fullmatch("XCASE_OPENED")
    assert not pattern.fullmatch("case_opened")
    assert not pattern.fullmatch("segment:updated")


def test_a_when_that_does_not_compile_is_a_validation_problem(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        RouteConfig.model_validate(
            {"when": "event.type ==", "targets": ["a"]},
            context={COMPILER: TemplateCompiler(tmp_path)},
        )
    (error,) = caught.value.errors()
    assert error["loc"] == ("when",)
    assert error["msg"] == "invalid expression: unexpected 'end of template'"


def test_a_route_names_its_when_in_errors() -> None:
    (route,) = compile_routes([RouteConfig(when="event.data.x > 1", targets=["a"])]).routes
    assert route.when is not None
    with pytest.raises(RenderError, match=r"^routes\[0\]\.when: "):
        route.when({"event": {"data": {}}})
