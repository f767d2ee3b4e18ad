"""Outbound signatures pinned to fixed vectors computed outside relay."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr
from standardwebhooks import Webhook

from relay.shared_config import HmacSignConfig, StandardWebhooksSignConfig
from relay.signing import (
    build_signer,
    hmac_sha256,
    keyed_hmac_sha256,
    standard_webhooks_key,
    standard_webhooks_signature,
)

# The Standard Webhooks / Svix reference test vector.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_hmac_sha256_signer_matches_openssl_vector() -> None:
    # printf %s hello | openssl dgst -sha256 -hmac key
    signer = build_signer(HmacSignConfig(scheme="hmac-sha256", secret=SecretStr("key")))
    assert signer(b"hello", "ignored", 0) == {
        "Relay-Signature": "9307b3b915efb5171ff14d8cb55fbcc798c6c0ef1456d66ded1a6aa723a58b7b"
    }


def test_hmac_sha256_signer_uses_the_configured_header() -> None:
    signer = build_signer(
        HmacSignConfig(scheme="hmac-sha256", secret=SecretStr("key"), header="X-Hub-Signature")
    )
    assert list(signer(b"hello", "id", 0)) == ["X-Hub-Signature"]


def test_standard_webhooks_signature_matches_reference_vector() -> None:
    key = standard_webhooks_key(SW_SECRET)
    assert standard_webhooks_signature(key, SW_ID, SW_TIMESTAMP, SW_BODY) == SW_SIGNATURE


def test_standard_webhooks_headers_verify_with_the_reference_library() -> None:
    signer = build_signer(
        StandardWebhooksSignConfig(scheme="standard-webhooks", secret=SecretStr(SW_SECRET))
    )
    now = int(datetime.now(UTC).timestamp())
    headers = signer(SW_BODY, "msg_relay_1", now)
    assert headers["webhook-id"] == "msg_relay_1"
    assert headers["webhook-timestamp"] == str(now)
    verified = Webhook(SW_SECRET).verify(SW_BODY.decode(), headers)
    assert verified == {"test": 2432232314}


@given(st.binary(max_size=100), st.binary(max_size=3000))
def test_a_keyed_hmac_gives_the_one_shot_hmac_every_time(key: bytes, message: bytes) -> None:
    mac = keyed_hmac_sha256(key)
    assert mac(message) == mac(message) == hmac_sha256(key, message)


def test_a_keyed_hmac_matches_the_openssl_vector() -> None:
    # printf %s hello | openssl dgst -sha256 -hmac key
    assert keyed_hmac_sha256(b"key")(b"hello").hex() == (
        "9307b3b915efb5171ff14d8cb55fbcc798c6c0ef1456d66ded1a6aa723a58b7b"
    )
