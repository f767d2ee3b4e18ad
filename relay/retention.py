"""RetentionConfig on a timer: settled events leave the store, so that its file stops growing.

What may go is the store's rule (`RetentionPolicy` in store/base.py); this module only runs
a pass at start and then every `interval_s`, and logs one line per pass that purged anything.
A pass deletes in small batches between ingests, so it never holds up a request for long.
"""

from __future__ import annotations

import asyncio
import logging

from relay.background import cancel_and_wait
from relay.config import RetentionConfig
from relay.durations import format_duration_s
from relay.errors import StoreError
from relay.metrics import Metrics
from relay.store.base import RetentionPolicy, Store

log = logging.getLogger("relay.retention")

PURGE_INTERVAL_S = 60.0


def retention_policy(config: RetentionConfig) -> RetentionPolicy:
    return RetentionPolicy(config.delivered.total_seconds(), config.dead.total_seconds())


class Purger:
    def __init__(
        self,
        store: Store,
        retention: RetentionPolicy,
        metrics: Metrics,
        interval_s: float = PURGE_INTERVAL_S,
    ) -> None:
        self._store = store
        self._retention = retention
        self._purged = metrics.purged
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    def configure(self, retention: RetentionPolicy) -> None:
        """Purge by `retention` from the next pass on (a reload)."""
        self._retention = retention

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except StoreError as exc:  # the next pass tries again
                log.warning("retention: purge stopped: %s", exc)
            await asyncio.sleep(self._interval_s)

    async def run_once(self) -> int:
        purged = await self._store.purge(self._retention)
        if purged:
            self._purged.inc(purged)
            log.info(
                "retention: purged %d settled event(s) (retention: delivered %s, dead %s)",
                purged,
                format_duration_s(self._retention.delivered_s),
                format_duration_s(self._retention.dead_s),
            )
        return purged

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
