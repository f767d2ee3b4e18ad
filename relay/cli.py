"""The `relay` command: run, check, deliveries, replay."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Container, Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from relay import __version__, logs, samples
from relay.addresses import parse_listen
from relay.app import DAEMON, DISPATCHER, STORE, Daemon, create_app
from relay.compiled import compile_config
from relay.config import Config
from relay.errors import ConfigError, InboundError, RenderError, StoreError
from relay.loading import load_config
from relay.preview import build_event, check_samples, format_request, preview
from relay.redaction import Redactor, config_secrets, redact_request
from relay.schema import config_schema_text
from relay.send import post, sign_request
from relay.server import RelayRunner, connection_cap, raise_open_file_limit
from relay.store import open_store
from relay.store.base import DeliveryRecord, Store
from relay.textsafety import escape_controls

log = logging.getLogger("relay")

GC_GEN0_THRESHOLD = 10_000  # Python's default is 700
INBOUND_DRAIN_S = 5.0  # requests being received when SIGTERM arrives get this long to finish


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.log_format not in logs.LOG_FORMATS:  # from RELAY_LOG_FORMAT, which argparse trusts
        parser.error(f"RELAY_LOG_FORMAT must be one of {', '.join(logs.LOG_FORMATS)}")
    logs.configure(args.log_level, sys.stderr, args.log_format)
    command: int = args.command(args)
    return command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description="A webhook relay.")
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    _log_options(parser, top_level=True)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("-c", "--config", type=Path, required=True, help="the YAML config file")
        _log_options(sub, top_level=False)
        return sub

    command("run", "Run the daemon.").set_defaults(command=run)
    command("check", "Load and compile the config; list every problem.").set_defaults(command=check)
    listing = command("deliveries", "List deliveries, newest first.")
    listing.add_argument("--state", choices=["pending", "delivered", "dead"])
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(command=deliveries)
    replay = command("replay", "Make dead deliveries pending again.")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", type=int, default=[], help="delivery ids")
    which.add_argument("--all-dead", action="store_true", help="every dead delivery")
    replay.set_defaults(command=replay_dead)
    show = command("render", "Print the request a target would send for an event; send nothing.")
    show.add_argument("--target", required=True, help="the target to render")
    show.add_argument("--source", help="read the event as this source's sender does")
    shown = show.add_mutually_exclusive_group(required=True)
    shown.add_argument("event", nargs="?", type=Path, help="a JSON file holding the event")
    shown.add_argument("--sample", help="a shipped sample event of the source's sender")
    show.set_defaults(command=render)
    send = command("send", "Post an event to a running relay, as its sender would sign it.")
    send.add_argument("--source", required=True, help="the source to post to")
    event = send.add_mutually_exclusive_group(required=True)
    event.add_argument("event", nargs="?", type=Path, help="a JSON file holding the event")
    event.add_argument("--sample", help="a shipped sample event of the source's sender, by name")
    send.add_argument("--url", help="where to post (default: the source's path on `listen`)")
    send.set_defaults(command=send_event)
    schema = commands.add_parser(
        "schema",
        help="Print the config file's JSON Schema (for editors).",
        description="Print"
        " the config file's JSON Schema; relay.schema.json in the repository is this output.",
    )
    schema.set_defaults(command=print_schema)
    return parser


def _log_options(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    """The logging options, before the command or after it (`relay run --log-format json`);
    after it they default to nothing, so that a value given before it stays."""
    parser.add_argument(
        "--log-level",
        default="info" if top_level else argparse.SUPPRESS,
        choices=["debug", "info", "warning", "error"],
    )
    parser.add_argument(
        "--log-format",
        default=os.environ.get("RELAY_LOG_FORMAT", "text") if top_level else argparse.SUPPRESS,
        choices=logs.LOG_FORMATS,
        help="text for people, json for log pipelines: one object per line"
        " (default: $RELAY_LOG_FORMAT, else text)",
    )


def print_schema(args: argparse.Namespace) -> int:
    sys.stdout.write(config_schema_text())
    return 0


def _load(path: Path) -> Config | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        _print_problems(path, exc.problems)
        return None
    logs.redact_secrets(config_secrets(config))
    return config


def _print_problems(path: Path, problems: Sequence[str]) -> None:
    print(f"{path}: {len(problems)} problem(s):", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)


def check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1

    compiled = compile_config(config)
    for warning in compiled.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    problems = check_samples(config, list(compiled.router.routes), compiled.targets, time.time())
    if problems:
        redactor = Redactor(config_secrets(config))
        _print_problems(args.config, [redactor(problem) for problem in problems])
        return 1
    print(
        f"{args.config}: OK: {compiled.summary()}, templates rendered against the shipped samples"
    )
    return 0


def render(args: argparse.Namespace) -> int:
    """Print the exact request a target would send for an event, secrets redacted."""
    config = _load(args.config)
    if config is None:
        return 1
    if args.target not in config.targets:
        names = ", ".join(config.targets) or "none"
        print(f"relay render: no target named {args.target!r}; targets: {names}", file=sys.stderr)
        return 1
    sender = config.sources[args.source].reads_as if args.source in config.sources else "generic"
    if args.source is not None and args.source not in config.sources:
        print(f"relay render: no source named {args.source!r}", file=sys.stderr)
        return 1
    try:
        payload = _event_payload(args, sender)
    except (OSError, ValueError) as exc:
        print(f"relay render: {exc}", file=sys.stderr)
        return 1

    compiled = compile_config(config)
    now = time.time()
    try:
        event = build_event(args.source or "source", sender, payload, now)
        request = preview(compiled.targets[args.target], event, now)
    except (RenderError, InboundError) as exc:
        print(f"relay render: {exc}", file=sys.stderr)
        return 1
    redactor = Redactor(config_secrets(config))
    print(format_request(redact_request(request, redactor, config.targets[args.target])))
    return 0


def run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    try:
        return _run_loop(serve(config, args.config))
    except ConfigError as exc:
        _print_problems(args.config, exc.problems)
        return 1
    except (StoreError, OSError) as exc:
        log.error("cannot start: %s", exc)
        return 1


def _run_loop(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(coro)
    return uvloop.run(coro)


async def serve(config: Config, path: Path) -> int:
    """Serve until SIGTERM or SIGINT, then stop accepting and drain within the grace period.

    SIGHUP reloads the config from `path`. A store that fails (its file deleted, replaced or
    corrupt) stops relay the same way as SIGTERM, with exit code 1, so that a supervisor
    restarts it.
    """
    loop = asyncio.get_running_loop()
    reload_asked = asyncio.Event()  # from now on: a SIGHUP while starting reloads once started
    loop.add_signal_handler(signal.SIGHUP, reload_asked.set)
    app = await create_app(config)
    runner = RelayRunner(
        app,
        config.limits,
        max_connections=_connection_cap(config.limits.max_connections),
        shutdown_timeout_s=INBOUND_DRAIN_S,
    )
    await runner.setup()
    # Everything built so far lives as long as the process: keep it out of the collector's
    # scans, and collect the young generation less often (ingest allocates many small objects).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    host, port = parse_listen(config.listen)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    reloads = asyncio.create_task(_reload_when_asked(reload_asked, app[DAEMON], path))
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("relay %s listening on %s, store %s", __version__, config.listen, config.store)
        store_failed = await _until_stopped(stop, app[STORE])
        log.info("shutting down: no new requests; finishing deliveries in flight")
        app[DISPATCHER].begin_shutdown()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        reloads.cancel()
        await asyncio.gather(reloads, return_exceptions=True)
        await runner.cleanup()
        gc.unfreeze()  # let interpreter shutdown free them (extensions check for leaks then)
    log.info("stopped" + (" because the store failed" if store_failed else ""))
    return 1 if store_failed else 0


async def _reload_when_asked(asked: asyncio.Event, daemon: Daemon, path: Path) -> None:
    """Reload each time SIGHUP sets `asked`. Signals during a reload make one more reload
    after it, so the file's last version is the one that runs."""
    while True:
        await asked.wait()
        asked.clear()
        try:
            await daemon.reload(path)
        except Exception:  # a bug: relay keeps running, and reloading on the next SIGHUP
            log.exception("config reload from %s: unexpected error", path)


async def _until_stopped(stop: asyncio.Event, store: Store) -> bool:
    """Wait for a stop signal or for the store to fail; whether the store failed."""
    signalled = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(store.wait_failed())
    done, _ = await asyncio.wait({signalled, failed}, return_when=asyncio.FIRST_COMPLETED)
    for waiter in (signalled, failed):
        waiter.cancel()
    await asyncio.gather(signalled, failed, return_exceptions=True)
    return failed in done


def _connection_cap(max_connections: int) -> int:
    """Raise the open-file limit as far as allowed; max_connections must fit below it."""
    before, open_files = raise_open_file_limit()
    if open_files != before:
        log.info("open-file limit raised from %d to %d", before, open_files)
    else:
        log.info("open-file limit %d", open_files)
    cap = connection_cap(max_connections, open_files)
    if cap < max_connections:
        log.warning(
            "limits.max_connections %d does not fit the open-file limit %d: serving at most %d",
            max_connections,
            open_files,
            cap,
        )
    return cap


def deliveries(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1

    async def show() -> None:
        store = open_store(config.store, time.time)
        await store.open(daemon=False)
        try:
            records = await store.deliveries(args.state, args.limit)
            pending = await store.pending_by_target()
        finally:
            await store.close()
        redactor = Redactor(config_secrets(config))
        for record in records:
            print(_delivery_line(record, redactor, config.targets))
        waiting = {name: n for name, n in pending.items() if name not in config.targets}
        if waiting:
            print(_waiting_note(waiting, args.config), file=sys.stderr)

    return _store_command(show())


NOT_CONFIGURED = " (not in the config)"


def _delivery_line(record: DeliveryRecord, redact: Redactor, targets: Container[str]) -> str:
    """One tab-separated line; ids, types and errors come from outside, so each is escaped.
    A target the config no longer has is marked: its pending deliveries wait for it."""
    due = datetime.fromtimestamp(record.next_attempt_at, UTC).strftime("%H:%M:%S")
    status = record.last_status if record.last_status is not None else "-"
    fields = [
        str(record.id),
        record.state,
        record.target + ("" if record.target in targets else NOT_CONFIGURED),
        f"{record.source}/{record.event_id}",
        record.event_type,
        f"attempts={record.attempts}",
        f"status={status}",
        f"due={due}",
        record.last_error or "",
    ]
    return "\t".join(escape_controls(redact(field)) for field in fields)


def _waiting_note(waiting: Mapping[str, int], path: Path) -> str:
    counts = ", ".join(f"{escape_controls(name)} ({count})" for name, count in waiting.items())
    return (
        f"{sum(waiting.values())} pending deliveries are for targets not in {path}: {counts};"
        " relay sends them once a target of that name is configured again"
    )


def replay_dead(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1

    async def revive() -> None:
        store = open_store(config.store, time.time)
        await store.open(daemon=False)
        try:
            count = await store.replay(None if args.all_dead else args.ids)
        finally:
            await store.close()
        print(f"{count} dead deliveries are pending again")

    return _store_command(revive())


def _store_command(coro: object) -> int:
    try:
        asyncio.run(coro)  # type: ignore[arg-type]
    except StoreError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    return 0


def send_event(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return 1
    source = config.sources.get(args.source)
    if source is None:
        names = ", ".join(config.sources) or "none"
        print(f"relay send: no source named {args.source!r}; sources: {names}", file=sys.stderr)
        return 1
    try:
        payload = _event_payload(args, source.reads_as)
    except (OSError, ValueError) as exc:
        print(f"relay send: {exc}", file=sys.stderr)
        return 1
    host, port = parse_listen(config.listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = args.url or f"http://{host}:{port}{source.path}"
    request = sign_request(source, payload, time.time)
    try:
        status, answer = asyncio.run(post(url, request))
    except (aiohttp.ClientError, TimeoutError) as exc:
        print(f"relay send: cannot post to {url}: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    print(f"{status} {answer.strip()}")
    return 0 if 200 <= status < 300 else 1


def _event_payload(args: argparse.Namespace, sender: str) -> object:
    if args.sample is not None:
        return samples.sample(sender, args.sample).payload
    try:
        return json.loads(Path(args.event).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{args.event} is not JSON: {exc}") from None


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
