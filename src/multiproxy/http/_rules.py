"""
Which header fields a proxy forwards (RFC 9110 7.6.1).

Hop-by-hop fields describe one connection and must not be passed on; the
``Connection`` field can name further ones.  Message framing is the caller's
business: `end_to_end` never removes Content-Length or Host, even when
``Connection`` names them, so a client cannot make the proxy drop the fields
that say where a message goes and where it ends.
"""

from __future__ import annotations

from multiproxy.http._headers import Headers

__all__ = ["HOP_BY_HOP", "end_to_end"]

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


def end_to_end(headers: Headers) -> Headers:
    """
    A new `Headers` holding only the end-to-end fields of ``headers``:
    without `HOP_BY_HOP` fields and without the fields named by ``Connection``
    (Content-Length and Host are always kept).  Order and repeats are kept.
    """
    drop = HOP_BY_HOP
    options = headers.tokens(b"connection")
    if options:
        drop = HOP_BY_HOP.union(options).difference(_PROTECTED)
    return headers.without(drop)
