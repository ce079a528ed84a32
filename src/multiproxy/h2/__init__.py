"""
HTTP/2 on the client side of the HTTP proxies (RFC 9113), over the h2 library.

A client connection says HTTP/2 by ALPN (``h2`` on a TLS listener) or, on a
plain listener, with the connection preface sent first ("prior knowledge",
RFC 9113 3.3).  `H2ServerConnection` then serves it; each stream is one
exchange of the proxy's own HTTP/1 protocol, so HTTP/2 requests meet the
same policy, routes, cache, limits, access log and error answers as HTTP/1
ones.  An ``Upgrade: h2c`` request stays refused (RFC 9113 3.1 drops it;
through a proxy it is a way past its rules).
"""

from __future__ import annotations

from multiproxy.h2._connection import HIGH_WATER, H2ServerConnection, StreamTransport
from multiproxy.h2._settings import PREFACE, H2Limits, HTTP2Settings
from multiproxy.h2._translate import MalformedRequest, read_request, request_bytes, response_fields

__all__ = [
    "HIGH_WATER",
    "PREFACE",
    "H2Limits",
    "H2ServerConnection",
    "HTTP2Settings",
    "MalformedRequest",
    "StreamTransport",
    "read_request",
    "request_bytes",
    "response_fields",
]
