"""Source IP allowlists, and the client address behind trusted proxies.

`X-Forwarded-For` is read only when the connecting peer is a trusted proxy, right to left,
skipping trusted hops: a client talking to relay directly cannot choose its own address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Flagright's published webhook source addresses by region ("Subscribe" guide).
FLAGRIGHT_REGIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "flagright-sandbox": {
        "EU": ("3.124.91.35", "3.66.58.17", "3.70.73.47"),
        "Asia": ("13.251.166.15", "18.143.88.142", "46.137.237.47"),
    },
    "flagright-production": {
        "US (Oregon)": ("35.155.123.185", "44.237.56.178", "52.11.98.137"),
        "EU (Frankfurt)": ("3.67.28.78", "3.76.95.10", "35.156.181.187"),
        "EU (London)": ("18.132.155.115", "18.134.212.219", "35.177.249.136"),
        "Asia (Singapore)": ("18.139.42.183", "3.1.188.28", "3.1.234.194"),
        "Asia (Hong Kong)": ("18.166.126.7", "43.198.196.218", "43.199.165.157"),
        "Australia (Sydney)": ("18.139.42.183", "3.104.94.7", "54.79.45.195"),
        "Middle East (UAE)": ("3.28.175.208", "3.28.224.220", "51.112.26.119"),
    },
}
PRESETS: dict[str, tuple[str, ...]] = {
    name: tuple(address for addresses in regions.values() for address in addresses)
    for name, regions in FLAGRIGHT_REGIONS.items()
}


def parse_networks(items: Iterable[str]) -> list[Network]:
    """CIDRs, bare addresses and preset names; raise ValueError naming the bad item."""
    networks: list[Network] = []
    for item in items:
        if item in PRESETS:
            networks.extend(ipaddress.ip_network(a) for a in PRESETS[item])
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            presets = ", ".join(sorted(PRESETS))
            raise ValueError(
                f'"{item}" is neither an address, a CIDR nor a preset ({presets})'
            ) from exc
    return networks


def contains(networks: Sequence[Network], address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[Network]
) -> Address | None:
    """The address that sent the request, as far as trusted proxies vouch for it."""
    try:
        address: Address = ipaddress.ip_address(peer or "")
    except ValueError:
        return None
    if not forwarded_for or not contains(trusted_proxies, address):
        return address
    for hop in reversed([h.strip() for h in forwarded_for.split(",")]):
        try:
            address = ipaddress.ip_address(hop)
        except ValueError:
            return address  # a garbled hop: stop at the last address a trusted proxy gave
        if not contains(trusted_proxies, address):
            return address
    return address
