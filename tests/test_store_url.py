"""The store URL: one parser for validation, path resolution and the store."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from relay.cli import main
from relay.store.sqlite import SqliteStore
from relay.store.url import PostgresUrl, SqliteUrl, parse_store_url


def test_a_relative_file_is_resolved_against_the_config_and_options_are_kept(
    tmp_path: Path,
) -> None:
    parsed = parse_store_url("sqlite:///var/relay.db?synchronous=full&busy_timeout=2s")
    assert isinstance(parsed, SqliteUrl)
    assert parsed.path == Path("var/relay.db")
    assert parsed.synchronous == "full"
    assert parsed.busy_timeout == timedelta(seconds=2)
    resolved = parsed.resolved(tmp_path)
    assert str(resolved) == f"sqlite:///{tmp_path}/var/relay.db?synchronous=full&busy_timeout=2s"
    assert parse_store_url(str(resolved)) == resolved
    absolute = parse_store_url("sqlite:////abs/relay.db").resolved(tmp_path)
    assert isinstance(absolute, SqliteUrl)
    assert absolute.path == Path("/abs/relay.db")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("relay.db", 'store must be a URL such as sqlite:///var/relay.db, got "relay.db"'),
        (
            "mysql://u:pw@h/db",
            'unsupported store "mysql://...": use sqlite:///PATH'
            " or postgresql://USER@HOST:PORT/DATABASE",
        ),
        (
            "postgresql://u:pw@/?sslmode=maybe&pool=3&schema=Bad-Name",
            "a PostgreSQL store needs a host: postgresql://USER@HOST:PORT/DATABASE; "
            "a PostgreSQL store needs a database: postgresql://USER@HOST:PORT/DATABASE; "
            "sslmode must be one of disable, allow, prefer, require, verify-ca, verify-full,"
            ' got "maybe"; unknown option "pool" (use sslmode, schema, application_name); '
            "schema must be a plain lower-case name (letters, digits and _, at most 41"
            ' characters, not starting with a digit), got "Bad-Name"',
        ),
        (
            "postgresql://u:pw@h:port/db",
            "store postgresql://u:***@h:port/db: cannot read its host and port",
        ),
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


def test_a_postgresql_url_keeps_the_drivers_options_and_takes_out_relays_own() -> None:
    url = "postgresql://relay:s3cret@db.internal:5433/relay?sslmode=require&schema=relay_a"
    parsed = parse_store_url(url)
    assert isinstance(parsed, PostgresUrl)
    assert parsed.schema == "relay_a"
    assert parsed.dsn == "postgresql://relay:s3cret@db.internal:5433/relay?sslmode=require"
    assert parsed.shown == (
        "postgresql://relay:***@db.internal:5433/relay?sslmode=require&schema=relay_a"
    )
    assert "s3cret" not in repr(parsed)
    assert parsed.resolved(Path("/elsewhere")) == parsed
    assert str(parsed) == url
    default = parse_store_url("postgres://relay@db/relay")
    assert isinstance(default, PostgresUrl)
    assert default.schema == "public"


def test_relay_check_shows_the_store_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "relay.yaml"
    config.write_text('store: "postgresql://relay:pl41n-pw@db:5432/relay"\n', encoding="utf-8")
    assert main(["check", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "store postgresql://relay:***@db:5432/relay" in out
    assert "pl41n-pw" not in out
