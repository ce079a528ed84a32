"""
The forwarding headers a reverse proxy adds: ``X-Forwarded-For``,
``X-Forwarded-Proto``, ``X-Forwarded-Host`` and RFC 7239 ``Forwarded``.

A backend uses these to learn who the client was and what URL it used, so a
client must not be able to forge them.  The incoming values are kept (and
extended) only when the direct peer is in one of the configured trusted
networks (another proxy or load balancer of ours); from anybody else they
are removed and replaced.  Pure functions over `Headers`; no reactor.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from multiproxy import _memo as memo
from multiproxy.http1._headers import Headers

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FORWARDING_FIELDS = frozenset(
    {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"}
)
# RFC 9110 5.6.2 token
_TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class ForwardedSettings:
    """
    How a reverse proxy reports the client to its backends.

    @ivar trusted: networks whose forwarding headers are believed (kept and
        extended); every other peer's are replaced.
    @ivar x_forwarded: set the ``X-Forwarded-*`` family.
    @ivar forwarded: set RFC 7239 ``Forwarded``.
    @ivar include_port: put the client's port in ``Forwarded: for=``.
    @ivar by: this proxy's identifier for ``Forwarded: by=`` (an IP address,
        ``ip:port``, or an obfuscated ``_name``); empty leaves ``by`` out.
    """

    trusted: tuple[Network, ...] = ()
    x_forwarded: bool = True
    forwarded: bool = True
    include_port: bool = False
    by: str = ""

    @classmethod
    def from_strings(cls, trusted: Iterable[str], **kwargs: object) -> ForwardedSettings:
        """Build from network strings (``10.0.0.0/8``, ``::1``); ValueError names a bad one."""
        return cls(trusted=tuple(parse_network(n) for n in trusted), **kwargs)  # type: ignore[arg-type]

    def trusts(self, peer: str) -> bool:
        """Whether the direct peer ``peer`` (an IP address string) is trusted."""
        if not self.trusted:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.trusted)


def parse_network(text: str) -> Network:
    """A network (``10.0.0.0/8``) or single address (``192.0.2.1``, ``::1``)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP network; write it as 10.0.0.0/8, 192.0.2.7 or fd00::/8"
        ) from None


def apply_forwarded(
    headers: Headers,
    *,
    client_host: str,
    client_port: int | None,
    proto: str,
    host: bytes | None,
    settings: ForwardedSettings,
) -> Headers:
    """
    The request headers to send to a backend, with forwarding fields set.

    @param headers: the client's request headers (not modified).
    @param client_host: the direct peer's IP address ("" for a UNIX socket).
    @param client_port: its port (None when unknown).
    @param proto: ``http`` or ``https``: how the client reached us.
    @param host: the client's Host field value (None if it sent none).
    @return: a new `Headers`: the original fields in order, the forwarding
        fields dropped if the peer is untrusted, then ours appended.
    """
    trusted = settings.trusts(client_host)
    client_host, node = _client_forms(client_host)
    if settings.include_port and client_port is not None:
        node = _node(client_host, client_port)
    if not trusted:
        # The common case: whatever the client sent is dropped, ours appended.
        ours = _fresh_fields(client_host, node, proto, host, settings.x_forwarded,
                             settings.forwarded, settings.by or None)
        out = headers.without(_FORWARDING_FIELDS)
        for name, value in ours:
            out.add(name, value)
        return out
    out = headers.copy()
    if settings.x_forwarded:
        _set_x_forwarded(out, client_host or "unknown", proto, host, trusted)
    if settings.forwarded:
        element = _element(node, settings.by or None, proto, host)
        previous = out.combined(b"forwarded")
        out.remove(b"forwarded")
        out.add(b"Forwarded", previous + b", " + element if previous else element)
    return out


@memo.cached("reverse.fresh-fields", 4096)
def _fresh_fields(client: str, node: str, proto: str, host: bytes | None, x_forwarded: bool,
                  forwarded: bool, by: str | None) -> list[tuple[bytes, bytes]]:
    fields = []
    if x_forwarded:
        fields.append((b"X-Forwarded-For", client.encode("ascii")))
        fields.append((b"X-Forwarded-Proto", proto.encode("ascii")))
        if host is not None:
            fields.append((b"X-Forwarded-Host", host))
    if forwarded:
        fields.append((b"Forwarded", _element(node, by, proto, host)))
    return fields


@memo.cached("reverse.element", 4096)
def _element(node: str, by: str | None, proto: str, host: bytes | None) -> bytes:
    return forwarded_element(for_=node, by=by, proto=proto, host=host)


def _set_x_forwarded(
    out: Headers, client: str, proto: str, host: bytes | None, trusted: bool
) -> None:
    chain = out.combined(b"x-forwarded-for") if trusted else None
    out.remove(b"x-forwarded-for")
    ours = client.encode("ascii")
    out.add(b"X-Forwarded-For", chain + b", " + ours if chain else ours)
    # A trusted proxy in front already saw the client's scheme and host: keep them.
    if not (trusted and b"x-forwarded-proto" in out):
        out.set(b"X-Forwarded-Proto", proto.encode("ascii"))
    if host is not None and not (trusted and b"x-forwarded-host" in out):
        out.set(b"X-Forwarded-Host", host)


def forwarded_element(
    *, for_: str | None, by: str | None, proto: str | None, host: bytes | None
) -> bytes:
    """
    One RFC 7239 ``forwarded-element`` (``for=...;proto=...``), with every
    value that is not a token quoted (IPv6 nodes, ports, hosts with ports).
    """
    pairs = []
    if by:
        pairs.append(b"by=" + _value(by.encode("ascii")))
    if for_:
        pairs.append(b"for=" + _value(for_.encode("ascii")))
    if host is not None:
        pairs.append(b"host=" + _value(host))
    if proto:
        pairs.append(b"proto=" + _value(proto.encode("ascii")))
    return b";".join(pairs)


def _node(address: str, port: int | None) -> str:
    """An RFC 7239 section 6 node: ``192.0.2.1``, ``[2001:db8::1]:8080``, ``unknown``."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        name = address if address.startswith("_") else "unknown"
    else:
        name = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    return f"{name}:{port}" if port is not None else name


@memo.cached("reverse.client-forms", 4096)
def _client_forms(address: str) -> tuple[str, str]:
    """The canonical address of a peer ("unknown" if none) and its RFC 7239 node (cached)."""
    canonical = _canonical(address)
    return canonical or "unknown", _node(canonical, None)


def _canonical(address: str) -> str:
    """An IP address in canonical form, IPv4-mapped IPv6 shown as IPv4."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.compressed
    return ip.compressed


def _value(value: bytes) -> bytes:
    if _TOKEN_RE.match(value):
        return value
    escaped = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    return b'"' + escaped + b'"'


def effective_client(headers: Headers, peer: str, settings: ForwardedSettings) -> str:
    """
    The address of the original client: the peer itself unless it is
    trusted, else the right-most ``X-Forwarded-For`` address that is not a
    trusted proxy (the left-most ones can be forged by the client).
    """
    if not settings.trusts(peer):
        return peer
    hops = [h.strip().decode("latin-1") for h in b",".join(headers.get_all(b"x-forwarded-for")).split(b",")]
    for hop in reversed([h for h in hops if h]):
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return peer
        if not settings.trusts(hop):
            return hop
    return peer
