"""Flipt (v1 audit webhooks): `X-Flipt-Webhook-Signature`, hex HMAC of the body.

An audit event is `{version, type, action, metadata, payload, timestamp, status}`; relay's type
is `"<type>:<action>"` (e.g. `flag:created`), so routes can use Flipt's own `flag:*` and
`*:created` patterns. Flipt sends no id: the id is the SHA-256 of the body.
"""

from __future__ import annotations

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
    compact_json,
)
from relay.sources.hexhmac import build_hex_hmac_verifier, hex_signer, secret_keys

SIGNATURE_HEADER = "X-Flipt-Webhook-Signature"


class FliptVerifyConfig(VerifyModel):
    scheme: Literal["flipt"]
    """Flipt's X-Flipt-Webhook-Signature (hex HMAC-SHA256)."""
    secret: Secrets
    """The secret, or a list of secrets (any one verifies)."""


def build_verifier(secrets: Sequence[bytes]) -> Verifier:
    return build_hex_hmac_verifier(secrets, [SIGNATURE_HEADER])


def verifier_for(verify: FliptVerifyConfig, clock: Callable[[], float]) -> Verifier:
    return build_verifier(secret_keys(verify))


def serialise(payload: Any) -> bytes:
    """Go's `json.Marshal`: compact UTF-8, with `<`, `>`, `&`, U+2028 and U+2029 escaped."""
    text = compact_json(payload).decode()
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text.encode()


def read(source: str, payload: Any, body: bytes, headers: Mapping[str, str]) -> EventIdentity:
    if not isinstance(payload, dict):
        raise InboundError("a Flipt audit event must be a JSON object")
    noun, action = payload.get("type"), payload.get("action")
    if not isinstance(noun, str) or not noun or not isinstance(action, str) or not action:
        raise InboundError("a Flipt audit event needs string type and action")
    return EventIdentity(body_digest(body), f"{noun}:{action}", "payload", _rfc3339(payload))


def _rfc3339(payload: dict[str, Any]) -> float | None:
    text = payload.get("timestamp")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


SENDER = Sender(
    "flipt",
    read,
    serialise,
    VerifyScheme("flipt", FliptVerifyConfig, verifier_for, hex_signer(SIGNATURE_HEADER)),
)
