"""Sender verification and reading, with signatures computed here, independently of relay."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from relay.errors import InboundError, VerificationError
from relay.sources import flagright, flagsmith, flipt, standard_webhooks
from relay.sources.base import body_digest


def hex_sig(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


FLAGRIGHT_EVENT = {
    "id": "2fa554d3-1ffa-4361-9af6-5479c2d4847f",
    "type": "USER_STATE_UPDATED",
    "data": {"userId": "U-1", "state": "BLOCKED", "reason": "updated manually"},
    "createdTimestamp": 1661522222301,
    "triggeredBy": "MANUAL",
}
FLAGRIGHT_BODY = json.dumps(FLAGRIGHT_EVENT, separators=(",", ":"), ensure_ascii=False).encode()


class TestFlagright:
    verify = staticmethod(flagright.build_verifier([b"old-secret", b"new-secret"]))

    @pytest.mark.parametrize("header", ["x-flagright-signature", "x-webhook-signature"])
    def test_valid_signature_in_either_header(self, header: str) -> None:
        self.verify(FLAGRIGHT_BODY, {header: hex_sig("new-secret", FLAGRIGHT_BODY)})

    def test_any_of_several_comma_separated_signatures_passes(self) -> None:
        value = f"{hex_sig('expired', FLAGRIGHT_BODY)},{hex_sig('old-secret', FLAGRIGHT_BODY)}"
        self.verify(FLAGRIGHT_BODY, {"x-flagright-signature": value})

    def test_tampered_body_is_refused(self) -> None:
        signature = hex_sig("new-secret", FLAGRIGHT_BODY)
        with pytest.raises(VerificationError, match="does not match the body"):
            self.verify(
                FLAGRIGHT_BODY.replace(b"BLOCKED", b"ACTIVE"), {"x-flagright-signature": signature}
            )

    def test_wrong_secret_is_refused(self) -> None:
        with pytest.raises(
            VerificationError, match="signature in x-flagright-signature does not match"
        ):
            self.verify(FLAGRIGHT_BODY, {"x-flagright-signature": hex_sig("other", FLAGRIGHT_BODY)})

    def test_missing_and_empty_headers_are_refused(self) -> None:
        with pytest.raises(
            VerificationError,
            match=r"^missing signature header x-flagright-signature or x-webhook-signature$",
        ):
            self.verify(FLAGRIGHT_BODY, {})
        with pytest.raises(VerificationError, match="is empty"):
            self.verify(FLAGRIGHT_BODY, {"x-flagright-signature": " , "})

    def test_read(self) -> None:
        identity = flagright.read("fr", FLAGRIGHT_EVENT, FLAGRIGHT_BODY, {})
        assert identity.id == FLAGRIGHT_EVENT["id"]
        assert identity.type == "USER_STATE_UPDATED"
        assert identity.data_key == "data"
        assert identity.created_at == 1661522222.301

    def test_event_without_id_is_refused(self) -> None:
        with pytest.raises(InboundError, match="needs a string id"):
            flagright.read("fr", {"type": "X", "data": {}}, b"{}", {})


FLAGSMITH_ENVELOPE = {
    "event_type": "FLAG_UPDATED",
    "data": {
        "changed_by": "ana@example.com",
        "new_state": {"enabled": True, "feature": {"name": "beta"}},
        "timestamp": "2026-11-20T10:00:00.123456Z",
    },
}
# Flagsmith: json.dumps(data, sort_keys=True): default separators, ASCII escapes.
FLAGSMITH_BODY = json.dumps(FLAGSMITH_ENVELOPE, sort_keys=True).encode()


class TestFlagsmith:
    verify = staticmethod(flagsmith.build_verifier([b"fs-secret"]))

    def test_body_as_flagsmith_serialises_it_verifies(self) -> None:
        assert FLAGSMITH_BODY.startswith(b'{"data": {"changed_by": "ana@example.com", ')
        self.verify(FLAGSMITH_BODY, {"x-flagsmith-signature": hex_sig("fs-secret", FLAGSMITH_BODY)})

    def test_reserialised_body_does_not_verify(self) -> None:
        compact = json.dumps(FLAGSMITH_ENVELOPE, separators=(",", ":")).encode()
        with pytest.raises(VerificationError):
            self.verify(compact, {"x-flagsmith-signature": hex_sig("fs-secret", FLAGSMITH_BODY)})

    def test_missing_header(self) -> None:
        with pytest.raises(
            VerificationError, match=r"^missing signature header X-Flagsmith-Signature$"
        ):
            self.verify(FLAGSMITH_BODY, {})

    def test_read_envelope(self) -> None:
        identity = flagsmith.read("fs", FLAGSMITH_ENVELOPE, FLAGSMITH_BODY, {})
        assert identity.id == hashlib.sha256(FLAGSMITH_BODY).hexdigest()
        assert identity.type == "FLAG_UPDATED"
        assert identity.data_key == "data"
        assert identity.created_at == datetime(2026, 11, 20, 10, 0, 0, 123456, UTC).timestamp()

    def test_read_identity_integration_payload(self) -> None:
        payload = {"identity": "user_1", "traits": [], "flags": [], "segments": []}
        body = json.dumps(payload, sort_keys=True).encode()
        identity = flagsmith.read("fs", payload, body, {})
        assert (identity.type, identity.data_key, identity.id) == (
            "IDENTITY_FLAGS",
            None,
            body_digest(body),
        )

    def test_unknown_shape_is_refused(self) -> None:
        with pytest.raises(InboundError, match="not a Flagsmith webhook"):
            flagsmith.read("fs", {"hello": 1}, b"{}", {})


FLIPT_EVENT = {
    "version": "0.2",
    "type": "flag",
    "action": "created",
    "metadata": {"actor": {"authentication": "none", "ip": "172.17.0.1"}},
    "payload": {
        "description": "Café \u2013 naïve ✓ <b>",
        "enabled": True,
        "key": "beta",
        "name": "Beta",
        "namespace_key": "default",
    },
    "timestamp": "2023-09-13T13:05:18-04:00",
    "status": "success",
}
# Go's json.Marshal: compact, UTF-8 kept, <>& escaped.
FLIPT_BODY = (
    json.dumps(FLIPT_EVENT, separators=(",", ":"), ensure_ascii=False)
    .replace("<", "\\u003c")
    .replace(">", "\\u003e")
    .encode()
)


class TestFlipt:
    verify = staticmethod(flipt.build_verifier([b"flipt-secret"]))

    def test_non_ascii_body_verifies(self) -> None:
        assert "Café".encode() in FLIPT_BODY
        self.verify(FLIPT_BODY, {"x-flipt-webhook-signature": hex_sig("flipt-secret", FLIPT_BODY)})

    def test_uppercase_hex_is_accepted(self) -> None:
        signature = hex_sig("flipt-secret", FLIPT_BODY).upper()
        self.verify(FLIPT_BODY, {"x-flipt-webhook-signature": signature})

    def test_wrong_secret(self) -> None:
        with pytest.raises(
            VerificationError,
            match=r"^signature in x-flipt-webhook-signature does not match the body$",
        ):
            self.verify(FLIPT_BODY, {"x-flipt-webhook-signature": hex_sig("nope", FLIPT_BODY)})

    def test_read(self) -> None:
        identity = flipt.read("flipt", FLIPT_EVENT, FLIPT_BODY, {})
        assert identity.type == "flag:created"
        assert identity.data_key == "payload"
        assert identity.id == hashlib.sha256(FLIPT_BODY).hexdigest()
        assert (
            identity.created_at == datetime.fromisoformat("2023-09-13T13:05:18-04:00").timestamp()
        )


SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_OLD_SECRET = "whsec_" + base64.b64encode(b"an older key, 24 bytes!!").decode()
NOW = 1_700_000_000


def sw_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sw_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


class TestStandardWebhooks:
    verify = staticmethod(
        standard_webhooks.build_verifier(
            [sw_key(SW_SECRET), sw_key(SW_OLD_SECRET)], 300, lambda: NOW
        )
    )
    body = b'{"type":"invoice.paid","timestamp":"2026-11-23T10:00:00Z","data":{"amount":5}}'

    def test_valid(self) -> None:
        self.verify(self.body, sw_headers(SW_SECRET, "msg_1", NOW, self.body))

    def test_rotation_on_both_sides(self) -> None:
        headers = sw_headers(SW_OLD_SECRET, "msg_1", NOW, self.body)
        headers["webhook-signature"] = (
            "v1,bm90IGl0 v1a,ZWQyNTUxOQ== " + headers["webhook-signature"]
        )
        self.verify(self.body, headers)

    @pytest.mark.parametrize(("offset", "word"), [(-301, "too old"), (301, "too new")])
    def test_stale_and_future_timestamps_are_refused(self, offset: int, word: str) -> None:
        headers = sw_headers(SW_SECRET, "msg_1", NOW + offset, self.body)
        with pytest.raises(VerificationError, match=word):
            self.verify(self.body, headers)

    def test_edge_of_tolerance_passes(self) -> None:
        self.verify(self.body, sw_headers(SW_SECRET, "msg_1", NOW - 300, self.body))

    def test_tampered_body_and_changed_id_are_refused(self) -> None:
        headers = sw_headers(SW_SECRET, "msg_1", NOW, self.body)
        with pytest.raises(VerificationError, match="no signature in webhook-signature matches"):
            self.verify(self.body.replace(b"5", b"6"), headers)
        with pytest.raises(VerificationError, match="no signature"):
            self.verify(self.body, {**headers, "webhook-id": "msg_2"})

    @pytest.mark.parametrize(
        ("headers", "message"),
        [
            ({}, "missing header(s): webhook-id, webhook-timestamp, webhook-signature"),
            (
                {"webhook-id": "m", "webhook-timestamp": "soon", "webhook-signature": "v1,x"},
                'webhook-timestamp must be Unix seconds, got "soon"',
            ),
            (
                {"webhook-id": "m", "webhook-timestamp": str(NOW), "webhook-signature": "garbage"},
                'malformed webhook-signature entry "garbage"',
            ),
            (
                {"webhook-id": "m", "webhook-timestamp": str(NOW), "webhook-signature": "v1a,abc"},
                "webhook-signature has no v1 signature",
            ),
        ],
    )
    def test_malformed_headers(self, headers: dict[str, str], message: str) -> None:
        with pytest.raises(VerificationError) as caught:
            self.verify(self.body, headers)
        assert caught.value.reason == message

    def test_read(self) -> None:
        payload = json.loads(self.body)
        identity = standard_webhooks.read(
            "sw", payload, self.body, {"webhook-id": "msg_1", "webhook-timestamp": str(NOW)}
        )
        assert (identity.id, identity.type, identity.data_key, identity.created_at) == (
            "msg_1",
            "invoice.paid",
            "data",
            float(NOW),
        )
