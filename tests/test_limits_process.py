"""`relay run` as a child process: it raises its open-file limit, and a gzip bomb costs it no
more memory than its body limit."""

from __future__ import annotations

import json
import resource
import textwrap
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.process import RelayProcess, free_port, listeners

pytestmark = pytest.mark.slow

CONFIG = """\
store: "sqlite:///relay.db"
limits: {max_body_bytes: 1048576}
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
    text = listeners(port, free_port()) + textwrap.dedent(CONFIG)
    config.write_text(text, encoding="utf-8")
    process = RelayProcess(config, port, tmp_path / "relay.log")
    yield process
    process.stop_now()


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-file limit in /proc/{pid}/limits")


def peak_memory_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


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


async def test_a_gzip_bomb_costs_relay_no_more_memory_than_its_body_limit(
    relay: RelayProcess,
) -> None:
    inflated_mib = 128
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # gzip
    mebibyte = bytes(1024 * 1024)
    bomb = b"".join(compressor.compress(mebibyte) for _ in range(inflated_mib))
    bomb += compressor.flush()
    assert len(bomb) < 1048576

    relay.start()
    await relay.wait_ready()
    async with aiohttp.ClientSession() as session:
        url = f"{relay.url}/hooks/open"
        async with session.post(url, data=b'{"id": "warm-up"}') as response:
            assert response.status == 202
        before_kib = peak_memory_kib(relay.pid)
        async with session.post(
            url, data=bomb, headers={"Content-Encoding": "gzip"}, compress=False
        ) as response:
            assert response.status == 413
            assert json.loads(await response.read()) == {
                "error": "body is larger than 1048576 bytes (limits.max_body_bytes)"
            }
    grown_mib = (peak_memory_kib(relay.pid) - before_kib) / 1024
    assert grown_mib < 48, f"relay grew {grown_mib:.0f} MiB for a {inflated_mib} MiB bomb"
