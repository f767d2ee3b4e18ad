"""Flagright: `x-flagright-signature` (white-label tenants: `x-webhook-signature`), hex HMAC.

The body is `{id, type, data, createdTimestamp, triggeredBy, account?}`; the header holds one
signature per active secret, comma-separated, while Flagright rolls its secret.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from relay.errors import InboundError
from relay.fields import Secrets
from relay.sources.base import (
    EventIdentity,
    Sender,
    Verifier,
    VerifyModel,
    VerifyScheme,
    compact_json,
)
from relay.sources.hexhmac import build_hex_hmac_verifier, hex_signer, secret_keys

SIGNATURE_HEADERS = ("x-flagright-signature", "x-webhook-signature")


class FlagrightVerifyConfig(VerifyModel):
    scheme: Literal["flagright"]
    """Flagright's x-flagright-signature (hex HMAC-SHA256; several while it rolls its secret)."""
    secret: Secrets
    """The secret, or a list of secrets (any one verifies)."""


def build_verifier(secrets: Sequence[bytes]) -> Verifier:
    return build_hex_hmac_verifier(secrets, SIGNATURE_HEADERS, several=True)


def verifier_for(verify: FlagrightVerifyConfig, clock: Callable[[], float]) -> Verifier:
    return build_verifier(secret_keys(verify))


def read(source: str, payload: Any, body: bytes, headers: Mapping[str, str]) -> EventIdentity:
    if not isinstance(payload, dict):
        raise InboundError("a Flagright event must be a JSON object")
    event_id, event_type = payload.get("id"), payload.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise InboundError("a Flagright event needs a string id")
    if not isinstance(event_type, str) or not event_type:
        raise InboundError("a Flagright event needs a string type")
    created = payload.get("createdTimestamp")
    created_at = (
        created / 1000
        if isinstance(created, int | float) and not isinstance(created, bool)
        else None
    )
    return EventIdentity(event_id, event_type, "data", created_at)


SENDER = Sender(
    "flagright",
    read,
    compact_json,  # Node's JSON.stringify: compact, UTF-8
    VerifyScheme(
        "flagright", FlagrightVerifyConfig, verifier_for, hex_signer(SIGNATURE_HEADERS[0])
    ),
)
