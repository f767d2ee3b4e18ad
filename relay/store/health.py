"""Whether the store can still be used: a file that is gone or corrupt fails it for good.

A store that failed refuses every read and write from then on, so relay never acknowledges
an event into a file that is lost or malformed; `wait_failed` is what the daemon waits on to
exit and let its supervisor restart it. Passing errors (a lock held too long, a full disk) are
not failures: the write that met one gets a StoreError, and the next one tries again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from relay.errors import StoreError

log = logging.getLogger("relay.store")

# SQLite's primary result codes (the low byte of an extended one) that mean the file itself
# is unusable; retrying a statement that met one only repeats the error.
_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def is_corruption(exc: BaseException) -> bool:
    """Whether `exc` says the file is malformed (so retrying each write alone is pointless)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in _CORRUPT_CODES


def corrupt_message(path: Path, detail: str) -> str:
    return (
        f"store {path} is corrupt ({detail}). With relay stopped, keep a copy of the file, then"
        f' recover what it holds with `sqlite3 {path} ".recover" | sqlite3 {path}.recovered`'
        f" and move the result to {path}, or restore a backup"
    )


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file a path named: the same (device, inode) means the same file."""

    device: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        stat = os.stat(path)
        return cls(stat.st_dev, stat.st_ino)


def lost_reason(path: Path, opened: FileIdentity) -> str | None:
    """Why `path` no longer names the file that was opened, or None while it still does."""
    try:
        now = FileIdentity.of(path)
    except FileNotFoundError:
        return "was deleted"
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror})"
    if now != opened:
        return "was replaced by another file"
    return None


class StoreHealth:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._failed = asyncio.Event()

    @property
    def failed(self) -> bool:
        return self._failed.is_set()

    def fail(self, message: str) -> StoreError:
        """Mark the store failed and log why, the first time; the error for the caller."""
        if not self._failed.is_set():
            log.error("%s", message)
            self._failed.set()
        return self._refusal()

    def _refusal(self) -> StoreError:
        # A new error each time: raising one instance again and again would grow its traceback.
        return StoreError(
            f"store {self._path.name} can no longer be used (see the error logged before)"
        )

    def check(self) -> None:
        """Refuse to go on once the store has failed."""
        if self._failed.is_set():
            raise self._refusal()

    async def wait_failed(self) -> StoreError:
        await self._failed.wait()
        return self._refusal()

    def error_from(self, exc: Exception) -> StoreError:
        """The StoreError a caller gets for `exc`; corruption fails the store on the way."""
        if isinstance(exc, StoreError):
            return exc
        if is_corruption(exc):
            return self.fail(corrupt_message(self._path, str(exc)))
        if isinstance(exc, sqlite3.Error):
            return StoreError(f"store {self._path.name}: {exc}")
        return StoreError(f"store {self._path.name}: write failed: {exc!r}")


def lost_message(path: Path, reason: str, copy: Path | None = None) -> str:
    saved = (
        f" relay copies what the lost file holds to {copy}: move that copy to {path} before"
        " starting relay again to keep the events it holds."
        if copy is not None
        else ""
    )
    return (
        f"store {path} {reason} while relay was running: relay no longer acknowledges events"
        f" and stops.{saved} Started again, relay uses whatever file is at {path} then"
        " (a new, empty one if there is none)"
    )
