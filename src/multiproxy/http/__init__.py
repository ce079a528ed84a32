"""
HTTP/1.x machinery shared by the forward and reverse proxies.

The sans-I/O core (`RequestReader`, `ResponseReader`, the writers, `Headers`,
the hop-by-hop rules) needs no reactor; the Twisted layer
(`HTTPServerProtocol`, `ConnectionPool`, `UpstreamFetcher`) is what the
proxies subclass and compose.  `IFetcher` / `IResponseSink` is the seam a
cache plugs into.
"""

from multiproxy.http._client import ConnectionPool, UpstreamConnection, UpstreamFetcher
from multiproxy.http._exchange import (
    ForwardedRequest,
    IFetcher,
    IResponseSink,
    RequestBody,
)
from multiproxy.http._server import Exchange, HTTPProxyFactory, HTTPServerProtocol, Timeouts
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import (
    Limits,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
)

__all__ = [
    "ConnectionPool",
    "Exchange",
    "ForwardedRequest",
    "HTTPProxyFactory",
    "HTTPServerProtocol",
    "Headers",
    "IFetcher",
    "IResponseSink",
    "Limits",
    "RequestBody",
    "RequestHead",
    "RequestReader",
    "ResponseHead",
    "ResponseReader",
    "Timeouts",
    "UpstreamConnection",
    "UpstreamFetcher",
]
