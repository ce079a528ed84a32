"""
WebSocket through the reverse proxy: ``Upgrade: websocket`` is passed to the
backend on a connection of its own, and after its ``101 Switching
Protocols`` both connections are joined by the shared byte `Relay`.

A backend that answers anything but 101 has its response relayed as usual
and its connection closed.  Other upgrades (``h2c`` above all, which would
let a client tunnel past the routing) never get here: ``Upgrade`` is a
hop-by-hop field, so the protocol drops it and forwards a plain request.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.balancing._backend import note_exchanged
from multiproxy.http._server import Exchange
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import (
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    RequestHead,
    ResponseHead,
    ResponseReader,
)
from multiproxy.http1._rules import end_to_end
from multiproxy.http1._writer import request_head_bytes
from multiproxy.pipeline._attempts import Attempts
from multiproxy.pipeline._connect import UpstreamEndpoint
from multiproxy.pipeline._errors import ProtocolError, UpstreamError
from multiproxy.pipeline._values import Intent
from multiproxy.transport._relay import Relay

log = Logger()


def start_upgrade(protocol: Any, exchange: Exchange, intent: Intent, pool: Any, backend: Any,
                  head: RequestHead) -> None:
    """Send the upgrade request ``head`` to ``backend`` (failing over within ``pool``)."""
    if getattr(backend, "http2", False):
        # The upgrade is HTTP/1.1's; RFC 8441 to a backend is not spoken here.
        exchange.respond_error(502, f"WebSocket upgrades to the HTTP/2 backend {backend.name} "
                                    "are not supported; give the route an http:// backend")
        return
    headers = head.headers.copy()
    headers.add(b"Connection", b"Upgrade")
    headers.add(b"Upgrade", b"websocket")
    upgrade = _Upgrade(protocol, exchange, intent, pool,
                       RequestHead(head.method, head.target, head.version, headers))
    exchange.abort_fetch = upgrade.abort
    upgrade.connect(backend)


class _Upgrade:
    """One upgrade attempt, from connecting to the backend until the relay ends."""

    def __init__(self, protocol: Any, exchange: Exchange, intent: Intent, pool: Any,
                 head: RequestHead) -> None:
        self.protocol = protocol
        self.exchange = exchange
        self.intent = intent
        self.pool = pool
        self.head = head
        self.reactor = protocol.factory.reactor
        self.timeouts = protocol.factory.timeouts
        self.attempts = Attempts(pool, intent)
        self.backend: Any = None
        self.upstream: _UpgradeUpstream | None = None
        self.pending: Any = None
        self.started_at = 0.0
        self.settled = False  # backend.finished has been called for this attempt
        self.relay: Relay | None = None

    def connect(self, backend: Any) -> None:
        self.backend = backend
        self.settled = False
        self.attempts.begin(backend)
        self.exchange.record.upstream = backend.name
        backend.started()
        self.started_at = self.reactor.seconds()
        endpoint = UpstreamEndpoint(self.reactor, backend, self.timeouts.connect)
        self.pending = endpoint.connect(_UpgradeFactory(self))
        self.pending.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, upstream: _UpgradeUpstream) -> None:
        self.pending = None
        if self.exchange.finished:
            self._settle(True)
            upstream.transport.loseConnection()
            return
        self.upstream = upstream
        upstream.send(self.head, self.timeouts.response)

    def _connect_failed(self, failure: Failure) -> None:
        self.pending = None
        if self.exchange.finished:
            self._settle(True)  # cancelled because the client left
            return
        self._settle(False)
        following = self.attempts.after_failure()
        if following is not None:
            self.connect(following)
            return
        error = failure.value if failure.check(UpstreamError) else UpstreamError(
            f"cannot connect to {self.backend.name}", 502)
        self.exchange.record.ended = "upstream-error"
        self.exchange.respond(503, Headers([
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Retry-After", b"%d" % self.pool.retry_after()),
        ]), f"503 Service Unavailable: no backend of pool {self.pool.name} could be reached "
            f"(last: {error})\n".encode())

    def _settle(self, ok: bool) -> None:
        if not self.settled and self.backend is not None:
            self.settled = True
            self.backend.finished(ok, self.reactor.seconds() - self.started_at)
            # Only the attempt that connected has sent or read anything.
            record = self.exchange.record
            note_exchanged(self.backend, record.status, record.bytes_to_upstream,
                           record.bytes_from_upstream)

    # -- the backend's answer ---------------------------------------------

    def response_head(self, response: ResponseHead) -> bool:
        """A final response head arrived; returns True when the connection became a relay."""
        upgrade = b"websocket" in response.headers.tokens(b"upgrade")
        if response.status != 101 or not upgrade:
            if response.status == 101:
                self.fail(UpstreamError("backend switched to a protocol other than websocket",
                                        502))
                return False
            self.exchange.head(response, self.upstream.transport)
            return False
        self._switch(response)
        return True

    def _switch(self, response: ResponseHead) -> None:
        protocol, exchange = self.protocol, self.exchange
        headers = end_to_end(response.headers)
        headers.add(b"Connection", b"Upgrade")
        headers.add(b"Upgrade", b"websocket")
        relay = Relay(self.reactor, protocol.transport, idle_timeout=self.timeouts.tunnel_idle,
                      on_end=self._relay_ended)
        self.relay = relay
        early = exchange.become_tunnel(101, response.reason, headers, relay)
        upstream = self.upstream
        leftover = upstream.take_over(relay)
        relay.attach_upstream(upstream.transport)
        if leftover:
            relay.upstream_data(leftover)
        if early:
            relay.downstream_data(early)

    def _relay_ended(self, relay: Relay, how: str) -> None:
        record = self.exchange.record
        record.kind = "http"
        record.ended = "websocket-" + how
        record.bytes_from_client += relay.bytes_from_downstream
        record.bytes_to_client += relay.bytes_from_upstream
        record.bytes_to_upstream += relay.bytes_from_downstream
        record.bytes_from_upstream += relay.bytes_from_upstream
        self._settle(how != "error")
        self.protocol.report(self.exchange)

    def data(self, data: bytes) -> None:
        self.exchange.data(data)

    def end(self, trailers: Any = None) -> None:
        self._settle(True)
        if trailers:
            self.exchange.end(trailers)
        else:
            self.exchange.end()

    def fail(self, error: UpstreamError) -> None:
        self._settle(False)
        if self.upstream is not None:
            self.upstream.close()
        self.exchange.fail(error)

    def abort(self) -> None:
        """The client went away before the switch."""
        if self.pending is not None:
            self.pending.cancel()
        if self.upstream is not None:
            self._settle(True)
            self.upstream.close()


@implementer(IHalfCloseableProtocol)
class _UpgradeUpstream(Protocol):
    """The backend side: sends the request, reads the head, then serves the relay."""

    def __init__(self, upgrade: _Upgrade) -> None:
        self.upgrade = upgrade
        self.reader = ResponseReader(upgrade.protocol.factory.limits)
        self.relay: Relay | None = None
        self.done = False
        self.got_bytes = False
        self._timer: Any = None

    def send(self, head: RequestHead, timeout: float | None) -> None:
        self.reader.expect(head.method)
        head_bytes = request_head_bytes(head.method, head.target, head.headers)
        self.transport.write(head_bytes)
        self.upgrade.exchange.record.bytes_to_upstream += len(head_bytes)
        if timeout:
            self._timer = self.upgrade.reactor.callLater(timeout, self._timed_out)

    def take_over(self, relay: Relay) -> bytes:
        """From now on this connection belongs to ``relay``; returns bytes already read."""
        self.relay = relay
        self.done = True
        leftover = self.reader.take_buffered()
        # Counted again by the relay, which is given them.
        self.upgrade.exchange.record.bytes_from_upstream -= len(leftover)
        return leftover

    def close(self) -> None:
        self.done = True
        self._cancel_timer()
        if self.transport is not None:
            self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        if not self.done:
            self.done = True
            self.upgrade.fail(UpstreamError(
                f"backend sent no response within {self.upgrade.timeouts.response:g} s", 504))

    def dataReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.upstream_data(data)
            return
        if self.done:
            return
        self.got_bytes = True
        self.upgrade.exchange.record.bytes_from_upstream += len(data)
        self.reader.feed(data)
        self._pump()

    def _pump(self) -> None:
        reader, upgrade = self.reader, self.upgrade
        while not self.done:
            try:
                event = reader.next_event()
            except ProtocolError as e:
                self.done = True
                upgrade.fail(UpstreamError(f"invalid response from backend: {e}", 502))
                return
            if event is NEED_DATA:
                upgrade.exchange.flush()
                return
            kind = type(event)
            if kind is ResponseHead:
                if event.status < 200 and event.status != 101:
                    upgrade.exchange.head(event, None)
                    continue
                self._cancel_timer()
                if upgrade.response_head(event):
                    return
            elif kind is Data:
                upgrade.data(event.data)
            elif kind is EndOfMessage:
                self.done = True
                upgrade.end()
                self.transport.loseConnection()
                return
            elif event is PAUSED:
                return

    def readConnectionLost(self) -> None:
        if self.relay is not None:
            self.relay.upstream_eof()
            return
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self.relay is not None:
            self.relay.upstream_lost(reason)
            return
        if self.done:
            return
        self.reader.feed_eof()
        self._pump()
        if not self.done:
            self.done = True
            message = ("backend closed the connection mid-response" if self.got_bytes
                       else "backend closed the connection without answering")
            self.upgrade.fail(UpstreamError(message, 502))


class _UpgradeFactory(Factory):
    noisy = False

    def __init__(self, upgrade: _Upgrade) -> None:
        self.upgrade = upgrade

    def buildProtocol(self, addr: Any) -> _UpgradeUpstream:
        return _UpgradeUpstream(self.upgrade)
