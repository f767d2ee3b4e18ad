"""Which configured values are credentials, so that nothing relay writes shows them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from relay.config import Config
from relay.loading import load_config
from relay.redaction import REDACTED, Redactor, config_secrets, redacted_config

CONFIG = """\
listen: "${HOST}:8080"
admin: {token: "${ADMIN_TOKEN}"}
store: "sqlite:///relay.db"
sources:
  shop:
    path: /hooks/shop
    verify: {scheme: hmac-sha256, secret: "${SHOP_SECRET}", header: X-Signature}
  flagright:
    path: /hooks/flagright
    verify: {scheme: flagright, secret: [literal-old-secret, "${FR_NEW}"]}
targets:
  audit:
    kind: http
    url: "https://audit.example.com/${TENANT_PATH}/events"
    headers:
      Authorization: "Bearer ${AUDIT_TOKEN}"
      X-Api-Key: literal-api-key
      X-Region: "${REGION}"
    sign: {scheme: hmac-sha256, secret: literal-signing}
  alerts:
    kind: slack
    url: https://hooks.slack.com/services/T0/B0/XYZSECRET
    template: a.j2
  rows:
    kind: warehouse
    url: "postgresql://relay:db-password@127.0.0.1/warehouse"
    table: t
    columns: {id: {value: event.id}}
    key: [id]
routes:
  - targets: [audit, alerts, rows]
"""

ENV = {
    "HOST": "127.0.0.1",
    "SHOP_SECRET": "env-shop-secret",
    "FR_NEW": "env-flagright-new",
    "TENANT_PATH": "tenant-9f8e",
    "AUDIT_TOKEN": "env-audit-token",
    "REGION": "eu-west-1",
    "ADMIN_TOKEN": "env-admin-token-0123456789",
}


def load(tmp_path: Path) -> Config:
    path = tmp_path / "relay.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.j2").write_text('{"text": "x"}')
    return load_config(path, ENV)


def test_credentials_are_verify_and_signing_secrets_credential_headers_and_their_env_values(
    tmp_path: Path,
) -> None:
    config = load(tmp_path)
    secrets = set(config_secrets(config))
    assert {
        "env-shop-secret",
        "env-flagright-new",
        "literal-old-secret",
        "tenant-9f8e",  # from the environment into a target's url
        "env-audit-token",
        "Bearer env-audit-token",
        "literal-api-key",
        "eu-west-1",  # from the environment into a header: relay cannot tell it is harmless
        "literal-signing",
        "https://hooks.slack.com/services/T0/B0/XYZSECRET",
        "db-password",
        "env-admin-token-0123456789",
    } <= secrets
    assert "127.0.0.1" not in secrets  # the listen address is no credential


def test_the_config_shown_holds_no_credential_and_everything_else(tmp_path: Path) -> None:
    config = load(tmp_path)
    shown = redacted_config(config, Redactor(config_secrets(config)))
    text = json.dumps(shown)
    for secret in (*ENV.values(), "literal-old-secret", "literal-api-key", "literal-signing"):
        if secret != ENV["HOST"]:
            assert secret not in text
    assert "XYZSECRET" not in text
    assert "db-password" not in text
    assert shown["listen"] == "127.0.0.1:8080"
    assert shown["admin"] == {"listen": "127.0.0.1:9090", "token": "**********"}
    assert shown["sources"]["shop"]["verify"]["secret"] == "**********"
    audit = shown["targets"]["audit"]
    assert audit["headers"] == {
        "Authorization": REDACTED,
        "X-Api-Key": REDACTED,  # a credential by its name, however short its value
        "X-Region": REDACTED,  # from the environment into a header
    }
    assert audit["url"] == f"https://audit.example.com/{REDACTED}/events"
    assert audit["sign"]["secret"] == "**********"
    assert shown["targets"]["alerts"]["url"] == REDACTED
    assert shown["targets"]["rows"]["url"] == f"postgresql://relay:{REDACTED}@127.0.0.1/warehouse"
    assert shown["routes"] == [
        {"sources": None, "types": None, "when": None, "targets": ["audit", "alerts", "rows"]}
    ]
