"""Outbound targets. A target kind is one module plus one entry in `PLANNERS`.

Each planner turns a target's validated config (templates already compiled) into a pure
TargetPlan; the plan is bound to run-time resources (`TargetPlan.bind`) only by the daemon.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay import config
from relay.targets.base import TargetPlan
from relay.targets.console import plan_console_target
from relay.targets.http import plan_http_target
from relay.targets.slack import plan_slack_target
from relay.targets.warehouse import plan_warehouse_target

PLANNERS: dict[type[Any], Callable[[str, Any], TargetPlan]] = {
    config.HttpTargetConfig: plan_http_target,
    config.SlackTargetConfig: plan_slack_target,
    config.WarehouseTargetConfig: plan_warehouse_target,
    config.ConsoleTargetConfig: plan_console_target,
}


def plan_target(name: str, target: config.TargetConfig) -> TargetPlan:
    return PLANNERS[type(target)](name, target)
