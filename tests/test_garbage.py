"""
A proxied request leaves no reference cycle behind: everything it built is
freed by reference counting the moment the exchange ends.  Garbage in cycles
waits for the cyclic collector, whose passes cost the proxy CPU in
proportion to it (5 % of a request before these were broken:
``bench/forward_bench.py --gc-off``).
"""

from __future__ import annotations

import gc

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.cache import CacheConfig
from multiproxy.cache._fetcher import caching_fetcher_factory
from multiproxy.forward import ForwardProxy
from multiproxy.forward._origin import Origin
from multiproxy.http._client import UpstreamConnection
from multiproxy.reverse import ReverseProxy, Route, RouteTable

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n"
    b"Cache-Control: max-age=600\r\n\r\nhello"
)


def _forward(cache: bool):
    clock = Clock()
    factory = ForwardProxy(clock)
    if cache:
        factory.fetcher = caching_fetcher_factory(CacheConfig(), clock)(factory.fetcher)
    return factory, Origin("http", "origin.test", 80).key


def _reverse():
    clock = Clock()
    backend = Backend("b0", host="127.0.0.1", port=80)
    pools = {"web": BackendPool("web", [backend], RoundRobin(), clock)}
    return ReverseProxy(clock, routes=RouteTable([Route("web")]), pools=pools), backend.key


def _cyclic_garbage_per_request(factory, key, request: bytes, upstream_answers: bool) -> float:
    client = factory.buildProtocol(None)
    client_transport = StringTransport()
    client.makeConnection(client_transport)
    upstream = UpstreamConnection(factory.pool, key)
    upstream.makeConnection(StringTransport())
    factory.pool.release(upstream)

    def exchange(n: int, answer: bool) -> None:
        for i in range(n):
            client.dataReceived(request.replace(b"{n}", b"%d" % i))
            if answer:
                upstream.dataReceived(RESPONSE)
            assert client_transport.value().endswith(b"hello")
            client_transport.clear()

    # Warm up; for a cache hit, one miss stores the response first.
    exchange(5 if upstream_answers else 1, True)
    if not upstream_answers:
        exchange(4, False)
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        exchange(50, upstream_answers)
        gc.collect()
        found = len(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    return found / 50


FORWARD_GET = b"GET http://origin.test/{n} HTTP/1.1\r\nHost: origin.test\r\n\r\n"


@pytest.mark.parametrize(
    "case",
    ["forward", "reverse", "cache miss", "cache hit"],
)
def test_a_request_leaves_no_cyclic_garbage(case):
    if case == "forward":
        found = _cyclic_garbage_per_request(*_forward(False), FORWARD_GET, True)
    elif case == "reverse":
        found = _cyclic_garbage_per_request(
            *_reverse(), b"GET /{n} HTTP/1.1\r\nHost: site.test\r\n\r\n", True)
    elif case == "cache miss":
        found = _cyclic_garbage_per_request(*_forward(True), FORWARD_GET, True)
    else:
        found = _cyclic_garbage_per_request(
            *_forward(True), b"GET http://origin.test/same HTTP/1.1\r\nHost: origin.test\r\n\r\n",
            False)
    assert found == 0
