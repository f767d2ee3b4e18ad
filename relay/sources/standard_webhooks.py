"""Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature` (`v1,<base64>` list).

The signed content is `{id}.{timestamp}.{body}`; the timestamp must be within the tolerance in
both directions, which bounds replays; `webhook-id` is the event id and so the dedup key.
"""

from __future__ import annotations

import base64
import hmac
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from relay.errors import InboundError, VerificationError
from relay.fields import Duration, WhsecSecrets, secret_values
from relay.signing import keyed_hmac_sha256, standard_webhooks_key, standard_webhooks_signature
from relay.sources.base import (
    EventIdentity,
    Sender,
    Verifier,
    VerifyModel,
    VerifyScheme,
    compact_json,
)


class StandardWebhooksVerifyConfig(VerifyModel):
    scheme: Literal["standard-webhooks"]
    """Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature."""
    secret: WhsecSecrets
    """A whsec_<base64> secret, or a list of them."""
    tolerance: Duration = timedelta(minutes=5)
    """How far webhook-timestamp may be from relay's clock, either way."""


def verifier_for(verify: StandardWebhooksVerifyConfig, clock: Callable[[], float]) -> Verifier:
    keys = [standard_webhooks_key(secret) for secret in secret_values(verify.secret)]
    return build_verifier(keys, verify.tolerance.total_seconds(), clock)


def sign(verify: StandardWebhooksVerifyConfig, body: bytes, now: float) -> dict[str, str]:
    """A fresh message id and the current time, signed with the first secret."""
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", int(now)
    key = standard_webhooks_key(secret_values(verify.secret)[0])
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard_webhooks_signature(key, msg_id, timestamp, body),
    }


def build_verifier(
    keys: Sequence[bytes], tolerance_s: float, clock: Callable[[], float]
) -> Verifier:
    macs = [keyed_hmac_sha256(key) for key in keys]

    def check(body: bytes, headers: Mapping[str, str]) -> None:
        msg_id, timestamp, signatures = _headers(headers)
        now = clock()
        if timestamp < now - tolerance_s:
            raise VerificationError(
                f"webhook-timestamp {timestamp} is too old (more than {tolerance_s:g}s ago)"
            )
        if timestamp > now + tolerance_s:
            raise VerificationError(
                f"webhook-timestamp {timestamp} is too new (more than {tolerance_s:g}s ahead)"
            )
        signed = f"{msg_id}.{timestamp}.".encode() + body
        received = [sig.encode() for version, sig in signatures if version == "v1"]
        if not received:
            raise VerificationError("webhook-signature has no v1 signature")
        found = False
        for mac in macs:
            expected = base64.b64encode(mac(signed))
            for signature in received:
                found |= hmac.compare_digest(expected, signature)
        if not found:
            raise VerificationError("no signature in webhook-signature matches the body")

    return check


def _headers(headers: Mapping[str, str]) -> tuple[str, int, list[tuple[str, str]]]:
    missing = [
        h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if h not in headers
    ]
    if missing:
        raise VerificationError(f"missing header(s): {', '.join(missing)}")
    raw_timestamp = headers["webhook-timestamp"].strip()
    if not raw_timestamp.isdigit():
        raise VerificationError(f'webhook-timestamp must be Unix seconds, got "{raw_timestamp}"')
    signatures = []
    for entry in headers["webhook-signature"].split():
        version, sep, signature = entry.partition(",")
        if not sep or not signature:
            raise VerificationError(f'malformed webhook-signature entry "{entry[:40]}"')
        signatures.append((version, signature))
    return headers["webhook-id"].strip(), int(raw_timestamp), signatures


def read(source: str, payload: Any, body: bytes, headers: Mapping[str, str]) -> EventIdentity:
    msg_id = headers.get("webhook-id", "").strip()
    if not msg_id:
        raise InboundError("missing header webhook-id")
    event_type = source
    data_key: str | None = None
    if isinstance(payload, dict):
        if isinstance(payload.get("type"), str) and payload["type"]:
            event_type = payload["type"]
        if "data" in payload:
            data_key = "data"
    timestamp = headers.get("webhook-timestamp", "").strip()
    created_at = float(timestamp) if timestamp.isdigit() else None
    return EventIdentity(msg_id, event_type, data_key, created_at)


def _preview_headers(now: float) -> dict[str, str]:
    return {"webhook-id": "msg_preview", "webhook-timestamp": str(int(now))}


SENDER = Sender(
    "standard-webhooks",
    read,
    compact_json,
    VerifyScheme("standard-webhooks", StandardWebhooksVerifyConfig, verifier_for, sign),
    samples=False,  # any application speaks it: its payloads are the application's own
    headers=_preview_headers,
)
