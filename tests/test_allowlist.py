"""Allowlists and the client address behind trusted proxies."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from relay.allowlist import PRESETS, client_address, contains, parse_networks

SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "002_1aad11d67d5f37bd.txt"


def test_presets_hold_flagright_sandbox_and_production_lists() -> None:
    assert set(PRESETS["flagright-sandbox"]) == {
        "3.124.91.35",
        "3.66.58.17",
        "3.70.73.47",
        "13.251.166.15",
        "18.143.88.142",
        "46.137.237.47",
    }
    assert len(PRESETS["flagright-production"]) == 21
    assert "18.166.126.7" in PRESETS["flagright-production"]


@pytest.mark.skipif(not SEED.exists(), reason="the seed document is not beside this checkout")
def test_presets_match_the_seed_document_exactly() -> None:
    text = SEED.read_text()
    sandbox_text, production_text = text.split("\nSandbox\n")[1].split("\nProduction\n")
    ip = re.compile(r"(\d+\.\d+\.\d+\.\d+)")
    assert list(PRESETS["flagright-sandbox"]) == ip.findall(sandbox_text)
    assert list(PRESETS["flagright-production"]) == ip.findall(production_text.split("Skip to")[0])


def test_parse_networks_accepts_addresses_cidrs_and_presets() -> None:
    networks = parse_networks(["10.0.0.0/8", "192.0.2.7", "flagright-sandbox"])
    assert contains(networks, ipaddress.ip_address("10.1.2.3"))
    assert contains(networks, ipaddress.ip_address("192.0.2.7"))
    assert contains(networks, ipaddress.ip_address("3.66.58.17"))
    assert not contains(networks, ipaddress.ip_address("192.0.2.8"))


def test_ipv4_mapped_ipv6_peer_matches_ipv4_rules() -> None:
    assert contains(parse_networks(["127.0.0.1"]), ipaddress.ip_address("::ffff:127.0.0.1"))


def test_parse_networks_names_the_bad_item() -> None:
    with pytest.raises(
        ValueError, match='"flagright-prod" is neither an address, a CIDR nor a preset'
    ):
        parse_networks(["flagright-prod"])


PROXIES = parse_networks(["10.0.0.0/8"])


def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    assert client_address("203.0.113.9", "3.66.58.17", PROXIES) == ipaddress.ip_address(
        "203.0.113.9"
    )


def test_forwarded_for_is_read_right_to_left_skipping_trusted_hops() -> None:
    address = client_address("10.0.0.2", "6.6.6.6, 3.66.58.17, 10.0.0.1", PROXIES)
    assert address == ipaddress.ip_address("3.66.58.17")


def test_only_trusted_hops_yield_the_leftmost() -> None:
    assert client_address("10.0.0.2", "10.0.0.3", PROXIES) == ipaddress.ip_address("10.0.0.3")


def test_garbled_hop_stops_at_the_last_vouched_address() -> None:
    assert client_address("10.0.0.2", "nonsense", PROXIES) == ipaddress.ip_address("10.0.0.2")
