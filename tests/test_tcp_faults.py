"""
The TCP relay under faults the functional tests (tests/test_tcp.py) do not
cover: clients that vanish mid-stream (with and without splice), backends
whose connect never completes, hostile bytes on a PROXY-protocol listener,
and a crowd of clients for a dead backend.  No traceback may be logged
(`no_tracebacks`, autouse).
"""

from __future__ import annotations

import os
import time

import pytest
import pytest_twisted
from hardening import (  # noqa: F401
    FixedChooser,
    Recorder,
    StalledUpstream,
    no_tracebacks,
    sleep,
    wait_until,
)
from twisted.internet import defer, protocol, reactor
from twisted.logger import globalLogPublisher

from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.tcp import TCPRelayFactory, TCPSettings, server_endpoint


class Sink(protocol.Protocol):
    """A backend that reads and keeps everything, and records its end."""

    def __init__(self, seen: list) -> None:
        self.seen = seen
        self.received = 0
        self.lost = False

    def connectionMade(self) -> None:
        self.seen.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason=None) -> None:
        self.lost = True


class Client(protocol.Protocol):
    def __init__(self) -> None:
        self.received = bytearray()
        self.done = defer.Deferred()
        self.lost_at = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost_at = time.monotonic()
        self.done.callback(bytes(self.received))


@pytest.fixture
def listening():
    ports = []

    def listen(factory) -> int:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return port.getHost().port

    yield listen
    for port in ports:
        port.stopListening()


def _relay(chooser, **settings) -> TCPRelayFactory:
    return TCPRelayFactory(reactor, chooser, name="hardening", settings=TCPSettings(**settings))


async def _connect(port: int) -> Client:
    return await protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", port)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest_twisted.ensureDeferred
async def test_client_vanishing_mid_upload_closes_the_backend_connection(listening, splice):
    seen: list[Sink] = []
    backend = Backend(host="127.0.0.1", port=listening(protocol.Factory.forProtocol(lambda: Sink(seen))))
    factory = _relay(BackendPool("p", [backend], RoundRobin(), reactor), splice=splice)
    port = listening(factory)
    client = await _connect(port)
    for _ in range(50):
        client.transport.write(os.urandom(20_000))
    assert await wait_until(lambda: seen and seen[0].received > 200_000)
    client.transport.abortConnection()
    assert await wait_until(lambda: seen[0].lost)
    assert await wait_until(lambda: not factory.connections)


@pytest.mark.parametrize("splice", [True, False], ids=["splice", "copy"])
@pytest_twisted.ensureDeferred
async def test_backend_whose_connect_never_completes_is_given_up_on(listening, splice):
    stalled = StalledUpstream()
    factory = _relay(FixedChooser(stalled), connect_timeout=0.3, retries=0, splice=splice)
    port = listening(factory)
    started = time.monotonic()
    client = await _connect(port)
    client.transport.write(b"hello")
    received = await client.done
    assert received == b""
    assert 0.2 <= client.lost_at - started < 2.0
    assert stalled.attempts == stalled.cancelled == 1
    assert not factory.connections


HOSTILE_HEADERS = [
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2",  # no CRLF, then silence
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # bare LF
    b"PROXY " + b"A" * 200 + b"\r\n",  # longer than a v1 header may be
    b"PROXY\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # no header at all
    b"\r\n\r\n\x00\r\nQUIT\n",  # the v2 signature
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff" + b"\x00" * 64,  # v2, length past the data
    b"\r\n\r\n\x00\r\nQUIT\n\x99\x11\x00\x0c" + b"\x00" * 12,  # v2, bad version
    b"\x00" * 300,
    bytes(range(256)),
]


# Well-formed v1 lines carrying impossible addresses.  The PROXY protocol
# specification says a receiver must drop a connection whose header is
# invalid; Twisted's V1Parser does not check the addresses, so the relay reads
# v1 lines with its own StrictV1Parser.
IMPOSSIBLE_ADDRESSES = [
    b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
]


async def _send_headers(listening, headers) -> tuple[list[bytes], list, Backend, TCPRelayFactory]:
    seen: list[Sink] = []
    backend = Backend(host="127.0.0.1", port=listening(protocol.Factory.forProtocol(lambda: Sink(seen))))
    factory = _relay(BackendPool("p", [backend], RoundRobin(), reactor), header_timeout=0.5)
    port = await server_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1").listen(factory)
    try:
        clients = []
        for data in headers:
            client = await _connect(port.getHost().port)
            client.transport.write(data)
            # A relayed connection stays open: end it after the header timeout.
            reactor.callLater(2.0, client.transport.abortConnection)
            clients.append(client)
        answers = await defer.gatherResults([c.done for c in clients])
    finally:
        await port.stopListening()
    return answers, seen, backend, factory


@pytest_twisted.ensureDeferred
async def test_hostile_bytes_on_a_proxy_protocol_listener_never_reach_the_backend(
    listening, no_tracebacks  # noqa: F811 (the autouse fixture, asked for by name)
):
    answers, seen, backend, factory = await _send_headers(listening, HOSTILE_HEADERS)
    # Every connection was closed, without a byte back, and none was relayed.
    assert answers == [b""] * len(HOSTILE_HEADERS)
    assert seen == []
    assert backend.requests == 0
    assert await wait_until(lambda: not factory.connections)


class _Records:
    """An access reporter that keeps every record."""

    def __init__(self) -> None:
        self.records: list = []

    def report(self, record) -> None:
        self.records.append(record)


@pytest_twisted.ensureDeferred
async def test_refused_proxy_header_is_reported_without_a_traceback(listening, no_tracebacks):  # noqa: F811
    """
    A connection closed for a bad PROXY header gets its access record (the
    connection's own addresses, end=no-proxy-header) and logs no failure:
    the closed transport is not asked for its address.
    """
    records = _Records()
    stalled = StalledUpstream()
    factory = TCPRelayFactory(
        reactor, FixedChooser(stalled), name="hardening", reporters=[records],
        settings=TCPSettings(header_timeout=0.5),
    )
    port = await server_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1").listen(factory)
    number = port.getHost().port
    try:
        client = await _connect(number)
        client.transport.write(b"PROXY\r\n")
        assert await client.done == b""
        assert await wait_until(lambda: records.records)
    finally:
        await port.stopListening()
    await sleep(0.1)
    [record] = records.records
    assert record.ended == "no-proxy-header"
    assert record.client_host == "127.0.0.1"
    assert record.target == f"127.0.0.1:{number}"
    assert record.upstream is None
    assert stalled.attempts == 0


@pytest_twisted.ensureDeferred
async def test_proxy_header_with_impossible_addresses_is_refused(listening, no_tracebacks):  # noqa: F811
    answers, seen, backend, factory = await _send_headers(listening, IMPOSSIBLE_ADDRESSES)
    assert answers == [b""] * len(IMPOSSIBLE_ADDRESSES)
    assert seen == []
    assert backend.requests == 0
    assert await wait_until(lambda: not factory.connections)


@pytest_twisted.ensureDeferred
async def test_many_clients_for_a_dead_backend_are_closed_promptly(listening):
    """
    200 clients (20 at a time) while the only backend refuses connections: every
    client is closed within seconds, nothing stays open, and the warnings
    stop once the backend is ejected (no traceback).
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    backend = Backend(host="127.0.0.1", port=dead)
    factory = _relay(BackendPool("p", [backend], RoundRobin(), reactor), retries=0)
    port = listening(factory)
    warnings = []

    def observe(event):
        if event.get("log_level") is not None and event["log_level"].name == "warn":
            warnings.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        started = time.monotonic()
        clients = []
        for _ in range(10):  # batches of 20, within the listen backlog
            clients += await defer.gatherResults(
                [defer.ensureDeferred(_connect(port)) for _ in range(20)]
            )
        answers = await defer.gatherResults([c.done for c in clients])
        elapsed = time.monotonic() - started
    finally:
        globalLogPublisher.removeObserver(observe)
    assert answers == [b""] * 200
    assert elapsed < 10
    assert await wait_until(lambda: not factory.connections)
    # A warning per failed connect until passive health checks eject the
    # backend (the first batch of 20 was already connecting); the clients
    # after that are closed without a line each.
    connect_warnings = [e for e in warnings if "backend unreachable" in e.get("log_format", "")]
    assert 1 <= len(connect_warnings) <= 20, len(connect_warnings)
