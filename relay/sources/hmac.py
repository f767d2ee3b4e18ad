"""Generic HMAC-SHA256 of the raw body in one header (hex or base64, optional prefix)."""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping

from relay import config
from relay.errors import VerificationError
from relay.signing import hmac_sha256
from relay.sources.base import Verifier


def build_hmac_verifier(verify: config.HmacVerify) -> Verifier:
    key = verify.secret.get_secret_value().encode()
    header = verify.header.lower()
    prefix = verify.prefix
    is_hex = verify.encoding == "hex"
    encode = _hex if is_hex else _base64

    def check(body: bytes, headers: Mapping[str, str]) -> None:
        received = headers.get(header)
        if received is None:
            raise VerificationError(f"missing signature header {verify.header}")
        if not received.startswith(prefix):
            raise VerificationError(f'signature header {verify.header} must start with "{prefix}"')
        candidate = received[len(prefix) :].strip()
        if is_hex:
            candidate = candidate.lower()
        expected = encode(hmac_sha256(key, body))
        if not hmac.compare_digest(expected.encode(), candidate.encode()):
            raise VerificationError(f"signature in {verify.header} does not match the body")

    return check


def _hex(digest: bytes) -> str:
    return digest.hex()


def _base64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()
