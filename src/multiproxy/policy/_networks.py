"""
Client addresses and networks (IPv4 and IPv6 CIDR) for rules and limits.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from multiproxy import _memo as memo

__all__ = ["NetworkSet", "client_address", "parse_network"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_network(text: str) -> IPNetwork:
    """
    Parse ``10.0.0.0/8``, ``fd00::/8`` or a bare address (a network of one).

    @raise ValueError: the text is not a network, or has host bits set
        (``10.0.0.1/8``), which is almost always a typo.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a network such as 10.0.0.0/8, got {text!r}")
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1:].replace("]", "", 1)
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a network such as 10.0.0.0/8 or fd00::/8 ({e})") \
            from None
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            # Clients on a dual-stack socket show up as IPv4 (see client_address).
            return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


@memo.cached("policy.client-address", 4096)
def client_address(host: str) -> IPAddress | None:
    """
    The address of a client as given by the transport (``intent.client_host``),
    with IPv4-mapped IPv6 addresses (a dual-stack listener's view of an IPv4
    client) turned into IPv4; None if it is not an IP address (a UNIX socket).
    """
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class NetworkSet:
    """
    A set of networks with membership in time proportional to the number of
    distinct prefix lengths (at most 33 or 129), not the number of networks.
    """

    __slots__ = ("networks", "_v4", "_v6")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(networks)
        v4: dict[int, set[int]] = {}
        v6: dict[int, set[int]] = {}
        for network in self.networks:
            table, bits = (v4, 32) if network.version == 4 else (v6, 128)
            shift = bits - network.prefixlen
            table.setdefault(shift, set()).add(int(network.network_address) >> shift)
        self._v4 = tuple((shift, frozenset(keys)) for shift, keys in sorted(v4.items()))
        self._v6 = tuple((shift, frozenset(keys)) for shift, keys in sorted(v6.items()))

    def __contains__(self, address: object) -> bool:
        if isinstance(address, ipaddress.IPv4Address):
            table = self._v4
        elif isinstance(address, ipaddress.IPv6Address):
            table = self._v6
        else:
            return False
        value = int(address)
        for shift, keys in table:
            if value >> shift in keys:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"NetworkSet({[str(n) for n in self.networks]!r})"
