"""The shipped sample events: complete, shaped as each sender sends them, and installed as data.

Facts pinned here come from the shared senders reference (senders.md): Flagright's envelope
order and per-type `data` shapes, Flagsmith's `{data, event_type}` wrapper and identity payload,
Flipt's audit event.
"""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

import relay
from relay.samples import SENDERS, Sample, sample, samples

FLAGRIGHT_TYPES = frozenset(
    {
        "CASE_CLOSED",
        "USER_STATE_UPDATED",
        "ALERT_CLOSED",
        "TRANSACTION_STATUS_UPDATED",
        "KYC_STATUS_UPDATED",
        "CASE_OPENED",
        "ALERT_OPENED",
        "PEP_STATUS_UPDATED",
        "USER_TAGS_UPDATED",
        "USER_TAGS_DELETED",
        "CRA_RISK_LEVEL_UPDATED",
        "LIST_UPDATED",
        "SANCTIONS_STATUS_UPDATED",
        "ADVERSE_MEDIA_STATUS_UPDATED",
        "CASE_ESCALATED",
        "ALERT_ESCALATED",
        "BATCH_COMPLETED",
        "CASE_INTERIM_STATUS_UPDATE",
        "ALERT_INTERIM_STATUS_UPDATE",
    }
)
FLAGRIGHT_ORDER = ("id", "type", "data", "createdTimestamp", "triggeredBy", "account")
FLIPT_NOUNS = frozenset(
    {"constraint", "distribution", "flag", "namespace", "rollout", "rule", "segment", "token"}
    | {"variant"}
)
FLIPT_ORDER = ["version", "type", "action", "metadata", "payload", "timestamp", "status"]
RFC3339_SECONDS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)")
FLAGSMITH_STATE_KEYS = {
    "enabled",
    "environment",
    "feature",
    "feature_segment",
    "feature_state_value",
    "identity",
    "identity_identifier",
    "multivariate_feature_state_values",
}
FLAGSMITH_FEATURE_KEYS = {
    "created_date",
    "default_enabled",
    "description",
    "id",
    "initial_value",
    "name",
    "project",
    "type",
}


def _flagright_type(s: Sample) -> str:
    """`TRANSACTION_STATUS_UPDATED.async` is a second shape of `TRANSACTION_STATUS_UPDATED`."""
    return s.name.split(".", 1)[0]


def _keys_sorted(value: Any) -> bool:
    if isinstance(value, dict):
        return list(value) == sorted(value) and all(_keys_sorted(v) for v in value.values())
    if isinstance(value, list):
        return all(_keys_sorted(v) for v in value)
    return True


# --- the API -------------------------------------------------------------------------------


def test_every_sender_has_samples_sorted_by_name() -> None:
    for sender in SENDERS:
        found = samples(sender)
        assert found, sender
        assert [s.name for s in found] == sorted(s.name for s in found)
        assert all(s.sender == sender for s in found)


def test_sample_by_name_and_errors_name_what_exists() -> None:
    assert sample("flipt", "flag-created").payload["type"] == "flag"
    with pytest.raises(ValueError, match=r"CASE_OPENED") as info:
        sample("flagright", "CASE_REOPENED")
    assert "CASE_REOPENED" in str(info.value)
    with pytest.raises(ValueError, match=r"flagright, flagsmith, flipt"):
        samples("github")
    with pytest.raises(ValueError, match="no flipt sample"):
        sample("flipt", "../flagright/CASE_OPENED")


def test_each_call_returns_fresh_payloads() -> None:
    first = sample("flagright", "CASE_OPENED")
    first.payload["data"].clear()
    assert sample("flagright", "CASE_OPENED").payload["data"]


# --- installed as package data -------------------------------------------------------------


def test_samples_load_through_importlib_resources() -> None:
    root = files("relay.samples")
    for sender in SENDERS:
        on_disk = {
            e.name.removesuffix(".json")
            for e in (root / sender).iterdir()
            if e.name.endswith(".json")
        }
        assert on_disk == {s.name for s in samples(sender)}


def test_pyproject_package_data_ships_every_sample() -> None:
    """An editable install finds the files anyway; a wheel only has what package-data lists."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    patterns = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-data"]["relay"]
    package = Path(relay.__file__).parent
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    on_disk = set((package / "samples").rglob("*.json"))
    assert on_disk
    assert on_disk <= shipped


def test_files_are_pretty_utf8_with_non_ascii_kept() -> None:
    for sender in SENDERS:
        for entry in (files("relay.samples") / sender).iterdir():
            if not entry.name.endswith(".json"):
                continue
            text = entry.read_text(encoding="utf-8")
            assert text.startswith("{\n  "), entry.name
            assert text.endswith("}\n"), entry.name
            assert "\\u" not in text, entry.name
    raw = (files("relay.samples") / "flipt" / "flag-created.json").read_text(encoding="utf-8")
    assert "Café \u2013 naïve ✓" in raw  # an en dash


# --- Flagright -----------------------------------------------------------------------------

FLAGRIGHT = samples("flagright")


def test_flagright_has_every_event_type() -> None:
    assert {_flagright_type(s) for s in FLAGRIGHT} == FLAGRIGHT_TYPES


@pytest.mark.parametrize("s", FLAGRIGHT, ids=lambda s: s.name)
def test_flagright_envelope(s: Sample) -> None:
    p = s.payload
    assert p["type"] == _flagright_type(s)
    assert tuple(p) == FLAGRIGHT_ORDER[: len(p)], "keys in Flagright's order"
    assert str(uuid.UUID(p["id"])) == p["id"]
    assert uuid.UUID(p["id"]).version == 4
    assert isinstance(p["data"], dict)
    ts = p["createdTimestamp"]
    assert isinstance(ts, int)
    assert not isinstance(ts, bool)
    assert 315529200000 <= ts <= 4133890801000
    assert p["triggeredBy"] in {"MANUAL", "SYSTEM"}
    assert isinstance(p.get("account", ""), str)


def test_flagright_ids_are_unique() -> None:
    ids = [s.payload["id"] for s in FLAGRIGHT]
    assert len(ids) == len(set(ids))


def test_case_opened_carries_the_case_object() -> None:
    p = sample("flagright", "CASE_OPENED").payload
    assert p["triggeredBy"] == "SYSTEM"
    data = p["data"]
    assert "caseId" not in data, "the code sends caseObject; readers fall back to it"
    assert isinstance(data["caseObject"]["caseId"], str)
    assert data["caseObject"]["caseStatus"] == "OPEN"
    assert data["status"] == "OPEN"
    assert data["transactionIds"] == data["caseObject"]["caseTransactionsIds"]
    assert data["userId"] == data["caseObject"]["caseUsers"]["origin"]["userId"]


def test_transaction_status_updated_manual_and_async_shapes() -> None:
    manual = sample("flagright", "TRANSACTION_STATUS_UPDATED").payload
    assert manual["triggeredBy"] == "MANUAL"
    assert isinstance(manual["account"], str)
    assert isinstance(manual["data"]["reasons"], list)
    assert set(manual["data"]) == {"transactionId", "status", "reasons", "comment", "type"}

    sent_by_rule = sample("flagright", "TRANSACTION_STATUS_UPDATED.async").payload
    assert sent_by_rule["triggeredBy"] == "SYSTEM"
    assert "account" not in sent_by_rule
    assert sent_by_rule["data"]["reasons"] == "Status updated by async rule"
    assert isinstance(sent_by_rule["data"]["reasons"], str)
    assert "transactionType" in sent_by_rule["data"]
    for p in (manual, sent_by_rule):
        assert p["data"]["status"] in {"ALLOW", "FLAG", "BLOCK", "SUSPEND"}


def test_account_only_on_the_manual_transaction_status() -> None:
    with_account = {s.name for s in FLAGRIGHT if "account" in s.payload}
    assert with_account == {"TRANSACTION_STATUS_UPDATED"}


def test_interim_status_updates_have_empty_data() -> None:
    for name in ("CASE_INTERIM_STATUS_UPDATE", "ALERT_INTERIM_STATUS_UPDATE"):
        assert sample("flagright", name).payload["data"] == {}


def test_case_and_alert_status_changes_are_manual() -> None:
    for name in ("CASE_CLOSED", "CASE_ESCALATED", "ALERT_CLOSED", "ALERT_ESCALATED"):
        p = sample("flagright", name).payload
        assert p["triggeredBy"] == "MANUAL"
        assert isinstance(p["data"]["reasons"], list)
    assert sample("flagright", "ALERT_OPENED").payload["triggeredBy"] == "SYSTEM"


# --- Flagsmith -----------------------------------------------------------------------------

FLAGSMITH_WRAPPED = [s for s in samples("flagsmith") if s.name != "IDENTITY_FLAGS"]


def test_flagsmith_has_every_kind() -> None:
    names = {s.name for s in samples("flagsmith")}
    assert names == {
        "FLAG_UPDATED",
        "FLAG_DELETED",
        "NEW_VERSION_PUBLISHED",
        "AUDIT_LOG_CREATED",
        "IDENTITY_FLAGS",
    }


@pytest.mark.parametrize("s", FLAGSMITH_WRAPPED, ids=lambda s: s.name)
def test_flagsmith_envelope(s: Sample) -> None:
    assert set(s.payload) == {"data", "event_type"}
    assert s.payload["event_type"] == s.name
    assert isinstance(s.payload["data"], dict)


@pytest.mark.parametrize("s", samples("flagsmith"), ids=lambda s: s.name)
def test_flagsmith_keys_are_in_wire_order(s: Sample) -> None:
    """Flagsmith sends json.dumps(sort_keys=True); the files keep that order."""
    assert _keys_sorted(s.payload)


def test_flagsmith_flag_states() -> None:
    updated = sample("flagsmith", "FLAG_UPDATED").payload["data"]
    assert set(updated) == {"changed_by", "new_state", "previous_state", "timestamp"}
    for state in (updated["new_state"], updated["previous_state"]):
        assert set(state) == FLAGSMITH_STATE_KEYS
        assert set(state["feature"]) == FLAGSMITH_FEATURE_KEYS
        assert set(state["feature"]["project"]) == {"id", "name"}
        assert set(state["environment"]) == {"id", "name"}
    deleted = sample("flagsmith", "FLAG_DELETED").payload["data"]
    assert deleted["new_state"] is None
    assert set(deleted["previous_state"]) == FLAGSMITH_STATE_KEYS


def test_flagsmith_identity_payload() -> None:
    p = sample("flagsmith", "IDENTITY_FLAGS").payload
    assert set(p) == {"identity", "traits", "flags", "segments"}
    assert all(isinstance(t["transient"], bool) for t in p["traits"])


# --- Flipt ---------------------------------------------------------------------------------

FLIPT = samples("flipt")


def test_flipt_covers_every_noun_and_action() -> None:
    assert {s.payload["type"] for s in FLIPT} == FLIPT_NOUNS
    assert {s.payload["action"] for s in FLIPT} == {"created", "updated", "deleted"}


@pytest.mark.parametrize("s", FLIPT, ids=lambda s: s.name)
def test_flipt_event(s: Sample) -> None:
    p = s.payload
    assert list(p) == FLIPT_ORDER
    assert s.name == f"{p['type']}-{p['action']}"
    assert p["version"] == "0.2"
    assert p["status"] == "success"
    assert p["metadata"] == {"actor": {"authentication": "none", "ip": "172.17.0.1"}}
    assert isinstance(p["payload"], dict)
    assert _keys_sorted(p["payload"])
    assert RFC3339_SECONDS.fullmatch(p["timestamp"])
    assert datetime.fromisoformat(p["timestamp"]).tzinfo is not None


def test_flipt_has_non_ascii_text() -> None:
    texts = [json.dumps(s.payload["payload"], ensure_ascii=False) for s in FLIPT]
    assert any(not text.isascii() for text in texts)
