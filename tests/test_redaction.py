"""Which configured values are credentials, so that nothing relay writes shows them."""

from __future__ import annotations

import textwrap
from pathlib import Path

from relay.loading import load_config
from relay.redaction import config_secrets

CONFIG = """\
listen: "${HOST}:8080"
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
}


def test_credentials_are_verify_and_signing_secrets_credential_headers_and_their_env_values(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relay.yaml"
    path.write_text(textwrap.dedent(CONFIG))
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.j2").write_text('{"text": "x"}')
    config = load_config(path, ENV)
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
    } <= secrets
    assert "127.0.0.1" not in secrets  # the listen address is no credential
