"""`make bench` scenarios 5-8: relay side by side with what it is measured against.

5. The bare client loop (bench/client_loop.py): aiohttp's client posting the same bodies to the
   same receiver, 32 in flight, compared with scenario 2's end to end delivered events/s.
6. The naive relay (bench/naive_relay.py, Flask + requests under gunicorn, 2 workers x 8
   threads): the same closed loop as scenario 2, delivered events/s at the same receiver.
7. Fan-out: N events routed to 1, 5 and 20 http targets. The targets are paused (admin API)
   while the events are posted, so ingest is measured alone (req/s and relay CPU per event),
   then resumed, so delivery is measured alone (deliveries/s and relay CPU per delivery).
8. Isolation: ingest latency at a fixed rate with two targets, one of which hangs every request
   for its full timeout, against the same with both targets answering at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from ingest import (
    SECRET,
    Problems,
    closed_loop,
    http_target,
    metered,
    open_loop,
    wait_for_receiver,
    write_config,
)
from procs import (
    BENCH_DIR,
    HOST,
    CpuMeter,
    Server,
    free_port,
    helper_server,
    relay_server,
    run_script,
    running,
)

FANOUTS = (1, 5, 20)
HANG_TIMEOUT = "2s"  # the hanging target's timeout: every attempt waits for all of it
NAIVE_WORKERS, NAIVE_THREADS = 2, 8
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BaselineSettings(Protocol):
    @property
    def events(self) -> int: ...
    @property
    def delivery_concurrency(self) -> int: ...
    @property
    def naive_events(self) -> int: ...
    @property
    def fanout_events(self) -> int: ...
    @property
    def rate(self) -> float: ...
    @property
    def warmup_s(self) -> float: ...
    @property
    def rate_duration_s(self) -> float: ...
    @property
    def relay_src(self) -> Path | None: ...


def post_admin(admin_port: int, path: str) -> None:
    request = urllib.request.Request(f"http://{HOST}:{admin_port}{path}", data=b"", method="POST")
    with _opener.open(request, timeout=10.0) as response:
        json.loads(response.read())


# -- 5. the bare client loop -----------------------------------------------------------------


def client_loop(s: BaselineSettings, work: Path, problems: Problems) -> dict[str, Any]:
    with helper_server("receiver", work) as receiver:
        meter = CpuMeter([receiver])
        args = ["--port", str(receiver.port), "--events", str(s.events)]
        result = run_script("client_loop.py", [*args, "--concurrency", str(s.delivery_concurrency)])
        stats = wait_for_receiver(receiver, s.events, timeout_s=30.0)
        result["cpu"] = meter.stop()
    problems.expect_statuses("client loop", result, "200")
    problems.expect(
        stats["events"] == s.events, f"client loop: receiver got {stats['events']} of {s.events}"
    )
    result["loop_cpu_us_per_event"] = result["cpu"]["loadgen_cpu_s"] / s.events * 1e6
    return result


# -- 6. the naive relay ----------------------------------------------------------------------


def naive_server(receiver: Server, work: Path) -> contextlib.AbstractContextManager[Server]:
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "-w", str(NAIVE_WORKERS)]
    argv += ["--threads", str(NAIVE_THREADS), "-b", f"{HOST}:{port}", "--chdir", str(BENCH_DIR)]
    argv += ["--log-level", "warning", "naive_relay:app"]
    env = dict(os.environ, NAIVE_SECRET=SECRET, NAIVE_TARGET=f"{receiver.url}/sink")
    return running("naive", argv, port, work / f"naive-{port}.log", env=env)


def naive(s: BaselineSettings, work: Path, problems: Problems) -> dict[str, Any]:
    with helper_server("receiver", work) as receiver, naive_server(receiver, work) as server:
        meter = CpuMeter([server, receiver])
        load = closed_loop(server.port, s.naive_events, 0.0, 120.0)
        stats = wait_for_receiver(receiver, s.naive_events, timeout_s=60.0)
        cpu = meter.stop()
    problems.expect_statuses("naive relay", load, "202")
    problems.expect(
        stats["events"] >= s.naive_events,
        f"naive relay: receiver got {stats['events']} of {s.naive_events}",
    )
    finished_at = stats["last_new_at"] or load["last_done_at"]
    seconds = finished_at - load["first_sent_at"]
    return {
        "events": s.naive_events,
        "seconds": seconds,
        "delivered_per_s": stats["events"] / seconds,
        "ingest_latency_ms": load["latency_ms"],
        "cpu": cpu,
        "workers": NAIVE_WORKERS,
        "threads": NAIVE_THREADS,
    }


# -- 7. fan-out ------------------------------------------------------------------------------


def fanout_one(s: BaselineSettings, work: Path, fanout: int, problems: Problems) -> dict[str, Any]:
    events, tag = s.fanout_events, f"fanout-{fanout}"
    with helper_server("receiver", work) as receiver:
        targets = {
            f"t{i}": http_target(receiver.port, s.delivery_concurrency, f"/sink/{i}")
            for i in range(fanout)
        }
        config = write_config(work / tag, targets)
        with relay_server(config.path, config.port, s.relay_src) as relay:
            for name in targets:
                post_admin(config.admin_port, f"/api/targets/{name}/pause")
            ingest = metered([relay], lambda: closed_loop(config.port, events, 0.0, 120.0))
            meter = CpuMeter([relay])
            for name in targets:
                post_admin(config.admin_port, f"/api/targets/{name}/resume")
            stats = wait_for_receiver(receiver, events * fanout, 120.0, counting="requests")
            delivery_cpu = meter.stop()
    problems.expect_statuses(tag, ingest, "202")
    deliveries = events * fanout
    problems.expect(
        stats["requests"] >= deliveries, f"{tag}: receiver got {stats['requests']} of {deliveries}"
    )
    window_s = (stats["last_at"] or 0.0) - (stats["first_at"] or 0.0)
    ingest_s = ingest["last_done_at"] - ingest["first_sent_at"]
    return {
        "fanout": fanout,
        "events": events,
        "ingest_per_s": events / ingest_s,
        "ingest_cpu_us_per_event": ingest["cpu"]["relay_cpu_s"] / events * 1e6,
        "ingest_latency_ms": ingest["latency_ms"],
        "deliveries": deliveries,
        "deliveries_per_s": stats["requests"] / window_s if window_s > 0 else None,
        "delivery_cpu_us_per_delivery": delivery_cpu["relay_cpu_s"] / deliveries * 1e6,
        "delivery_cpu_us_per_event": delivery_cpu["relay_cpu_s"] / events * 1e6,
    }


def fanout(s: BaselineSettings, work: Path, problems: Problems) -> list[dict[str, Any]]:
    return [fanout_one(s, work, n, problems) for n in FANOUTS]


# -- 8. isolation ----------------------------------------------------------------------------


def isolation_one(
    s: BaselineSettings, work: Path, hang: bool, problems: Problems
) -> dict[str, Any]:
    tag = "one-target-hangs" if hang else "no-hang"
    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(helper_server("receiver", work))
        other = stack.enter_context(helper_server("hang", work)) if hang else receiver
        slow = http_target(other.port, s.delivery_concurrency, "/other")
        slow["timeout"] = HANG_TIMEOUT
        targets = {"sink": http_target(receiver.port, s.delivery_concurrency), "other": slow}
        config = write_config(work / tag, targets)
        relay = stack.enter_context(relay_server(config.path, config.port, s.relay_src))
        result = metered(
            [relay], lambda: open_loop(config.port, s.rate, s.warmup_s, s.rate_duration_s)
        )
        stats = wait_for_receiver(receiver, result["sent"], timeout_s=30.0)
    problems.expect_statuses(tag, result, "202")
    problems.expect(
        stats["events"] >= result["sent"],
        f"{tag}: the answering target got {stats['events']} of {result['sent']} events",
    )
    result["delivered_to_sink"] = stats["events"]
    return result


def isolation(s: BaselineSettings, work: Path, problems: Problems) -> dict[str, dict[str, Any]]:
    return {
        "no hang": isolation_one(s, work, False, problems),
        "one target hangs": isolation_one(s, work, True, problems),
    }


# -- report ----------------------------------------------------------------------------------

E2E_RATIO_AIM = 0.6
NAIVE_RATIO_AIM = 3.0
P99_RATIO_AIM = 2.0


def _aim(ok: bool) -> str:
    return "met" if ok else "MISSED"


def _p99(result: dict[str, Any]) -> float:
    value: float = result["latency_ms"]["p99"]
    return value


def print_baselines(results: dict[str, Any], connections: int) -> None:
    e2e, loop, naive_run = results["end_to_end"], results["client_loop"], results["naive"]
    ratio = e2e["delivered_per_s"] / loop["per_s"]
    print(
        f"\n5. End to end against a bare aiohttp client loop ({loop['events']:,} posts of the same"
        f" bodies to the same receiver, {loop['concurrency']} in flight)"
    )
    print(
        f"   client loop {loop['per_s']:,.0f} posts/s ({loop['loop_cpu_us_per_event']:.0f} us CPU"
        f" per post); relay end to end {e2e['delivered_per_s']:,.0f} events/s"
        f" ({e2e['relay_cpu_us_per_event']:.0f} us CPU per event, ingest + delivery)"
    )
    print(
        f"   ratio relay/loop {ratio:.2f}x; aim >= {E2E_RATIO_AIM}x: {_aim(ratio >= E2E_RATIO_AIM)}"
    )
    naive_ratio = e2e["delivered_per_s"] / naive_run["delivered_per_s"]
    print(
        f"\n6. The naive relay (Flask + requests under gunicorn, {naive_run['workers']} workers x"
        f" {naive_run['threads']} threads, forwarding synchronously), closed loop at"
        f" {connections} connections, {naive_run['events']:,} events"
    )
    latency = naive_run["ingest_latency_ms"]
    print(
        f"   naive {naive_run['delivered_per_s']:,.0f} events/s delivered (post p50/p99"
        f" {latency['p50']:.1f} / {latency['p99']:.1f} ms); relay"
        f" {e2e['delivered_per_s']:,.0f} events/s (scenario 2)"
    )
    print(
        f"   ratio relay/naive {naive_ratio:.1f}x; aim >= {NAIVE_RATIO_AIM:g}x:"
        f" {_aim(naive_ratio >= NAIVE_RATIO_AIM)}"
    )
    print_fanout(results["fanout"], connections)
    print_isolation(results["isolation"], results["settings"])
    print_purge_ratio(results["purge"])


def print_fanout(runs: list[dict[str, Any]], connections: int) -> None:
    print(
        f"\n7. Fan-out: {runs[0]['events']:,} events to 1, 5 and 20 http targets; ingest measured"
        f" with the targets paused ({connections} connections), delivery after resuming them"
    )
    print(
        f"   {'targets':>8}{'ingest/s':>10}{'CPU us/event':>14}{'p99 ms':>8}"
        f"{'deliveries/s':>14}{'CPU us/delivery':>17}{'CPU us/event':>14}"
    )
    for r in runs:
        rate = r["deliveries_per_s"]
        print(
            f"   {r['fanout']:>8}{r['ingest_per_s']:>10,.0f}{r['ingest_cpu_us_per_event']:>14.0f}"
            f"{r['ingest_latency_ms']['p99']:>8.1f}{rate or 0:>14,.0f}"
            f"{r['delivery_cpu_us_per_delivery']:>17.0f}{r['delivery_cpu_us_per_event']:>14.0f}"
        )
    first, last = runs[0], runs[-1]
    ingest_growth = last["ingest_cpu_us_per_event"] / first["ingest_cpu_us_per_event"]
    per_delivery = last["delivery_cpu_us_per_delivery"] / first["delivery_cpu_us_per_delivery"]
    print(
        f"   {last['fanout']} targets vs 1: ingest CPU per event x{ingest_growth:.2f}, delivery"
        f" CPU per delivery x{per_delivery:.2f} (so per event x{per_delivery * last['fanout']:.0f})"
    )


def print_isolation(runs: dict[str, dict[str, Any]], settings: dict[str, Any]) -> None:
    print(
        f"\n8. Isolation: ingest at {settings['rate']:g} events/s, each event to two targets;"
        f" in the second run one of them hangs every request for its whole timeout"
        f" ({HANG_TIMEOUT})"
    )
    for label, r in runs.items():
        lat = r["latency_ms"]
        print(
            f"   {label:<18} p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, max"
            f" {lat['max']:.1f} ms; the answering target got {r['delivered_to_sink']:,} events"
        )
    ratio = _p99(runs["one target hangs"]) / _p99(runs["no hang"])
    print(f"   p99 ratio {ratio:.2f}x; aim <= {P99_RATIO_AIM:g}x: {_aim(ratio <= P99_RATIO_AIM)}")


def print_purge_ratio(purge: dict[str, Any]) -> None:
    runs = list(purge["runs"].values())
    ratio = _p99(runs[1]) / _p99(runs[0])
    print(
        f"\n   (scenario 4) ingest p99 while purging / without: {ratio:.2f}x;"
        f" aim <= {P99_RATIO_AIM:g}x: {_aim(ratio <= P99_RATIO_AIM)}"
    )
