#!/usr/bin/env python3
"""
A caching forward proxy, with a demo origin it starts itself.

    python3 examples/caching_forward_proxy.py --demo        # make requests, print, exit
    python3 examples/caching_forward_proxy.py [--port 8080] [--cache-dir DIR]
    curl -x http://127.0.0.1:8080 -D - http://127.0.0.1:<origin port>/fresh

The demo origin has two pages:

- ``/fresh`` says ``Cache-Control: max-age=30``: the first request is a miss
  and is stored; the next ones are hits, answered without the origin.
- ``/validated`` says ``Cache-Control: no-cache`` with an ``ETag``: it is
  stored, but every use is revalidated with ``If-None-Match``; the origin
  answers ``304 Not Modified`` and the proxy serves its stored copy.

The cache is put in front of the proxy's upstream side with
`caching_fetcher_factory`, which is all it takes: the cache is an `IFetcher`
that wraps another.  Each response says what happened in ``X-Cache`` and in
``Cache-Status`` (RFC 9211).
"""

from __future__ import annotations

import argparse

from twisted.internet import defer, protocol
from twisted.web import resource, server

from multiproxy.cache import CacheConfig, caching_fetcher_factory
from multiproxy.forward import ForwardProxy


class DemoOrigin(resource.Resource):
    """``/fresh`` (fresh for 30 s) and ``/validated`` (revalidated on every use)."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, bool]] = []  # (path, was conditional)

    def render_GET(self, request):
        path = request.path.decode()
        conditional = request.getHeader(b"if-none-match") is not None
        self.requests.append((path, conditional))
        request.setHeader(b"content-type", b"text/plain")
        if path == "/fresh":
            request.setHeader(b"cache-control", b"max-age=30")
            return b"a page that stays fresh for 30 seconds\n"
        if path == "/validated":
            request.setHeader(b"cache-control", b"no-cache")
            request.setHeader(b"etag", b'"v1"')
            if request.getHeader(b"if-none-match") == b'"v1"':
                request.setResponseCode(304)
                return b""
            return b"a page the cache must check before each use\n"
        request.setResponseCode(404)
        return b"not found\n"


def make_origin(reactor, port: int = 0):
    """Start the demo origin on 127.0.0.1; returns (listening port, DemoOrigin)."""
    origin = DemoOrigin()
    site = server.Site(origin, reactor=reactor)
    site.log = lambda request: None
    return reactor.listenTCP(port, site, interface="127.0.0.1"), origin


def make_proxy(reactor, cache_dir: str | None = None) -> ForwardProxy:
    """A forward proxy with the shared cache in front of its upstream side."""
    factory = ForwardProxy(reactor)
    wrap = caching_fetcher_factory(CacheConfig(directory=cache_dir), reactor)
    factory.fetcher = wrap(factory.fetcher)
    return factory


class _Body(protocol.Protocol):
    def __init__(self, done: defer.Deferred) -> None:
        self.done = done
        self.chunks: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason=None) -> None:
        self.done.callback(b"".join(self.chunks))


def read_body(response) -> defer.Deferred:
    done: defer.Deferred = defer.Deferred()
    response.deliverBody(_Body(done))
    return done


async def demo(reactor, proxy_port: int, origin_port: int, origin: DemoOrigin) -> list[str]:
    """Request each page three times through the proxy; returns the lines printed."""
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.web.client import ProxyAgent

    agent = ProxyAgent(TCP4ClientEndpoint(reactor, "127.0.0.1", proxy_port))
    lines = []
    for path in ("/fresh", "/validated"):
        for _ in range(3):
            url = f"http://127.0.0.1:{origin_port}{path}".encode()
            response = await agent.request(b"GET", url)
            await read_body(response)
            x_cache = (response.headers.getRawHeaders(b"x-cache") or [b"-"])[0].decode()
            status = (response.headers.getRawHeaders(b"cache-status") or [b"-"])[-1].decode()
            lines.append(f"GET {path:11s} {response.code}  X-Cache: {x_cache:12s} "
                         f"Cache-Status: {status}")
    for path in ("/fresh", "/validated"):
        seen = [c for p, c in origin.requests if p == path]
        lines.append(f"origin saw {path}: {len(seen)} request(s), {sum(seen)} conditional")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="proxy port (0: any free port)")
    parser.add_argument("--cache-dir", help="keep the cache on disk in this directory")
    parser.add_argument("--demo", action="store_true", help="make demo requests, print, exit")
    args = parser.parse_args()
    from twisted.internet import reactor

    origin_port, origin = make_origin(reactor)
    proxy = reactor.listenTCP(0 if args.demo else args.port, make_proxy(reactor, args.cache_dir),
                              interface="127.0.0.1")
    o, p = origin_port.getHost().port, proxy.getHost().port
    print(f"demo origin on 127.0.0.1:{o}, caching forward proxy on 127.0.0.1:{p}")
    if not args.demo:
        print(f"try: curl -x http://127.0.0.1:{p} -D - http://127.0.0.1:{o}/fresh")
        reactor.run()
        return

    async def run():
        try:
            for line in await demo(reactor, p, o, origin):
                print(line)
        finally:
            reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(run()))
    reactor.run()


if __name__ == "__main__":
    main()
