"""Durable state: events and their deliveries, behind one small interface."""

from __future__ import annotations

from collections.abc import Callable

from relay.store.base import Store
from relay.store.url import SqliteUrl, parse_store_url


def open_store(url: str, clock: Callable[[], float], replica: str | None = None) -> Store:
    """The store named by a config `store` URL (paths already resolved); nothing is opened
    until its `open`. `replica` names a daemon on a shared store (its leases carry it)."""
    parsed = parse_store_url(url)
    if isinstance(parsed, SqliteUrl):
        from relay.store.sqlite import SqliteStore

        return SqliteStore.from_url(url, clock)
    from relay.store.postgres import PostgresStore

    return PostgresStore(parsed, clock, replica=replica)
