"""Walk the registries of senders and target kinds: each kind is complete where it lives, and
documented; nothing else lists kinds."""

from __future__ import annotations

import time
import typing
from pathlib import Path

import pytest

from relay import samples
from relay.config import SourceConfig
from relay.send import sign_request
from relay.shared_config import TargetModel
from relay.sources import SCHEMES, SENDERS, build_verifier
from relay.sources.base import Sender, VerifyScheme
from relay.targets import TARGET_KINDS, TargetKind
from relay.textsafety import identifier_problem

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
SECRETS = {"standard-webhooks": "whsec_c2VjcmV0LWtleS1mb3ItdGVzdHM="}
GENERIC_PAYLOAD = {"id": "evt-1", "type": "thing.happened", "data": {"n": 1}}


def verify_config(scheme: str) -> dict[str, object]:
    extra = {"header": "X-Signature"} if scheme == "hmac-sha256" else {}
    return {"scheme": scheme, "secret": SECRETS.get(scheme, "a-secret"), **extra}


def payloads(sender: Sender) -> list[object]:
    if not sender.samples:
        return [GENERIC_PAYLOAD]
    return [sample.payload for sample in samples.samples(sender.name)]


@pytest.mark.parametrize("sender", SENDERS.values(), ids=list(SENDERS))
def test_a_sender_s_own_bytes_and_signature_pass_its_own_verifier_and_reader(
    sender: Sender,
) -> None:
    """`relay send` (serialise, sign) and ingest (verify, read) agree, for every sample."""
    assert sender.verify is not None, f"{sender.name} has no verify scheme"
    source = SourceConfig.model_validate(
        {"path": "/x", "verify": verify_config(sender.verify.name), "sender": sender.name}
    )
    assert source.reads_as == sender.name
    assert source.verify is not None
    verify = build_verifier(source.verify, time.time)
    for payload in payloads(sender):
        request = sign_request(source, payload, time.time)
        headers = {name.lower(): value for name, value in request.headers.items()}
        verify(request.body, headers)
        identity = sender.read("src", payload, request.body, headers)
        assert identifier_problem("id", identity.id) is None
        assert identifier_problem("type", identity.type) is None


def test_samples_are_shipped_for_exactly_the_senders_that_say_so() -> None:
    with_samples = {name for name, sender in SENDERS.items() if sender.samples}
    assert set(samples.SENDERS) == with_samples
    for name in with_samples:
        assert samples.samples(name), f"relay/samples/{name}/ holds no sample"


def test_a_sender_without_samples_is_a_scheme_any_application_speaks() -> None:
    assert {name for name, s in SENDERS.items() if not s.samples} == {
        "generic",
        "standard-webhooks",
    }


@pytest.mark.parametrize("scheme", SCHEMES.values(), ids=list(SCHEMES))
def test_each_verify_scheme_names_itself_and_is_documented(scheme: VerifyScheme) -> None:
    assert typing.get_args(scheme.model.model_fields["scheme"].annotation) == (scheme.name,)
    assert f"| `{scheme.name}` |" in README, f"README's Senders table lacks {scheme.name}"


@pytest.mark.parametrize("kind", TARGET_KINDS.values(), ids=list(TARGET_KINDS))
def test_each_target_kind_names_itself_and_is_documented(kind: TargetKind) -> None:
    assert issubclass(kind.model, TargetModel)
    assert typing.get_args(kind.model.model_fields["kind"].annotation) == (kind.name,)
    assert f"kind: {kind.name}" in README, f"README does not show kind: {kind.name}"
    assert callable(kind.plan)


def test_the_architecture_page_names_the_registries() -> None:
    for touch_point in ("`SENDERS`", "`TARGET_KINDS`", "relay/samples/NAME/"):
        assert touch_point in ARCHITECTURE
