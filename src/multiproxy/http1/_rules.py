"""
Which header fields a proxy forwards (RFC 9110 7.6.1).

Hop-by-hop fields describe one connection and must not be passed on; the
``Connection`` field can name further ones.  Message framing is the caller's
business: `end_to_end` never removes Content-Length or Host, even when
``Connection`` names them, so a client cannot make the proxy drop the fields
that say where a message goes and where it ends.
"""

from __future__ import annotations

from multiproxy import _memo as memo
from multiproxy.http1._headers import Headers, list_tokens

__all__ = ["HOP_BY_HOP", "NOT_IN_TRAILERS", "end_to_end", "trailers_to_forward", "via_value"]

HOP_BY_HOP: frozenset[bytes] = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }
)
"""Lower-case names of the fields that never cross a proxy (RFC 9110 7.6.1, RFC 9112)."""

_PROTECTED = frozenset({b"content-length", b"host"})


# (fields always dropped, Connection values) -> the names to drop; bounded.
_DROPS = memo.table("http1.connection-drops", 1024)


def end_to_end(headers: Headers, hop_by_hop: frozenset[bytes] = HOP_BY_HOP) -> Headers:
    """
    A new `Headers` holding only the end-to-end fields of ``headers``:
    without the ``hop_by_hop`` fields (a proxy may pass a superset of
    `HOP_BY_HOP`) and without the fields named by ``Connection``
    (Content-Length and Host are always kept).  Order and repeats are kept.
    """
    connection = headers.get_all(b"connection")
    if not connection:
        return headers.without(hop_by_hop)
    # Nearly every message says "keep-alive" or "close": work each out once.
    key = (hop_by_hop, tuple(connection))
    drop = _DROPS.get(key)
    if drop is None:
        drop = hop_by_hop.union(list_tokens(connection)).difference(_PROTECTED)
        _DROPS.remember(key, drop)
    return headers.without(drop)


def via_value(version: bytes, pseudonym: bytes) -> bytes:
    """
    The ``Via`` entry this proxy adds to a message received as ``version``
    (``b"HTTP/1.1"``): RFC 9110 7.6.3's received-protocol and pseudonym,
    ``b"1.1 multiproxy"``.
    """
    if version.startswith(b"HTTP/"):
        version = version[5:]
    return version + b" " + pseudonym


NOT_IN_TRAILERS: frozenset[bytes] = HOP_BY_HOP | frozenset({
    b"content-length", b"content-encoding", b"content-type", b"content-range", b"host",
    b"cache-control", b"expect", b"max-forwards", b"pragma", b"range", b"authorization",
    b"set-cookie", b"cookie", b"www-authenticate", b"age", b"expires", b"date", b"location",
    b"retry-after", b"vary", b"warning",
})
"""Fields a trailer section must not carry (RFC 9110 6.5.1: framing, routing,
request modifiers, authentication, response control and content format)."""


def trailers_to_forward(trailers: Headers) -> list[tuple[bytes, bytes]]:
    """The trailer fields a proxy passes on (gRPC's ``grpc-status`` among them)."""
    return [(n, v) for n, v in trailers if n.lower() not in NOT_IN_TRAILERS]
