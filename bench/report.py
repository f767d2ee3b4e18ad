"""The printed report: machine facts, then one block per scenario with its aim."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
from pathlib import Path
from typing import Any, Protocol

RATIO_AIM = 0.6
DELIVERED_PER_S_AIM = 1_000.0
P99_AIM_MS = 20.0
BUSY_WARNING_CORES = 0.25


class SettingsLike(Protocol):
    @property
    def warmup_s(self) -> float: ...
    @property
    def duration_s(self) -> float: ...
    @property
    def rate(self) -> float: ...
    @property
    def rate_duration_s(self) -> float: ...


def machine() -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def aim(ok: bool) -> str:
    return "met" if ok else "MISSED"


def ms(latency: dict[str, Any], key: str) -> str:
    value = latency.get(key)
    return "-" if value is None else f"{value:.1f}"


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def print_header(results: dict[str, Any], relay_src: Path | None) -> None:
    m = results["machine"]
    print(f"relay benchmark: {m['nproc']} CPUs ({m['processor']}), Python {m['python']}")
    print(f"  {m['platform']}")
    where = f"the relay package in {relay_src}" if relay_src else "this work tree"
    print(f"  relay under test: `python -m relay run` from {where}")
    print("  load generator: bench/loadgen.py (raw asyncio on uvloop, in its own process)")
    busy = results["others_cores_before"]
    print(f"  other processes kept {busy:.2f} cores busy just before the start", end="")
    print(
        " (WARNING: a busy machine; throughput will be noisy)" if busy > BUSY_WARNING_CORES else ""
    )


def print_results(
    results: dict[str, Any], s: SettingsLike, connections: int, wrk_wanted: bool
) -> None:
    print_ingest(results["ingest"], results["ingest_wrk"], s, connections, wrk_wanted)
    print_e2e(results["end_to_end"], connections)
    print_paced(results["paced"], s)
    print_purge(results["purge"], s)


def print_ingest(
    rounds: list[dict[str, Any]],
    wrk_pair: dict[str, Any] | None,
    s: SettingsLike,
    connections: int,
    wrk_wanted: bool,
) -> None:
    print(
        f"\n1. Ingest: closed loop, {connections} connections, 784-byte signed bodies, "
        f"{s.warmup_s:g} s warm-up + {s.duration_s:g} s measured per run"
    )
    print(
        f"   {'run':<9}{'bare req/s':>11}{'relay req/s':>13}{'ratio':>7}"
        f"{'bare p50/p99':>15}{'relay p50/p99':>16}{'CPU us/req bare/relay':>24}{'others':>8}"
    )
    for i, r in enumerate(rounds, 1):
        _ingest_row(f"round {i}", r)
    if wrk_pair is not None:
        _ingest_row("wrk", wrk_pair)
    elif wrk_wanted:
        print("   (wrk is not installed: no cross-check run)")
    ratios = [r["ratio"] for r in rounds]
    ratio = statistics.median(ratios)
    print(
        f"   throughput ratio relay/bare: median {ratio:.2f}x of {len(ratios)} rounds (range "
        f"{min(ratios):.2f}-{max(ratios):.2f}); aim >= {RATIO_AIM}x: {aim(ratio >= RATIO_AIM)}"
    )
    cpu_ratios = [r["cpu_ratio"] for r in rounds if r["cpu_ratio"]]
    if cpu_ratios:
        print(
            f"   CPU-cost ratio (bare CPU per request / relay CPU per request): median "
            f"{statistics.median(cpu_ratios):.2f}x; steadier than throughput on a shared machine"
        )
    print(
        "   latencies in ms; 'others' = cores used by other processes (and kernel threads)"
        " during the relay run"
    )
    wal = max(r["relay"].get("wal_bytes", 0) for r in rounds)
    print(f"   relay's WAL after the load: up to {mib(wal)} (SQLite's auto-checkpoint: ~4 MiB)")


def _ingest_row(label: str, r: dict[str, Any]) -> None:
    bare, relay = r["bare"], r["relay"]
    bare_lat = f"{ms(bare['latency_ms'], 'p50')} / {ms(bare['latency_ms'], 'p99')}"
    relay_lat = f"{ms(relay['latency_ms'], 'p50')} / {ms(relay['latency_ms'], 'p99')}"
    cpu = (
        f"{_num(bare['cpu_us_per_req'], '.0f')} / {_num(relay['cpu_us_per_req'], '.0f')} "
        f"({_num(r['cpu_ratio'], '.2f')}x)"
    )
    flags = " (ran out of requests)" if bare.get("exhausted") or relay.get("exhausted") else ""
    print(
        f"   {label:<9}{bare['rps']:>11,.0f}{relay['rps']:>13,.0f}{r['ratio']:>6.2f}x"
        f"{bare_lat:>15}{relay_lat:>16}{cpu:>24}{relay['cpu']['others_cores']:>8.2f}{flags}"
    )


def print_e2e(e: dict[str, Any], connections: int) -> None:
    print(
        f"\n2. End to end: {e['events']:,} events posted on {connections} connections, delivered "
        f"by one http target (concurrency {e['delivery_concurrency']}) to a bare receiver"
    )
    ok = e["complete"] and e["delivered_per_s"] >= DELIVERED_PER_S_AIM
    print(
        f"   delivered {e['delivered_per_s']:,.0f} events/s: {e['seconds']:.2f} s from the first"
        f" post to the last new event at the receiver; aim >= {DELIVERED_PER_S_AIM:,.0f}/s:"
        f" {aim(ok)}"
    )
    print(
        f"   meanwhile ingest took all {e['events']:,} in {e['ingest_seconds']:.2f} s "
        f"({e['ingest_per_s']:,.0f} req/s, p99 {ms(e['ingest_latency_ms'], 'p99')} ms); the "
        f"backlog drained {e['drain_after_last_post_s']:.2f} s after the last post"
    )
    print(
        f"   relay CPU {e['relay_cpu_us_per_event']:.0f} us per event (ingest + delivery); "
        f"receiver requests {e['receiver_requests']:,}; store {e['store']}; "
        f"WAL {mib(e['wal_bytes'])}; others {e['cpu']['others_cores']:.2f} cores"
    )


def print_paced(runs: dict[str, dict[str, Any]], s: SettingsLike) -> None:
    print(
        f"\n3. Ingest latency at {s.rate:g} events/s offered: open loop, {s.warmup_s:g} s warm-up "
        f"+ {s.rate_duration_s:g} s measured, each latency from the request's due time"
    )
    for label, r in runs.items():
        lat = r["latency_ms"]
        p99 = lat["p99"]
        ok = p99 is not None and p99 < P99_AIM_MS
        relay_cores = r["cpu"]["relay_cpu_s"] / r["cpu"]["wall_s"]
        print(
            f"   {label:<24} p50 {ms(lat, 'p50')} ms, p99 {ms(lat, 'p99')} ms, max "
            f"{ms(lat, 'max')} ms; aim p99 < {P99_AIM_MS:g} ms: {aim(ok)}"
        )
        print(
            f"   {'':<24} relay busy {relay_cores:.2f} cores; generator send lag p99 "
            f"{ms(r['send_lag_ms'], 'p99')} ms; {r['connections_used']} connections; "
            f"WAL {mib(r['wal_bytes'])}; others {r['cpu']['others_cores']:.2f} cores"
        )


def print_purge(purge: dict[str, Any], s: SettingsLike) -> None:
    print(
        f"\n4. Ingest latency at {s.rate:g} events/s offered while retention purges a backlog of "
        f"{purge['events']:,} delivered events 30 days old ({mib(purge['file_bytes'])} store)"
    )
    for label, r in purge["runs"].items():
        lat = r["latency_ms"]
        start, end = r["backlog_left"]
        relay_cores = r["cpu"]["relay_cpu_s"] / r["cpu"]["wall_s"]
        print(
            f"   {label:<24} p50 {ms(lat, 'p50')} ms, p99 {ms(lat, 'p99')} ms, max "
            f"{ms(lat, 'max')} ms; relay busy {relay_cores:.2f} cores"
        )
        print(
            f"   {'':<24} backlog left {start:,} as the load began, {end:,} as it ended; "
            f"store file {mib(r['file_bytes'])}; others {r['cpu']['others_cores']:.2f} cores"
        )
