"""PostgreSQL for tests: the server, a private name per test, and a TCP proxy to cut.

Policy: tests that need PostgreSQL use RELAY_TEST_POSTGRES_URL (default
postgresql://postgres@127.0.0.1:5432/test). Without a server they skip with a loud reason on a
laptop, and FAIL when CI=true, so a CI job can never pass by skipping them.

Every test gets its own suffix: its tables and schemas are named relay_test_<suffix>_..., relay
connects with application_name relay_test_<suffix> (so a test can terminate relay's backends and
nobody else's), and everything the test made is dropped at the end. Parallel and repeated runs
on one database do not collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any, NoReturn
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest

URL_ENV = "RELAY_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT_S = 5.0


def postgres_url() -> str:
    return os.environ.get(URL_ENV) or DEFAULT_URL


def with_query(url: str, **params: str) -> str:
    """`url` with query parameters added (asyncpg passes unknown ones as server settings)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def with_host_port(url: str, host: str, port: int) -> str:
    """`url` pointing at host:port instead (e.g. a proxy), user and database kept."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@{host}:{port}" if credentials else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def unavailable(url: str, problem: str) -> NoReturn:
    """Skip (laptop) or fail (CI=true) because PostgreSQL cannot be used; never returns."""
    reason = (
        f"\n{'!' * 78}\nPostgreSQL NOT AVAILABLE at {url}: {problem}\n"
        f"The warehouse tests against PostgreSQL did NOT run. Start PostgreSQL or set {URL_ENV}."
        f"\n{'!' * 78}"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires PostgreSQL: {reason}", pytrace=False)
    pytest.skip(reason)


async def connect_or_skip(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        unavailable(url, f"{type(exc).__name__}: {exc}")


class Postgres:
    """One test's view of the server: unique names, SQL helpers, cleanup."""

    def __init__(self, base_url: str, conn: asyncpg.Connection, suffix: str) -> None:
        self.base_url = base_url
        self.conn = conn
        self.prefix = f"relay_test_{suffix}"
        self.application_name = self.prefix
        self._tables: list[str] = []
        self._schemas: list[str] = []
        self._count = 0

    @property
    def url(self) -> str:
        """The url relay should use: tagged with this test's application_name."""
        return with_query(self.base_url, application_name=self.application_name)

    def url_via(self, host: str, port: int) -> str:
        return with_host_port(self.url, host, port)

    def new_table(self, schema: str | None = None) -> str:
        """A table name nobody else uses (the table is not created); dropped at the end."""
        self._count += 1
        name = f"{self.prefix}_{self._count}"
        full = f"{schema}.{name}" if schema else name
        self._tables.append(full)
        return full

    async def new_schema(self) -> str:
        self._count += 1
        name = f"{self.prefix}_s{self._count}"
        self._schemas.append(name)
        await self.conn.execute(f'CREATE SCHEMA "{name}"')
        return name

    async def execute(self, sql: str, *args: Any) -> str:
        result: str = await self.conn.execute(sql, *args)
        return result

    async def fetch(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return [tuple(record) for record in await self.conn.fetch(sql, *args)]

    async def count(self, table: str, where: str = "TRUE") -> int:
        value: int = await self.conn.fetchval(f"SELECT count(*) FROM {quote(table)} WHERE {where}")
        return value

    async def relay_backends(self) -> list[tuple[int, str]]:
        """(pid, state) of every backend relay opened for this test."""
        rows = await self.conn.fetch(
            "SELECT pid, coalesce(state, '') FROM pg_stat_activity WHERE application_name = $1",
            self.application_name,
        )
        return [(row[0], row[1]) for row in rows]

    async def terminate_relay_backends(self, busy_only: bool = False) -> int:
        """pg_terminate_backend on relay's connections (as a server restart would end them)."""
        states = "AND state <> 'idle'" if busy_only else ""
        value: int = await self.conn.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS ended"
            f" FROM pg_stat_activity WHERE application_name = $1 {states}) AS t WHERE ended",
            self.application_name,
        )
        return value

    async def cleanup(self) -> None:
        # Relay's pool may still hold a connection for a moment; end it so DROP cannot wait.
        await self.terminate_relay_backends()
        for table in reversed(self._tables):
            await self.conn.execute(f"DROP TABLE IF EXISTS {quote(table)}")
        for schema in reversed(self._schemas):
            await self.conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def quote(name: str) -> str:
    return ".".join(f'"{part}"' for part in name.split("."))


@contextlib.asynccontextmanager
async def postgres() -> AsyncIterator[Postgres]:
    """The test's Postgres (skip/fail per the policy above); its tables dropped afterwards."""
    url = postgres_url()
    conn = await connect_or_skip(url)
    helper = Postgres(url, conn, uuid.uuid4().hex[:10])
    try:
        yield helper
    finally:
        try:
            await helper.cleanup()
        finally:
            await conn.close()


# -- a TCP proxy between relay and PostgreSQL ------------------------------------------------


class _Link:
    """One proxied connection's state."""

    def __init__(self) -> None:
        self.drop_answer = False  # set when this link's write must lose its answer


class TcpProxy:
    """127.0.0.1:port → upstream, byte for byte, with faults on demand.

    `cut()` closes the listener and aborts every connection (the database is gone: new
    connections are refused); `restore()` listens on the same port again.
    `stall()` moves no byte until `resume()` (a partition: packets dropped, nothing refused).
    `drop_answers_to(marker)`: the next client message holding `marker` (bytes of the rows, say)
    is forwarded and its connection aborted when the server answers, i.e. after the statement
    committed and before relay hears of it: the "crash between the database's commit and
    relay's record" window.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.connections = 0  # accepted so far
        self.dropped_answers = 0  # answers swallowed so far
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._drop_marker = b""
        self._cut_on_drop = False
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cutting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def restore(self) -> None:
        """Listen again on the same port."""
        if self._cutting is not None:
            await self._cutting
            self._cutting = None
        await self.start()

    def drop_answers_to(self, marker: bytes, *, then_cut: bool = False) -> None:
        """Swallow the answer to the next message that holds `marker`; with `then_cut`, also
        `cut()` at once, before relay notices, so its retries fail until `restore()`."""
        self._drop_marker = marker
        self._cut_on_drop = then_cut

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        """Deliver what was held back, in order, as TCP does once a partition heals."""
        self._flowing.set()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        handlers = [task for task in self._handlers if task is not current]
        for task in handlers:
            task.cancel()  # each aborts both its sockets on the way out
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def close(self) -> None:
        if self._cutting is not None:
            await self._cutting
        await self.cut()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self.connections += 1
        upstream: asyncio.StreamWriter | None = None
        pumps: list[asyncio.Task[None]] = []
        try:
            await self._flowing.wait()
            up_reader, upstream = await asyncio.open_connection(*self.upstream)
            link = _Link()
            pumps = [
                asyncio.create_task(self._pump(reader, upstream, link, towards_server=True)),
                asyncio.create_task(self._pump(up_reader, writer, link, towards_server=False)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except OSError:
            pass
        finally:
            writer.transport.abort()
            if upstream is not None:
                upstream.transport.abort()
            for pump in pumps:
                pump.cancel()
            self._handlers.discard(task)
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        towards_server: bool,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()
                if towards_server and self._drop_marker and self._drop_marker in data:
                    self._drop_marker = b""
                    link.drop_answer = True
                elif not towards_server and link.drop_answer:
                    self.dropped_answers += 1
                    if self._cut_on_drop and self._server is not None:
                        # Stop listening now, before relay (same loop) sees the loss.
                        self._server.close()
                        self._cutting = asyncio.create_task(self.cut())
                    return  # the write is committed; relay never hears of it
                writer.write(data)
                await writer.drain()
