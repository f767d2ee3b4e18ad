"""Durable state: events and their deliveries, behind one small interface."""

from __future__ import annotations

from collections.abc import Callable

from relay.store.base import Store


def open_store(url: str, clock: Callable[[], float]) -> Store:
    """The store named by a config `store` URL (paths already resolved)."""
    from relay.store.sqlite import SqliteStore

    return SqliteStore.from_url(url, clock)  # raises ValueError for any other URL
