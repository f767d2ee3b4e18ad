"""`relay send`: post an event to a running relay exactly as its sender would.

Each sender serialises JSON in its own style and signs those bytes; relay verifies the raw
bytes, so `send` must reproduce them. How each does is in its module (`Sender.serialise`,
`VerifyScheme.sign`): Flagright compact JSON (UTF-8), Flagsmith Python's
`json.dumps(sort_keys=True)` (ASCII, spaces), Flipt Go's `json.Marshal` (compact, UTF-8,
`<`, `>`, `&` escaped), Standard Webhooks minified with a fresh id and timestamp.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from relay.config import SourceConfig
from relay.sources import SCHEMES, SENDERS


@dataclass(frozen=True, slots=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]


def serialise(sender: str, payload: Any) -> bytes:
    return SENDERS[sender].serialise(payload)


def sign_request(source: SourceConfig, payload: Any, now: Callable[[], float]) -> SignedRequest:
    """Serialise `payload` as the source's sender does and sign it with the first secret."""
    body = serialise(source.reads_as, payload)
    headers = {"Content-Type": "application/json"}
    if source.verify is not None:
        headers |= SCHEMES[source.verify.scheme].sign(source.verify, body, now())
    return SignedRequest(body, headers)


async def post(url: str, request: SignedRequest, timeout_s: float = 10.0) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session,
        session.post(url, data=request.body, headers=request.headers) as response,
    ):
        return response.status, await response.text()
