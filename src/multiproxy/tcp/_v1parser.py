"""
Reading PROXY protocol version 1 header lines, strictly.

Twisted's ``V1Parser`` splits the line on spaces and passes the pieces on
unchecked: ``999.2.3.4``, port ``99999``, an IPv4 address in a ``TCP6``
line or extra fields all make a header whose bogus client address the relay
would trust, and a port that is not a number raises a bare ``ValueError``.
The specification (HAProxy's proxy-protocol.txt, section 2.1) says a
receiver must drop a connection whose header does not exactly match the
format; `StrictV1Parser` refuses such lines with Twisted's own
``InvalidProxyHeader`` errors, so the wrapper closes the connection.

Pure: a header line in, a ``ProxyInfo`` (or an error) out.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.protocols.haproxy._exceptions import (
    InvalidNetworkProtocol,
    InvalidProxyHeader,
    MissingAddressData,
)
from twisted.protocols.haproxy._info import ProxyInfo
from twisted.protocols.haproxy._v1parser import V1Parser

__all__ = ["StrictV1Parser", "parse_v1_line"]

MAX_V1_LINE = 107 - 2
"""The longest v1 header line, without its CRLF (the specification's 107 bytes with it)."""


def _address(family: bytes, text: bytes) -> str:
    try:
        host = text.decode("ascii")
        if family == b"TCP4":
            ipaddress.IPv4Address(host)
        elif "%" in host:  # a scope ID names an interface of the sender, not an address
            raise ValueError(host)
        else:
            ipaddress.IPv6Address(host)
    except ValueError:
        raise InvalidProxyHeader() from None
    return host


def _port(text: bytes) -> int:
    # bytes.isdigit is ASCII digits only: no sign, space or underscore as int() allows.
    if not (1 <= len(text) <= 5 and text.isdigit()):
        raise InvalidProxyHeader()
    port = int(text)
    if port > 65535:
        raise InvalidProxyHeader()
    return port


def parse_v1_line(line: bytes) -> ProxyInfo:
    """
    The addresses of one v1 header line (without its CRLF):
    ``PROXY TCP4|TCP6 source destination sport dport`` with single spaces,
    addresses of the announced family and ports 0-65535, or ``PROXY
    UNKNOWN ...`` (no addresses: the connection's own are used).

    @raises InvalidProxyHeader: (or a subclass) for anything else.
    """
    if len(line) > MAX_V1_LINE:
        raise InvalidProxyHeader()
    fields = line.split(b" ")
    if fields[0] != V1Parser.PROXYSTR or len(fields) < 2:
        raise InvalidProxyHeader()
    family = fields[1]
    if family == V1Parser.UNKNOWN_PROTO:
        return ProxyInfo(line, None, None)
    if family not in (V1Parser.TCP4_PROTO, V1Parser.TCP6_PROTO):
        raise InvalidNetworkProtocol()
    if len(fields) < 6:
        raise MissingAddressData()
    if len(fields) > 6:
        raise InvalidProxyHeader()
    source, destination = _address(family, fields[2]), _address(family, fields[3])
    sport, dport = _port(fields[4]), _port(fields[5])
    kind = IPv4Address if family == V1Parser.TCP4_PROTO else IPv6Address
    return ProxyInfo(line, kind("TCP", source, sport), kind("TCP", destination, dport))


class StrictV1Parser(V1Parser):
    """Twisted's v1 parser (buffering, line splitting) with `parse_v1_line` checking each line."""

    @classmethod
    def parse(cls, line: bytes) -> ProxyInfo:
        return parse_v1_line(line)
