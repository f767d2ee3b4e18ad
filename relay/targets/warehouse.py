"""Warehouse target: events become rows, written in batches, idempotently by key.

Each delivery's rows join the current batch and the delivery waits for the batch's outcome.
A batch is written when it holds `max_rows` rows or `max_wait` after its first row, whichever
comes first; the writer takes `concurrency` batches at once and queues the rest. The store
keeps the deliveries pending meanwhile, so a crash loses nothing, and the key makes the
redelivery a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from relay.errors import RenderError
from relay.events import DELIVERED, Delivered, Delivery, Failed, Outcome, Retry
from relay.fields import NUL_IN_PATH, Duration, Identifier, Model, error, table_name
from relay.retry import RetryPolicy
from relay.shared_config import OrderingConfig, RetryConfig, TargetModel
from relay.targets.base import OutboundRequest, Resources
from relay.templatefields import JinjaExpression
from relay.warehouse.base import WarehouseUnavailable, Writer
from relay.warehouse.duckdb import DuckdbWriter
from relay.warehouse.postgres import PostgresWriter
from relay.warehouse.rows import ColumnSpec, Row, RowMapper


# Some deliveries' rows (one list per delivery) in one batch, and the future of their outcomes.
class ColumnConfig(Model):
    value: JinjaExpression  # over `event`, `target` and, with `rows`, `row`
    """A Jinja expression over event, target and, with rows, row."""
    type: Literal["text", "bigint", "double", "boolean", "timestamptz", "jsonb"] = "text"
    """The column's type."""


class BatchConfig(Model):
    max_rows: int = Field(default=1000, ge=1, le=100_000)
    """Write a batch when it holds this many rows."""
    max_wait: Duration = timedelta(seconds=1)
    """Write a batch this long after its first row at the latest."""


class WarehouseTargetConfig(TargetModel):
    """Rows into PostgreSQL (and what speaks its protocol) or an embedded DuckDB file."""

    kind: Literal["warehouse"]
    """Rows into PostgreSQL or a DuckDB file."""
    url: str
    """postgresql://USER@HOST:PORT/DB or duckdb:///PATH (relative to this file)."""
    table: Annotated[str, AfterValidator(table_name)]
    """TABLE or SCHEMA.TABLE."""
    columns: dict[Identifier, ColumnConfig] = Field(min_length=1)
    """Each column's value (a Jinja expression) and type."""
    rows: JinjaExpression | None = None  # giving a list: one row per item
    """A Jinja expression giving a list: one row per item, seen as `row`."""
    key: list[Identifier] = Field(min_length=1)
    """The columns that identify a row: a redelivery adds no duplicate."""
    create_table: bool = False
    """Create the table if it is missing, with the key as a unique constraint."""
    batch: BatchConfig = BatchConfig()
    """How rows are gathered into one write."""
    # Batches written at once, each on its own connection: PostgreSQL 2 by default (one
    # being written while the server commits another), DuckDB always 1 (one writer per file).
    concurrency: int | None = Field(default=None, ge=1, le=16)
    """Batches written at once (PostgreSQL: 2 by default; DuckDB: always 1)."""
    timeout: Duration = timedelta(seconds=30)
    """Time allowed for one batch."""
    retry: RetryConfig = RetryConfig()
    """Retries with backoff, within max_elapsed."""
    # Refused below with a message, and so left out of the schema editors complete from.
    ordering: Annotated[OrderingConfig | None, WithJsonSchema({"type": "null"})] = None
    """Not for a warehouse target: a table keeps no order."""

    @property
    def batches_at_once(self) -> int:
        if self.concurrency is not None:
            return self.concurrency
        return 1 if self.url.startswith("duckdb:///") else 2

    @field_validator("url")
    @classmethod
    def _warehouse_url(cls, url: str) -> str:
        if url.startswith("duckdb:///"):
            if not url.removeprefix("duckdb:///"):
                raise error("url", "duckdb:/// needs a file path")
            if "\0" in url:
                raise error("url", NUL_IN_PATH)
            return url
        if not url.startswith(("postgresql://", "postgres://")):
            scheme = url.split("://", 1)[0] if "://" in url else "(none)"
            raise error(
                "url", f'unsupported scheme "{scheme}": use postgresql://... or duckdb:///PATH'
            )
        return url

    @model_validator(mode="after")
    def _key_in_columns(self) -> WarehouseTargetConfig:
        missing = [name for name in self.key if name not in self.columns]
        if missing:
            raise error("key", f"key column(s) not in columns: {', '.join(missing)}")
        return self

    @field_validator("ordering")
    @classmethod
    def _no_ordering(cls, ordering: OrderingConfig | None) -> OrderingConfig | None:
        if ordering is not None:
            raise error(
                "ordering",
                "a warehouse target writes rows in batches, and a table keeps no order:"
                " remove ordering (order rows by a column such as received_at instead)",
            )
        return ordering

    @field_validator("concurrency")
    @classmethod
    def _one_duckdb_writer(cls, concurrency: int | None, info: ValidationInfo) -> int | None:
        url = info.data.get("url")
        if concurrency not in (None, 1) and isinstance(url, str) and url.startswith("duckdb:///"):
            raise error("concurrency", "DuckDB writes one batch at a time: leave it out or set 1")
        return concurrency

    def credentials(self) -> Iterator[str]:
        password = urlsplit(self.url).password
        if password:
            yield password

    def resolved(self, base_dir: Path) -> WarehouseTargetConfig:
        if not self.url.startswith("duckdb:///"):
            return self
        path = self.url.removeprefix("duckdb:///")
        if not path.startswith("/"):
            path = str((base_dir / path).resolve())
        return self.model_copy(update={"url": f"duckdb:///{path}"})


Share = tuple[list[Sequence[Row]], "asyncio.Future[list[Outcome]]"]


class Batcher:
    def __init__(self, writer: Writer, max_rows: int, max_wait_s: float) -> None:
        self._writer = writer
        self._max_rows = max_rows
        self._max_wait_s = max_wait_s
        self._pending: list[Share] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, deliveries: Sequence[Sequence[Row]]) -> list[asyncio.Future[list[Outcome]]]:
        """Queue each delivery's rows; one future per batch they land in, giving the outcomes
        of that batch's share of these deliveries, in order."""
        loop = asyncio.get_running_loop()
        futures = []
        share: list[Sequence[Row]] = []
        for rows in deliveries:
            share.append(rows)
            self._rows += len(rows)
            if self._rows >= self._max_rows:
                futures.append(self._queue(share, loop))
                share = []
                self._flush()
        if share:
            futures.append(self._queue(share, loop))
            if self._timer is None:
                self._timer = loop.call_later(self._max_wait_s, self._flush)
        return futures

    def _queue(
        self, share: list[Sequence[Row]], loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[list[Outcome]]:
        future: asyncio.Future[list[Outcome]] = loop.create_future()
        self._pending.append((share, future))
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending, self._rows = self._pending, [], 0
        if batch:
            task = asyncio.create_task(self._write(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write(self, batch: list[Share]) -> None:
        """Write the batch; each delivery's outcome says how long the batch's write took."""
        deliveries = [rows for share, _ in batch for rows in share]
        started = time.perf_counter()
        try:
            results = await self._writer.write(deliveries)
            took_s = time.perf_counter() - started
            delivered = Delivered(duration_s=took_s)  # one for the batch: thousands of rows
            outcomes: list[Outcome] = [
                delivered if error is None else Failed(error, duration_s=took_s)
                for error in results
            ]
        except WarehouseUnavailable as exc:
            outcomes = [Retry(str(exc), duration_s=time.perf_counter() - started)] * len(deliveries)
        except Exception as exc:  # a bug must not leave deliveries waiting forever
            outcomes = [Retry(f"internal error: {exc!r}")] * len(deliveries)
        start = 0
        for share, future in batch:
            end = start + len(share)
            if not future.done():
                future.set_result(outcomes[start:end])
            start = end

    async def close(self) -> None:
        self._flush()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class WarehouseTarget:
    def __init__(
        self,
        name: str,
        mapper: RowMapper,
        writer: Writer,
        batch: BatchConfig,
        batches_at_once: int,
        timeout_s: float,
        policy: RetryPolicy,
    ) -> None:
        self.name = name
        self.mapper = mapper
        self.policy = policy
        # Deliveries in flight: a batch for each write at once, and one more filling meanwhile,
        # handed over a batch's worth at a time.
        self.concurrency = (batches_at_once + 1) * batch.max_rows
        self.batch_size = batch.max_rows
        max_wait_s = batch.max_wait.total_seconds()
        self.lease_s = max_wait_s + 2 * timeout_s + 30.0
        self.writer = writer
        self._batcher = Batcher(writer, batch.max_rows, max_wait_s)

    async def send(self, delivery: Delivery) -> Outcome:
        (outcome,) = await self.send_batch([delivery])
        return outcome

    async def send_batch(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        to_write: list[Sequence[Row]] = []
        written_at: list[int] = []  # where each written delivery's outcome goes
        for delivery in deliveries:
            try:
                rows = self.mapper.rows_for(delivery.event)
            except RenderError as exc:
                outcomes.append(Failed(str(exc)))
                continue
            outcomes.append(DELIVERED)  # no rows is delivered too; else replaced below
            if rows:
                written_at.append(len(outcomes) - 1)
                to_write.append(rows)
        # A shutdown cancelling this wait cancels only the waiting: each batch is written by
        # its own task; the deliveries come back through their leases and the key makes the
        # second write a no-op.
        written = [outcome for share in self._batcher.add(to_write) for outcome in await share]
        for position, outcome in zip(written_at, written, strict=True):
            outcomes[position] = outcome
        return outcomes

    async def close(self) -> None:
        await self._batcher.close()
        with contextlib.suppress(Exception):
            await self.writer.close()


@dataclass(frozen=True, slots=True)
class WarehousePlan:
    """A compiled warehouse target: the row mapping; the writer is made when it is bound."""

    mapper: RowMapper
    config: WarehouseTargetConfig

    @property
    def name(self) -> str:
        return self.mapper.target_name

    def preview(self, delivery: Delivery, now: float) -> OutboundRequest:
        rows = self.mapper.rows_for(delivery.event)
        lines = [repr(dict(zip(self.mapper.names, row, strict=True))) for row in rows]
        return OutboundRequest("INSERT", self.name, {}, "\n".join(lines).encode())

    def bind(self, resources: Resources) -> WarehouseTarget:
        return self.target()

    def target(self) -> WarehouseTarget:
        """The target; it needs no shared resource (its writer connects by itself)."""
        target = self.config
        return WarehouseTarget(
            self.name,
            self.mapper,
            open_writer(target),
            target.batch,
            target.batches_at_once,
            target.timeout.total_seconds(),
            RetryPolicy.from_config(target.retry),
        )


def plan_warehouse_target(name: str, target: WarehouseTargetConfig) -> WarehousePlan:
    where = f"targets.{name}"
    columns = [
        ColumnSpec(column, spec.type, spec.value.named(f"{where}.columns.{column}.value"))
        for column, spec in target.columns.items()
    ]
    rows = None if target.rows is None else target.rows.named(f"{where}.rows")
    return WarehousePlan(RowMapper(name, columns, rows), target)


def open_writer(target: WarehouseTargetConfig) -> Writer:
    """The writer for the url's database; nothing connects until the first batch."""
    columns = [(name, spec.type) for name, spec in target.columns.items()]
    if target.url.startswith("duckdb:///"):
        path = Path(target.url.removeprefix("duckdb://"))
        return DuckdbWriter(path, target.table, columns, target.key, target.create_table)
    return PostgresWriter(
        target.url,
        target.table,
        columns,
        target.key,
        target.create_table,
        target.timeout.total_seconds(),
        target.batches_at_once,
    )
