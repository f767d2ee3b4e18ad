"""Generic HMAC-SHA256 of the raw body in one header (hex or base64, optional prefix)."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping, Sequence

from relay.errors import VerificationError
from relay.signing import hmac_sha256
from relay.sources.base import Verifier


def build_hmac_verifier(
    keys: Sequence[bytes], header_name: str, encoding: str, prefix: str
) -> Verifier:
    header = header_name.lower()
    is_hex = encoding == "hex"

    def check(body: bytes, headers: Mapping[str, str]) -> None:
        received = headers.get(header)
        if received is None:
            raise VerificationError(f"missing signature header {header_name}")
        if not received.startswith(prefix):
            raise VerificationError(f'signature header {header_name} must start with "{prefix}"')
        candidate = received[len(prefix) :].strip()
        if is_hex:
            candidate = candidate.lower()
        found = False
        for key in keys:  # every key is compared: the time taken tells nothing
            digest = hmac_sha256(key, body)
            expected = digest.hex() if is_hex else base64.b64encode(digest).decode()
            found |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
        if not found:
            raise VerificationError(f"signature in {header_name} does not match the body")

    return check
