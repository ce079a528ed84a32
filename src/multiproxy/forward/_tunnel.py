"""
Opening a tunnel through a parent proxy: ``CONNECT host:port`` and its answer.

`ParentTunnelEndpoint` is a client endpoint whose connections come out at
the origin: it connects to the parent, sends ``CONNECT`` (with the parent's
``Proxy-Authorization``), reads the answer's head and, on a 2xx, hands the
connection to the protocol the caller's factory builds, as if it had
connected to the origin itself (a `Relay` for a CONNECT tunnel; TLS and an
HTTP connection for an ``https://`` request).  Any other answer fails the
connect with an `UpstreamError` (502) naming the parent's status; the
caller's deadline (`UpstreamEndpoint`) covers the answer too.

`connect_request` (pure) makes the request; `ResponseReader` reads the
answer, so its limits and grammar are the HTTP client's.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.http1._parser import NEED_DATA, Limits, ResponseHead, ResponseReader
from multiproxy.http1._writer import request_head_bytes
from multiproxy.pipeline._errors import ProtocolError, UpstreamError

__all__ = ["ParentTunnelEndpoint", "connect_request"]

_CONNECT_LIMITS = Limits()


def connect_request(authority: bytes, proxy_authorization: bytes | None) -> bytes:
    """The ``CONNECT authority`` request a parent is sent (RFC 9110 9.3.6)."""
    headers = [(b"Host", authority)]
    if proxy_authorization is not None:
        headers.append((b"Proxy-Authorization", proxy_authorization))
    return request_head_bytes(b"CONNECT", authority, headers)


@implementer(IStreamClientEndpoint)
class ParentTunnelEndpoint:
    """
    Connects through ``endpoint`` (the parent's) to ``authority``
    (``host:port``) with CONNECT; ``parent`` names the parent in errors.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, authority: bytes,
                 proxy_authorization: bytes | None, parent: str) -> None:
        self.endpoint = endpoint
        self.authority = authority
        self.proxy_authorization = proxy_authorization
        self.parent = parent

    def connect(self, factory: Any) -> defer.Deferred:
        opener: _TunnelOpener | None = None

        def cancel(d: defer.Deferred) -> None:
            if not connecting.called:
                connecting.cancel()
            elif opener is not None and opener.transport is not None:
                opener.transport.abortConnection()

        result: defer.Deferred = defer.Deferred(cancel)

        def build() -> _TunnelOpener:
            nonlocal opener
            opener = _TunnelOpener(self, factory, result)
            return opener

        connecting = self.endpoint.connect(Factory.forProtocol(build))

        def failed(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        connecting.addErrback(failed)
        return result


@implementer(IHalfCloseableProtocol)
class _TunnelOpener(Protocol):
    """
    The parent connection's protocol: asks for the tunnel, then passes every
    event on to the protocol that uses it.
    """

    def __init__(self, endpoint: ParentTunnelEndpoint, factory: Any,
                 result: defer.Deferred) -> None:
        self.endpoint = endpoint
        self.user_factory = factory
        """The caller's factory (``factory`` is the one that built this protocol)."""
        self.result = result
        self.inner: Any = None
        self._reader = ResponseReader(_CONNECT_LIMITS)
        self._reader.expect(b"CONNECT")

    def connectionMade(self) -> None:
        endpoint = self.endpoint
        self.transport.write(connect_request(endpoint.authority, endpoint.proxy_authorization))

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        reader = self._reader
        reader.feed(data)
        while True:
            try:
                event = reader.next_event()
            except ProtocolError as e:
                self._fail(f"invalid answer to CONNECT from {self.endpoint.parent}: {e}",
                           "invalid-response")
                return
            if event is NEED_DATA:
                return
            if not isinstance(event, ResponseHead):
                self._fail(f"{self.endpoint.parent} closed the connection without answering "
                           "CONNECT", "closed")
                return
            status = event.status
            if status == 101 or status >= 300:
                reason = event.reason.decode("latin-1")
                self._fail(f"{self.endpoint.parent} answered CONNECT "
                           f"{self.endpoint.authority.decode('ascii')} with {status} {reason}",
                           "parent-refused")
                return
            if status >= 200:
                self._open(reader.take_buffered())
                return
            # An interim 1xx: the final answer follows.

    def _open(self, early: bytes) -> None:
        inner = self.user_factory.buildProtocol(self.transport.getPeer())
        if inner is None:
            self._fail("the protocol factory refused the tunnel", "error")
            return
        self.inner = inner
        inner.makeConnection(self.transport)
        # Bound method as instance attribute (taken after makeConnection, which
        # may set its own): saves one call per chunk.
        self.dataReceived = inner.dataReceived  # type: ignore[method-assign]
        if not self.result.called:
            self.result.callback(inner)
        if early:
            # Bytes the origin sent right after the parent's answer, given
            # once whoever waited for the tunnel has it.
            inner.dataReceived(early)

    def _fail(self, message: str, kind: str) -> None:
        if not self.result.called:
            self.result.errback(UpstreamError(message, 502, kind))
        self.transport.abortConnection()

    def readConnectionLost(self) -> None:
        inner = self.inner
        if inner is None:
            self.transport.loseConnection()
        elif IHalfCloseableProtocol.providedBy(inner):
            inner.readConnectionLost()
        else:
            # As Twisted does for a protocol without half-close: the end of
            # input ends the connection.
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        inner = self.inner
        if inner is not None and IHalfCloseableProtocol.providedBy(inner):
            inner.writeConnectionLost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)
            return
        if not self.result.called:
            self.result.errback(UpstreamError(
                f"{self.endpoint.parent} closed the connection without answering CONNECT",
                502, "closed"))
