"""
The byte relay: joins a downstream (client) connection to an upstream one.

One `Relay` is used by every proxy that ends up moving opaque bytes: the TCP
relay for each connection, the forward proxy for a ``CONNECT`` tunnel after
``200 Connection established``, and the reverse proxy for a WebSocket after
``101 Switching Protocols``.

What it does
============
- **Both ways, with backpressure.**  As in `twisted.protocols.portforward`,
  each transport is registered as the other's streaming producer, so a slow
  reader on one side pauses reading on the other and the relay never holds
  more than the transports' own write buffers (64 KiB each).  The producer
  registered is a small `_Valve` that forwards to the transport, counts the
  pauses and never resumes a side whose read half has ended.
- **Half-close.**  End of input on one side (``readConnectionLost``) becomes
  ``loseWriteConnection`` on the other, so a client that shuts down its write
  side still receives the rest of the answer.  The relay is over when both
  directions have ended ("done") or either connection is lost.  A TLS
  transport has no half-close that clients understand, so an end of input
  forwarded to a TLS side closes that side entirely.
- **Early bytes.**  Bytes from the downstream before the upstream is
  attached are buffered; past `EARLY_LIMIT` the relay stops reading the
  downstream until it can flush them.  An end of input received early is
  forwarded after the flush.
- **Counters and an idle timeout.**  `bytes_from_downstream`,
  `bytes_from_upstream`; an optional idle timeout (any traffic either way
  restarts it) measured on the injected reactor.
- **Zero copy on Linux** (``splice=True``).  When both sides are plain TCP
  transports and a read of `SPLICE_THRESHOLD` bytes or more shows bulk
  traffic, `multiproxy.transport._splice.SplicePump` takes the sockets over and the
  kernel moves the bytes through a pipe per direction, never through Python
  (see that module).  Short exchanges stay in Python, where they are
  cheaper than setting up two pipes; TLS or wrapped transports always do.
  Only for callers that will not touch the transports until the relay ends.
- **One ending.**  ``on_end(relay, how)`` is called exactly once, with
  ``how`` one of `ENDINGS`: "done", "client-closed", "upstream-closed",
  "idle-timeout", "error" (also `Relay.reason`, the `Failure` if any) or
  "denied" (a policy ended it after it started, e.g. on a tunnel's SNI).

Using it from a protocol that owns the client transport
=======================================================
The downstream protocol need not be a relay protocol.  An HTTP protocol that
has answered ``200 Connection established`` does::

    transport.unregisterProducer()      # if it had registered one
    relay = Relay(reactor, self.transport, idle_timeout=300, on_end=self._tunnel_ended)
    relay.buffer_early(leftover)        # bytes read past the CONNECT head
    d = relay.connect(endpoint)         # or relay.attach_upstream(transport)
    # then forward its own events:
    #   dataReceived(data)      -> relay.downstream_data(data)
    #   readConnectionLost()    -> relay.downstream_eof()   (IHalfCloseableProtocol)
    #   connectionLost(reason)  -> relay.downstream_lost(reason)

Without ``IHalfCloseableProtocol`` on the downstream protocol Twisted reports
the client's end of input as a lost connection, and the relay ends with
"client-closed" (no half-close for that client).  `Relay.connect` fails its
Deferred on a connect failure without ending the relay, so the caller can try
another upstream; `Relay.end` ends it for good.  Over a TLS endpoint the
upstream is attached only once the TLS handshake (and the certificate check)
has succeeded, so a backend whose certificate is refused fails the connect
like a refused connection does.

`RelayServerProtocol` is a ready-made downstream protocol that owns a relay.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer

from multiproxy.transport._splice import SplicePump, splice_capable

__all__ = [
    "EARLY_LIMIT",
    "ENDINGS",
    "Relay",
    "RelayServerProtocol",
    "RelayUpstreamProtocol",
]

EARLY_LIMIT = 64 * 1024
"""Bytes buffered from the downstream before the upstream is attached, before reading pauses."""

SPLICE_THRESHOLD = 32 * 1024
"""A read this large means bulk traffic: time to move the bytes with splice(2)."""

ENDINGS = ("done", "client-closed", "upstream-closed", "idle-timeout", "error", "denied")
"""The ways a relay can end, as passed to ``on_end``."""

_log = Logger()


@implementer(IPushProducer)
class _Valve:
    """
    The producer registered with one transport on behalf of the other.

    It pauses and resumes reading from ``transport`` when the consumer asks,
    combined with the relay's own hold (while the upstream is not attached);
    it counts pauses, and never resumes a transport whose input has ended
    (resuming would make Twisted report the end of input a second time).
    """

    __slots__ = ("transport", "paused", "held", "ended", "pauses")

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.paused = False
        self.held = False
        self.ended = False
        self.pauses = 0

    def _reading(self) -> bool:
        return not (self.paused or self.held or self.ended)

    def pauseProducing(self) -> None:
        was = self._reading()
        self.paused = True
        self.pauses += 1
        if was:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        was = self._reading()
        self.paused = False
        if not was and self._reading():
            self.transport.resumeProducing()

    def stopProducing(self) -> None:
        # The consumer's connection is gone; the relay hears of it through
        # its own callbacks and ends, so there is nothing to do here.
        pass

    def hold(self) -> None:
        was = self._reading()
        self.held = True
        if was:
            self.transport.pauseProducing()

    def release(self) -> None:
        was = self._reading()
        self.held = False
        if not was and self._reading():
            self.transport.resumeProducing()


def _is_tls(transport: Any) -> bool:
    """Whether ``transport`` is (or wraps) a TLS layer, which has no usable half-close."""
    seen = 0
    while isinstance(transport, ProtocolWrapper) and seen < 8:
        if isinstance(transport, TLSMemoryBIOProtocol):
            return True
        transport = transport.transport
        seen += 1
    return False


def _shut_write(transport: Any) -> None:
    """Send end-of-input to the peer of ``transport`` once its buffer is flushed."""
    if _is_tls(transport) or not hasattr(transport, "loseWriteConnection"):
        transport.loseConnection()
    else:
        transport.loseWriteConnection()


def _unregister(transport: Any) -> None:
    try:
        transport.unregisterProducer()
    except Exception:  # a transport already torn down may object; nothing to undo then
        pass


class Relay:
    """
    Joins a downstream transport and an upstream transport, both ways.

    @ivar bytes_from_downstream: bytes received from the client side.
    @ivar bytes_from_upstream: bytes received from the upstream side.
    @ivar upstream_transport: the upstream transport once attached, else None.
    @ivar ended: the ending (one of `ENDINGS`) once over, else None.
    @ivar reason: the `Failure` a lost connection reported, if any.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        downstream: ITransport,
        *,
        idle_timeout: float | None = None,
        on_end: Callable[[Relay, str], None] | None = None,
        early_limit: int = EARLY_LIMIT,
        splice: bool = False,
    ) -> None:
        self.reactor = reactor
        self.downstream = downstream
        self.idle_timeout = idle_timeout or None
        self.on_end = on_end
        self.early_limit = early_limit
        self.bytes_from_downstream = 0
        self.bytes_from_upstream = 0
        self.upstream_transport: Any = None
        self.ended: str | None = None
        self.reason: Failure | None = None
        self._early: list[bytes] = []
        self._early_size = 0
        self._preamble = b""
        self._down_eof = False
        self._up_eof = False
        self._down_valve = _Valve(downstream)
        self._up_valve: _Valve | None = None
        self._connecting: Deferred | None = None
        self._idle_call: Any = None
        self._last_activity = 0.0
        self.splice = splice
        self._splice_armed = False
        self._pump: SplicePump | None = None

    # -- observability -------------------------------------------------------

    @property
    def downstream_pauses(self) -> int:
        """How often reading from the downstream was paused for a slow upstream."""
        return self._down_valve.pauses

    @property
    def upstream_pauses(self) -> int:
        """How often reading from the upstream was paused for a slow downstream."""
        return self._up_valve.pauses if self._up_valve is not None else 0

    @property
    def spliced(self) -> bool:
        """Whether the bytes move by ``splice(2)`` (zero copy) rather than through Python."""
        return self._pump is not None

    @property
    def early_buffered(self) -> int:
        """Bytes held from the downstream while waiting for the upstream."""
        return self._early_size

    # -- upstream --------------------------------------------------------------

    def connect(self, endpoint: IStreamClientEndpoint, preamble: bytes = b"") -> Deferred:
        """
        Connect an upstream `RelayUpstreamProtocol` through ``endpoint``.

        @param preamble: bytes sent upstream before anything relayed (a PROXY
            protocol header); not counted in the byte counters.
        @return: a Deferred firing with this relay once attached (over TLS:
            once the handshake has succeeded), or failing with the connect
            or handshake error (the relay stays open for another try).
            Cancelling it (`end` does) abandons the attempt.
        """
        if self.ended is not None:
            raise RuntimeError("this relay has already ended")
        self._preamble = preamble
        d = endpoint.connect(_UpstreamFactory(self))
        self._connecting = d

        def connected(protocol: RelayUpstreamProtocol) -> Relay | Deferred:
            handshake = getattr(protocol, "handshake", None)
            if handshake is not None:
                return handshake.addCallback(connected)
            self._connecting = None
            return self

        def failed(failure: Failure) -> Failure:
            self._connecting = None
            return failure

        return d.addCallbacks(connected, failed)

    def attach_upstream(self, transport: Any, preamble: bytes | None = None) -> None:
        """
        Start relaying to ``transport`` (already connected); its protocol
        must forward to `upstream_data`, `upstream_eof` and `upstream_lost`.
        """
        if self.ended is not None:
            transport.loseConnection()
            return
        if self.upstream_transport is not None:
            raise RuntimeError("this relay already has an upstream")
        self.upstream_transport = transport
        if preamble is None:
            preamble, self._preamble = self._preamble, b""
        if preamble:
            transport.write(preamble)
        if self._early:
            transport.writeSequence(self._early)
            self._early = []
            self._early_size = 0
        self._up_valve = _Valve(transport)
        transport.registerProducer(self._down_valve, True)
        self.downstream.registerProducer(self._up_valve, True)
        self._start_idle_timer()
        if self._down_eof:
            _unregister(transport)
            _shut_write(transport)
        else:
            self._down_valve.release()
            self._splice_armed = self.splice and splice_capable(self.downstream, transport)

    def enable_splice(self) -> None:
        """
        Allow ``splice(2)`` from now on for a relay made with ``splice=False``
        (a tunnel whose first bytes had to be read in Python first).
        """
        self.splice = True
        transport = self.upstream_transport
        if transport is not None and self.ended is None and not self._down_eof:
            self._splice_armed = splice_capable(self.downstream, transport)

    def _switch_to_pump(self) -> None:
        # Called from the reactor (never from inside a transport's doRead), so
        # Twisted is done with both sockets for this turn.
        if self.ended is not None or self._down_eof or self._up_eof:
            return
        down, up = self.downstream, self.upstream_transport
        _unregister(down)
        _unregister(up)
        if not splice_capable(down, up):
            up.registerProducer(self._down_valve, True)
            down.registerProducer(self._up_valve, True)
            return
        try:
            self._pump = SplicePump(
                self.reactor, down, up, self._pump_moved, self._pump_eof, self._pump_lost
            )
        except OSError as e:  # out of file descriptors for pipes: stay in Python
            _log.warn("splice unavailable ({error}); relaying through Python", error=e)
            up.registerProducer(self._down_valve, True)
            down.registerProducer(self._up_valve, True)
            return
        self._pump.start()

    def _pump_moved(self, side: str, count: int) -> None:
        if side == "downstream":
            self.bytes_from_downstream += count
        else:
            self.bytes_from_upstream += count
        if self._idle_call is not None:
            self._last_activity = self.reactor.seconds()

    def _pump_eof(self, side: str) -> None:
        if side == "downstream":
            self._down_eof = True
        else:
            self._up_eof = True
        if self._down_eof and self._up_eof:
            self.end("done")

    def _pump_lost(self, side: str, error: BaseException) -> None:
        self.reason = Failure(error)
        self.end("client-closed" if side == "downstream" else "upstream-closed")

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the upstream: pass them to the downstream."""
        self.bytes_from_upstream += len(data)
        if self._idle_call is not None:
            self._last_activity = self.reactor.seconds()
        self.downstream.write(data)
        if self._splice_armed and len(data) >= SPLICE_THRESHOLD:
            self._splice_armed = False
            self.reactor.callLater(0, self._switch_to_pump)

    def upstream_eof(self) -> None:
        """The upstream ended its output: end the downstream's input."""
        if self._up_eof or self.ended is not None:
            return
        self._up_eof = True
        if self._up_valve is not None:
            self._up_valve.ended = True
        _unregister(self.downstream)
        _shut_write(self.downstream)
        if self._down_eof:
            self.end("done")

    def upstream_lost(self, reason: Failure = connectionDone) -> None:
        """The upstream connection is gone."""
        if self.ended is None:
            self.reason = None if reason.check(ConnectionDone) else reason
            self.end("upstream-closed")

    # -- downstream ------------------------------------------------------------

    def downstream_data(self, data: bytes) -> None:
        """Bytes from the downstream: pass them upstream (or buffer them until attached)."""
        self.bytes_from_downstream += len(data)
        transport = self.upstream_transport
        if transport is None:
            self.buffer_early(data, counted=True)
            return
        if self._idle_call is not None:
            self._last_activity = self.reactor.seconds()
        transport.write(data)
        if self._splice_armed and len(data) >= SPLICE_THRESHOLD:
            self._splice_armed = False
            self.reactor.callLater(0, self._switch_to_pump)

    def buffer_early(self, data: bytes, counted: bool = False) -> None:
        """
        Hold downstream bytes until the upstream is attached (sent right
        after the preamble); past `early_limit` reading from the downstream
        pauses.  Once attached, this is the same as `downstream_data`.
        """
        if not data or self.ended is not None:
            return
        if self.upstream_transport is not None:
            if not counted:
                self.downstream_data(data)
            return
        if not counted:
            self.bytes_from_downstream += len(data)
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size >= self.early_limit:
            self._down_valve.hold()

    def downstream_eof(self) -> None:
        """The downstream ended its output: end the upstream's input."""
        if self._down_eof or self.ended is not None:
            return
        self._down_eof = True
        self._down_valve.ended = True
        transport = self.upstream_transport
        if transport is None:
            return
        _unregister(transport)
        _shut_write(transport)
        if self._up_eof:
            self.end("done")

    def downstream_lost(self, reason: Failure = connectionDone) -> None:
        """The downstream connection is gone."""
        if self.ended is None:
            self.reason = None if reason.check(ConnectionDone) else reason
            self.end("client-closed")

    # -- ending ----------------------------------------------------------------

    def end(self, how: str, reason: Failure | None = None, abort: bool | None = None) -> None:
        """
        End the relay (once): stop timers, close both sides and call ``on_end``.

        @param abort: drop the connections without flushing; by default
            "idle-timeout" and "error" abort (their peers may not be
            reading) and other endings close after flushing.
        """
        if self.ended is not None:
            return
        if how not in ENDINGS:
            raise ValueError(f"unknown relay ending {how!r}; expected one of {ENDINGS}")
        self.ended = how
        if reason is not None:
            self.reason = reason
        if self._idle_call is not None:
            if self._idle_call.active():
                self._idle_call.cancel()
            self._idle_call = None
        self._early = []
        self._early_size = 0
        if self._pump is not None:
            self._pump.stop()
        if self._connecting is not None:
            d, self._connecting = self._connecting, None
            d.cancel()
        if abort is None:
            abort = how in ("idle-timeout", "error")
        for transport in (self.downstream, self.upstream_transport):
            if transport is None:
                continue
            _unregister(transport)
            if abort and hasattr(transport, "abortConnection"):
                transport.abortConnection()
            else:
                transport.loseConnection()
        if self.on_end is not None:
            try:
                self.on_end(self, how)
            except Exception:
                _log.failure("relay on_end callback failed")

    # -- idle timeout ------------------------------------------------------------

    def _start_idle_timer(self) -> None:
        if self.idle_timeout is None or self.ended is not None:
            return
        self._last_activity = self.reactor.seconds()
        self._idle_call = self.reactor.callLater(self.idle_timeout, self._check_idle)

    def _check_idle(self) -> None:
        # Traffic only records its time; the timer re-arms itself lazily, so
        # the per-chunk cost is one clock read instead of a timer reset.
        idle = self.reactor.seconds() - self._last_activity
        remaining = self.idle_timeout - idle
        if remaining <= 0:
            self._idle_call = None
            self.end("idle-timeout")
        else:
            self._idle_call = self.reactor.callLater(remaining, self._check_idle)


@implementer(IHalfCloseableProtocol)
class RelayUpstreamProtocol(Protocol):
    """
    The upstream side of a `Relay`: forwards its events to the relay.

    @ivar handshake: over TLS, a Deferred firing with this protocol once the
        handshake has succeeded (the relay is attached then), or failing
        with the reason the connection was lost before; None otherwise.
    """

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.handshake: Deferred | None = None

    def connectionMade(self) -> None:
        # Bound method as instance attribute: saves one call per chunk.
        self.dataReceived = self.relay.upstream_data  # type: ignore[method-assign]
        if isinstance(self.transport, TLSMemoryBIOProtocol):
            # Not attached before the handshake succeeds: a failed one is a
            # failed connect, and the caller may try another upstream.  The
            # interface is declared per connection, not on the class:
            # Twisted's endpoint wrapper (_WrappingProtocol) copies only the
            # last of a protocol's interfaces it knows, so IHandshakeListener
            # on the class would hide IHalfCloseableProtocol there.
            alsoProvides(self, IHandshakeListener)
            self.handshake = Deferred(self._abandon)
            return
        self.relay.attach_upstream(self.transport)

    def _abandon(self, handshake: Deferred) -> None:
        self.handshake = None
        self.transport.abortConnection()

    def handshakeCompleted(self) -> None:
        handshake, self.handshake = self.handshake, None
        if handshake is not None:
            self.relay.attach_upstream(self.transport)
            handshake.callback(self)

    def dataReceived(self, data: bytes) -> None:
        self.relay.upstream_data(data)

    def readConnectionLost(self) -> None:
        self.relay.upstream_eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        handshake, self.handshake = self.handshake, None
        if handshake is not None:
            handshake.errback(reason)  # never attached: the connect failed
            return
        if self.relay.upstream_transport is not self.transport:
            return  # an abandoned attempt, never attached
        self.relay.upstream_lost(reason)


class _UpstreamFactory(Factory):
    """Builds the one `RelayUpstreamProtocol` of a connect attempt."""

    noisy = False

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def buildProtocol(self, addr: Any) -> RelayUpstreamProtocol:
        protocol = RelayUpstreamProtocol(self.relay)
        protocol.factory = self
        return protocol


@implementer(IHalfCloseableProtocol)
class RelayServerProtocol(Protocol):
    """
    A client-facing protocol that owns a `Relay`.

    On connection it makes the relay and calls `start_relay`, which by
    default connects to ``endpoint`` (a plain port forwarder); subclasses
    override `start_relay` (to ask a policy, choose a backend, retry) and
    `relay_ended` (to report).
    """

    relay: Relay | None = None

    def __init__(
        self,
        reactor: Any,
        endpoint: IStreamClientEndpoint | None = None,
        idle_timeout: float | None = None,
        splice: bool = False,
    ) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.idle_timeout = idle_timeout
        self.splice = splice

    def connectionMade(self) -> None:
        self.relay = Relay(
            self.reactor, self.transport, idle_timeout=self.idle_timeout,
            on_end=self.relay_ended, splice=self.splice,
        )
        self.dataReceived = self.relay.downstream_data  # type: ignore[method-assign]
        self.start_relay(self.relay)

    def start_relay(self, relay: Relay) -> None:
        """Connect the relay's upstream; the default connects to ``self.endpoint``."""
        if self.endpoint is None:
            relay.end("error")
            return

        def failed(failure: Failure) -> None:
            relay.end("error", failure)

        relay.connect(self.endpoint).addErrback(failed)

    def relay_ended(self, relay: Relay, how: str) -> None:
        """Called once when the relay ends; override to report."""

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.downstream_data(data)

    def readConnectionLost(self) -> None:
        if self.relay is not None:
            self.relay.downstream_eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.relay is not None:
            self.relay.downstream_lost(reason)
