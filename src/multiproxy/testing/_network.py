"""
In-memory TCP connections: two transports joined by buffers, moved by a pump.

Each end of a `MemoryConnection` is a `MemoryTransport` that behaves as a
Twisted TCP transport does where a proxy can tell: writes are buffered and
delivered later (by `MemoryNetwork.pump`, never from inside ``write``, at most
`MemoryTransport.read_size` bytes per ``dataReceived`` as a socket read), a
buffer over `MemoryTransport.buffer_size` pauses the writer's registered
producer until the reader takes the bytes, a paused transport delivers
nothing, ``loseConnection`` flushes first and ``abortConnection`` does not
(the peer is reset), and each end closes on its own: after
``loseWriteConnection`` or ``loseConnection`` the peer reads an end of
stream, which is ``readConnectionLost`` if it provides
`IHalfCloseableProtocol` (it must then close its side itself, as over a
socket) and otherwise the loss of the connection; bytes written towards an
end that has closed reset the writer.  No sockets, no threads: the pump loops until no byte and
no event moves.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import error
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IPushProducer,
    ITCPTransport,
)
from twisted.python.failure import Failure
from zope.interface import implementer

Address = IPv4Address | IPv6Address


def tcp_address(host: str, port: int) -> Address:
    """The Twisted address of ``host`` (an IP literal) and ``port``."""
    return IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)


def describe_address(address: Any) -> str:
    """``host:port`` (IPv6 in brackets) for a Twisted address."""
    host = getattr(address, "host", "?")
    port = getattr(address, "port", "?")
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


@implementer(ITCPTransport, IConsumer, IPushProducer)
class MemoryTransport:
    """
    One end of an in-memory TCP connection (an ``ITCPTransport``).

    ``protocol`` is the protocol this transport delivers to; what it
    writes goes to the other end's protocol when the network pumps.
    """

    buffer_size = 64 * 1024
    """Bytes buffered before the registered producer is paused (Twisted's own figure)."""
    read_size = 64 * 1024
    """The most one ``dataReceived`` delivers (what one Twisted socket read takes)."""

    def __init__(self, connection: MemoryConnection, host: Address, peer: Address) -> None:
        self.connection = connection
        self.host = host
        self.peer = peer
        self.protocol: Any = None
        self.outgoing: deque[bytes] = deque()
        self.outgoing_offset = 0
        self.outgoing_size = 0
        self.producer: Any = None
        self.streaming = True
        self.producer_paused = False
        self.reading_paused = False
        self.connected = True
        self.disconnecting = False
        self.write_closing = False
        self.write_closed = False
        self.read_closed = False
        self.aborted = False

    # ITransport

    def write(self, data: bytes) -> None:
        """Queue ``data`` for the peer (bytes only, as a real transport insists)."""
        if not isinstance(data, bytes):
            raise TypeError(f"Data must be bytes, not {type(data).__name__}")
        if not self.connected or self.write_closing or not data:
            return
        self.outgoing.append(data)
        self.outgoing_size += len(data)
        if self.producer is not None and self.streaming and not self.producer_paused \
                and self.outgoing_size > self.buffer_size:
            self.producer_paused = True
            self.producer.pauseProducing()
        self.connection.network.wake()

    def take(self) -> bytes:
        """Remove and return the next bytes to deliver (at most `read_size`)."""
        parts = []
        size = 0
        while self.outgoing and size < self.read_size:
            chunk = self.outgoing[0]
            end = min(len(chunk), self.outgoing_offset + self.read_size - size)
            parts.append(chunk[self.outgoing_offset:end])
            size += end - self.outgoing_offset
            if end == len(chunk):
                self.outgoing.popleft()
                self.outgoing_offset = 0
            else:
                self.outgoing_offset = end
        self.outgoing_size -= size
        return b"".join(parts)

    def clear(self) -> None:
        """Drop everything not yet delivered."""
        self.outgoing.clear()
        self.outgoing_offset = 0
        self.outgoing_size = 0

    def writeSequence(self, data: list[bytes]) -> None:
        """Queue each of ``data`` for the peer."""
        for chunk in data:
            self.write(chunk)

    def loseConnection(self) -> None:
        """Close once everything written so far has been delivered."""
        if self.connected and not self.disconnecting:
            self.disconnecting = True
            self.connection.network.wake()

    def abortConnection(self) -> None:
        """Close now, dropping anything not yet delivered (the peer sees a reset)."""
        if self.connected:
            self.clear()
            self.connection.close(self, aborted=True)

    def loseWriteConnection(self) -> None:
        """Half-close: the peer reads an end of stream after what was written."""
        if self.connected and not self.write_closing:
            self.write_closing = True
            self.connection.network.wake()

    def getPeer(self) -> Address:
        """The address of the other end."""
        return self.peer

    def getHost(self) -> Address:
        """The address of this end."""
        return self.host

    # ITCPTransport's socket options mean nothing in memory.

    def getTcpNoDelay(self) -> bool:
        """Always True (there is no Nagle delay in memory)."""
        return True

    def setTcpNoDelay(self, enabled: bool) -> None:
        """Accepted and ignored."""

    def getTcpKeepAlive(self) -> bool:
        """Always False."""
        return False

    def setTcpKeepAlive(self, enabled: bool) -> None:
        """Accepted and ignored."""

    # IConsumer

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """Register the producer whose writes this transport paces (Twisted's rules)."""
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, because producer {self.producer!r} "
                "was never unregistered."
            )
        if not self.connected:
            producer.stopProducing()
            return
        self.producer, self.streaming, self.producer_paused = producer, streaming, False
        if streaming and self.outgoing_size > self.buffer_size:
            self.producer_paused = True
            producer.pauseProducing()
        self.connection.network.wake()

    def unregisterProducer(self) -> None:
        """Forget the registered producer."""
        self.producer = None
        self.producer_paused = False

    # IPushProducer: this end as the producer of what its protocol reads.

    def pauseProducing(self) -> None:
        """Deliver nothing more to the protocol until `resumeProducing`."""
        self.reading_paused = True

    def resumeProducing(self) -> None:
        """Deliver again."""
        self.reading_paused = False
        self.connection.network.wake()

    def stopProducing(self) -> None:
        """Close the connection (what a TCP transport does)."""
        self.loseConnection()

    def __repr__(self) -> str:
        return (f"<MemoryTransport {describe_address(self.host)} -> "
                f"{describe_address(self.peer)} {type(self.protocol).__name__}>")


class MemoryConnection:
    """
    An in-memory TCP connection between a client end and a server end.

    ``label`` names it in the harness's list of open connections.
    """

    def __init__(self, network: MemoryNetwork, client_address: Address,
                 server_address: Address, label: str) -> None:
        self.network = network
        self.label = label
        self.client = MemoryTransport(self, client_address, server_address)
        self.server = MemoryTransport(self, server_address, client_address)
        self.open = True
        self.on_close: list[Callable[[MemoryTransport, Failure], None]] = []

    def start(self, client_protocol: Any, server_protocol: Any) -> None:
        """Connect both protocols (the server's first, as its accept comes first)."""
        self.client.protocol = client_protocol
        self.server.protocol = server_protocol
        self.network.connections.append(self)
        server_protocol.makeConnection(self.server)
        if self.client.connected:
            client_protocol.makeConnection(self.client)
        self.network.wake()

    def other(self, end: MemoryTransport) -> MemoryTransport:
        """The other end."""
        return self.server if end is self.client else self.client

    def step(self) -> bool:
        """Move what can move in both directions; True if anything did."""
        moved = False
        for source in (self.client, self.server):
            if source.connected:
                moved = self._deliver(source) or moved
        return moved

    def _deliver(self, source: MemoryTransport) -> bool:
        target = self.other(source)
        moved = False
        if source.outgoing:
            if not target.connected:
                # Bytes sent to a closed socket: its kernel answers with a reset.
                self.finish(source, Failure(error.ConnectionLost(
                    "Connection reset by peer (in memory)")), peer_reset=True)
                return True
            if not target.reading_paused:
                data = source.take()
                moved = True
                target.protocol.dataReceived(data)
                if not source.connected:
                    return True
        if not source.outgoing:
            if source.producer is not None and source.streaming and source.producer_paused:
                source.producer_paused = False
                source.producer.resumeProducing()
                moved = True
            elif source.producer is not None and not source.streaming:
                source.producer.resumeProducing()
                moved = bool(source.outgoing) or moved
            if source.disconnecting:
                self.finish(source, Failure(error.ConnectionDone()))
                return True
            if source.write_closing and not source.write_closed and not target.reading_paused:
                source.write_closed = True
                moved = True
                if IHalfCloseableProtocol.providedBy(source.protocol):
                    source.protocol.writeConnectionLost()
                if source.connected:
                    self._end_of_stream(target)
        return moved

    def _end_of_stream(self, end: MemoryTransport) -> None:
        # What Twisted does when a socket reads EOF: readConnectionLost for a
        # half-closeable protocol (which must close its side itself), else the
        # connection is lost.
        if not end.connected or end.read_closed:
            return
        end.read_closed = True
        if IHalfCloseableProtocol.providedBy(end.protocol):
            end.protocol.readConnectionLost()
        else:
            self.finish(end, Failure(error.ConnectionDone()))

    def finish(self, end: MemoryTransport, reason: Failure, peer_reset: bool = False) -> None:
        """
        Close ``end`` for good (its protocol hears ``reason``); the other end
        then reads an end of stream, or, with ``peer_reset``, is reset too.
        """
        if not end.connected:
            return
        end.connected = False
        end.disconnecting = True
        end.clear()
        producer, end.producer = end.producer, None
        if producer is not None:
            producer.stopProducing()
        end.protocol.connectionLost(reason)
        for callback in self.on_close:
            callback(end, reason)
        peer = self.other(end)
        if peer_reset:
            self.finish(peer, Failure(error.ConnectionLost("Connection reset by peer (in memory)")))
        else:
            self._end_of_stream(peer)
        if self.open and not self.client.connected and not self.server.connected:
            self.open = False
            if self in self.network.connections:
                self.network.connections.remove(self)
        self.network.wake()

    def close(self, by: MemoryTransport, aborted: bool) -> None:
        """Close ``by``'s end: cleanly (the peer reads an end of stream) or with a reset."""
        if aborted:
            self.finish(by, Failure(error.ConnectionAborted()), peer_reset=True)
        else:
            self.finish(by, Failure(error.ConnectionDone()))

    def describe(self) -> str:
        """A line for the list of open connections."""
        states = []
        for name, end in (("client", self.client), ("server", self.server)):
            if not end.connected:
                states.append(f"{name} closed")
            elif end.write_closed:
                states.append(f"{name} half-closed")
            if end.outgoing_size:
                states.append(f"{end.outgoing_size} bytes from the {name} undelivered")
            if end.reading_paused:
                states.append(f"{name} paused")
        suffix = f" ({', '.join(states)})" if states else ""
        return (f"{self.label}: {describe_address(self.client.host)} "
                f"[{type(self.client.protocol).__name__}] -> "
                f"{describe_address(self.server.host)} "
                f"[{type(self.server.protocol).__name__}]{suffix}")


class MemoryNetwork:
    """
    The open in-memory connections and the events waiting to run, and the pump.

    `soon` queues a call for the next pump (what a real reactor does on its
    next turn: a refused connect, ``callFromThread``).
    """

    max_rounds = 100_000

    def __init__(self) -> None:
        self.connections: list[MemoryConnection] = []
        self.pending: deque[tuple[Callable[..., Any], tuple, dict]] = deque()
        self.pumping = False
        self.dirty = False
        self.run_due: Callable[[], bool] = lambda: False
        """Runs the timers due now (``callLater(0, ...)``); True if it ran any."""

    def wake(self) -> None:
        """Something changed: the running pump goes round again."""
        self.dirty = True

    def soon(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Call ``f`` at the next pump."""
        self.pending.append((f, args, kwargs))
        self.dirty = True

    def pump(self) -> None:
        """Deliver bytes and run queued events until nothing moves."""
        if self.pumping:  # called from inside a delivery: the running loop goes on
            self.dirty = True
            return
        self.pumping = True
        try:
            for _ in range(self.max_rounds):
                self.dirty = False
                moved = False
                while self.pending:
                    f, args, kwargs = self.pending.popleft()
                    f(*args, **kwargs)
                    moved = True
                for connection in list(self.connections):
                    moved = connection.step() or moved
                moved = self.run_due() or moved
                if not moved and not self.dirty:
                    return
            raise RuntimeError(
                f"the in-memory network did not settle in {self.max_rounds} rounds "
                "(two protocols answering each other forever?)"
            )
        finally:
            self.pumping = False
