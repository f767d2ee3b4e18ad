"""`relay run` as a child process: it raises its open-file limit."""

from __future__ import annotations

import resource
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.process import RelayProcess, free_port

pytestmark = pytest.mark.slow

CONFIG = """\
listen: "127.0.0.1:{port}"
store: "sqlite:///relay.db"
limits: {{max_body_bytes: 1048576}}
sources:
  open:
    path: /hooks/open
targets:
  out:
    kind: console
routes:
  - targets: [out]
"""


@pytest.fixture
async def relay(tmp_path: Path) -> AsyncIterator[RelayProcess]:
    port = free_port()
    config = tmp_path / "relay.yaml"
    config.write_text(textwrap.dedent(CONFIG.format(port=port)), encoding="utf-8")
    process = RelayProcess(config, port, tmp_path / "relay.log")
    yield process
    process.stop_now()


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-file limit in /proc/{pid}/limits")


async def test_relay_run_raises_its_open_file_limit_and_says_so(relay: RelayProcess) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(1024, hard // 2)
    if hard == resource.RLIM_INFINITY or lowered < 256:
        pytest.skip(f"hard open-file limit {hard} leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        relay.start()  # the child starts with the lowered limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    await relay.wait_ready()
    assert open_files_limit(relay.pid) == (hard, hard), relay.output()
    assert f"open-file limit raised from {lowered} to {hard}" in relay.output()
