"""
An inspected CONNECT tunnel (Squid calls it bumping): the proxy answers the
CONNECT itself, runs a TLS server over the client's connection with a
certificate from the `multiproxy.forward._inspect.CertificateMint`, and
reads the requests inside with a protocol of the proxy's own class (so a
subclass behaves the same inside), whose ``inspected`` names the origin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from multiproxy.forward._inspect import server_name_of

__all__ = ["InspectedTunnel"]


class _Given(Factory):
    """Hands the TLS wrapper the one protocol already made."""

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Any:
        return self._protocol


class InspectedTunnel:
    """
    Stands where a relay stands on the client's connection
    (``downstream_data``, ``downstream_eof``, ``downstream_lost``) and feeds
    the client's bytes to the TLS server; ``on_end(tunnel)`` is called once
    when the client's connection is gone.

    @ivar host: the origin's name: the SNI name when the client sent one the
        proxy inspects, else the CONNECT host.
    @ivar port: the CONNECT port.
    """

    def __init__(self, outer: Any, host: str, port: int, inspector: Any,
                 on_end: Callable[[InspectedTunnel], None]) -> None:
        self.outer = outer
        self.connect_host = host
        self.port = port
        self.inspector = inspector
        self.bytes_from_client = 0
        self._server_name: str | None = None
        self.established = False
        """Whether the TLS handshake with the client finished (known once it ends)."""
        self._on_end = on_end
        inner = outer.factory.buildProtocol(outer.transport.getPeer())
        inner.inspected = self
        inner.nested = True
        self.inner = inner
        wrapper = TLSMemoryBIOFactory(inspector.server_tls(host), False, _Given(inner),
                                      clock=outer.factory.reactor)
        self.tls = wrapper.buildProtocol(outer.transport.getPeer())
        self.tls.makeConnection(outer.transport)

    @property
    def host(self) -> str:
        name = self.server_name
        if name and name != self.connect_host and self.inspector.wants(name):
            return name
        return self.connect_host

    @property
    def server_name(self) -> str | None:
        """The SNI name the client sent (normalised), if any."""
        handle = self.tls.getHandle()
        if handle is not None:  # None once the connection is gone: the last one read stands
            self._server_name = server_name_of(handle)
        return self._server_name

    def downstream_data(self, data: bytes) -> None:
        self.bytes_from_client += len(data)
        self.tls.dataReceived(data)

    def downstream_eof(self) -> None:
        # TLS has no half-close: the client is done.
        self.outer.transport.loseConnection()

    def downstream_lost(self, reason: Failure) -> None:
        handle = self.tls.getHandle()  # read while the TLS connection is still there
        self._server_name = self.server_name
        # No Finished from the client: the handshake never ended (most often: it does
        # not trust the inspection CA).
        self.established = handle is not None and handle.get_peer_finished() is not None
        self.tls.connectionLost(reason)
        on_end, self._on_end = self._on_end, None
        if on_end is not None:
            on_end(self)
