"""
Property-based fuzzing of the live forward-proxy protocol, in memory.

A `ForwardProxy` (and a `ReverseProxy`) runs on a `task.Clock` with `MemoryTransport`s on both
sides (they pause, stall, half-close and close the way TCP transports do).
Hypothesis drives a random script of events: client bytes (random, or
pieces of valid and hostile requests), upstream bytes (valid, hostile or
random responses), time passing, stalls and drains, half-closes and resets
on either side.  Whatever the script, the proxy must:

- never raise out of a Twisted callback, nor log a failure (`no_tracebacks`),
  nor spin (a `watchdog` alarm fails an example that does not return);
- only ever write to an upstream HTTP connection what h11 (an independent,
  strict reader) accepts as requests;
- only ever start its answers to the client with an HTTP/1.1 status line;
- once the client is gone and the timeouts have passed: hold no client
  connection, no upstream connection and no pending timer.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import h11
from hardening import (  # noqa: F401
    FixedChooser,
    MemoryUpstream,
    connect_client,
    h11_requests,
    no_tracebacks,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import task

from multiproxy.balancing import Backend, BackendPool, balancer_from_name
from multiproxy.forward import ForwardProxy
from multiproxy.http._client import UpstreamConnection
from multiproxy.http._server import Timeouts
from multiproxy.http1._parser import Limits
from multiproxy.reverse import ReverseProxy, Route, RouteTable

sys.path.insert(0, str(Path(__file__).parent))
from vectors.smuggling import load_vectors

_REQUEST_PIECES = [
    b"GET http://memory.test/ HTTP/1.1\r\n",
    b"GET http://memory.test/a?b=c HTTP/1.0\r\n",
    b"HEAD http://memory.test/ HTTP/1.1\r\n",
    b"POST http://memory.test/up HTTP/1.1\r\n",
    b"PUT http://memory.test:8080/ HTTP/1.1\r\n",
    b"CONNECT memory.test:443 HTTP/1.1\r\n",
    b"CONNECT memory.test:22 HTTP/1.1\r\n",
    b"OPTIONS http://memory.test/ HTTP/1.1\r\n",
    b"GET /origin-form HTTP/1.1\r\n",
    b"Host: memory.test\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 70000\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: upgrade\r\nUpgrade: websocket\r\n",
    b"Expect: 100-continue\r\n",
    b"Max-Forwards: 0\r\n",
    b"Max-Forwards: 3\r\n",
    b"X-Anything: value\r\n",
    b"\r\n",
    b"hello",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"ffff\r\n",
    b"x" * 4096,
    b"\x16\x03\x01\x00\x05hello",
]

_RESPONSE_PIECES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\n\r\nclose-delimited",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 200 Connection established\r\n\r\n",
    b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy",
    b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n",
    b"y" * 70000,
    b"tunnel bytes",
]

_VECTORS = [v.data for v in load_vectors(direction="request")]
_RESPONSE_VECTORS = [v.data for v in load_vectors(direction="response")]

client_bytes = st.one_of(
    st.lists(st.sampled_from(_REQUEST_PIECES), min_size=1, max_size=8).map(b"".join),
    st.sampled_from(_VECTORS),
    st.binary(min_size=1, max_size=64),
    # A valid request cut at a random point: exercises every parser state.
    st.tuples(st.sampled_from(_VECTORS + _REQUEST_PIECES), st.integers(0, 200)).map(
        lambda t: t[0][: t[1]] or b"G"
    ),
)
upstream_bytes = st.one_of(
    st.lists(st.sampled_from(_RESPONSE_PIECES), min_size=1, max_size=4).map(b"".join),
    st.sampled_from(_RESPONSE_VECTORS),
    st.binary(min_size=1, max_size=64),
)
step = st.one_of(
    st.tuples(st.just("client"), client_bytes),
    st.tuples(st.just("upstream"), upstream_bytes),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 5.0, 11.0, 31.0, 61.0, 700.0])),
    st.tuples(st.sampled_from([
        "client_eof", "client_reset", "client_drain", "upstream_eof", "upstream_reset",
        "upstream_drain",
    ])),
)

# MULTIPROXY_FUZZ_SCALE=20 runs twenty times as many examples (a longer hunt).
SCALE = int(os.environ.get("MULTIPROXY_FUZZ_SCALE", "1"))

# Small limits and short timeouts so that scripts reach them.
LIMITS = Limits(max_request_line=512, max_head=2048, max_fields=20, max_body=200_000)
TIMEOUTS = Timeouts(header=5.0, keepalive=30.0, client_idle=10.0, connect=10.0, response=30.0,
                    upstream_idle=30.0, tunnel_idle=60.0)


@contextmanager
def watchdog(seconds: float = 3.0):
    """Fail (instead of hanging the suite) if the proxy spins in a loop."""

    def expired(signum, frame):
        raise AssertionError(f"the proxy did not return within {seconds:g} s (an endless loop?)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _forward(clock, upstream):
    return ForwardProxy(clock, chooser=FixedChooser(upstream), limits=LIMITS, timeouts=TIMEOUTS)


class _MemoryBackend(Backend):
    """A reverse-proxy backend reached over `MemoryTransport`s."""

    def __init__(self, upstream: MemoryUpstream) -> None:
        super().__init__("memory", host="memory.test", port=80)
        self.memory = upstream

    def endpoint(self, reactor):
        return self.memory.endpoint(reactor)


def _reverse(clock, upstream):
    pool = BackendPool("p", [_MemoryBackend(upstream)], balancer_from_name("roundrobin"), clock)
    return ReverseProxy(
        clock, routes=RouteTable([Route("p")]), pools={"p": pool}, limits=LIMITS,
        timeouts=TIMEOUTS,
    )


def _run(steps, *, upstream_delay: float, build=_forward) -> None:
    with watchdog():
        _script(steps, upstream_delay, build)


def _script(steps, upstream_delay: float, build) -> None:
    clock = task.Clock()
    upstream = MemoryUpstream(clock, delay=upstream_delay)
    proxy = build(clock, upstream)
    client = connect_client(proxy, clock)
    for action, *arg in steps:
        live = upstream.live()
        if action == "client":
            client.receive(arg[0])
        elif action == "upstream" and live is not None:
            live.receive(arg[0])
        elif action == "advance":
            clock.advance(arg[0])
        elif action == "client_eof":
            client.receive_eof()
        elif action == "client_reset":
            client.drop()
        elif action == "client_drain":
            client.drain()
        elif action == "upstream_eof" and live is not None:
            live.receive_eof()
        elif action == "upstream_reset" and live is not None:
            live.drop()
        elif action == "upstream_drain" and live is not None:
            live.drain()
        clock.advance(0)

    # What the client got starts as HTTP/1.1 (tunnelled bytes may follow).
    out = client.value()
    assert out == b"" or out.startswith(b"HTTP/1.1 "), out[:100]

    # Everything written on upstream HTTP connections is valid to h11.
    for transport in upstream.transports:
        if isinstance(transport.protocol, UpstreamConnection):
            try:
                h11_requests(transport.value())
            except h11.RemoteProtocolError as e:
                raise AssertionError(f"proxy sent invalid HTTP upstream ({e}): "
                                     f"{transport.value()[:300]!r}") from None

    # The client goes away; after every timeout, nothing is left behind.
    client.drop()
    for _ in range(10):
        clock.advance(1000)
    assert not proxy.connections
    assert proxy.pool.idle_count() == 0
    assert all(t.lost for t in upstream.transports), "an upstream connection was left open"
    assert clock.getDelayedCalls() == [], clock.getDelayedCalls()


@settings(max_examples=150 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=25))
def test_random_event_scripts_never_crash_leak_or_send_invalid_http(steps):
    _run(steps, upstream_delay=0.0)


@settings(max_examples=75 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(step, max_size=25))
def test_random_scripts_with_slow_upstream_connects(steps):
    # Connecting takes 3 s of clock time: requests, bodies and closes race the connect.
    _run(steps, upstream_delay=3.0)


_REVERSE_PIECES = [
    b"GET / HTTP/1.1\r\n",
    b"GET /a/b?c=d HTTP/1.0\r\n",
    b"POST /up HTTP/1.1\r\n",
    b"GET http://memory.test/ HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    (
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    ),
    b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABk\r\n",
    b"X-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.2\r\n",
    b"\x81\x85abcd\x09\x07\x0f\x08\x0e",  # a masked WebSocket text frame
]
reverse_client_bytes = st.one_of(
    st.lists(st.sampled_from(_REVERSE_PIECES + _REQUEST_PIECES[9:]), min_size=1, max_size=8)
    .map(b"".join),
    st.sampled_from([v.replace(b"http://origin.test", b"") for v in _VECTORS]),
    st.binary(min_size=1, max_size=64),
)
reverse_step = st.one_of(
    st.tuples(st.just("client"), reverse_client_bytes),
    st.tuples(st.just("upstream"), upstream_bytes),
    st.tuples(st.just("advance"), st.sampled_from([0.0, 0.5, 5.0, 11.0, 31.0, 61.0, 700.0])),
    st.tuples(st.sampled_from([
        "client_eof", "client_reset", "client_drain", "upstream_eof", "upstream_reset",
        "upstream_drain",
    ])),
)


@settings(max_examples=100 * SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(reverse_step, max_size=25))
def test_reverse_proxy_random_scripts_never_crash_leak_or_send_invalid_http(steps):
    _run(steps, upstream_delay=0.0, build=_reverse)


@settings(max_examples=150 * SCALE, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(1, 50), max_size=20))
def test_random_bytes_in_random_segments_get_an_answer_or_a_close(data, cuts):
    with watchdog():
        _segments(data, cuts)


def _segments(data: bytes, cuts: list[int]) -> None:
    clock = task.Clock()
    upstream = MemoryUpstream(clock)
    proxy = ForwardProxy(clock, chooser=FixedChooser(upstream), limits=LIMITS, timeouts=TIMEOUTS)
    client = connect_client(proxy, clock)
    rest = data
    for n in cuts:
        client.receive(rest[:n])
        rest = rest[n:]
    client.receive(rest)
    client.receive_eof()
    for _ in range(5):
        clock.advance(100)
    # Random bytes never make it upstream as a request: either nothing went
    # up, or what went up is a valid request h11 reads.
    for transport in upstream.transports:
        h11_requests(transport.value())
    # The client connection ended (answered and closed, or timed out).
    assert client.lost
    assert not proxy.connections
    assert clock.getDelayedCalls() == []
