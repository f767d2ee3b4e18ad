"""Flagsmith: `X-Flagsmith-Signature`, hex HMAC of the body (sent only when a secret is set).

Environment and organisation webhooks wrap their data as `{"data": ..., "event_type": ...}`;
the identity "data warehouse" integration sends `{identity, traits, flags, segments}` bare.
Flagsmith sends no id: the id is the SHA-256 of the body, so a retry of the same bytes dedups.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from relay.errors import InboundError
from relay.fields import Secrets
from relay.sources.base import (
    EventIdentity,
    Sender,
    Verifier,
    VerifyModel,
    VerifyScheme,
    body_digest,
)
from relay.sources.hexhmac import build_hex_hmac_verifier, hex_signer, secret_keys

SIGNATURE_HEADER = "X-Flagsmith-Signature"
IDENTITY_FLAGS = "IDENTITY_FLAGS"
_IDENTITY_KEYS = frozenset({"identity", "traits", "flags"})


class FlagsmithVerifyConfig(VerifyModel):
    scheme: Literal["flagsmith"]
    """Flagsmith's X-Flagsmith-Signature (hex HMAC-SHA256)."""
    secret: Secrets
    """The secret, or a list of secrets (any one verifies)."""


def build_verifier(secrets: Sequence[bytes]) -> Verifier:
    return build_hex_hmac_verifier(secrets, [SIGNATURE_HEADER])


def verifier_for(verify: FlagsmithVerifyConfig, clock: Callable[[], float]) -> Verifier:
    return build_verifier(secret_keys(verify))


def serialise(payload: Any) -> bytes:
    """Python's `json.dumps(sort_keys=True)`: ASCII, with spaces, keys sorted."""
    return json.dumps(payload, sort_keys=True).encode()


def read(source: str, payload: Any, body: bytes, headers: Mapping[str, str]) -> EventIdentity:
    if not isinstance(payload, dict):
        raise InboundError("a Flagsmith webhook must be a JSON object")
    event_type = payload.get("event_type")
    if isinstance(event_type, str) and event_type and "data" in payload:
        return EventIdentity(body_digest(body), event_type, "data", _timestamp(payload["data"]))
    if payload.keys() >= _IDENTITY_KEYS:
        return EventIdentity(body_digest(body), IDENTITY_FLAGS, None)
    raise InboundError(
        "not a Flagsmith webhook: expected {data, event_type} or the identity integration's"
        " {identity, traits, flags, segments}"
    )


def _timestamp(data: Any) -> float | None:
    """FLAG_UPDATED carries `timestamp` as `%Y-%m-%dT%H:%M:%S.%fZ` (or "")."""
    text = data.get("timestamp") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


SENDER = Sender(
    "flagsmith",
    read,
    serialise,
    VerifyScheme("flagsmith", FlagsmithVerifyConfig, verifier_for, hex_signer(SIGNATURE_HEADER)),
)
