"""The `store` URL, parsed in one place: by config validation, by path resolution (a relative
file is relative to the config file) and by the store itself.

`sqlite:///relative/path` or `sqlite:////absolute/path`, with `?synchronous=normal|full` and
`?busy_timeout=5s`. Messages quote only the scheme of a URL they cannot read: a database URL
may carry a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl

from relay.durations import parse_duration

SQLITE = "sqlite:///"
SYNCHRONOUS = ("normal", "full")
OPTIONS = ("synchronous", "busy_timeout")


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

    def __str__(self) -> str:
        return f"{SQLITE}{self.path}" + (f"?{self.query}" if self.query else "")


def parse_store_url(url: str) -> SqliteUrl:
    """The store a URL names; ValueError saying what is wrong (every option problem at once)."""
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise ValueError(f'store must be a URL such as sqlite:///var/relay.db, got "{url}"')
    if not url.startswith(SQLITE):
        raise ValueError(f'unsupported store "{scheme}://...": use sqlite:///PATH')
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
