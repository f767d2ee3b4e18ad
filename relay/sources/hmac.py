"""Generic HMAC-SHA256 of the raw body in one header (hex or base64, optional prefix), and the
generic sender that any application can be: `id`, `type` and `data` if its payload has them.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

from relay.errors import VerificationError
from relay.fields import HeaderName, Secrets
from relay.signing import hmac_sha256, keyed_hmac_sha256
from relay.sources.base import (
    Sender,
    Verifier,
    VerifyModel,
    VerifyScheme,
    compact_json,
    read_generic,
)
from relay.sources.hexhmac import secret_keys


class HmacVerifyConfig(VerifyModel):
    """Generic HMAC-SHA256 of the raw body, sent in one header."""

    scheme: Literal["hmac-sha256"]
    """HMAC-SHA256 of the raw body in one header."""
    secret: Secrets
    """The key, or a list of keys (any one verifies: rotate on relay's side)."""
    header: HeaderName
    """The header that carries the signature."""
    encoding: Literal["hex", "base64"] = "hex"
    """How the signature is written: hex or base64."""
    prefix: str = ""
    """Text before the signature, e.g. sha256=."""


def verifier_for(verify: HmacVerifyConfig, clock: Callable[[], float]) -> Verifier:
    return build_hmac_verifier(secret_keys(verify), verify.header, verify.encoding, verify.prefix)


def sign(verify: HmacVerifyConfig, body: bytes, now: float) -> dict[str, str]:
    digest = hmac_sha256(secret_keys(verify)[0], body)
    encoded = digest.hex() if verify.encoding == "hex" else base64.b64encode(digest).decode()
    return {verify.header: verify.prefix + encoded}


def build_hmac_verifier(
    keys: Sequence[bytes], header_name: str, encoding: str, prefix: str
) -> Verifier:
    header = header_name.lower()
    is_hex = encoding == "hex"
    macs = [keyed_hmac_sha256(key) for key in keys]

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
        for mac in macs:  # every key is compared: the time taken tells nothing
            digest = mac(body)
            expected = digest.hex() if is_hex else base64.b64encode(digest).decode()
            found |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
        if not found:
            raise VerificationError(f"signature in {header_name} does not match the body")

    return check


SCHEME = VerifyScheme("hmac-sha256", HmacVerifyConfig, verifier_for, sign)
SENDER = Sender("generic", read_generic, compact_json, SCHEME, samples=False)
