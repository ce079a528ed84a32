"""
The TCP relay's failures, retries, timeouts, half-close and PROXY headers,
run in memory on a fake clock (multiproxy.testing).  tests/test_tcp.py runs
the relay over loopback (bulk transfer, slow readers, splice, TLS with
openssl s_client, services).
"""

from __future__ import annotations

import hashlib
import os

import pytest
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from zope.interface import implementer

from multiproxy import Decision, IPolicy
from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.tcp import TCPRelayFactory, TCPSettings
from multiproxy.testing import Harness


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class DigestAfterEOF(Protocol):
    """Reads until end of input, then answers with the sha256 of what it read."""

    def connectionMade(self):
        self.hash = hashlib.sha256()

    def dataReceived(self, data):
        self.hash.update(data)

    def readConnectionLost(self):
        self.transport.write(self.hash.hexdigest().encode() + b"\n")
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


@implementer(IHalfCloseableProtocol)
class HeaderReader(Protocol):
    """Reads a PROXY header, records it, then echoes until end of input."""

    def connectionMade(self):
        self.buffer = b""
        self.info = None

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def dataReceived(self, data):
        if self.info is not None:
            self.transport.write(data)
            return
        self.buffer += data
        parser = V2Parser() if self.buffer.startswith(V2Parser.PREFIX) else V1Parser()
        info, rest = parser.feed(self.buffer)
        if info is not None:
            self.info = info
            self.factory.headers.append((self.buffer[: len(self.buffer) - len(rest)], info))
            if rest:
                self.transport.write(rest)


def serve(harness: Harness, protocol, port: int, **attributes) -> Backend:
    """Serve ``protocol`` at 10.0.0.1:``port`` (factory ``attributes`` set); its Backend."""
    factory = Factory.forProtocol(protocol)
    for name, value in attributes.items():
        setattr(factory, name, value)
    harness.serve(factory, "10.0.0.1", port)
    return Backend(host="10.0.0.1", port=port)


def relay(harness: Harness, backends, policy=None, max_failures=3, **settings):
    pool = BackendPool("test", backends, RoundRobin(), harness.reactor,
                       max_failures=max_failures)
    return TCPRelayFactory(harness.reactor, pool, name="test", policy=policy,
                           reporters=[harness.reporter], settings=TCPSettings(**settings))


def exchange(harness: Harness, factory, data: bytes, client=("127.0.0.1", 0)) -> bytes:
    """Send ``data``, half-close, and return everything the relay sent back."""
    client = harness.connect(factory, client=client)
    client.send(data)
    client.half_close()
    assert client.closed
    return client.read()


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_small_writes_are_echoed_in_order(chunk):
    harness = Harness()
    factory = relay(harness, [serve(harness, Echo, 7)])
    client = harness.connect(factory)
    payload = bytes(range(256)) * 8
    for i in range(0, len(payload), chunk):
        client.send(payload[i:i + chunk])
    client.half_close()
    assert client.read() == payload


def test_half_closed_client_still_receives_the_answer():
    harness = Harness()
    factory = relay(harness, [serve(harness, DigestAfterEOF, 7)])
    payload = os.urandom(200_000)
    assert exchange(harness, factory, payload) == hashlib.sha256(payload).hexdigest().encode() + b"\n"
    assert harness.records[0].ended == "done"
    harness.assert_quiet()


def test_refused_backend_is_skipped_before_the_client_notices():
    harness = Harness()
    dead = Backend(host="10.0.0.1", port=9)  # nothing listens there
    alive = serve(harness, Echo, 7)
    factory = relay(harness, [dead, alive])
    for i in range(4):
        assert exchange(harness, factory, b"ping %d" % i) == b"ping %d" % i
    assert all(r.upstream == alive.name and r.ended == "done" for r in harness.records)
    assert dead.failures >= 2
    assert alive.requests == 4 and alive.active == 0


def test_roundrobin_stays_even_when_a_refused_connect_is_retried():
    # Three backends, the middle one refusing (and never ejected): the connect
    # retry must not advance the shared rotation a second time.
    harness = Harness()
    a = serve(harness, Echo, 7)
    dead = Backend(host="10.0.0.1", port=9)
    b = serve(harness, Echo, 8)
    factory = relay(harness, [a, dead, b], max_failures=10**6)
    for i in range(9):
        assert exchange(harness, factory, b"ping %d" % i) == b"ping %d" % i
    assert dead.failures >= 3
    assert {a.requests, b.requests} == {4, 5}, (a.requests, b.requests)


def test_no_reachable_backend_closes_the_client_and_says_why():
    harness = Harness()
    factory = relay(harness, [Backend(host="10.0.0.1", port=9)], retries=0)
    assert harness.connect(factory).closed
    record = harness.records[-1]
    assert record.ended == "connect-failed"
    assert record.upstream is None
    harness.connect(factory)  # the backend is now ejected: none to choose
    assert harness.records[-1].ended in ("no-backend", "connect-failed")


def test_backend_dying_mid_stream_closes_the_client():
    harness = Harness()

    class Dies(Protocol):
        def dataReceived(self, data):
            self.transport.write(b"partial")
            self.transport.abortConnection()

    factory = relay(harness, [serve(harness, Dies, 7)])
    client = harness.connect(factory)
    client.send(b"hello")
    assert client.closed
    record = harness.records[-1]
    assert record.ended == "upstream-closed"
    assert record.bytes_from_client == 5


def test_policy_denial_closes_the_connection_at_once():
    harness = Harness()
    seen = []

    @implementer(IPolicy)
    class DenyAll:
        def decide(self, intent):
            seen.append(intent)
            return Decision("deny", rule="no-tcp")

    echo = serve(harness, Echo, 7)
    factory = relay(harness, [echo], policy=DenyAll())
    client = harness.connect(factory, client=("10.9.8.7", 4000))
    assert client.closed and client.read() == b""
    assert (seen[0].kind, seen[0].client_host, seen[0].port) == ("tcp", "10.9.8.7", 8080)
    record = harness.records[-1]
    assert record.ended == "denied" and record.rule == "no-tcp"
    assert echo.requests == 0


def test_idle_connection_is_closed_after_the_idle_timeout():
    harness = Harness()
    factory = relay(harness, [serve(harness, Echo, 7)], idle_timeout=0.2)
    client = harness.connect(factory)
    client.send(b"x")
    harness.advance(0.1)
    client.send(b"y")  # traffic restarts the idle clock
    harness.advance(0.19)
    assert not client.closed
    harness.advance(0.01)
    assert client.closed and client.read() == b"xy"
    record = harness.records[-1]
    assert record.ended == "idle-timeout"
    assert record.duration == pytest.approx(0.3)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_backend_asking_for_proxy_protocol_sees_the_client_address(version):
    harness = Harness()
    headers = []
    serve(harness, HeaderReader, 7, headers=headers)
    backend = Backend(host="10.0.0.1", port=7, proxy_protocol=version)
    factory = relay(harness, [backend])
    assert exchange(harness, factory, b"after the header",
                    client=("192.0.2.10", 40123)) == b"after the header"
    raw, info = headers[0]
    assert (info.source.host, info.source.port) == ("192.0.2.10", 40123)
    assert info.destination.port == 8080
    if version == "v1":
        assert raw == b"PROXY TCP4 192.0.2.10 127.0.0.1 40123 8080\r\n"

