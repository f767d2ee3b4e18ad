"""`relay deliveries [list | show ID | replay]` and its alias `relay replay`: the arguments and
the store calls behind them. What they print is relay.listing's.

They open the store as a reader beside a running daemon (`daemon=False`): SQLite lets both
use the file, and a replay revives a page of deliveries per transaction (relay.replaying), so
the daemon's own writes never wait long behind it. The daemon claims replayed deliveries
within a second.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Container
from pathlib import Path

from relay.config import Config
from relay.durations import EXAMPLES, parse_duration
from relay.listing import (
    delivery_fields,
    delivery_line,
    detail_fields,
    detail_lines,
    json_line,
    waiting_note,
)
from relay.redaction import Redactor, config_secrets
from relay.replaying import dead_pages
from relay.store import open_store
from relay.store.base import DeliveryFilter, DeliveryRecord, Store

LIST_LIMIT = 50
STATES = ("pending", "delivered", "dead")


def add_deliveries_arguments(parser: argparse.ArgumentParser) -> None:
    """`relay deliveries`: `list` (also without a subcommand), `show`, `replay`.

    Options may come before or after the subcommand. argparse copies every value a
    subcommand's parser holds over the ones given before it, so there an option the parent
    also has keeps no default of its own (SUPPRESS)."""
    _add_config(parser, None)
    _add_list_arguments(parser, suppress=False)
    parser.set_defaults(action="list", usage_error=parser.error)
    actions = parser.add_subparsers(dest="action", metavar="[list | show | replay]")
    listing = actions.add_parser("list", help="List deliveries, newest first (the default).")
    _add_config(listing, argparse.SUPPRESS)
    _add_list_arguments(listing, suppress=True)
    show = actions.add_parser("show", help="Show a delivery, its event and every attempt.")
    _add_config(show, argparse.SUPPRESS)
    show.add_argument("id", type=int, help="the delivery id")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="as JSON")
    replay = actions.add_parser("replay", help="Make dead deliveries pending again.")
    _add_config(replay, argparse.SUPPRESS)
    add_replay_arguments(replay, suppress=True)


def add_replay_arguments(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    """`replay (ID... | --state dead [--target] [--source] [--type] [--since]) [--dry-run]`;
    `--all-dead` is `--state dead`, as `relay replay` always took it."""
    parser.add_argument("ids", nargs="*", type=int, default=[], help="delivery ids")
    parser.add_argument(
        "--state",
        choices=["dead"],
        default=argparse.SUPPRESS if suppress else None,
        help="every dead delivery the filters match",
    )
    parser.add_argument("--all-dead", action="store_true", help="every dead delivery")
    _add_filters(parser, ("target", "source", "type", "since"), suppress=suppress)
    parser.add_argument(
        "--dry-run", action="store_true", help="print what would be replayed; change nothing"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="with --dry-run: one JSON object per line",
    )
    parser.set_defaults(action="replay", usage_error=parser.error)


def _add_config(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, default=default, help="the YAML config file (required)"
    )


def _add_list_arguments(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument("--state", choices=STATES, default=default, help="in this state")
    _add_filters(parser, ("target", "source", "type", "event", "since"), suppress=suppress)
    parser.add_argument(
        "--limit",
        type=_positive,
        metavar="N",
        default=argparse.SUPPRESS if suppress else LIST_LIMIT,
        help=f"at most this many (default {LIST_LIMIT})",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="one JSON object per line",
    )


FILTER_HELP = {
    "target": "of this target",
    "source": "of events from this source",
    "type": "of events whose type matches this glob (CASE_*, as in routes)",
    "event": "of the event with this id",
    "since": f"of events received within this long ({EXAMPLES})",
}
METAVARS = {"type": "GLOB", "event": "ID", "since": "DURATION"}


def _add_filters(
    parser: argparse.ArgumentParser, names: tuple[str, ...], *, suppress: bool
) -> None:
    for name in names:
        parser.add_argument(
            f"--{name}",
            type=_duration_s if name == "since" else str,
            default=argparse.SUPPRESS if suppress else None,
            metavar=METAVARS.get(name, "NAME"),
            help=FILTER_HELP[name],
        )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _duration_s(text: str) -> float:
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_arguments(args: argparse.Namespace) -> None:
    """What argparse cannot say: `-c` before or after the subcommand, and what to replay."""
    if args.config is None:
        args.usage_error("the following arguments are required: -c/--config")
    if args.action != "replay":
        return
    if args.all_dead:
        args.state = "dead"
    if args.state not in (None, "dead"):
        args.usage_error(f"only dead deliveries are replayed, not {args.state} ones")
    named = ("target", "source", "type", "since")
    filters = [f"--{name}" for name in named if vars(args)[name] is not None]
    if args.ids and (args.state or filters):
        args.usage_error("give delivery ids or --state dead with filters, not both")
    if not args.ids and args.state is None:
        hint = f" {' '.join(filters)} applies only with --state dead;" if filters else ""
        args.usage_error(f"name what to replay:{hint} give delivery ids or --state dead")


async def run(args: argparse.Namespace, config: Config) -> int:
    """Run the parsed `relay deliveries` (or `relay replay`) command against the store."""
    store = open_store(config.store, time.time)
    await store.open(daemon=False)
    try:
        command = Command(store, config, args)
        if args.action == "show":
            return await command.show()
        if args.action == "replay":
            return await command.replay()
        return await command.list_deliveries()
    finally:
        await store.close()


class Command:
    def __init__(self, store: Store, config: Config, args: argparse.Namespace) -> None:
        self.store = store
        self.args = args
        self.path: Path = args.config
        self.targets: Container[str] = config.targets
        self.redact = Redactor(config_secrets(config))

    def where(self) -> DeliveryFilter:
        args = self.args
        return DeliveryFilter(
            target=args.target,
            source=args.source,
            type_glob=args.type,
            event_id=getattr(args, "event", None),
            since=None if args.since is None else time.time() - args.since,
        )

    async def list_deliveries(self) -> int:
        records = await self.store.deliveries(self.args.state, self.args.limit, where=self.where())
        for record in records:
            self._print(record)
        pending = await self.store.pending_by_target()
        waiting = {name: n for name, n in pending.items() if name not in self.targets}
        if waiting:
            print(waiting_note(waiting, self.path), file=sys.stderr)
        return 0

    def _print(self, record: DeliveryRecord) -> None:
        if self.args.json:
            print(json_line(delivery_fields(record, self.redact, self.targets)))
        else:
            print(delivery_line(record, self.redact, self.targets))

    async def show(self) -> int:
        detail = await self.store.delivery(self.args.id)
        if detail is None:
            print(f"relay deliveries show: no delivery {self.args.id}", file=sys.stderr)
            return 1
        if self.args.json:
            print(json_line(detail_fields(detail, self.redact, self.targets)))
        else:
            print("\n".join(detail_lines(detail, self.redact, self.targets)))
        return 0

    async def replay(self) -> int:
        dry_run, count = self.args.dry_run, 0
        skipped: list[str] = []
        async for page in dead_pages(self.store, self.where(), self.args.ids, skipped):
            if dry_run:
                for record in page:
                    self._print(record)
                count += len(page)
            else:
                count += await self.store.replay([record.id for record in page])
        for note in skipped:
            print(note, file=sys.stderr)
        summary = sys.stderr if self.args.json else sys.stdout  # stdout: JSON lines alone
        if dry_run:
            print(
                f"{count} dead deliveries would be pending again (dry run: nothing changed)",
                file=summary,
            )
        else:
            print(f"{count} dead deliveries are pending again", file=summary)
        return 0
