"""Sample webhook events, one JSON file per event, shipped as package data.

`relay check` renders templates against them, `relay send` replays them and tests use them, so
they live in the package (not in tests/) and are read through importlib.resources, which works
the same from a source tree, an installed wheel or a zip. Each file holds the *parsed* event;
turning it into a sender's exact bytes (Flagright's compact JSON, Flagsmith's sorted ASCII JSON,
Go's encoding/json for Flipt) belongs to whoever sends it.

A sample's name is its file stem: the event type for Flagright (a second shape of one type gets
a suffix, e.g. `TRANSACTION_STATUS_UPDATED.async`), the `event_type` for Flagsmith
(`IDENTITY_FLAGS` for the identity integration, which has none), `<type>-<action>` for Flipt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

_SUFFIX = ".json"
# The senders with samples: one folder each (a sender says in its registry entry, `samples`,
# whether it has one; a test holds the two together).
SENDERS = tuple(
    sorted(
        entry.name
        for entry in files(__name__).iterdir()
        if entry.is_dir() and not entry.name.startswith(("_", "."))
    )
)


@dataclass(frozen=True)
class Sample:
    sender: str
    name: str
    payload: dict[str, Any]


def samples(sender: str) -> list[Sample]:
    """Every sample of `sender`, sorted by name. Read afresh on each call, so callers may
    mutate a payload without affecting anyone else."""
    return [_load(sender, name, entry) for name, entry in sorted(_entries(sender).items())]


def sample(sender: str, name: str) -> Sample:
    """One sample; an unknown name is a ValueError listing the names that exist, since the
    caller is usually a person typing `relay send <sender> <name>`."""
    entries = _entries(sender)
    if name not in entries:
        raise ValueError(f"no {sender} sample {name!r}; there are: {', '.join(sorted(entries))}")
    return _load(sender, name, entries[name])


def _entries(sender: str) -> dict[str, Traversable]:
    """Names come only from the directory listing, so a name can never reach outside it."""
    if sender not in SENDERS:
        raise ValueError(f"no samples for sender {sender!r}; there are: {', '.join(SENDERS)}")
    folder = files(__name__) / sender
    return {
        entry.name.removesuffix(_SUFFIX): entry
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(_SUFFIX)
    }


def _load(sender: str, name: str, entry: Traversable) -> Sample:
    payload = json.loads(entry.read_text(encoding="utf-8"))
    if not isinstance(payload, dict):
        raise ValueError(f"{sender} sample {name!r} is not a JSON object")
    return Sample(sender, name, payload)
