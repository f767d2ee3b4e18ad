"""`relay send` serialises like each sender: the bytes matter, because they are what is signed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, datetime

from standardwebhooks import Webhook

from relay import config
from relay.send import serialise, sign_request

EVENT = {"id": "e1", "type": "T", "data": {"note": "Café <b> & co", "n": 1}}


def test_flagright_is_compact_utf8_in_key_order() -> None:
    assert serialise("flagright", EVENT) == (
        '{"id":"e1","type":"T","data":{"note":"Café <b> & co","n":1}}'.encode()
    )


def test_flagsmith_is_python_json_dumps_sorted_with_spaces_and_ascii() -> None:
    assert serialise("flagsmith", EVENT) == (
        b'{"data": {"n": 1, "note": "Caf\\u00e9 <b> & co"}, "id": "e1", "type": "T"}'
    )


def test_flipt_is_go_json_marshal_compact_with_html_escapes() -> None:
    assert serialise("flipt", EVENT) == (
        '{"id":"e1","type":"T","data":{"note":"Café \\u003cb\\u003e \\u0026 co","n":1}}'.encode()
    )
    assert json.loads(serialise("flipt", EVENT)) == EVENT


def source(verify: Mapping[str, object]) -> config.SourceConfig:
    return config.SourceConfig.model_validate({"path": "/x", "verify": verify})


def test_sign_request_uses_each_senders_header() -> None:
    for scheme, header in [
        ("flagright", "x-flagright-signature"),
        ("flagsmith", "X-Flagsmith-Signature"),
        ("flipt", "X-Flipt-Webhook-Signature"),
    ]:
        request = sign_request(source({"scheme": scheme, "secret": ["k1", "k2"]}), EVENT, lambda: 0)
        expected = hmac.new(b"k1", request.body, hashlib.sha256).hexdigest()
        assert request.headers[header] == expected


def test_sign_request_generic_hmac_with_prefix_and_base64() -> None:
    verify = {
        "scheme": "hmac-sha256",
        "secret": "k",
        "header": "X-Sig",
        "encoding": "base64",
        "prefix": "sha256=",
    }
    request = sign_request(source(verify), EVENT, lambda: 0)
    digest = hmac.new(b"k", request.body, hashlib.sha256).digest()
    assert request.headers["X-Sig"] == "sha256=" + base64.b64encode(digest).decode()


def test_sign_request_standard_webhooks_fresh_id_and_timestamp_verify() -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    src = source({"scheme": "standard-webhooks", "secret": secret})
    first = sign_request(src, EVENT, lambda: 1_700_000_000)
    second = sign_request(src, EVENT, lambda: 1_700_000_000)
    assert first.headers["webhook-id"] != second.headers["webhook-id"]
    assert first.headers["webhook-timestamp"] == "1700000000"
    when = datetime.fromtimestamp(1_700_000_000, UTC)
    expected = Webhook(secret).sign(first.headers["webhook-id"], when, first.body.decode())
    assert first.headers["webhook-signature"] == expected
