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
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from relay import __version__, logs, samples
from relay.addresses import parse_listen
from relay.admin import create_admin_app
from relay.app import DAEMON, STORE, Daemon, create_app
from relay.compiled import compile_config
from relay.config import Config
from relay.deliveries_cli import add_deliveries_arguments, add_replay_arguments, check_arguments
from relay.deliveries_cli import run as run_deliveries_command
from relay.errors import ConfigError, InboundError, RenderError, StoreError
from relay.loading import load_config
from relay.preview import build_event, check_samples, format_request, preview
from relay.redaction import Redactor, config_secrets, redact_request
from relay.schema import config_schema_text
from relay.send import post, sign_request
from relay.server import RESERVED_FILES, RelayRunner, connection_cap, raise_open_file_limit
from relay.store import open_store
from relay.store.base import Store
from relay.store.url import parse_store_url
from relay.targets_cli import run as run_targets_command

log = logging.getLogger("relay")

GC_GEN0_THRESHOLD = 10_000  # Python's default is 700
INBOUND_DRAIN_S = 5.0  # requests being received when SIGTERM arrives get this long to finish
ADMIN_DRAIN_S = 1.0  # admin requests are quick; the admin listener closes after everything else
ADMIN_MAX_CONNECTIONS = 64  # probes, scrapers and operators: a cap of its own, apart from ingest


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
    command(
        "migrate", "Bring the store's schema up to date (relay run does too, at start)."
    ).set_defaults(command=migrate)
    listing_help = "List (the default), show and replay deliveries; the daemon may be running."
    listing = commands.add_parser("deliveries", help=listing_help, description=listing_help)
    add_deliveries_arguments(listing)
    listing.set_defaults(command=deliveries)
    replay = command("replay", "Make dead deliveries pending again (relay deliveries replay).")
    add_replay_arguments(replay)
    replay.set_defaults(command=deliveries)
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
    _add_targets_command(commands)
    return parser


def _add_targets_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`relay targets [-c FILE] [--json]`, `relay targets pause NAME [--reason TEXT]`,
    `relay targets resume NAME`; -c goes before or after the action."""
    targets = commands.add_parser(
        "targets",
        help="Show each target (paused or active, pending, dead, last success and error);"
        " pause or resume one.",
        description="Show each target; `pause NAME` stops deliveries to it, `resume NAME`"
        " starts them again (a running relay follows within a second).",
    )
    targets.add_argument("-c", "--config", type=Path, help="the YAML config file")
    targets.add_argument("--json", action="store_true", help="one JSON array, for programs")
    targets.set_defaults(command=targets_command, command_name="list")
    actions = targets.add_subparsers(metavar="ACTION")
    pause = actions.add_parser("pause", help="Claim nothing for a target until it is resumed.")
    pause.add_argument("name", help="the target")
    pause.add_argument("--reason", help="why, shown by relay targets")
    pause.set_defaults(command=targets_command, command_name="pause")
    resume = actions.add_parser("resume", help="Deliver to a paused target again.")
    resume.add_argument("name", help="the target")
    resume.set_defaults(command=targets_command, command_name="resume")
    for action in (pause, resume):
        action.add_argument(
            "-c", "--config", type=Path, default=argparse.SUPPRESS, help="the YAML config file"
        )


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

    Two listeners: ingest on `listen`, the admin listener on `admin.listen` (closed last, so
    that /readyz says "not ready" while relay drains). SIGHUP reloads the config from `path`.
    A store that fails (its file deleted, replaced or corrupt) stops relay the same way as
    SIGTERM, with exit code 1, so that a supervisor restarts it.
    """
    loop = asyncio.get_running_loop()
    reload_asked = asyncio.Event()  # from now on: a SIGHUP while starting reloads once started
    loop.add_signal_handler(signal.SIGHUP, reload_asked.set)
    app = await create_app(config)
    daemon = app[DAEMON]
    runner = RelayRunner(
        app,
        config.limits,
        max_connections=_connection_cap(config.limits.max_connections),
        shutdown_timeout_s=INBOUND_DRAIN_S,
    )
    admin_runner = RelayRunner(
        create_admin_app(daemon),
        config.limits,
        max_connections=ADMIN_MAX_CONNECTIONS,
        shutdown_timeout_s=ADMIN_DRAIN_S,
    )
    await runner.setup()
    await admin_runner.setup()
    # Everything built so far lives as long as the process: keep it out of the collector's
    # scans, and collect the young generation less often (ingest allocates many small objects).
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_GEN0_THRESHOLD, *gc.get_threshold()[1:])
    stop = asyncio.Event()

    def stop_serving() -> None:
        daemon.begin_shutdown()  # not ready from the moment the signal arrives
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_serving)
    reloads = asyncio.create_task(_reload_when_asked(reload_asked, daemon, path))
    try:
        await _listen(admin_runner, config.admin.listen, "admin.listen")
        await _listen(runner, config.listen, "listen")
        log.info(
            "relay %s listening on %s (admin on %s), store %s",
            __version__,
            config.listen,
            config.admin.listen,
            parse_store_url(config.store).shown,  # a password written in the file stays out
        )
        store_failed = await _until_stopped(stop, app[STORE])
        log.info("shutting down: no new requests; finishing deliveries in flight")
        daemon.begin_shutdown()
    finally:
        loop.remove_signal_handler(signal.SIGHUP)
        reloads.cancel()
        await asyncio.gather(reloads, return_exceptions=True)
        await runner.cleanup()
        await admin_runner.cleanup()
        gc.unfreeze()  # let interpreter shutdown free them (extensions check for leaks then)
    log.info("stopped" + (" because the store failed" if store_failed else ""))
    return 1 if store_failed else 0


async def _listen(runner: web.AppRunner, listen: str, setting: str) -> None:
    host, port = parse_listen(listen)
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise OSError(f"{setting}: cannot listen on {listen}: {exc.strerror or exc}") from exc


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
    cap = connection_cap(max_connections, open_files, RESERVED_FILES + ADMIN_MAX_CONNECTIONS)
    if cap < max_connections:
        log.warning(
            "limits.max_connections %d does not fit the open-file limit %d: serving at most %d",
            max_connections,
            open_files,
            cap,
        )
    return cap


def deliveries(args: argparse.Namespace) -> int:
    """`relay deliveries [list | show | replay]` and `relay replay` (relay.deliveries_cli)."""
    check_arguments(args)
    config = _load(args.config)
    if config is None:
        return 1
    return _store_command(run_deliveries_command(args, config))


def migrate(args: argparse.Namespace) -> int:
    """`relay migrate -c CONFIG`: what `relay run` does to the schema at start, alone (before
    a rolling upgrade of replicas, say); safe beside running replicas of the same version."""
    config = _load(args.config)
    if config is None:
        return 1

    async def run_migrations() -> None:
        store = open_store(config.store, time.time)
        await store.open(daemon=False)  # migrates, under the store's lock
        await store.close()

    code = _store_command(run_migrations())
    if code == 0:
        print(f"relay: the store's schema is up to date ({parse_store_url(config.store).shown})")
    return code


def targets_command(args: argparse.Namespace) -> int:
    if args.config is None:
        print("relay targets: -c/--config is required", file=sys.stderr)
        return 1
    config = _load(args.config)
    if config is None:
        return 1
    return _store_command(run_targets_command(args, config))


def _store_command(coro: Coroutine[Any, Any, int | None]) -> int:
    """Run a command against the store; its exit code, 0 unless it returns another."""
    try:
        result = asyncio.run(coro)
    except StoreError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return 1
    return 0 if result is None else result


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
