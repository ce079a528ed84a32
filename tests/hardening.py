"""
Shared pieces of the hardening suite (tests/test_hardening*.py).

- `no_tracebacks`: an autouse fixture (import it into a test module) that
  fails the test if anything logged a failure (``log.failure``, ``log.err``,
  an unhandled error in a Deferred) or a critical event while it ran.
- `Recorder`: a loopback origin that reads what a proxy forwards with h11, an
  HTTP/1.1 reader independent of ours, and records every byte, every parsed
  request and how each connection ended.  It answers complete requests with
  a small 200, or never (``answer=False``).
- `FixedChooser` routes every intent to one upstream (so hostile targets are
  all sent to the recorder); `StalledUpstream` is an upstream whose connect
  never completes (a DNS server that never answers).
- `rss_bytes`, `open_fds`: memory and descriptor figures from /proc.
- `MemoryTransport`, `connect_client`, `MemoryUpstream`: a whole proxy in
  memory on a `task.Clock`, with transports that pause, stall and close the
  way TCP transports do; `h11_requests` checks what went upstream.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field

import h11
import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
)
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.forward import Origin
from multiproxy.pipeline._interfaces import IUpstream, IUpstreamChooser

# -- failing a test on a logged traceback ---------------------------------------


class FailureLog:
    """Collects log events that carry a failure or are critical."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        if (
            "log_failure" in event
            or event.get("isError")
            or event.get("log_level") is LogLevel.critical
        ):
            self.events.append(event)

    def describe(self) -> str:
        lines = []
        for event in self.events:
            failure = event.get("log_failure")
            text = event.get("log_format") or event.get("format") or ""
            if failure is not None:
                text += "\n" + failure.getTraceback()
            lines.append(text)
        return "\n---\n".join(lines)


@pytest.fixture(autouse=True)
def no_tracebacks():
    """Fail the test if a failure was logged while it ran (Deferred garbage included)."""
    seen = FailureLog()
    globalLogPublisher.addObserver(seen)
    try:
        yield seen
        # Unhandled errors in Deferreds are only logged when the Deferred is
        # collected: collect now so they count against this test.
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(seen)
    assert not seen.events, "failures were logged:\n" + seen.describe()


# -- a strict recording origin ----------------------------------------------------


@dataclass
class Seen:
    """What one connection to the `Recorder` carried."""

    raw: bytearray = field(default_factory=bytearray)
    requests: list[tuple[h11.Request, bytes]] = field(default_factory=list)
    partial: h11.Request | None = None
    h11_error: str | None = None
    lost: bool = False
    lost_cleanly: bool | None = None


class _RecorderProtocol(protocol.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.seen = Seen()
        self.conn = h11.Connection(h11.SERVER)
        self.body = bytearray()

    def connectionMade(self) -> None:
        self.recorder.connections.append(self.seen)

    def dataReceived(self, data: bytes) -> None:
        self.seen.raw += data
        if self.seen.h11_error is not None:
            return
        self.conn.receive_data(data)
        self._pump()

    def _pump(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                self.seen.h11_error = str(e)
                self.transport.loseConnection()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.seen.partial = event
                self.body = bytearray()
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.seen.requests.append((self.seen.partial, bytes(self.body)))
                self.recorder.requests.append((self.seen.partial, bytes(self.body)))
                self.seen.partial = None
                if not self.recorder.answer:
                    continue
                body = self.recorder.body
                out = self.conn.send(
                    h11.Response(status_code=200, reason=b"OK", headers=[("Content-Length", str(len(body)))])
                )
                out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
                self.transport.write(out)
                try:
                    self.conn.start_next_cycle()
                except h11.LocalProtocolError:
                    self.transport.loseConnection()
                    return
            elif isinstance(event, h11.ConnectionClosed):
                return

    def connectionLost(self, reason=None) -> None:
        from twisted.internet.error import ConnectionDone

        self.seen.lost = True
        self.seen.lost_cleanly = reason is not None and reason.check(ConnectionDone) is not None


class Recorder:
    """
    A loopback origin that records what reaches it, parsed with h11.

    ``answer``: reply ``200`` with ``body`` to each complete request (else
    never reply).  Call `stop` when done.
    """

    def __init__(self, *, answer: bool = True, body: bytes = b"ok") -> None:
        self.answer = answer
        self.body = body
        self.connections: list[Seen] = []
        self.requests: list[tuple[h11.Request, bytes]] = []
        """Every complete request, in the order they arrived, over all connections."""
        factory = protocol.Factory.forProtocol(lambda: _RecorderProtocol(self))
        factory.noisy = False
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.number = self.port.getHost().port

    @property
    def raw(self) -> bytes:
        """Every byte received, over all connections."""
        return b"".join(bytes(c.raw) for c in self.connections)

    def stop(self) -> defer.Deferred:
        return self.port.stopListening()


@pytest.fixture
def recorder():
    """A `Recorder` on loopback for one test (import it beside `no_tracebacks`)."""
    rec = Recorder()
    yield rec
    pytest_twisted.blockon(rec.stop())


@implementer(IUpstreamChooser)
class FixedChooser:
    """Sends every intent to one upstream, whatever host it names."""

    def __init__(self, upstream) -> None:
        self.upstream = upstream
        self.intents: list = []

    def choose(self, intent, excluded=frozenset()):
        self.intents.append(intent)
        return None if self.upstream.key in excluded else self.upstream


def to_recorder(recorder: Recorder) -> FixedChooser:
    return FixedChooser(Origin("http", "127.0.0.1", recorder.number))


class _StalledEndpoint:
    def __init__(self, upstream: StalledUpstream) -> None:
        self.upstream = upstream

    def connect(self, factory) -> defer.Deferred:
        self.upstream.attempts += 1

        def cancel(d):
            self.upstream.cancelled += 1

        return defer.Deferred(cancel)


@implementer(IUpstream)
class StalledUpstream:
    """An upstream whose connect never fires, like a name server that never answers."""

    name = "stalled.test:80"
    key = ("stalled",)

    def __init__(self) -> None:
        self.attempts = 0
        self.cancelled = 0

    def endpoint(self, reactor):
        return _StalledEndpoint(self)

    def started(self) -> None:
        pass

    def finished(self, ok: bool, elapsed: float) -> None:
        pass


# -- waiting and measuring ----------------------------------------------------------


async def wait_until(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` on the reactor until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await task.deferLater(reactor, step, lambda: None)
    return True


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int | str = "self") -> int:
    """How many file descriptors a process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_of(answer: bytes) -> int | None:
    """The status code of the first response in ``answer`` (None if there is none)."""
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])


# -- an in-memory proxy harness (for fuzzing on a task.Clock) ------------------------


class MemoryTransport(StringTransport):
    """
    A `StringTransport` that behaves like a TCP transport where a proxy can
    tell the difference: closing calls ``connectionLost`` (on the next clock
    tick, as the reactor would), a paused transport delivers no data until it
    is resumed, registering a second producer fails, and writes past
    ``high_water`` unread bytes pause the registered streaming producer until
    the peer `drain`s them.
    """

    high_water = 65536

    def __init__(self, clock: task.Clock, protocol=None, port: int = 40000) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 3128),
            peerAddress=IPv4Address("TCP", "127.0.0.1", port),
            lenient=True,
        )
        self.clock = clock
        self.protocol = protocol
        self.lost = False
        self.aborted = False
        self.write_closed = False
        self.read_closed = False
        self.unread = 0
        self._inbox: list[bytes] = []
        self._delivery = None
        self._stalled = False

    # -- what the protocol under test calls

    def registerProducer(self, producer, streaming) -> None:
        if self.producer is not None:
            raise RuntimeError(f"cannot register {producer!r}: {self.producer!r} is still registered")
        if self.lost:
            producer.stopProducing()
            return
        self.producer = producer
        self.streaming = streaming
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None

    def write(self, data: bytes) -> None:
        if self.lost or self.write_closed:
            return
        super().write(data)
        self.unread += len(data)
        if (
            self.unread > self.high_water and not self._stalled and self.producer is not None
            and self.streaming
        ):
            self._stalled = True
            self.producer.pauseProducing()

    def writeSequence(self, data) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self._close(ConnectionDone("closed"))

    def abortConnection(self) -> None:
        self.aborted = True
        self._close(ConnectionAborted("aborted"))

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def pauseProducing(self) -> None:
        self.producerState = "paused"

    def resumeProducing(self) -> None:
        if self.producerState == "paused":
            self.producerState = "producing"
            self._schedule_delivery()

    def stopProducing(self) -> None:
        self.producerState = "stopped"
        self._close(ConnectionDone("stopped"))

    # -- what the test (the peer) calls

    def receive(self, data: bytes) -> None:
        """The peer sends ``data``; delivered at once unless reading is paused."""
        if self.lost or self.read_closed or not data:
            return
        self._inbox.append(data)
        self._deliver()

    def receive_eof(self) -> None:
        """The peer shuts its write side (half-close where the protocol allows it)."""
        if self.lost or self.read_closed:
            return
        self.read_closed = True
        self._inbox.clear()
        if IHalfCloseableProtocol.providedBy(self.protocol):
            self.protocol.readConnectionLost()
        else:
            self._close(ConnectionDone("eof"))

    def drop(self) -> None:
        """The peer vanishes (connection reset)."""
        self._close(ConnectionLost("reset by peer"), now=True)

    def drain(self) -> None:
        """The peer reads everything written so far."""
        self.unread = 0
        if self._stalled:
            self._stalled = False
            if self.producer is not None and not self.lost:
                self.producer.resumeProducing()

    # -- internals

    def _schedule_delivery(self) -> None:
        if self._inbox and self._delivery is None and not self.lost:
            self._delivery = self.clock.callLater(0, self._deliver)

    def _deliver(self) -> None:
        if self._delivery is not None and self._delivery.active():
            self._delivery.cancel()
        self._delivery = None
        while self._inbox and self.producerState == "producing" and not self.lost:
            self.protocol.dataReceived(self._inbox.pop(0))

    def _close(self, exc: Exception, now: bool = False) -> None:
        if self.disconnecting and not now:
            return
        self.disconnecting = True
        if now:
            self._lost(exc)
        else:
            self.clock.callLater(0, self._lost, exc)

    def _lost(self, exc: Exception) -> None:
        if self.lost:
            return
        self.lost = True
        self.connected = False
        self._inbox.clear()
        if self._delivery is not None and self._delivery.active():
            self._delivery.cancel()
        self._delivery = None
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        self.protocol.connectionLost(Failure(exc))


def connect_client(factory, clock: task.Clock, port: int = 40000) -> MemoryTransport:
    """A client connection to ``factory`` on a `MemoryTransport`; returns the transport."""
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", port))
    transport = MemoryTransport(clock, protocol, port)
    protocol.makeConnection(transport)
    return transport


class _MemoryEndpoint:
    def __init__(self, upstream: MemoryUpstream) -> None:
        self.upstream = upstream

    def connect(self, factory) -> defer.Deferred:
        upstream = self.upstream
        d: defer.Deferred = defer.Deferred()

        def connected() -> None:
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 80))
            transport = MemoryTransport(upstream.clock, protocol, 80)
            upstream.transports.append(transport)
            protocol.makeConnection(transport)
            d.callback(protocol)

        if upstream.refuse:
            upstream.clock.callLater(0, d.errback, Failure(ConnectionRefusedError("refused")))
            return d
        call = upstream.clock.callLater(upstream.delay, connected)
        d.addErrback(lambda f: (call.active() and call.cancel(), f)[1])
        return d


@implementer(IUpstream)
class MemoryUpstream:
    """An upstream reached over `MemoryTransport`s after ``delay`` seconds of clock time."""

    name = "memory.test:80"
    key = ("memory",)

    def __init__(self, clock: task.Clock, delay: float = 0.0, refuse: bool = False) -> None:
        self.clock = clock
        self.delay = delay
        self.refuse = refuse
        self.transports: list[MemoryTransport] = []

    def endpoint(self, reactor):
        return _MemoryEndpoint(self)

    def live(self) -> MemoryTransport | None:
        """The newest upstream connection that is still open."""
        for transport in reversed(self.transports):
            if not transport.lost:
                return transport
        return None

    def started(self) -> None:
        pass

    def finished(self, ok: bool, elapsed: float) -> None:
        pass


def h11_requests(data: bytes) -> list[h11.Request]:
    """
    The requests in ``data`` (what a proxy wrote upstream), read by h11 as a
    server would, answering each with an empty 200 so the next can be read.
    A truncated last message is fine; anything h11 refuses raises
    `h11.RemoteProtocolError`.
    """
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    requests = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            return requests
        if event is h11.PAUSED:
            if conn.their_state is h11.MUST_CLOSE or conn.their_state is h11.CLOSED:
                rest = conn.trailing_data[0]
                if rest:
                    raise h11.RemoteProtocolError(f"bytes after a closing request: {rest[:80]!r}")
                return requests
            conn.send(h11.Response(status_code=200, headers=[("Content-Length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
            continue
        if isinstance(event, h11.Request):
            requests.append(event)
        elif isinstance(event, h11.ConnectionClosed):
            return requests


# -- an origin that streams as fast as it is allowed to ----------------------------


@implementer(IPushProducer)
class _FirehoseProtocol(protocol.Protocol):
    def __init__(self, origin: Firehose) -> None:
        self.origin = origin
        self.head = b""
        self.sent = 0
        self.paused = False
        self.started = False
        self._call = None

    def dataReceived(self, data: bytes) -> None:
        if self.started:
            return
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.started = True
            self.origin.streams.append(self)
            self.transport.registerProducer(self, True)
            size = self.origin.size
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % size
            )
            self._schedule()

    def _schedule(self) -> None:
        if self._call is None and not self.paused and self.sent < self.origin.size:
            self._call = reactor.callLater(0, self._pump)

    def _pump(self) -> None:
        self._call = None
        piece = self.origin.piece
        for _ in range(16):
            if self.paused or self.sent >= self.origin.size:
                break
            n = min(len(piece), self.origin.size - self.sent)
            self.transport.write(piece[:n])
            self.sent += n
            self.origin.written += n
        if self.sent >= self.origin.size and self.origin.close:
            self.transport.loseConnection()
        self._schedule()

    def pauseProducing(self) -> None:
        self.paused = True
        self.origin.pauses += 1

    def resumeProducing(self) -> None:
        self.paused = False
        self._schedule()

    def stopProducing(self) -> None:
        self.paused = True
        self.sent = self.origin.size

    def connectionLost(self, reason=None) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None


class Firehose:
    """
    An origin that answers any request with a ``size``-byte body, written
    only while its transport lets it (a push producer), so ``written`` says
    how far backpressure let it get.
    """

    piece = b"\xa5" * 65536

    def __init__(self, size: int, close: bool = False) -> None:
        self.size = size
        self.close = close
        self.written = 0
        self.pauses = 0
        self.streams: list[_FirehoseProtocol] = []
        factory = protocol.Factory.forProtocol(lambda: _FirehoseProtocol(self))
        factory.noisy = False
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.number = self.port.getHost().port

    def stop(self) -> defer.Deferred:
        for stream in self.streams:
            stream.transport.abortConnection()
        return self.port.stopListening()


def write_buffered(transport) -> int:
    """Bytes a Twisted TCP transport holds in user space, waiting for the socket."""
    held = len(getattr(transport, "dataBuffer", b"")) - getattr(transport, "offset", 0)
    return held + getattr(transport, "_tempDataLen", 0)
