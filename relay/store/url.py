"""The `store` URL, parsed in one place: by config validation, by path resolution (a relative
file is relative to the config file) and by the store itself.

- `sqlite:///relative/path` or `sqlite:////absolute/path`, with `?synchronous=normal|full` and
  `?busy_timeout=5s`.
- `postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE` (or `postgres://`), with `?sslmode=`
  (passed to the driver as written), `?schema=NAME` (relay's tables live in that schema, made
  if missing; default `public`) and `?application_name=`. The password comes from `${VAR}`.

Messages quote only the scheme of a URL they cannot read, and a PostgreSQL URL is shown
without its password: a database URL may carry one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from relay.durations import parse_duration

SQLITE = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")
SYNCHRONOUS = ("normal", "full")
OPTIONS = ("synchronous", "busy_timeout")
POSTGRES_OPTIONS = ("sslmode", "schema", "application_name")
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# A schema name relay writes into SQL (quoted) and into a LISTEN channel: kept plain.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")


@dataclass(frozen=True, slots=True)
class SqliteUrl:
    path: Path
    synchronous: str = "normal"
    busy_timeout: timedelta = timedelta(seconds=5)
    query: str = ""  # as written, so that the URL reads back as the operator wrote it

    def resolved(self, base_dir: Path) -> SqliteUrl:
        """The same URL with a relative file made relative to `base_dir`."""
        if self.path.is_absolute():
            return self
        return SqliteUrl(
            (base_dir / self.path).resolve(), self.synchronous, self.busy_timeout, self.query
        )

    @property
    def shown(self) -> str:
        return str(self)

    def __str__(self) -> str:
        return f"{SQLITE}{self.path}" + (f"?{self.query}" if self.query else "")


@dataclass(frozen=True, slots=True)
class PostgresUrl:
    """A PostgreSQL database; `dsn` is what the driver gets (relay's own options taken out)."""

    url: str = field(repr=False)  # as written, password included: never shown (`shown` is)
    dsn: str = field(repr=False)
    schema: str = "public"

    def resolved(self, base_dir: Path) -> PostgresUrl:
        return self

    @property
    def shown(self) -> str:
        """The URL without its password, for messages and logs."""
        return _without_password(self.url)

    def __str__(self) -> str:
        return self.url


StoreUrl = SqliteUrl | PostgresUrl


def parse_store_url(url: str) -> StoreUrl:
    """The store a URL names; ValueError saying what is wrong (every option problem at once)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f'store must be a URL such as sqlite:///var/relay.db, got "{url}"')
    if scheme in POSTGRES_SCHEMES:
        return _parse_postgres(url)
    if not url.startswith(SQLITE):
        raise ValueError(
            f'unsupported store "{scheme}://...": use sqlite:///PATH'
            " or postgresql://USER@HOST:PORT/DATABASE"
        )
    file_part, _, query = url.removeprefix(SQLITE).partition("?")
    if not file_part:
        raise ValueError("sqlite:/// needs a file path, e.g. sqlite:///var/relay.db")
    if "\0" in url:
        raise ValueError("a file path cannot contain a NUL character (\\0)")
    options: dict[str, str] = {}
    wrong: list[str] = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        problem = _option_problem(name, value)
        if problem is not None:
            wrong.append(problem)
        options[name] = value
    if wrong:
        raise ValueError("; ".join(wrong))
    return SqliteUrl(
        Path(file_part),
        options.get("synchronous", "normal"),
        parse_duration(options.get("busy_timeout", "5s")),
        query,
    )


def _option_problem(name: str, value: str) -> str | None:
    if name not in OPTIONS:
        return f'unknown option "{name}" (use {" or ".join(OPTIONS)})'
    if name == "synchronous" and value not in SYNCHRONOUS:
        return f'synchronous must be {" or ".join(SYNCHRONOUS)}, got "{value}"'
    if name == "busy_timeout":
        try:
            parse_duration(value)
        except ValueError as exc:
            return f"busy_timeout: {exc}"
    return None


def _parse_postgres(url: str) -> PostgresUrl:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError(f"store {_without_password(url)}: cannot read its host and port") from None
    wrong: list[str] = []
    if not parts.hostname:
        wrong.append("a PostgreSQL store needs a host: postgresql://USER@HOST:PORT/DATABASE")
    if not unquote(parts.path.lstrip("/")):
        wrong.append("a PostgreSQL store needs a database: postgresql://USER@HOST:PORT/DATABASE")
    if "\0" in url:
        wrong.append("a PostgreSQL store URL cannot contain a NUL character (\\0)")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    wrong.extend(filter(None, (_postgres_option_problem(n, v) for n, v in options.items())))
    if wrong:
        raise ValueError("; ".join(wrong))
    schema = options.pop("schema", "public")
    dsn = urlunsplit(parts._replace(query=urlencode(options)))
    return PostgresUrl(url, dsn, schema)


def _postgres_option_problem(name: str, value: str) -> str | None:
    if name not in POSTGRES_OPTIONS:
        return f'unknown option "{name}" (use {", ".join(POSTGRES_OPTIONS)})'
    if name == "sslmode" and value not in SSLMODES:
        return f'sslmode must be one of {", ".join(SSLMODES)}, got "{value}"'
    if name == "schema" and not SCHEMA_NAME.fullmatch(value):
        return (
            "schema must be a plain lower-case name (letters, digits and _, at most 41"
            f' characters, not starting with a digit), got "{value}"'
        )
    return None


def _without_password(url: str) -> str:
    """`url` with any password replaced by `***` (a URL too broken to split: its scheme)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url.partition('://')[0]}://..."
    user, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in user:
        return url
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))
