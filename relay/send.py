"""`relay send`: post an event to a running relay exactly as its sender would.

Each sender serialises JSON in its own style and signs those bytes; relay verifies the raw
bytes, so `send` must reproduce them: Flagright compact JSON (UTF-8), Flagsmith Python's
`json.dumps(sort_keys=True)` (ASCII, spaces), Flipt Go's `json.Marshal` (compact, UTF-8,
`<`, `>`, `&` escaped), Standard Webhooks minified with a fresh id and timestamp.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from relay import config
from relay.fields import secret_values
from relay.signing import hmac_sha256, standard_webhooks_key, standard_webhooks_signature
from relay.sources import flagright, flagsmith, flipt


@dataclass(frozen=True, slots=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]


def serialise(sender: str, payload: Any) -> bytes:
    if sender == "flagsmith":
        return json.dumps(payload, sort_keys=True).encode()
    compact = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    if sender == "flipt":
        compact = _go_html_escape(compact)
    return compact.encode()


def _go_html_escape(text: str) -> str:
    """What Go's encoding/json does by default to strings (and so to the whole text)."""
    for char, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escaped)
    return text


def sign_request(
    source: config.SourceConfig, payload: Any, now: Callable[[], float]
) -> SignedRequest:
    """Serialise `payload` as the source's sender does and sign it with the first secret."""
    body = serialise(source.reads_as, payload)
    headers = {"Content-Type": "application/json"}
    verify = source.verify
    if verify is None:
        return SignedRequest(body, headers)
    secret = secret_values(verify.secret)[0]
    if isinstance(verify, config.StandardWebhooksVerifyConfig):
        msg_id = f"msg_{uuid.uuid4().hex}"
        timestamp = int(now())
        key = standard_webhooks_key(secret)
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(timestamp)
        headers["webhook-signature"] = standard_webhooks_signature(key, msg_id, timestamp, body)
        return SignedRequest(body, headers)
    digest = hmac_sha256(secret.encode(), body)
    if isinstance(verify, config.HmacVerifyConfig):
        encoded = digest.hex() if verify.encoding == "hex" else _b64(digest)
        headers[verify.header] = verify.prefix + encoded
        return SignedRequest(body, headers)
    header = {
        "flagright": flagright.SIGNATURE_HEADERS[0],
        "flagsmith": flagsmith.SIGNATURE_HEADER,
        "flipt": flipt.SIGNATURE_HEADER,
    }[verify.scheme]
    headers[header] = digest.hex()
    return SignedRequest(body, headers)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


async def post(url: str, request: SignedRequest, timeout_s: float = 10.0) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.post(url, data=request.body, headers=request.headers) as response,
    ):
        return response.status, await response.text()
