"""Outbound targets. A target kind is one module plus one entry in `TARGET_KINDS`.

The module holds the kind's config model (its `kind` tag, fields and checks), a planner that
turns a validated config (templates already compiled) into a pure TargetPlan, and the runtime
target a plan binds to resources. `relay/config.py` builds the `targets` union from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field

from relay.shared_config import TargetModel
from relay.targets.base import TargetPlan
from relay.targets.console import ConsoleTargetConfig, plan_console_target
from relay.targets.http import HttpTargetConfig, plan_http_target
from relay.targets.slack import SlackTargetConfig, plan_slack_target
from relay.targets.warehouse import WarehouseTargetConfig, plan_warehouse_target


@dataclass(frozen=True, slots=True)
class TargetKind:
    name: str  # the `kind` a config writes
    model: type[TargetModel]
    plan: Callable[[str, Any], TargetPlan]  # (target name, its config) -> plan


TARGET_KINDS = {
    kind.name: kind
    for kind in (
        TargetKind("http", HttpTargetConfig, plan_http_target),
        TargetKind("slack", SlackTargetConfig, plan_slack_target),
        TargetKind("warehouse", WarehouseTargetConfig, plan_warehouse_target),
        TargetKind("console", ConsoleTargetConfig, plan_console_target),
    )
}

if TYPE_CHECKING:
    TargetConfig = TargetModel
else:  # what `targets.NAME` validates as: one of the kinds' models, by `kind`
    TargetConfig = Annotated[
        Union[tuple(kind.model for kind in TARGET_KINDS.values())],  # noqa: UP007
        Field(discriminator="kind"),
    ]


def plan_target(name: str, target: TargetModel) -> TargetPlan:
    return TARGET_KINDS[target.kind].plan(name, target)
