"""
PROXY protocol headers (HAProxy's PROXY protocol, versions 1 and 2), built
for sending to a backend so that it sees the real client address.

Pure: addresses in, bytes out.  Accepting the header on a listener uses
Twisted's own parsers (see `multiproxy.tcp._haproxy`).
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = ["V2_SIGNATURE", "proxy_header", "proxy_header_v1", "proxy_header_v2"]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY = 0x21  # version 2, command PROXY
_V2_LOCAL = 0x20  # version 2, command LOCAL (no address carried)
_TCP4 = 0x11
_TCP6 = 0x21

Address = tuple[str, int]


def _family(source: Address | None, destination: Address | None) -> int | None:
    """4 or 6 when both addresses are IP addresses of the same family, else None."""
    if source is None or destination is None:
        return None
    try:
        a = ipaddress.ip_address(source[0])
        b = ipaddress.ip_address(destination[0])
    except ValueError:
        return None
    if a.version != b.version:
        # An IPv4 client reaching an IPv6 listener shows up as ::ffff:a.b.c.d.
        mapped = [x.ipv4_mapped if x.version == 6 else x for x in (a, b)]
        if None in mapped:
            return None
        return 4
    if a.version == 6 and a.ipv4_mapped and b.ipv4_mapped:
        return 4
    return a.version


def _ip(host: str, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(host)
    if version == 4 and address.version == 6:
        address = address.ipv4_mapped  # type: ignore[assignment]
    return address


def proxy_header_v1(source: Address | None, destination: Address | None) -> bytes:
    """
    A version 1 (text) header: ``PROXY TCP4 src dst sport dport\\r\\n``, or
    ``PROXY UNKNOWN\\r\\n`` when the addresses are not both IP addresses.
    """
    version = _family(source, destination)
    if version is None:
        return b"PROXY UNKNOWN\r\n"
    assert source is not None and destination is not None
    src, dst = _ip(source[0], version), _ip(destination[0], version)
    return (
        f"PROXY TCP{version} {src.compressed} {dst.compressed} "
        f"{source[1]} {destination[1]}\r\n"
    ).encode("ascii")


def proxy_header_v2(source: Address | None, destination: Address | None) -> bytes:
    """
    A version 2 (binary) header with command PROXY over TCP4 or TCP6, or
    command LOCAL (no addresses) when the addresses are not both IP.
    """
    version = _family(source, destination)
    if version is None:
        return V2_SIGNATURE + struct.pack("!BBH", _V2_LOCAL, 0x00, 0)
    assert source is not None and destination is not None
    src, dst = _ip(source[0], version), _ip(destination[0], version)
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    family = _TCP4 if version == 4 else _TCP6
    return V2_SIGNATURE + struct.pack("!BBH", _V2_PROXY, family, len(body)) + body


def proxy_header(version: str, source: Address | None, destination: Address | None) -> bytes:
    """The header of ``version`` ("v1" or "v2")."""
    if version == "v1":
        return proxy_header_v1(source, destination)
    if version == "v2":
        return proxy_header_v2(source, destination)
    raise ValueError(f"PROXY protocol version must be v1 or v2, not {version!r}")
