"""
Where a forward proxy connects: the origin server named by the request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS
from zope.interface import implementer

from multiproxy.balancing import host_endpoint
from multiproxy.pipeline._interfaces import IUpstream, IUpstreamChooser
from multiproxy.pipeline._values import Intent


@implementer(IUpstream)
@dataclass(frozen=True, slots=True)
class Origin:
    """An origin server reached directly by name (an `IUpstream`)."""

    scheme: str
    host: str
    port: int
    connect_timeout: float = 10.0
    origin_tls: Callable[[str], object] | None = field(default=None, compare=False, repr=False)
    """Makes the TLS client creator for an https origin's name (default: system trust)."""
    name: str = field(init=False, compare=False, repr=False)
    """``host:port`` (IPv6 in brackets), for logs."""
    key: tuple[str, str, int] = field(init=False, compare=False, repr=False)
    """What pooled connections to this origin are filed under."""

    def __post_init__(self) -> None:
        # Read on every request: computed once.
        host = f"[{self.host}]" if ":" in self.host else self.host
        object.__setattr__(self, "name", f"{host}:{self.port}")
        object.__setattr__(self, "key", (self.scheme, self.host, self.port))

    def endpoint(self, reactor):
        endpoint = host_endpoint(reactor, self.host, self.port, self.connect_timeout)
        if self.scheme == "https":
            endpoint = wrapClientTLS(origin_tls_for(self.host, self.origin_tls), endpoint)
        return endpoint

    def started(self) -> None:
        pass

    def finished(self, ok: bool, elapsed: float) -> None:
        pass


def origin_tls_for(host: str, origin_tls: Callable[[str], object] | None = None) -> object:
    """The TLS client creator to an https origin: ``origin_tls``'s, else the system trust."""
    return origin_tls(host) if origin_tls is not None else optionsForClientTLS(host)


@implementer(IUpstreamChooser)
class DirectChooser:
    """The forward proxy's chooser: the upstream is the origin the client named."""

    max_cached = 4096

    def __init__(self, connect_timeout: float = 10.0,
                 origin_tls: Callable[[str], object] | None = None) -> None:
        self.connect_timeout = connect_timeout
        self.origin_tls = origin_tls
        self._origins: dict[tuple[str, str, int], Origin] = {}

    def choose(self, intent: Intent, excluded=frozenset()) -> Origin | None:
        key = (intent.scheme or "http", intent.host, intent.port)
        origin = self._origins.get(key)
        if origin is None:
            if len(self._origins) >= self.max_cached:
                self._origins.clear()
            origin = self._origins[key] = Origin(*key, self.connect_timeout, self.origin_tls)
        return None if key in excluded else origin
