"""Hex HMAC-SHA256 of the raw body in a fixed header: what Flagright, Flagsmith and Flipt send.

Each secret is tried against each signature the header holds (comma-separated), so that both
the sender (Flagright signs with every active secret) and relay can rotate keys.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from relay.errors import VerificationError
from relay.fields import secret_values
from relay.signing import Mac, hmac_sha256, keyed_hmac_sha256
from relay.sources.base import Signer, Verifier, VerifyModel


def secret_keys(verify: VerifyModel) -> list[bytes]:
    """Every configured secret, as HMAC keys (relay tries each: either side may rotate)."""
    return [secret.encode() for secret in secret_values(verify.secret)]


def hex_signer(header: str) -> Signer:
    """Signs as these senders do, with the first secret, for `relay send`."""

    def sign(verify: VerifyModel, body: bytes, now: float) -> dict[str, str]:
        return {header: hmac_sha256(secret_keys(verify)[0], body).hex()}

    return sign


def build_hex_hmac_verifier(
    secrets: Sequence[bytes], header_names: Sequence[str], several: bool = False
) -> Verifier:
    """Check `header_names[0]` (or the first present alternative) against every secret."""
    names = [name.lower() for name in header_names]
    shown = " or ".join(header_names)
    macs = [keyed_hmac_sha256(secret) for secret in secrets]

    def check(body: bytes, headers: Mapping[str, str]) -> None:
        name = next((n for n in names if n in headers), None)
        if name is None:
            raise VerificationError(f"missing signature header {shown}")
        value = headers[name]
        received = (
            [s.strip().lower() for s in value.split(",")] if several else [value.strip().lower()]
        )
        received = [s for s in received if s]
        if not received:
            raise VerificationError(f"signature header {name} is empty")
        if not matches_any(macs, body, received):
            raise VerificationError(f"signature in {name} does not match the body")

    return check


def matches_any(macs: Sequence[Mac], body: bytes, received: Sequence[str]) -> bool:
    """Constant-time comparison of every expected digest (one per secret's MAC) with every
    received one."""
    found = False
    for mac in macs:
        expected = mac(body).hex().encode()
        for signature in received:
            found |= hmac.compare_digest(expected, signature.encode("utf-8", "replace"))
    return found
