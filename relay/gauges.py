"""Per-target gauges from the store: pending and dead deliveries, the age of the oldest pending
one, and whether the target is paused.

A timer reads them (`Store.target_statuses_aside`: off the event loop, from indexes alone)
and a scrape shows the last reading, so neither ingest nor a scrape ever waits for a count.
Ages run to the moment of the scrape. Every configured target is shown, at 0 when it has
nothing waiting, and so is a target no longer configured whose deliveries still wait in the
store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from relay.background import cancel_and_wait
from relay.errors import StoreError
from relay.store.base import Store, TargetActivity, TargetStatus

log = logging.getLogger("relay.metrics")

GAUGE_INTERVAL_S = 5.0
NOTHING = TargetStatus("", None, 0, 0, None, TargetActivity())


class TargetGauges:
    """A prometheus_client collector of the last reading, and the timer that reads."""

    def __init__(
        self,
        store: Store,
        configured: Callable[[], Collection[str]],
        clock: Callable[[], float],
        interval_s: float = GAUGE_INTERVAL_S,
    ) -> None:
        self._store = store
        self._configured = configured
        self._clock = clock
        self._interval_s = interval_s
        self._stats: Mapping[str, TargetStatus] = {}
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read the store now; what the next scrape shows."""
        statuses = await self._store.target_statuses_aside()
        self._stats = {status.name: status for status in statuses}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="target-gauges")

    async def _run(self) -> None:
        failing = False  # logged once while it lasts, not every round
        while True:
            try:
                await self.refresh()
                failing = False
            except StoreError as exc:  # the gauges keep their last reading
                if not failing:
                    log.warning("target gauges not updated: %s", exc)
                failing = True
            await asyncio.sleep(self._interval_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    def describe(self) -> Iterator[Metric]:
        """The names, so that the registry refuses another metric of the same name."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        pending, dead, oldest, paused = families = _families()
        stats, now = self._stats, self._clock()
        for target in dict.fromkeys([*self._configured(), *stats]):
            reading = stats.get(target, NOTHING)
            pending.add_metric([target], reading.pending)
            dead.add_metric([target], reading.dead)
            received_at = reading.oldest_pending_at
            oldest.add_metric([target], 0.0 if received_at is None else max(0.0, now - received_at))
            paused.add_metric([target], 1.0 if reading.pause is not None else 0.0)
        return iter(families)


def _families() -> tuple[GaugeMetricFamily, ...]:
    def gauge(name: str, documentation: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=["target"])

    return (
        gauge("relay_target_pending_deliveries", "Deliveries waiting to be sent, by target."),
        gauge("relay_target_dead_deliveries", "Dead deliveries kept in the store, by target."),
        gauge(
            "relay_target_oldest_pending_age_seconds",
            "How long ago the event of the oldest pending delivery arrived (0: none pending).",
        ),
        gauge("relay_target_paused", "1 while the target is paused, else 0."),
    )
