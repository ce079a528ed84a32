#!/usr/bin/env python3
"""
CPU cost of one cache hit (and one miss) through the forward proxy, without sockets.

    python3 bench/cache_hotpath_bench.py [--requests 20000] [--profile hit|miss|pass|core]

Drives the real ForwardProxy protocol with the shared cache in front of its
fetcher (wired as `make_forward_proxy` does) and a real pooled
UpstreamConnection, over in-memory transports, with a fake clock.

- hit: one URL stored once (``Cache-Control: max-age=3600``), then asked
  for again and again; nothing goes upstream.
- miss: a new URL every request; each response comes back on the upstream
  side and is stored.
- pass: one URL whose response says ``Cache-Control: no-store``: fetched
  every time, never stored; beside it, "no cache" is the same request and
  response through a forward proxy without the cache, so the difference is
  what the cache costs a response it may not keep.
- core: the cache's own share of a hit: the `CachingFetcher` is handed the
  same forwarded request again and again and answers into a sink that does
  nothing (no parsing, no policy, no response writing).

Reports CPU microseconds per request (best of 5 runs) and the hit/miss
ratio of those costs, so changes to the hit path can be compared on a noisy
machine.  ``--profile hit`` (or ``core``) prints where a hit spends its time.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from multiproxy.cache import CacheConfig
from multiproxy.cache._fetcher import caching_fetcher_factory
from multiproxy.forward import ForwardProxy
from multiproxy.forward._origin import Origin
from multiproxy.http._client import UpstreamConnection
from multiproxy.http._exchange import IResponseSink

NOW = 1_795_724_400.0  # Thu, 26 Nov 2026 20:20:00 GMT, the Date of RESPONSE

HIT_REQUEST = (
    b"GET http://origin.test:8000/hit HTTP/1.1\r\nHost: origin.test:8000\r\n"
    b"User-Agent: bench/1.0\r\nAccept: */*\r\n\r\n"
)
MISS_REQUEST = (
    b"GET http://origin.test:8000/miss?n=%d HTTP/1.1\r\nHost: origin.test:8000\r\n"
    b"User-Agent: bench/1.0\r\nAccept: */*\r\n\r\n"
)
BODY = b"x" * 100
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 20:20:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 19:00:00 GMT\r\nConnection: keep-alive\r\n"
    b'ETag: "6565-64"\r\nCache-Control: max-age=3600\r\nAccept-Ranges: bytes\r\n\r\n' + BODY
)


def setup(cached: bool = True):
    clock = Clock()
    clock.advance(NOW)
    factory = ForwardProxy(clock)
    if cached:
        factory.fetcher = caching_fetcher_factory(CacheConfig(size=256 << 20), clock)(
            factory.fetcher
        )
    client = factory.buildProtocol(None)
    client_transport = StringTransport()
    client.makeConnection(client_transport)
    origin = Origin("http", "origin.test", 8000)
    upstream = UpstreamConnection(factory.pool, origin.key)
    upstream_transport = StringTransport()
    upstream.makeConnection(upstream_transport)
    factory.pool.release(upstream)
    return client, client_transport, upstream, upstream_transport


def run_hit(n: int) -> float:
    client, client_transport, upstream, upstream_transport = setup()
    client.dataReceived(HIT_REQUEST)  # the miss that stores it
    upstream.dataReceived(RESPONSE)
    assert b"X-Cache: MISS" in client_transport.value(), client_transport.value()[:400]
    client_transport.clear()
    upstream_transport.clear()
    started = time.process_time()
    for _ in range(n):
        client.dataReceived(HIT_REQUEST)
        client_transport.clear()
    elapsed = time.process_time() - started
    client.dataReceived(HIT_REQUEST)
    out = client_transport.value()
    assert b"X-Cache: HIT" in out and out.endswith(BODY), out[:400]
    assert upstream_transport.value() == b"", "a hit went upstream"
    return elapsed / n * 1e6


@implementer(IResponseSink)
class NullSink:
    """Takes a response and does nothing with it (counts the body bytes)."""

    def __init__(self) -> None:
        self.status = 0
        self.received = 0
        self.ended = False

    def head(self, response, producer) -> None:
        self.status = response.status

    def data(self, data: bytes) -> None:
        self.received += len(data)

    def flush(self) -> None:
        pass

    def end(self) -> None:
        self.ended = True

    def fail(self, error) -> None:
        raise AssertionError(f"a hit failed: {error}")


def run_core(n: int) -> float:
    client, _, upstream, _ = setup()
    fetcher = client.factory.fetcher
    seen = []
    fetch = fetcher.fetch
    fetcher.fetch = lambda request, sink: seen.append(request) or fetch(request, sink)
    client.dataReceived(HIT_REQUEST)
    upstream.dataReceived(RESPONSE)
    del fetcher.fetch
    request = seen[0]
    sink = NullSink()
    fetcher.fetch(request, sink)
    assert sink.status == 200 and sink.ended and sink.received == len(BODY)
    started = time.process_time()
    for _ in range(n):
        fetcher.fetch(request, sink)
    elapsed = time.process_time() - started
    assert sink.received == (n + 1) * len(BODY), "not every request was a hit"
    return elapsed / n * 1e6


NO_STORE_RESPONSE = RESPONSE.replace(b"max-age=3600", b"no-store")


def run_pass(n: int, cached: bool = True) -> float:
    client, client_transport, upstream, upstream_transport = setup(cached)
    started = time.process_time()
    for _ in range(n):
        client.dataReceived(HIT_REQUEST)
        upstream_transport.clear()
        upstream.dataReceived(NO_STORE_RESPONSE)
        client_transport.clear()
    elapsed = time.process_time() - started
    client.dataReceived(HIT_REQUEST)
    upstream.dataReceived(NO_STORE_RESPONSE)
    out = client_transport.value()
    assert out.endswith(BODY) and (b"X-Cache: MISS" in out) == cached, out[:400]
    return elapsed / n * 1e6


def run_miss(n: int) -> float:
    client, client_transport, upstream, upstream_transport = setup()
    requests = [MISS_REQUEST % i for i in range(n + 1)]
    started = time.process_time()
    for request in requests[:n]:
        client.dataReceived(request)
        upstream_transport.clear()
        upstream.dataReceived(RESPONSE)
        client_transport.clear()
    elapsed = time.process_time() - started
    client.dataReceived(requests[n])
    upstream.dataReceived(RESPONSE)
    out = client_transport.value()
    assert b"X-Cache: MISS" in out and out.endswith(BODY), out[:400]
    return elapsed / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--profile", choices=("hit", "miss", "pass", "core"))
    parser.add_argument("--lines", type=int, default=40, help="profile lines to print")
    args = parser.parse_args()
    if args.profile:
        run = {"hit": run_hit, "miss": run_miss, "pass": run_pass, "core": run_core}[
            args.profile
        ]
        profile = cProfile.Profile()
        profile.enable()
        run(args.requests)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(args.lines)
        return
    hit = min(run_hit(args.requests) for _ in range(5))
    miss = min(run_miss(args.requests) for _ in range(5))
    core = min(run_core(args.requests) for _ in range(5))
    passed = plain = float("inf")
    for _ in range(5):  # alternated: the two are compared with each other
        passed = min(passed, run_pass(args.requests))
        plain = min(plain, run_pass(args.requests, cached=False))
    print(f"hit:  {hit:6.1f} CPU-us per request (best of 5, {args.requests} requests each)")
    print(f"miss: {miss:6.1f} CPU-us per request (stored; best of 5)")
    print(f"miss/hit CPU ratio: {miss / hit:.2f}x")
    print(f"core: {core:6.1f} CPU-us per hit in the cache's own code (of the {hit:.1f})")
    print(f"pass: {passed:6.1f} CPU-us per no-store response through the cache, "
          f"{plain:.1f} with no cache ({passed - plain:+.1f})")


if __name__ == "__main__":
    main()
