"""
Accepting the PROXY protocol on a listener, for the TCP relay.

Twisted's ``haproxy:`` endpoint wrapper parses the header (with Twisted's own
v1 and v2 parsers, reused here) but gives the wrapped protocol no signal
when a header arrives without data after it, drops half-close, and closes
connections whose first read holds fewer than 8 or 16 bytes.  A relay
needs all three: a backend that speaks first (SMTP, MySQL) must be
connected as soon as the header is in, and a client's end of input must
reach the relay.  Twisted's v1 parser also accepts impossible addresses and
ports; v1 lines are read here by `StrictV1Parser`, which refuses them.
`ProxyHeaderWrapper` is Twisted's wrapper with those fixed;
`proxy_header_endpoint` wraps any server endpoint with it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol, IStreamServerEndpoint
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.protocols.haproxy._wrapper import HAProxyProtocolWrapper, HAProxyWrappingFactory
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer

from multiproxy.tcp._v1parser import StrictV1Parser

__all__ = ["ProxyHeaderWrapper", "find_proxy_header_wrapper", "proxy_header_endpoint"]

_V2_MIN = 16


@implementer(IHalfCloseableProtocol)
class ProxyHeaderWrapper(HAProxyProtocolWrapper):
    """
    Reads a PROXY v1 or v2 header, then passes the connection through with
    ``getPeer``/``getHost`` giving the addresses the header carried.
    """

    def __init__(self, factory: Any, wrappedProtocol: Any) -> None:
        super().__init__(factory, wrappedProtocol)
        self._prefix = b""
        self._waiting: list[Callable[[], None]] = []

    @property
    def header_pending(self) -> bool:
        """True until a complete header has been read."""
        return self._proxyInfo is None

    def when_header(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the header is read (at once if it already is)."""
        if self._proxyInfo is not None:
            callback()
        else:
            self._waiting.append(callback)

    def dataReceived(self, data: bytes) -> None:
        if self._proxyInfo is not None:
            self.wrappedProtocol.dataReceived(data)
            return
        if self._parser is None:
            data = self._prefix + data
            v1 = V1Parser.PROXYSTR + b" "
            if V2Parser.PREFIX.startswith(data[:12]):
                if len(data) < _V2_MIN:
                    self._prefix = data  # too short to tell yet
                    return
                if data[12] & 0xF0 != 0x20:
                    self.loseConnection()
                    return
                self._parser = V2Parser()
            elif v1.startswith(data[: len(v1)]):
                if len(data) < len(v1):
                    self._prefix = data
                    return
                self._parser = StrictV1Parser()
            else:
                self.loseConnection()
                return
            self._prefix = b""
        try:
            info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            self.loseConnection()
            return
        if info is None:
            return
        self._proxyInfo = info
        waiting, self._waiting = self._waiting, []
        for callback in waiting:
            callback()
        if remaining and self.wrappedProtocol is not None:
            self.wrappedProtocol.dataReceived(remaining)

    def readConnectionLost(self) -> None:
        protocol = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if protocol is not None and self._proxyInfo is not None:
            protocol.readConnectionLost()
        else:
            self.loseConnection()

    def writeConnectionLost(self) -> None:
        protocol = IHalfCloseableProtocol(self.wrappedProtocol, None)
        if protocol is not None:
            protocol.writeConnectionLost()


class ProxyHeaderWrappingFactory(HAProxyWrappingFactory):
    """Wraps each connection of a factory in a `ProxyHeaderWrapper`."""

    protocol = ProxyHeaderWrapper


@implementer(IStreamServerEndpoint)
class _ProxyHeaderEndpoint:
    def __init__(self, endpoint: IStreamServerEndpoint) -> None:
        self._endpoint = endpoint

    def listen(self, protocolFactory: Any) -> Any:
        return self._endpoint.listen(ProxyHeaderWrappingFactory(protocolFactory))


def proxy_header_endpoint(endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
    """``endpoint``, with every connection starting with a PROXY header."""
    return _ProxyHeaderEndpoint(endpoint)


def find_proxy_header_wrapper(transport: Any) -> ProxyHeaderWrapper | None:
    """The `ProxyHeaderWrapper` under ``transport`` (through TLS), if any."""
    for _ in range(8):
        if isinstance(transport, ProxyHeaderWrapper):
            return transport
        if not isinstance(transport, ProtocolWrapper):
            return None
        transport = transport.transport
    return None
