"""Compiling the config is pure: no socket, session, file or database is opened, and what it
gives cannot change."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from relay.cli import main
from relay.compiled import compile_config
from relay.loading import load_config
from tests.conftest import ConfigWriter


class Listener:
    """A TCP port that counts the connections made to it (and answers none)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.1)
        self.port: int = self._socket.getsockname()[1]
        self.connections = 0
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while self._running:
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self._running = False
        self._thread.join(5)
        self._socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def config_pointing_at(port: int) -> str:
    return f"""\
store: "sqlite:///var/relay.db"
sources:
  flagright: {{path: /hooks/flagright, verify: {{scheme: flagright, secret: s3cret}}}}
targets:
  audit:
    kind: http
    url: "http://127.0.0.1:{port}/cases/{{{{ event.type | lower }}}}"
    headers: {{X-Case: "{{{{ event.id }}}}"}}
  alerts:
    kind: slack
    url: "http://127.0.0.1:{port}/services/T/B/X"
    body: '{{"text": {{{{ event.type | json }}}}}}'
  rows:
    kind: warehouse
    url: "postgresql://relay@127.0.0.1:{port}/warehouse"
    table: cases
    columns: {{id: {{value: event.id}}, type: {{value: event.type}}}}
    key: [id]
routes:
  - targets: [audit, alerts, rows]
"""


def test_check_and_render_open_no_connection_session_or_store(
    write_config: ConfigWriter,
    tmp_path: Path,
    listener: Listener,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiling made an HTTP client session")

    monkeypatch.setattr(aiohttp.ClientSession, "__init__", no_session)
    path = write_config(config_pointing_at(listener.port))
    assert main(["check", "-c", str(path)]) == 0
    for target in ("audit", "alerts", "rows"):
        argv = ["render", "-c", str(path), "--target", target]
        assert main([*argv, "--source", "flagright", "--sample", "CASE_OPENED"]) == 0
    out = capsys.readouterr().out
    assert "POST http://127.0.0.1:" in out
    assert "INSERT rows" in out
    assert listener.connections == 0
    assert not (tmp_path / "var").exists()


async def test_compiling_opens_nothing_and_gives_an_immutable_config(
    write_config: ConfigWriter, listener: Listener
) -> None:
    config = load_config(write_config(config_pointing_at(listener.port)), {})
    compiled = compile_config(config)
    await asyncio.sleep(0)  # anything compiling had scheduled would run now
    assert listener.connections == 0
    assert compiled.targets.keys() == {"audit", "alerts", "rows"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        compiled.router = compiled.router  # type: ignore[misc]
    with pytest.raises(TypeError):
        compiled.targets["other"] = compiled.targets["audit"]  # type: ignore[index]


def test_the_same_file_compiles_to_equal_configs(
    write_config: ConfigWriter, listener: Listener
) -> None:
    """Templates compare by their text, so a reload can tell what changed."""
    path = write_config(config_pointing_at(listener.port))
    first, second = load_config(path, {}), load_config(path, {})
    assert first == second
    assert first.targets["audit"] == second.targets["audit"]
    changed = path.read_text().replace("event.type | lower", "event.type | upper")
    path.write_text(changed)
    third = load_config(path, {})
    assert third.targets["audit"] != first.targets["audit"]
    assert third.targets["rows"] == first.targets["rows"]
