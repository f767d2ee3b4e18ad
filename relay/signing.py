"""Outbound signatures, as pure functions of (secret, body, id, time)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable

from relay.shared_config import HmacSignConfig, StandardWebhooksSignConfig

HeaderSigner = Callable[[bytes, str, int], dict[str, str]]
Mac = Callable[[bytes], bytes]  # message -> HMAC under a key fixed beforehand


def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")  # the one-shot C path: half the cost of hmac.new


def keyed_hmac_sha256(key: bytes) -> Mac:
    """HMAC-SHA256 under `key`, for many messages: the key's pads are hashed once, here, and
    each message starts from a copy of them (0.8 us less than `hmac_sha256` per message, what
    each request and each signed delivery pays)."""
    prepared = hmac.new(key, digestmod=hashlib.sha256)

    def mac(message: bytes) -> bytes:
        running = prepared.copy()
        running.update(message)
        return running.digest()

    return mac


def standard_webhooks_key(secret: str) -> bytes:
    """The HMAC key behind a `whsec_<base64>` secret."""
    encoded = secret.removeprefix("whsec_")
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4))


def standard_webhooks_signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64>` over `{id}.{timestamp}.{body}`, per the Standard Webhooks spec."""
    mac = hmac_sha256(key, f"{msg_id}.{timestamp}.".encode() + body)
    return "v1," + base64.b64encode(mac).decode()


def build_signer(sign: HmacSignConfig | StandardWebhooksSignConfig) -> HeaderSigner:
    """A function (body, message id, unix time) -> headers to add."""
    if isinstance(sign, HmacSignConfig):
        mac = keyed_hmac_sha256(sign.secret.get_secret_value().encode())
        header = sign.header

        def sign_hmac(body: bytes, msg_id: str, timestamp: int) -> dict[str, str]:
            return {header: mac(body).hex()}

        return sign_hmac

    sw_key = standard_webhooks_key(sign.secret.get_secret_value())

    def sign_standard(body: bytes, msg_id: str, timestamp: int) -> dict[str, str]:
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_webhooks_signature(sw_key, msg_id, timestamp, body),
        }

    return sign_standard
