"""Flagright: `x-flagright-signature` (white-label tenants: `x-webhook-signature`), hex HMAC.

The body is `{id, type, data, createdTimestamp, triggeredBy, account?}`; the header holds one
signature per active secret, comma-separated, while Flagright rolls its secret.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from relay.errors import InboundError
from relay.sources.base import EventIdentity, Verifier
from relay.sources.hexhmac import build_hex_hmac_verifier

SIGNATURE_HEADERS = ("x-flagright-signature", "x-webhook-signature")


def build_verifier(secrets: Sequence[bytes]) -> Verifier:
    return build_hex_hmac_verifier(secrets, SIGNATURE_HEADERS, several=True)


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
