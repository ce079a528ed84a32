"""
Parsing request targets a proxy acts on (RFC 9112 3.2, RFC 9110 4.2, RFC 3986).

A forward proxy receives absolute-form targets (``http://host:port/path``)
and CONNECT authority-form targets (``host:port``).  Both are checked
strictly here, before a policy looks at the host: anything ambiguous
(userinfo, an unbracketed IPv6 address, a fragment, raw non-ASCII) is refused
with a message a person can act on.  Host normalisation (IDNA, IP spellings)
is left to the policy: hosts come back lower-cased, as given.
"""

from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

from multiproxy import _memo as memo
from multiproxy.pipeline._errors import ProtocolError

__all__ = [
    "DEFAULT_PORTS",
    "AbsoluteTarget",
    "UnsupportedScheme",
    "is_origin_form",
    "normalise_percent",
    "parse_absolute_target",
    "parse_authority",
]

DEFAULT_PORTS: dict[str, int] = {"http": 80, "https": 443}
"""Schemes this proxy forwards, with their default ports."""

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def normalise_percent(part: bytes) -> bytes:
    """
    RFC 3986 6.2.2.1-2 on a URI part: percent-encoded unreserved characters
    decoded, every other escape in upper case (``%7e`` -> ``~``, ``%2f`` ->
    ``%2F``: an encoded slash stays encoded, so it never splits a segment).
    """
    if b"%" not in part:
        return part
    out = bytearray()
    i, n = 0, len(part)
    while i < n:
        c = part[i]
        if c == 0x25 and i + 2 < n and part[i + 1] in _HEX and part[i + 2] in _HEX:
            octet = int(part[i + 1 : i + 3], 16)
            if octet in _UNRESERVED:
                out.append(octet)
            else:
                out += b"%" + part[i + 1 : i + 3].upper()
            i += 3
            continue
        out.append(c)
        i += 1
    return bytes(out)


class UnsupportedScheme(ProtocolError):
    """An absolute-form target whose scheme the proxy does not speak."""

    status = 501
    reason = b"Not Implemented"


class AbsoluteTarget(NamedTuple):
    """An absolute-form request target, split up (built on every request: a named tuple)."""

    scheme: str
    """"http" or "https", lower case."""
    host: str
    """The host, lower case, IPv6 addresses without brackets."""
    port: int
    """The port given, or the scheme's default."""
    path: bytes
    """The path and query to send in origin-form ("/" when the target has none)."""


_SCHEME_RE = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*):")
# RFC 3986 reg-name without sub-delims: what a DNS name or IPv4 address can be.
_REG_NAME_RE = re.compile(rb"(?:[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2})+")
_VISIBLE_RE = re.compile(rb"[\x21-\x7e]*")
_MAX_TARGET_HOST = 255
# The usual shape: lower-case http(s), then authority and path in visible
# ASCII without "#"; a target of this shape whose authority is known needs
# no further checks.
_COMMON_RE = re.compile(rb"(https?)://([\x21\x22\x24-\x2e\x30-\x3e\x40-\x7e]*)(/[\x21\x22\x24-\x7e]*)?")


def is_origin_form(target: bytes) -> bool:
    """Whether ``target`` is in origin-form (``/path?query``)."""
    return target[:1] == b"/"


def _host(raw: bytes, what: bytes) -> str:
    """Check one host (bracketed IPv6 or reg-name) and return it lower-cased."""
    if not raw:
        raise ProtocolError(f"empty host in {_show(what)}")
    if raw[:1] == b"[":
        if raw[-1:] != b"]":
            raise ProtocolError(f"unterminated IPv6 literal in {_show(what)}")
        inner = raw[1:-1]
        if inner[:1] in (b"v", b"V"):
            raise ProtocolError(f"IPvFuture literals are not supported: {_show(what)}")
        if b"%" in inner:
            raise ProtocolError(f"IPv6 zone identifiers are not allowed in a URI: {_show(what)}")
        try:
            ipaddress.IPv6Address(inner.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError(f"invalid IPv6 literal in {_show(what)}") from None
        return inner.decode("ascii").lower()
    if b":" in raw:
        raise ProtocolError(f"IPv6 address must be in brackets: {_show(what)}")
    if b"@" in raw:
        raise ProtocolError(f"userinfo (user@host) is not allowed in a target: {_show(what)}")
    if len(raw) > _MAX_TARGET_HOST or _REG_NAME_RE.fullmatch(raw) is None:
        if any(c > 0x7E for c in raw):
            raise ProtocolError(
                f"non-ASCII host {_show(what)}: send internationalised names in IDNA form (xn--)"
            )
        raise ProtocolError(f"invalid host {_show(raw)}")
    return raw.decode("ascii").lower()


def _port(raw: bytes, what: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5:
        raise ProtocolError(f"invalid port {_show(raw)} in {_show(what)}")
    port = int(raw)
    if not 1 <= port <= 65535:
        raise ProtocolError(f"port {port} out of range in {_show(what)}")
    return port


def _split_host_port(authority: bytes, what: bytes) -> tuple[bytes, bytes | None]:
    """Split ``host[:port]``; port is None when there is no colon."""
    if authority[:1] == b"[":
        close = authority.find(b"]")
        if close < 0:
            raise ProtocolError(f"unterminated IPv6 literal in {_show(what)}")
        host, rest = authority[: close + 1], authority[close + 1 :]
        if not rest:
            return host, None
        if rest[:1] != b":":
            raise ProtocolError(f"unexpected text after IPv6 literal in {_show(what)}")
        return host, rest[1:]
    host, colon, port = authority.partition(b":")
    if colon and b":" in port:
        raise ProtocolError(f"IPv6 address must be in brackets: {_show(what)}")
    return host, (port if colon else None)


def parse_absolute_target(target: bytes) -> AbsoluteTarget:
    """
    Parse an absolute-form request target (``scheme://host[:port][/path][?query]``).

    Raises `ProtocolError` (400) for anything else or anything ambiguous,
    and `UnsupportedScheme` (501) for a scheme other than http and https.
    """
    common = _COMMON_RE.fullmatch(target)
    if common is not None:
        scheme_bytes, authority, path = common.groups()
        scheme = "http" if scheme_bytes == b"http" else "https"
        known = _AUTHORITIES.get((scheme, authority))
        if known is not None:
            return AbsoluteTarget(scheme, known[0], known[1], path or b"/")
    if not target or _VISIBLE_RE.fullmatch(target) is None:
        if any(c > 0x7E for c in target):
            raise ProtocolError(f"non-ASCII bytes in request target {_show(target)}")
        raise ProtocolError(f"invalid characters in request target {_show(target)}")
    match = _SCHEME_RE.match(target)
    if match is None:
        if target[:1] == b"/":
            raise ProtocolError(
                "origin-form target sent to a forward proxy: use an absolute URI "
                "(http://host/path)"
            )
        if target == b"*":
            raise ProtocolError("asterisk-form target is not allowed here")
        raise ProtocolError(f"request target is not an absolute URI: {_show(target)}")
    scheme = match.group(1).decode("ascii").lower()
    rest = target[match.end() :]
    if scheme not in DEFAULT_PORTS:
        if rest.isdigit():
            raise ProtocolError(
                f"request target is not an absolute URI: {_show(target)} "
                "(authority-form is only for CONNECT)"
            )
        raise UnsupportedScheme(f"unsupported scheme {scheme!r}: only http and https are proxied")
    if rest[:2] != b"//":
        raise ProtocolError(f"absolute URI without an authority: {_show(target)}")
    rest = rest[2:]
    if b"#" in rest:
        raise ProtocolError(f"fragment (#...) not allowed in a request target: {_show(target)}")
    cut = len(rest)
    for delimiter in (b"/", b"?"):
        i = rest.find(delimiter)
        if 0 <= i < cut:
            cut = i
    authority, path = rest[:cut], rest[cut:]
    known = _AUTHORITIES.get((scheme, authority))
    if known is None:
        known = _authority(scheme, authority, target)
    host, port = known
    if not path:
        path = b"/"
    elif path[:1] == b"?":
        path = b"/" + path
    return AbsoluteTarget(scheme, host, port, path)


# (scheme, authority) -> (host, port) for authorities already checked; bounded.
_AUTHORITIES = memo.table("http1.authorities", 4096)


def _authority(scheme: str, authority: bytes, target: bytes) -> tuple[str, int]:
    """Check the authority of an absolute-form target: (host, port)."""
    if b"@" in authority:
        raise ProtocolError(
            f"userinfo (user@host) is not allowed in a request target: {_show(target)}"
        )
    raw_host, raw_port = _split_host_port(authority, target)
    host = _host(raw_host, target)
    if raw_port is None or raw_port == b"":
        # RFC 3986 3.2.3: an empty port is the scheme's default.
        port = DEFAULT_PORTS[scheme]
    else:
        port = _port(raw_port, target)
    _AUTHORITIES.remember((scheme, authority), (host, port))
    return host, port


def parse_authority(target: bytes) -> tuple[str, int]:
    """
    Parse a CONNECT authority-form target (``host:port``, IPv6 in brackets);
    the port is required.  Raises `ProtocolError` (400).
    """
    if not target or _VISIBLE_RE.fullmatch(target) is None:
        raise ProtocolError(f"invalid characters in CONNECT target {_show(target)}")
    if b"@" in target:
        raise ProtocolError(f"userinfo (user@host) is not allowed in a CONNECT target: {_show(target)}")
    if b"/" in target or b"?" in target or b"#" in target:
        raise ProtocolError(f"CONNECT target must be host:port, got {_show(target)}")
    raw_host, raw_port = _split_host_port(target, target)
    host = _host(raw_host, target)
    if not raw_port:
        raise ProtocolError(f"CONNECT target needs a port (host:port): {_show(target)}")
    return host, _port(raw_port, target)


def _show(value: bytes, limit: int = 80) -> str:
    text = repr(value[:limit])[2:-1]
    return text + ("..." if len(value) > limit else "")
