"""`relay targets [pause NAME | resume NAME]`: each target's state, and pausing one.

The state is in the store, so a running daemon follows a pause or a resume from here within
a second; the formatting is in `relay.targetstatus`, for any other reader of the same data.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from relay.config import Config
from relay.redaction import Redactor, config_secrets
from relay.store import open_store
from relay.store.base import Store, TargetPause
from relay.targetstatus import format_targets, target_rows, targets_json
from relay.textsafety import escape_controls

Action = Callable[[Store], Coroutine[Any, Any, str]]


async def run(args: argparse.Namespace, config: Config) -> int:
    """Run the parsed `relay targets` command against the store."""
    store = open_store(config.store, time.time)
    await store.open(daemon=False)
    try:
        if args.command_name == "pause":
            return await _on_target(store, config, args.name, _pause(args))
        if args.command_name == "resume":
            return await _on_target(store, config, args.name, _resume(args))
        return await _show(store, config, args.json)
    finally:
        await store.close()


async def _show(store: Store, config: Config, as_json: bool) -> int:
    rows = target_rows(await store.target_statuses(), list(config.targets))
    redactor = Redactor(config_secrets(config))
    if as_json:
        print(json.dumps(targets_json(rows, time.time(), redactor), ensure_ascii=False))
    else:
        print(format_targets(rows, time.time(), redactor))
    return 0


def _pause(args: argparse.Namespace) -> Action:
    reason = args.reason or "paused with relay targets pause"

    async def pause(store: Store) -> str:
        before = await store.target_pause(args.name)
        if before is not None:
            return f"{args.name} is already paused since {_since(before)}"
        await store.pause_target(args.name, reason)
        return f"{args.name} is paused: relay claims nothing for it until it is resumed"

    return pause


def _resume(args: argparse.Namespace) -> Action:
    async def resume(store: Store) -> str:
        ended = await store.resume_target(args.name)
        if ended is None:
            return f"{args.name} is not paused"
        return f"{args.name} is resumed (it was paused since {_since(ended)})"

    return resume


async def _on_target(store: Store, config: Config, name: str, act: Action) -> int:
    """Run `act` for target `name`, which the config or the store must know: else the error
    lists the targets."""
    stored = [status.name for status in await store.target_statuses()]
    known = list(dict.fromkeys([*config.targets, *stored]))
    if name not in known:
        names = ", ".join(escape_controls(n) for n in known) or "none"
        print(f"relay targets: no target named {name!r}; targets: {names}", file=sys.stderr)
        return 1
    print(escape_controls(await act(store)))
    return 0


def _since(pause: TargetPause) -> str:
    when = datetime.fromtimestamp(pause.since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when}: {pause.reason}"
