"""Delivery workers: claim due deliveries, send, record the result, schedule retries.

One worker per target keeps up to `concurrency` attempts in flight. Attempts are leased in the
store, so a crashed process's work becomes due again; retry times live in the store too. A
target that sends in batches (the warehouse) gets each claimed group in one call.

A target's pause lives in the store, so `relay targets pause` in another process reaches the
worker: it looks at least once a second (and the store's claim itself refuses a paused
target). A target that answers 410 Gone is paused by its worker, the delivery kept pending.

A reload hands the dispatcher new targets (`Dispatcher.configure`): an attempt finishes with
the target it started with, the next claims use the new one, and a target no longer
configured leaves its pending deliveries in the store until a target of its name is again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from typing import Any

from relay.errors import StoreError
from relay.events import Delivered, Delivery, Failed, Gone, Outcome, Retry
from relay.history import note_attempt
from relay.metrics import Metrics, TargetMetrics
from relay.redaction import NOTHING_TO_REDACT, Redactor
from relay.retry import GiveUp
from relay.store.base import AttemptResult, Store, TargetActivity, TargetPause
from relay.targets.base import BatchTarget, Target
from relay.textsafety import escape_controls

log = logging.getLogger("relay.delivery")

POLL_INTERVAL_S = 1.0  # how often to look for work nobody told us about (retries, replicas)
MIN_WAIT_S = 0.01
STORE_ERROR_PAUSE_S = 1.0
SHUTDOWN_GRACE_S = 10.0  # sends in flight at shutdown get this long to finish
MAX_ERROR_CHARS = 2000  # of a stored error: the start of a target's answer is in it
STATE_CHECK_INTERVAL_S = 1.0  # how soon a pause or resume made in another process is seen
MAX_PAUSE_REASON_CHARS = 300


class TargetWorker:
    def __init__(
        self,
        target: Target,
        store: Store,
        metrics: Metrics,
        clock: Callable[[], float],
        rng: Callable[[], float],
        redact: Redactor = NOTHING_TO_REDACT,
    ) -> None:
        self.target = target
        self.redact = redact  # for stored errors; a reload may bring new secrets
        self._store = store
        self._clock = clock
        self._rng = rng
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: dict[asyncio.Task[None], Sequence[Delivery]] = {}
        self._in_flight_count = 0  # deliveries, not tasks
        self._loop_task: asyncio.Task[None] | None = None
        self._batch_target = target if isinstance(target, BatchTarget) else None
        self._pause: TargetPause | None = None  # as last seen in the store
        self._state_due = 0.0  # loop time of the next look at the target's state
        # The last success and the last error since they were last written to the store.
        self._success_at: float | None = None
        self._error: tuple[float, str] | None = None
        self._metrics = TargetMetrics(metrics, target.name)

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self.run(), name=f"worker:{self.target.name}")

    def use(self, target: Target) -> list[asyncio.Task[None]]:
        """Claim for `target` from now on; the attempts in flight, which keep the target they
        started with."""
        self.target = target
        self._batch_target = target if isinstance(target, BatchTarget) else None
        self.wake()  # its concurrency may be higher
        return list(self._in_flight)

    def wake(self) -> None:
        self._wake.set()

    @property
    def pause(self) -> TargetPause | None:
        """The target's pause as the worker last saw it in the store (at most a second ago)."""
        return self._pause

    def check_state(self) -> None:
        """Look at the target's state in the store now: a pause or resume made in this
        process (a resume wakes the worker at once)."""
        self._state_due = 0.0
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            try:
                if await self._paused():
                    await self._wait(self._state_due - asyncio.get_running_loop().time())
                    continue
                claimed = await self._claim()
                if claimed:
                    continue
                await self._wait(await self._seconds_until_due())
            except StoreError as exc:
                log.error("target %s: %s", self.target.name, exc)
                await self._wait(STORE_ERROR_PAUSE_S)
            except Exception:  # a bug must not stop this target's deliveries for good
                log.exception("target %s: unexpected error while claiming", self.target.name)
                await self._wait(STORE_ERROR_PAUSE_S)

    async def _paused(self) -> bool:
        """Whether the target is paused, as the store says at most a second ago; the last
        success and error go to the store at the same time."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._state_due:
            self._state_due = loop.time() + STATE_CHECK_INTERVAL_S
            await self._write_activity()
            self._saw_pause(await self._store.target_pause(self.target.name))
        return self._pause is not None

    def _saw_pause(self, pause: TargetPause | None) -> None:
        name = self.target.name
        if pause is not None and self._pause is None:
            log.warning(
                "target %s is paused (%s): its deliveries wait in the store until"
                " `relay targets resume %s`",
                name,
                pause.reason,
                name,
            )
        elif pause is None and self._pause is not None:
            log.info("target %s is resumed: delivering again", name)
        self._pause = pause

    async def _write_activity(self) -> None:
        """The last success and error since the last write (lost if the store fails: newer
        ones follow soon enough)."""
        if self._success_at is None and self._error is None:
            return
        error_at, error = self._error if self._error is not None else (None, None)
        activity = TargetActivity(self._success_at, error_at, error)
        self._success_at, self._error = None, None  # results recorded meanwhile are kept
        await self._store.note_activity(self.target.name, activity)

    async def _claim(self) -> int:
        target, batch_target = self.target, self._batch_target
        free = target.concurrency - self._in_flight_count
        if free <= 0:
            return 0
        if batch_target is not None:  # groups of one batch each, written as they fill
            free = min(free, batch_target.batch_size)
        deliveries = await self._store.claim(target.name, free, target.lease_s)
        if not deliveries:
            return 0
        target, batch_target = self.target, self._batch_target  # changed meanwhile: the new one
        if batch_target is not None:
            self._start(self._attempt_batch(batch_target, deliveries), deliveries)
        else:
            for delivery in deliveries:
                self._start(self._attempt(target, delivery), (delivery,))
        return len(deliveries)

    def _start(self, attempt: Coroutine[Any, Any, None], deliveries: Sequence[Delivery]) -> None:
        task = asyncio.create_task(attempt)
        self._in_flight[task] = deliveries
        self._in_flight_count += len(deliveries)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight_count -= len(self._in_flight.pop(task, ()))
        self._wake.set()

    async def _seconds_until_due(self) -> float:
        if self._in_flight_count >= self.target.concurrency:
            return POLL_INTERVAL_S
        due = await self._store.next_due_at(self.target.name)
        if due is None:
            return POLL_INTERVAL_S
        return min(POLL_INTERVAL_S, max(MIN_WAIT_S, due - self._clock()))

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    async def _attempt(self, target: Target, delivery: Delivery) -> None:
        started_at, started = self._clock(), time.perf_counter()
        try:
            outcome = await target.send(delivery)
        except Exception as exc:  # a bug in a target must not stop its worker
            log.exception(
                "target %s: event %s: unexpected error",
                target.name,
                delivery.event.id,
                extra=_fields(delivery),
            )
            outcome = Retry(f"internal error: {exc!r}")
        took_s = time.perf_counter() - started
        await self._record(target, (delivery,), (outcome,), started_at, took_s)

    async def _attempt_batch(self, target: BatchTarget, deliveries: Sequence[Delivery]) -> None:
        started_at, started = self._clock(), time.perf_counter()
        try:
            outcomes: Sequence[Outcome] = await target.send_batch(deliveries)
        except Exception as exc:  # a bug in a target must not stop its worker
            log.exception(
                "target %s: %d events: unexpected error",
                target.name,
                len(deliveries),
                extra={"target": target.name},
            )
            outcomes = [Retry(f"internal error: {exc!r}")] * len(deliveries)
        took_s = time.perf_counter() - started
        await self._record(target, deliveries, outcomes, started_at, took_s)

    async def _record(
        self,
        target: Target,
        deliveries: Sequence[Delivery],
        outcomes: Sequence[Outcome],
        started_at: float,
        took_s: float,
    ) -> None:
        """Count and record the outcomes of one attempt or one group, each with its history
        (started at `started_at`, `took_s` in the worker), in one store write; `target` made
        the attempt, and its retry policy decides what comes next.

        If that fails, the leases are dropped so the deliveries are due again at once rather
        than when their leases expire (a delivered one may then be sent twice: at least once).
        """
        gone = next((o for o in outcomes if isinstance(o, Gone)), None)
        try:
            if gone is not None:  # before the record: nothing more is claimed for it
                await self._pause_for(target, gone)
            results = [
                self._result(target, d, o, took_s * 1000)
                for d, o in zip(deliveries, outcomes, strict=True)
            ]
            for result, delivery, outcome in zip(results, deliveries, outcomes, strict=True):
                note_attempt(result, delivery.attempt, outcome, started_at, took_s, self.redact)
            await self._store.record(results)
        except Exception as exc:
            ids = [delivery.id for delivery in deliveries]
            log.error(
                "target %s: cannot record the result of deliveries %s (%s); they will be tried"
                " again",
                self.target.name,
                ids,
                exc,
            )
            with contextlib.suppress(Exception):  # the store is failing: the leases expire
                await self._store.release(ids)
            return
        self._metrics.count(deliveries, outcomes, results, self._clock())
        self._note(results)

    def _note(self, results: Sequence[AttemptResult]) -> None:
        """Keep the last success and the last error, for the store (`relay targets`)."""
        now = self._clock()
        for result in results:
            if result.state == "delivered":
                self._success_at = now
            elif result.error is not None:
                self._error = (now, result.error)

    async def _pause_for(self, target: Target, gone: Gone) -> None:
        """The target answered 410 Gone: pause it, as Svix disables such an endpoint."""
        reason = self._clean(gone.reason)[:MAX_PAUSE_REASON_CHARS]
        pause = await self._store.pause_target(target.name, reason)
        if self._pause is None:
            log.warning(
                "target %s answered %s: paused; its deliveries wait in the store until"
                " `relay targets resume %s`",
                target.name,
                reason,
                target.name,
            )
        self._pause = pause

    def _result(
        self, target: Target, delivery: Delivery, outcome: Outcome, duration_ms: float
    ) -> AttemptResult:
        """What to record for this outcome: delivered (a debug line), dead (a warning), or
        pending until the next try (a warning) or, when the target is gone, until it is
        resumed."""
        name, event_id, keyed = target.name, delivery.event.id, delivery.order_key is not None
        if isinstance(outcome, Delivered):
            if log.isEnabledFor(logging.DEBUG):  # no log record per delivery otherwise
                log.debug(
                    "target %s: event %s delivered (attempt %d)",
                    name,
                    event_id,
                    delivery.attempt,
                    extra=_fields(delivery, outcome.status, duration_ms, result="delivered"),
                )
            return AttemptResult(delivery.id, "delivered", status=outcome.status, keyed=keyed)
        if isinstance(outcome, Gone):  # the target is paused now (_record): due once resumed
            return AttemptResult(
                delivery.id,
                "pending",
                next_attempt_at=self._clock(),
                status=outcome.status,
                error=self._clean(outcome.reason),
                keyed=keyed,
            )
        if isinstance(outcome, Failed):
            reason, status = outcome.reason, outcome.status
        else:
            decision = target.policy.decide(
                outcome, delivery.attempt, delivery.first_attempt_at, self._clock(), self._rng
            )
            if not isinstance(decision, GiveUp):
                log.warning(
                    "target %s: event %s attempt %d: %s; retrying in %.1fs",
                    name,
                    event_id,
                    delivery.attempt,
                    outcome.reason,
                    decision.at - self._clock(),
                    extra=_fields(delivery, outcome.status, duration_ms, outcome.reason, "retry"),
                )
                return AttemptResult(
                    delivery.id,
                    "pending",
                    next_attempt_at=decision.at,
                    status=outcome.status,
                    error=self._clean(outcome.reason),
                    keyed=keyed,
                )
            reason, status = decision.reason, outcome.status
        log.warning(
            "target %s: event %s is dead: %s",
            name,
            event_id,
            reason,
            extra=_fields(delivery, status, duration_ms, reason, "dead"),
        )
        error = self._clean(reason)
        return AttemptResult(delivery.id, "dead", status=status, error=error, keyed=keyed)

    def _clean(self, reason: str) -> str:
        """An error as stored: secrets cut out, on one line, of bounded length."""
        text = escape_controls(self.redact(reason))
        if len(text) > MAX_ERROR_CHARS:
            text = text[: MAX_ERROR_CHARS - 1] + "…"
        return text

    def stop_claiming(self) -> None:
        self._stopping = True
        if self._loop_task is not None:
            self._loop_task.cancel()

    async def stop(self, grace_s: float) -> None:
        """Stop claiming; give attempts in flight `grace_s` to finish; release the rest."""
        self.stop_claiming()
        if self._loop_task is not None:
            await asyncio.gather(self._loop_task, return_exceptions=True)
        await self.finish(list(self._in_flight), grace_s)
        with contextlib.suppress(StoreError):
            await self._write_activity()

    async def finish(self, attempts: Collection[asyncio.Task[None]], grace_s: float) -> None:
        """Give these attempts `grace_s` to finish; cancel the rest and release their leases.

        Called at once for the same attempts (a shutdown during a reload), the shortest grace
        applies."""
        if not attempts:
            return
        _, still_running = await asyncio.wait(attempts, timeout=grace_s)
        if still_running:
            unfinished = [d.id for t in still_running for d in self._in_flight.get(t, ())]
            for task in still_running:
                task.cancel()
            await asyncio.gather(*still_running, return_exceptions=True)
            with contextlib.suppress(StoreError):
                await self._store.release(unfinished)


def _fields(
    delivery: Delivery,
    status: int | None = None,
    duration_ms: float | None = None,
    reason: str | None = None,
    result: str | None = None,
) -> dict[str, object]:
    """An attempt's fields for structured log lines (None: not shown)."""
    return {
        "event_id": delivery.event.id,
        "source": delivery.event.source,
        "target": delivery.target,
        "delivery_id": delivery.id,
        "attempt": delivery.attempt,
        "status": status,
        "duration_ms": duration_ms,
        "reason": reason,
        "result": result,
    }


class Dispatcher:
    """The target workers of one process: one per target of the running config, and those of
    targets a reload removed until their attempts in flight have ended."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        store: Store,
        metrics: Metrics,
        clock: Callable[[], float],
        rng: Callable[[], float] = random.random,
        redact: Redactor = NOTHING_TO_REDACT,
        shutdown_grace_s: float = SHUTDOWN_GRACE_S,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._rng = rng
        self._redact = redact
        self._workers = {name: self._worker(target) for name, target in targets.items()}
        self._leaving: set[TargetWorker] = set()  # of removed targets, finishing their attempts
        self._retiring: set[asyncio.Task[None]] = set()  # each closes a target no longer used
        self._started = False
        self._grace_s = shutdown_grace_s
        self._deadline: float | None = None

    def _worker(self, target: Target) -> TargetWorker:
        return TargetWorker(
            target, self._store, self._metrics, self._clock, self._rng, self._redact
        )

    @property
    def targets(self) -> Mapping[str, Target]:
        """The target each worker claims for now, by name."""
        return {name: worker.target for name, worker in self._workers.items()}

    @property
    def stopping(self) -> bool:
        return self._deadline is not None

    def start(self) -> None:
        self._started = True
        for worker in self._workers.values():
            worker.start()

    def configure(self, targets: Mapping[str, Target], redact: Redactor) -> None:
        """Deliver to `targets` from now on (a reload), storing errors redacted by `redact`.

        A new name gets a worker. A name no longer given stops claiming: its attempts in flight
        finish (within their lease), its target is closed, and its pending deliveries stay in
        the store until a target of that name is given again. A new target for a name is used
        for the next claims; attempts in flight finish with the one they started with, which
        is closed after them. The same target object as before changes nothing.
        """
        if self.stopping:
            raise RuntimeError("the dispatcher is stopping: it cannot take new targets")
        self._redact = redact
        for name in [name for name in self._workers if name not in targets]:
            self._remove(self._workers.pop(name))
        for name, target in targets.items():
            worker = self._workers.get(name)
            if worker is None:
                self._add(name, target)
            elif worker.target is not target:
                previous = worker.target
                attempts = worker.use(target)
                self._retire(previous, worker.finish(attempts, previous.lease_s))
            self._workers[name].redact = redact

    def _add(self, name: str, target: Target) -> None:
        worker = self._workers[name] = self._worker(target)
        if self._started:
            worker.start()

    def _remove(self, worker: TargetWorker) -> None:
        self._leaving.add(worker)
        self._retire(worker.target, self._leave(worker))

    async def _leave(self, worker: TargetWorker) -> None:
        try:
            await worker.stop(worker.target.lease_s)
        finally:
            self._leaving.discard(worker)

    def _retire(self, target: Target, attempts_ended: Awaitable[None]) -> None:
        """Close `target` once `attempts_ended` (its last attempts) is done."""
        task = asyncio.create_task(self._close_after(target, attempts_ended))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close_after(self, target: Target, attempts_ended: Awaitable[None]) -> None:
        try:
            await attempts_ended
            await target.close()
        except Exception:  # the new config runs regardless
            log.exception("target %s: error while closing its previous definition", target.name)

    def notify(self, target_names: Iterable[str]) -> None:
        for name in target_names:
            worker = self._workers.get(name)
            if worker is not None:
                worker.wake()

    def check_state(self, target_name: str) -> None:
        """The target's pause changed in the store (from this process): act on it now."""
        worker = self._workers.get(target_name)
        if worker is not None:
            worker.check_state()

    @property
    def pauses(self) -> Mapping[str, TargetPause | None]:
        """Each target's pause as its worker last saw it (at most a second ago)."""
        return {name: worker.pause for name, worker in self._workers.items()}

    def begin_shutdown(self) -> float:
        """Claim nothing more from now on; attempts in flight get the grace period from now
        (from the first call). The deadline, in loop time."""
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self._grace_s
        for worker in self._workers.values():
            worker.stop_claiming()
        return self._deadline

    async def stop(self) -> None:
        """Stop; attempts in flight finish within the grace period (from `begin_shutdown`),
        those to targets a reload removed or replaced too; then those targets are closed."""
        deadline = self.begin_shutdown()
        grace_s = max(0.0, deadline - asyncio.get_running_loop().time())
        workers = [*self._workers.values(), *self._leaving]
        await asyncio.gather(*(worker.stop(grace_s) for worker in workers))
        await asyncio.gather(*self._retiring)
