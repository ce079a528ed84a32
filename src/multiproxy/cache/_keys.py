"""
Cache keys (RFC 9111 section 2 and 4.1).

The primary key is the normalised target URI.  A response with ``Vary``
also records, for each field it names, the normalised value that field had
in the request that caused it to be stored; a later request matches only if
its own normalised values are the same (absent matches only absent), and
``Vary: *`` never matches.  Normalisation applies the transformations RFC
9111 4.1 allows: whitespace around list members, combining field lines,
and, for the content-negotiation fields whose members are unordered and
case-insensitive, member order and case.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from multiproxy import _memo as memo
from multiproxy.cache._directives import split_list
from multiproxy.http1._target import normalise_percent

if TYPE_CHECKING:
    from multiproxy.http1._headers import Headers

#: One Vary-nominated field: (lower-case name, normalised value or None if absent).
VaryValue = tuple[bytes, bytes | None]

_DEFAULT_PORTS = {b"http": b"80", b"https": b"443"}

# Fields whose list members are unordered and (for the last three) case-insensitive.
_UNORDERED = frozenset({b"accept", b"accept-charset", b"accept-encoding", b"accept-language"})


def effective_url(scheme: bytes, authority: bytes, target: bytes) -> bytes:
    """
    The target URI of a request (RFC 9110 7.1): ``target`` itself when it is
    absolute, else built from ``scheme``, ``authority`` (the Host) and the
    origin-form ``target``.
    """
    if b"://" in target[:16]:
        return target
    if not target.startswith(b"/"):
        target = b"/" + target
    return scheme + b"://" + authority + target


@memo.cached("cache.cache-key", 4096)
def cache_key(url: bytes) -> bytes:
    """
    The primary cache key for an absolute ``url``: scheme and host lower-cased,
    default port and fragment dropped, empty path made ``/``, percent-encoding
    normalised (RFC 9110 4.2.3).
    """
    scheme, sep, rest = url.partition(b"://")
    if not sep:
        return url
    scheme = scheme.lower()
    cut = len(rest)
    for ch in (b"/", b"?", b"#"):
        at = rest.find(ch)
        if 0 <= at < cut:
            cut = at
    authority, tail = rest[:cut], rest[cut:]
    tail = tail.partition(b"#")[0]
    if b"@" in authority:
        authority = authority.rpartition(b"@")[2]
    authority = authority.lower()
    if authority.startswith(b"["):
        close = authority.find(b"]")
        if close < 0:
            host, port = authority, b""
        else:
            host, port = authority[: close + 1], authority[close + 2 :]
    else:
        host, _, port = authority.partition(b":")
    if port == _DEFAULT_PORTS.get(scheme) or port == b"":
        authority = host
    else:
        authority = host + b":" + port
    if not tail.startswith(b"/"):
        tail = b"/" + tail
    return scheme + b"://" + authority + normalise_percent(tail)


def vary_names(headers: Headers) -> tuple[bytes, ...] | None:
    """
    The field names a response's ``Vary`` nominates, lower-cased, sorted and
    unique; ``()`` when there is no Vary; None when it contains ``*``.
    """
    names: set[bytes] = set()
    for value in headers.get_all(b"vary"):
        for member in value.split(b","):
            member = member.strip(b" \t").lower()
            if member == b"*":
                return None
            if member:
                names.add(member)
    return tuple(sorted(names))


def _normalise_member(name: bytes, member: bytes) -> bytes:
    params = [p.strip(b" \t") for p in member.split(b";")]
    out = [params[0].lower()]
    for p in params[1:]:
        key, eq, val = p.partition(b"=")
        key = key.strip(b" \t").lower()
        val = val.strip(b" \t")
        if key == b"q":
            try:
                q = float(val)
            except ValueError:
                pass
            else:
                if q == 1.0:
                    continue
                val = (b"%.3f" % q).rstrip(b"0").rstrip(b".") or b"0"
        elif name != b"accept":
            val = val.lower()
        out.append(key + eq + val)
    return b";".join(out)


def normalise_field(name: bytes, headers: Headers) -> bytes | None:
    """
    The normalised value of request field ``name`` (lower case) for Vary
    matching, or None when the request does not have it.
    """
    values = headers.get_all(name)
    if not values:
        return None
    members: list[bytes] = []
    for value in values:
        members.extend(split_list(value))
    if name in _UNORDERED:
        members = sorted({_normalise_member(name, m) for m in members})
    return b",".join(members)


def vary_values(names: tuple[bytes, ...], headers: Headers) -> tuple[VaryValue, ...]:
    """The secondary key of a request for the Vary field ``names``."""
    return tuple((name, normalise_field(name, headers)) for name in names)


def vary_matches(stored: tuple[VaryValue, ...], headers: Headers) -> bool:
    """True when a request's nominated fields match those a response was stored with."""
    for name, value in stored:
        if normalise_field(name, headers) != value:
            return False
    return True


def variant_id(vary: tuple[VaryValue, ...]) -> bytes:
    """A short, stable identifier for one secondary key (empty without Vary)."""
    if not vary:
        return b""
    h = hashlib.blake2b(digest_size=12)
    for name, value in vary:
        h.update(name)
        h.update(b"\x00" if value is None else b"\x01" + value)
        h.update(b"\n")
    return h.hexdigest().encode("ascii")
