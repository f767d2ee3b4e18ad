"""The store URL: one parser for validation, path resolution and the store."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from relay.store.sqlite import SqliteStore
from relay.store.url import parse_store_url


def test_a_relative_file_is_resolved_against_the_config_and_options_are_kept(
    tmp_path: Path,
) -> None:
    parsed = parse_store_url("sqlite:///var/relay.db?synchronous=full&busy_timeout=2s")
    assert parsed.path == Path("var/relay.db")
    assert parsed.synchronous == "full"
    assert parsed.busy_timeout == timedelta(seconds=2)
    resolved = parsed.resolved(tmp_path)
    assert str(resolved) == f"sqlite:///{tmp_path}/var/relay.db?synchronous=full&busy_timeout=2s"
    assert parse_store_url(str(resolved)) == resolved
    assert parse_store_url("sqlite:////abs/relay.db").resolved(tmp_path).path == Path(
        "/abs/relay.db"
    )


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("relay.db", 'store must be a URL such as sqlite:///var/relay.db, got "relay.db"'),
        ("postgresql://u:pw@h/db", 'unsupported store "postgresql://...": use sqlite:///PATH'),
        ("sqlite:///", "sqlite:/// needs a file path, e.g. sqlite:///var/relay.db"),
        (
            "sqlite:///x.db?sync=full&synchronous=off",
            'unknown option "sync" (use synchronous or busy_timeout); '
            'synchronous must be normal or full, got "off"',
        ),
    ],
)
def test_a_url_that_names_no_store_says_why_without_quoting_credentials(
    url: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
        parse_store_url(url)
    assert "pw" not in problem


def test_the_store_reads_its_settings_from_the_same_parser() -> None:
    store = SqliteStore.from_url("sqlite:///x.db?synchronous=full&busy_timeout=250ms", float)
    assert store.path == Path("x.db")
