"""
Tests for multiproxy.transport._relay: the byte relay shared by the TCP relay, CONNECT
tunnels and WebSocket upgrades.

The first half drives a `Relay` on `StringTransport`s and a `task.Clock`;
the second half runs real loopback connections through it.
"""

from __future__ import annotations

import hashlib
import os

import pytest
import pytest_twisted
from twisted.internet import defer, task
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from multiproxy.transport._relay import (
    EARLY_LIMIT,
    Relay,
    RelayServerProtocol,
    RelayUpstreamProtocol,
)
from multiproxy.transport._splice import SPLICE_AVAILABLE


class HalfCloseTransport(StringTransport):
    """A StringTransport that records a half-close."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self):
        self.write_closed = True

    def abortConnection(self):
        self.aborted = True
        super().abortConnection()


def make_relay(**kwargs):
    clock = task.Clock()
    down = HalfCloseTransport()
    endings = []
    relay = Relay(clock, down, on_end=lambda r, how: endings.append(how), **kwargs)
    return clock, down, relay, endings


# -- on StringTransport --------------------------------------------------------


def test_bytes_pass_both_ways_and_are_counted():
    clock, down, relay, endings = make_relay()
    up = HalfCloseTransport()
    relay.attach_upstream(up)
    relay.downstream_data(b"hello ")
    relay.downstream_data(b"world")
    relay.upstream_data(b"HELLO")
    assert up.value() == b"hello world"
    assert down.value() == b"HELLO"
    assert relay.bytes_from_downstream == 11
    assert relay.bytes_from_upstream == 5
    assert endings == []


def test_each_transport_is_registered_as_the_other_ones_streaming_producer():
    clock, down, relay, endings = make_relay()
    up = HalfCloseTransport()
    relay.attach_upstream(up)
    assert up.streaming and down.streaming
    verifyObject(IPushProducer, up.producer)
    up.producer.pauseProducing()
    assert down.producerState == "paused"
    assert relay.downstream_pauses == 1
    up.producer.resumeProducing()
    assert down.producerState == "producing"
    down.producer.pauseProducing()
    assert up.producerState == "paused"
    assert relay.upstream_pauses == 1


def test_early_bytes_are_flushed_after_the_preamble_in_order():
    clock, down, relay, endings = make_relay()
    relay.buffer_early(b"leftover-")
    relay.downstream_data(b"more")
    assert relay.early_buffered == 13
    up = HalfCloseTransport()
    relay.attach_upstream(up, preamble=b"PROXY header\r\n")
    assert up.value() == b"PROXY header\r\nleftover-more"
    assert relay.bytes_from_downstream == 13
    assert relay.early_buffered == 0


def test_early_buffer_past_its_limit_pauses_the_downstream_until_attached():
    clock, down, relay, endings = make_relay(early_limit=10)
    relay.downstream_data(b"x" * 6)
    assert down.producerState == "producing"
    relay.downstream_data(b"y" * 6)
    assert down.producerState == "paused"
    up = HalfCloseTransport()
    relay.attach_upstream(up)
    assert down.producerState == "producing"
    assert up.value() == b"x" * 6 + b"y" * 6


def test_early_limit_default_is_bounded():
    assert 0 < EARLY_LIMIT <= 1024 * 1024


def test_end_of_input_from_downstream_half_closes_the_upstream():
    clock, down, relay, endings = make_relay()
    up = HalfCloseTransport()
    relay.attach_upstream(up)
    relay.downstream_eof()
    assert up.write_closed and not up.disconnecting
    assert up.producer is None  # nothing can produce for a closed write side
    relay.upstream_data(b"still flowing back")
    assert down.value() == b"still flowing back"
    assert endings == []
    relay.upstream_eof()
    assert down.write_closed
    assert endings == ["done"]
    assert up.disconnecting and down.disconnecting


def test_end_of_input_before_attach_is_forwarded_after_the_early_bytes():
    clock, down, relay, endings = make_relay()
    relay.downstream_data(b"request")
    relay.downstream_eof()
    up = HalfCloseTransport()
    relay.attach_upstream(up)
    assert up.value() == b"request"
    assert up.write_closed


def test_downstream_lost_closes_the_upstream_and_reports_client_closed():
    clock, down, relay, endings = make_relay()
    up = HalfCloseTransport()
    relay.attach_upstream(up)
    relay.downstream_lost(Failure(ConnectionLost("reset")))
    assert up.disconnecting
    assert endings == ["client-closed"]
    assert relay.reason.check(ConnectionLost)
    relay.upstream_lost()  # the consequence of our own close: no second ending
    assert endings == ["client-closed"]


def test_upstream_lost_reports_upstream_closed():
    clock, down, relay, endings = make_relay()
    up = HalfCloseTransport()
    relay.attach_upstream(up)
    relay.upstream_data(b"last words")
    relay.upstream_lost()
    assert down.value() == b"last words"
    assert down.disconnecting
    assert endings == ["upstream-closed"]
    assert relay.reason is None


def test_idle_timeout_ends_the_relay_and_aborts_both_sides():
    clock, down, relay, endings = make_relay(idle_timeout=10)
    up = HalfCloseTransport()
    relay.attach_upstream(up)
    clock.advance(6)
    relay.downstream_data(b"tick")
    clock.advance(6)
    assert endings == []  # traffic at t=6 restarted the timer
    relay.upstream_data(b"tock")
    clock.advance(9.5)
    assert endings == []
    clock.advance(1)
    assert endings == ["idle-timeout"]
    assert up.aborted and down.aborted
    assert clock.getDelayedCalls() == []


def test_ending_cancels_the_idle_timer():
    clock, down, relay, endings = make_relay(idle_timeout=10)
    relay.attach_upstream(HalfCloseTransport())
    relay.upstream_lost()
    assert clock.getDelayedCalls() == []


def test_end_is_called_once_and_rejects_unknown_endings():
    clock, down, relay, endings = make_relay()
    with pytest.raises(ValueError, match="unknown relay ending"):
        relay.end("finished")
    relay.end("error")
    relay.end("done")
    assert endings == ["error"]


def test_attach_after_end_closes_the_late_upstream():
    clock, down, relay, endings = make_relay()
    relay.downstream_lost()
    late = HalfCloseTransport()
    relay.attach_upstream(late)
    assert late.disconnecting


def test_downstream_lost_while_connecting_cancels_the_connect():
    clock, down, relay, endings = make_relay()
    pending = defer.Deferred()

    class PendingEndpoint:
        def connect(self, factory):
            return pending

    d = relay.connect(PendingEndpoint())
    failures = []
    d.addErrback(failures.append)
    relay.downstream_lost()
    assert failures and failures[0].check(defer.CancelledError)
    assert endings == ["client-closed"]


def test_a_failed_connect_leaves_the_relay_open_for_another_try():
    clock, down, relay, endings = make_relay()

    class RefusingEndpoint:
        def connect(self, factory):
            return defer.fail(ConnectionLost("refused"))

    class AcceptingEndpoint:
        def connect(self, factory):
            protocol = factory.buildProtocol(None)
            protocol.makeConnection(self.transport)
            return defer.succeed(protocol)

    relay.downstream_data(b"early")
    failures = []
    relay.connect(RefusingEndpoint()).addErrback(failures.append)
    assert failures and endings == []
    good = AcceptingEndpoint()
    good.transport = HalfCloseTransport()
    results = []
    relay.connect(good, preamble=b"HDR").addCallback(results.append)
    assert results == [relay]
    assert good.transport.value() == b"HDRearly"


def test_relay_protocols_provide_half_close():
    relay = make_relay()[2]
    assert IHalfCloseableProtocol.providedBy(RelayUpstreamProtocol(relay))
    assert IHalfCloseableProtocol.providedBy(RelayServerProtocol(task.Clock()))


# -- on real loopback ------------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    """Echoes, and answers end of input with end of output."""

    def dataReceived(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class DigestAfterEOF(Protocol):
    """Reads until end of input, then answers with the sha256 of what it read, and a tail."""

    def connectionMade(self):
        self.hash = hashlib.sha256()

    def dataReceived(self, data):
        self.hash.update(data)

    def readConnectionLost(self):
        self.transport.write(self.hash.hexdigest().encode() + b"\n" + b"t" * 200_000)
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass


class Source(Protocol):
    """Sends ``size`` pseudo-random bytes on connection, then closes."""

    def __init__(self, payload):
        self.payload = payload

    def connectionMade(self):
        self.transport.write(self.payload)
        self.transport.loseConnection()


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    """Collects everything; fires ``done`` with (sha256 hex, bytes, data) on close."""

    def __init__(self, keep=False):
        self.hash = hashlib.sha256()
        self.received = 0
        self.keep = keep
        self.data = []
        self.done = defer.Deferred()
        self.connected_d = defer.Deferred()

    def connectionMade(self):
        self.connected_d.callback(self)

    def dataReceived(self, data):
        self.hash.update(data)
        self.received += len(data)
        if self.keep:
            self.data.append(data)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.done.callback((self.hash.hexdigest(), self.received, b"".join(self.data)))


class RelayFactory(Factory):
    """Port forwarder built on RelayServerProtocol, recording each relay as it ends."""

    def __init__(self, reactor, endpoint, idle_timeout=None, splice=False):
        self.reactor = reactor
        self.endpoint = endpoint
        self.idle_timeout = idle_timeout
        self.splice = splice
        self.ended = []
        self.ended_d = defer.Deferred()
        self.protocols = []

    def buildProtocol(self, addr):
        factory = self

        class Recording(RelayServerProtocol):
            def relay_ended(self, relay, how):
                factory.ended.append((relay, how))
                if not factory.ended_d.called:
                    factory.ended_d.callback((relay, how))

        protocol = Recording(self.reactor, self.endpoint, self.idle_timeout, self.splice)
        self.protocols.append(protocol)
        return protocol


splice_modes = pytest.mark.parametrize(
    "splice", [False, pytest.param(True, marks=pytest.mark.skipif(
        not SPLICE_AVAILABLE, reason="splice(2) is Linux only"))],
    ids=["python", "splice"],
)


@pytest.fixture
def reactor():
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def listen(reactor):
    ports = []

    def listen_on(factory):
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return port.getHost().port

    yield listen_on
    for port in ports:
        port.stopListening()


def connect_client(reactor, port, client):
    return TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(lambda: client)
    )


@splice_modes
@pytest_twisted.inlineCallbacks
def test_loopback_echo_of_4_mib_is_byte_for_byte(reactor, listen, splice):
    origin = listen(Factory.forProtocol(Echo))
    relays = RelayFactory(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", origin), splice=splice)
    front = listen(relays)
    payload = os.urandom(4 * 1024 * 1024)
    client = Client()
    yield connect_client(reactor, front, client)
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    digest, received, _ = yield client.done
    assert received == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()
    relay, how = yield relays.ended_d
    assert how == "done"
    assert relay.spliced == splice
    assert relay.bytes_from_downstream == relay.bytes_from_upstream == len(payload)


@splice_modes
@pytest_twisted.inlineCallbacks
def test_loopback_half_closed_client_still_receives_the_answer(reactor, listen, splice):
    origin = listen(Factory.forProtocol(DigestAfterEOF))
    relays = RelayFactory(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", origin), splice=splice)
    front = listen(relays)
    payload = os.urandom(300_000)
    client = Client(keep=True)
    yield connect_client(reactor, front, client)
    client.transport.write(payload)
    client.transport.loseWriteConnection()  # shut our write side; keep reading
    _, _, data = yield client.done
    line, tail = data.split(b"\n", 1)
    assert line.decode() == hashlib.sha256(payload).hexdigest()
    assert tail == b"t" * 200_000


@pytest_twisted.inlineCallbacks
def test_loopback_slow_reader_keeps_relay_buffers_bounded(reactor, listen):
    payload = os.urandom(16 * 1024 * 1024)
    origin = listen(Factory.forProtocol(lambda: Source(payload)))
    relays = RelayFactory(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", origin))
    front = listen(relays)
    client = Client()
    yield connect_client(reactor, front, client)
    client.transport.pauseProducing()  # a reader that stops reading
    peak = 0
    for _ in range(40):
        yield task.deferLater(reactor, 0.005, lambda: None)
        relay = relays.protocols[0].relay
        down = relay.downstream
        buffered = len(down.dataBuffer) - down.offset + down._tempDataLen
        peak = max(peak, buffered)
    relay = relays.protocols[0].relay
    assert relay.upstream_pauses >= 1
    # The relay's own buffer stays near the transport's 64 KiB mark (plus one
    # read of at most 64 KiB), however much the origin has to send.
    assert 0 < peak <= 3 * 64 * 1024
    assert relay.bytes_from_upstream < len(payload)
    client.transport.resumeProducing()
    digest, received, _ = yield client.done
    assert received == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()


@pytest_twisted.inlineCallbacks
def test_loopback_refused_upstream_closes_the_client_with_error(reactor, listen):
    # A port that nothing listens on: bind, learn the number, stop listening.
    port = reactor.listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
    number = port.getHost().port
    yield port.stopListening()
    relays = RelayFactory(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", number))
    front = listen(relays)
    client = Client()
    yield connect_client(reactor, front, client)
    client.transport.write(b"anyone there?")
    _, received, _ = yield client.done
    relay, how = yield relays.ended_d
    assert received == 0
    assert how == "error"
    assert relay.reason is not None


@splice_modes
@pytest_twisted.inlineCallbacks
def test_loopback_upstream_dying_mid_stream_closes_the_client(reactor, listen, splice):
    class DiesAfterFirstChunk(Protocol):
        def dataReceived(self, data):
            self.transport.write(b"partial")
            self.transport.abortConnection()

    origin = listen(Factory.forProtocol(DiesAfterFirstChunk))
    relays = RelayFactory(reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", origin), splice=splice)
    front = listen(relays)
    client = Client(keep=True)
    yield connect_client(reactor, front, client)
    client.transport.write(b"hello")
    _, _, data = yield client.done
    relay, how = yield relays.ended_d
    assert how == "upstream-closed"
    assert data in (b"", b"partial")


@splice_modes
@pytest_twisted.inlineCallbacks
def test_loopback_idle_relay_is_closed_after_its_timeout(reactor, listen, splice):
    origin = listen(Factory.forProtocol(Echo))
    relays = RelayFactory(
        reactor, TCP4ClientEndpoint(reactor, "127.0.0.1", origin), idle_timeout=0.2,
        splice=splice,
    )
    front = listen(relays)
    client = Client(keep=True)
    yield connect_client(reactor, front, client)
    client.transport.write(b"ping")
    _, _, data = yield client.done
    relay, how = yield relays.ended_d
    assert data == b"ping"
    assert how == "idle-timeout"


@pytest.mark.skipif(not SPLICE_AVAILABLE, reason="splice(2) is Linux only")
@pytest_twisted.inlineCallbacks
def test_tunnel_switching_to_splice_loses_no_buffered_byte(reactor, listen):
    """As a CONNECT tunnel does: answer on the client transport, relay, then go bulk."""
    origin = listen(Factory.forProtocol(Echo))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", origin)
    relays = []

    @implementer(IHalfCloseableProtocol)
    class Tunnel(Protocol):
        def connectionMade(self):
            self.relay = Relay(reactor, self.transport, splice=True)
            relays.append(self.relay)
            tunnel = self

            class Upstream(RelayUpstreamProtocol):
                def connectionMade(self):
                    # Written in the same reactor turn as the relay starts: still
                    # in Twisted's buffer when the pump takes the socket over.
                    tunnel.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    assert tunnel.transport._tempDataLen
                    super().connectionMade()

            endpoint.connect(Factory.forProtocol(lambda: Upstream(self.relay)))

        def dataReceived(self, data):
            self.relay.downstream_data(data)

        def readConnectionLost(self):
            self.relay.downstream_eof()

        def writeConnectionLost(self):
            pass

        def connectionLost(self, reason):
            self.relay.downstream_lost(reason)

    front = listen(Factory.forProtocol(Tunnel))
    client = Client(keep=True)
    yield connect_client(reactor, front, client)
    client.transport.write(b"through the tunnel")
    yield task.deferLater(reactor, 0.05, lambda: None)
    assert not relays[0].spliced  # small exchanges stay in Python
    bulk = os.urandom(3 * 1024 * 1024)
    client.transport.write(bulk)
    client.transport.loseWriteConnection()
    _, _, data = yield client.done
    assert data == b"HTTP/1.1 200 Connection established\r\n\r\nthrough the tunnel" + bulk
    assert relays[0].spliced and relays[0].ended == "done"
