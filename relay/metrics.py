"""Prometheus metrics, in a registry per app so that several apps can live in one process.

README (Metrics) says what each one means, with example alert rules. `exposition()` is the one
way out: whatever page serves the metrics calls it.
"""

from __future__ import annotations

import collections
import itertools
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.utils import floatToGoString

from relay.events import Delivered, Delivery, Outcome, Retry
from relay.store.base import AttemptResult, DeliveryState

# From a webhook answered at once to one delivered after a day of retries.
LATENCY_BUCKETS_S = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5),
    *(1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
    *(300.0, 900.0, 1800.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 24 * 3600.0),
)
# A pending result is counted as a retry.
ATTEMPT_RESULTS = {"delivered": "delivered", "pending": "retry", "dead": "dead"}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = InboundCounts()
        self.registry.register(self.requests)
        self.deliveries = Counter(
            "relay_deliveries",
            "Deliveries settled, by target and outcome (delivered, dead).",
            ["target", "outcome"],
            registry=self.registry,
        )
        self.attempts = Counter(
            "relay_delivery_attempts",
            "Delivery attempts by target, result (delivered, retry, dead) and class of the"
            " target's answer (2xx..5xx, ok, transient_error, permanent_error).",
            ["target", "result", "class"],
            registry=self.registry,
        )
        self.latency = LatencyHistogram()
        self.registry.register(self.latency)
        self.purged = Counter(
            "relay_store_purged_events",
            "Events (with their deliveries) deleted by retention.",
            registry=self.registry,
        )
        self.reloads = Counter(
            "relay_config_reloads",
            "Config reloads (SIGHUP) by result (success, failure).",
            ["result"],
            registry=self.registry,
        )
        for result in ("success", "failure"):
            self.reloads.labels(result)
        self.last_reload_success = Gauge(
            "relay_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded: at start, or by the last successful reload.",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def result_class(outcome: Outcome) -> str:
    """What the target answered, in a word: its HTTP status class; else ok, or an error that
    relay retries (no answer: a timeout, a refused connection) or one it does not (a
    template that cannot render, a row the warehouse refuses)."""
    if outcome.status is not None:
        return f"{outcome.status // 100}xx"
    if isinstance(outcome, Delivered):
        return "ok"
    return "transient_error" if isinstance(outcome, Retry) else "permanent_error"


class InboundCounts:
    """relay_inbound_requests_total, a collector of plain integers per source and result.

    A prometheus_client Counter child takes a lock and calls through two objects per `inc()`;
    ingest adds 1 to an integer in a dict instead, on the event loop, where the metrics page
    reads them too.
    """

    NAME = "relay_inbound_requests"
    HELP = "Inbound requests by source and result: accepted, duplicate, or why it was refused."

    def __init__(self) -> None:
        self._sources: dict[str, dict[str, int]] = {}

    def of_source(self, source: str, results: Iterable[str]) -> dict[str, int]:
        """The counts of `source` (kept across reloads), every one of `results` there from 0."""
        counts = self._sources.setdefault(source, {})
        for result in results:
            counts.setdefault(result, 0)
        return counts

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.NAME, self.HELP, labels=["source", "result"])

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.NAME, self.HELP, labels=["source", "result"])
        for source, counts in self._sources.items():
            for result, count in counts.items():
                family.add_metric([source, result], count)
        yield family


class TargetLatency:
    """One target's latency histogram: a count per bucket and the sum."""

    __slots__ = ("counts", "sum_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)  # the last: above every bound
        self.sum_s = 0.0

    def observe(self, seconds: Iterable[float]) -> None:
        counts, total = self.counts, 0.0
        for value in seconds:
            counts[bisect_left(LATENCY_BUCKETS_S, value)] += 1  # bound >= value: `le`
            total += value
        self.sum_s += total


class LatencyHistogram:
    """relay_delivery_latency_seconds, a collector of plain counts.

    prometheus_client's Histogram takes two locks and walks every bucket per observation
    (1.5 us), and a warehouse group records a thousand deliveries at once; these counts are
    added in bulk on the event loop (0.15 us each), which is also where they are read.
    """

    NAME = "relay_delivery_latency_seconds"
    HELP = "From an event's arrival to its delivery to a target, retries included."

    def __init__(self) -> None:
        self._targets: dict[str, TargetLatency] = {}

    def labels(self, target: str) -> TargetLatency:
        return self._targets.setdefault(target, TargetLatency())

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.NAME, self.HELP, labels=["target"])

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.NAME, self.HELP, labels=["target"])
        bounds = [*map(floatToGoString, LATENCY_BUCKETS_S), "+Inf"]
        for target, latency in self._targets.items():
            cumulative = itertools.accumulate(latency.counts)
            family.add_metric([target], list(zip(bounds, cumulative, strict=True)), latency.sum_s)
        yield family


class TargetMetrics:
    """One target's delivery metrics, each child looked up once (`labels()` costs
    microseconds, and a warehouse records a thousand results at a time)."""

    def __init__(self, metrics: Metrics, target: str) -> None:
        self._metrics = metrics
        self._target = target
        self._attempts: dict[tuple[str, str], Counter] = {}
        self._settled = {
            outcome: metrics.deliveries.labels(target, outcome) for outcome in ("delivered", "dead")
        }
        self._latency = metrics.latency.labels(target)

    def count(
        self,
        deliveries: Sequence[Delivery],
        outcomes: Sequence[Outcome],
        results: Sequence[AttemptResult],
        now: float,
    ) -> None:
        """Count one recorded attempt or group: attempts, settled deliveries, and the time
        from arrival to delivery of each delivered one."""
        if len(results) == 1:  # an attempt of its own: nothing to group (1.5 us less)
            (delivery,), (outcome,), (result,) = deliveries, outcomes, results
            self._count(result.state, outcome, 1)
            if result.state == "delivered":
                self._latency.observe((now - delivery.event.received_at,))
            return
        # A group shares its outcome objects (one DELIVERED for a whole batch), so each
        # distinct one is classified once: 0.35 us per delivery in all.
        states = [result.state for result in results]
        distinct = dict(zip(map(id, outcomes), outcomes, strict=True))
        groups = collections.Counter(zip(states, map(id, outcomes), strict=True))
        for (state, outcome_id), count in groups.items():
            self._count(state, distinct[outcome_id], count)
        self._latency.observe(
            now - delivery.event.received_at
            for delivery, state in zip(deliveries, states, strict=True)
            if state == "delivered"
        )

    def _count(self, state: DeliveryState, outcome: Outcome, count: int) -> None:
        self._attempt(state, result_class(outcome)).inc(count)
        if state != "pending":
            self._settled[state].inc(count)

    def _attempt(self, state: str, answer: str) -> Counter:
        child = self._attempts.get((state, answer))
        if child is None:
            result = ATTEMPT_RESULTS[state]
            child = self._attempts[state, answer] = self._metrics.attempts.labels(
                self._target, result, answer
            )
        return child
