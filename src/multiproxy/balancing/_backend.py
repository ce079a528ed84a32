"""
`Backend`: one upstream of a pool, with its connection statistics and health.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, error
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    clientFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.pipeline._connect import DeadlineEndpoint, with_deadline
from multiproxy.pipeline._interfaces import IUpstream

__all__ = [
    "Backend",
    "BackendStatus",
    "DeadlineEndpoint",
    "DirectTCPEndpoint",
    "TLSOrigination",
    "note_connect_failed",
    "note_exchanged",
    "note_retried",
    "with_deadline",
]

LATENCY_SMOOTHING = 0.3
"""Weight of the newest sample in the latency moving average."""

_STATUS_CLASSES = ("", "1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True, slots=True)
class TLSOrigination:
    """
    TLS from the proxy to a backend.

    @ivar server_name: the name sent by SNI and checked in the backend's
        certificate (service-identity); default: the backend's host.
    @ivar ca_file: a PEM file of CA certificates to trust instead of the
        system trust store.
    @ivar verify: False only by explicit configuration: the connection is
        then encrypted but the backend is not authenticated.
    @ivar alpn: ALPN protocols to offer (``(b"http/1.1",)`` for HTTP
        backends; none for a raw TCP relay).
    """

    server_name: str | None = None
    ca_file: str | None = None
    verify: bool = True
    alpn: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """A backend's state at one moment, for a status page."""

    name: str
    state: str  # "up", "down" (active checks), "ejected" (passive), "draining", "maint"
    weight: int
    active: int
    requests: int
    failures: int
    consecutive_failures: int
    latency: float | None  # seconds, moving average of successful exchanges
    last_latency: float | None
    last_check: str | None  # outcome of the last active check, if any
    connect_failures: int = 0  # connect attempts that failed (not client requests)
    retries: int = 0  # attempts here that failed and were tried again
    redispatches: int = 0  # of those, the ones sent to another backend
    admin: str = "ready"  # "ready", "drain" or "maint", set by an operator
    state_seconds: float | None = None  # time in the current state
    downtime: float = 0.0  # seconds spent down, ejected or in maintenance since start
    bytes_in: int = 0  # bytes sent to the backend (requests, relayed client bytes)
    bytes_out: int = 0  # bytes the backend sent (responses, relayed bytes)
    responses: tuple[tuple[str, int], ...] = ()  # by status class ("2xx", ...), sorted
    session_rate: float = 0.0  # requests or connections per second, last interval
    session_rate_max: float = 0.0  # the most seen since start

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@implementer(IStreamClientEndpoint)
class DirectTCPEndpoint:
    """
    A TCP client endpoint without Twisted's per-connection protocol wrapper.

    `TCP4ClientEndpoint` interposes a protocol that forwards every event
    (one more Python call per chunk received) to fire its Deferred after
    ``connectionMade``.  Here the protocol is connected directly and the
    Deferred still fires right after its ``connectionMade``; a cancelled
    connect fails with `CancelledError`, a slow one with `TimeoutError`
    after ``timeout``.
    """

    def __init__(self, reactor: Any, host: str, port: int, timeout: float = 30,
                 bind_address: Any = None) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self.bind_address = bind_address

    def connect(self, factory: Any) -> defer.Deferred:
        connecting = _Connecting(factory)
        connector = self.reactor.connectTCP(
            self.host, self.port, connecting, timeout=self.timeout,
            bindAddress=self.bind_address,
        )

        def cancel(d: defer.Deferred) -> None:
            connecting.cancelled = True
            connector.stopConnecting()

        connecting.deferred = defer.Deferred(cancel)
        return connecting.deferred


class _Connecting(ClientFactory):
    noisy = False
    cancelled = False
    deferred: defer.Deferred

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self.factory.buildProtocol(addr)
        if protocol is None:
            self.deferred.errback(error.ConnectError(string="the protocol factory refused"))
            return None
        make_connection = protocol.makeConnection
        deferred = self.deferred

        def made(transport: Any) -> None:
            # Only the first call is intercepted; then the class's method is back.
            del protocol.makeConnection
            make_connection(transport)
            deferred.callback(protocol)

        try:
            protocol.makeConnection = made
        except AttributeError:  # a protocol with __slots__: fire now
            deferred.callback(protocol)
        return protocol

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.deferred.called:
            self.deferred.errback(Failure(defer.CancelledError()) if self.cancelled else reason)


def _direct(reactor: Any, endpoint: Any, timeout: float | None) -> Any:
    """A `DirectTCPEndpoint` doing what ``endpoint`` (parsed from a ``tcp:`` string) does."""
    if type(endpoint) is not TCP4ClientEndpoint:
        return endpoint
    try:
        host, port = endpoint._host, endpoint._port
        parsed_timeout, bind = endpoint._timeout, endpoint._bindAddress
    except AttributeError:  # a Twisted without these attributes: keep its endpoint
        return endpoint
    return DirectTCPEndpoint(reactor, host, port, timeout or parsed_timeout, bind)


@implementer(IUpstream)
class Backend:
    """
    One backend: where to connect, with what weight, and how it is doing.

    Give either ``address``, a Twisted client endpoint string
    (``tcp:host=10.0.0.5:port=5432``, ``unix:path=/run/app.sock``,
    ``tls:db.internal:5432``), or ``host`` and ``port``.  ``tls`` adds TLS
    origination (verified unless it says otherwise) on top of either.
    ``http2``: an HTTP proxy speaks HTTP/2 to it (prior knowledge, or ALPN
    ``h2`` over TLS), many requests multiplexed on one connection.

    The proxy calls `started` and `finished` around each connection or
    request; a `BackendPool` watches `finished` for passive health checks and
    active checks set `checked_up`.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        address: str | None = None,
        host: str = "",
        port: int = 0,
        tls: TLSOrigination | None = None,
        weight: int = 1,
        connect_timeout: float | None = None,
        proxy_protocol: str | None = None,
        http2: bool = False,
    ) -> None:
        if (address is None) == (not host):
            raise ValueError("a backend needs either an endpoint address or a host and port")
        if host and not 0 < port < 65536:
            raise ValueError(f"backend port must be 1-65535, got {port}")
        if weight < 0:
            raise ValueError(f"backend weight must be 0 or more, got {weight}")
        if proxy_protocol not in (None, "v1", "v2"):
            raise ValueError(f"proxy_protocol must be v1 or v2, got {proxy_protocol!r}")
        if tls is not None and address is not None and tls.server_name is None:
            raise ValueError(
                f"backend {address!r}: TLS over an endpoint address needs a server_name "
                "to verify"
            )
        self.address = address
        self.host = host
        self.port = port
        self.tls = tls
        self.weight = weight
        self.connect_timeout = connect_timeout
        self.proxy_protocol = proxy_protocol
        self.http2 = http2
        self.name = name or address or _host_port(host, port)
        self.key = (address or _host_port(host, port), tls.server_name if tls else None,
                    tls is not None, http2)
        self.active = 0
        self.requests = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.latency: float | None = None
        self.last_latency: float | None = None
        self.checked_up = True
        self.last_check: str | None = None
        self.ejected_until: float | None = None
        self.ejections = 0
        self.connect_failures = 0
        self.retries = 0
        self.redispatches = 0
        self.admin = "ready"
        self._state = "up"
        self._state_since: float | None = None
        self._down_since: float | None = None
        self.downtime = 0.0
        self.bytes_in = 0
        self.bytes_out = 0
        self.responses: dict[str, int] = {}
        self._observers: list[Callable[[Backend, bool], None]] = []
        self._endpoints: dict[int, IStreamClientEndpoint] = {}
        self._tls_creator: Any = None

    def __repr__(self) -> str:
        return f"<Backend {self.name} weight={self.weight}>"

    # IUpstream

    def endpoint(self, reactor: Any) -> IStreamClientEndpoint:
        """The client endpoint for this backend, with TLS and connect timeout applied."""
        cached = self._endpoints.get(id(reactor))
        if cached is not None:
            return cached
        if self.address is not None:
            endpoint = _direct(
                reactor, clientFromString(reactor, self.address), self.connect_timeout
            )
        else:
            endpoint = host_endpoint(reactor, self.host, self.port, self.connect_timeout or 30)
        if self.tls is not None:
            endpoint = wrapClientTLS(self._tls(), endpoint)
        if self.connect_timeout and not isinstance(endpoint, DirectTCPEndpoint):
            endpoint = DeadlineEndpoint(reactor, endpoint, self.connect_timeout)
        self._endpoints = {id(reactor): endpoint}
        return endpoint

    def _tls(self) -> Any:
        if self._tls_creator is None:
            from multiproxy.transport._tls import client_tls

            assert self.tls is not None
            self._tls_creator = client_tls(
                self.tls.server_name or self.host, verify=self.tls.verify,
                ca_file=self.tls.ca_file, alpn=self.tls.alpn,
            )
        return self._tls_creator

    def started(self) -> None:
        self.active += 1
        self.requests += 1

    def connect_failed(self) -> None:
        """
        A connect begun with `started` failed: it counts against the
        backend's health and in `connect_failures`, but not as a request.
        """
        self.requests = max(0, self.requests - 1)
        self.connect_failures += 1
        self.finished(False, 0.0)

    def retried(self, elsewhere: bool) -> None:
        """An attempt here failed and the request was tried again (``elsewhere``: on another backend)."""
        self.retries += 1
        if elsewhere:
            self.redispatches += 1

    def exchanged(self, status: int, sent: int, received: int) -> None:
        """
        A request or connection here is over: ``sent`` bytes went to the
        backend, ``received`` came back, and it answered ``status`` (0: no
        HTTP status, as for a relayed connection or a response that never came).
        """
        self.bytes_in += sent
        self.bytes_out += received
        if 100 <= status <= 599:
            klass = _STATUS_CLASSES[status // 100]
            self.responses[klass] = self.responses.get(klass, 0) + 1

    def finished(self, ok: bool, elapsed: float) -> None:
        self.active = max(0, self.active - 1)
        if ok:
            self.consecutive_failures = 0
            self.last_latency = elapsed
            if self.latency is None:
                self.latency = elapsed
            else:
                self.latency += LATENCY_SMOOTHING * (elapsed - self.latency)
        else:
            self.failures += 1
            self.consecutive_failures += 1
        for observer in self._observers:
            observer(self, ok)

    # health

    def add_observer(self, observer: Callable[[Backend, bool], None]) -> None:
        """Call ``observer(backend, ok)`` after each `finished`."""
        self._observers.append(observer)

    ADMIN_STATES = ("ready", "drain", "maint")
    """What an operator may set: in rotation, no new traffic (drain), or out (maint)."""

    def set_admin(self, admin: str, now: float) -> None:
        """Put the backend in ``admin`` state (one of `ADMIN_STATES`) at ``now``."""
        if admin not in self.ADMIN_STATES:
            raise ValueError(f"admin state must be one of {', '.join(self.ADMIN_STATES)}")
        self.admin = admin
        self.observe_state(now)

    def available(self, now: float) -> bool:
        """Whether new connections may go here at time ``now``."""
        if self.admin != "ready" or not self.checked_up:
            return False
        if self.ejected_until is None:
            return True
        # Past its backoff an ejected backend gets one trial connection at a time.
        return now >= self.ejected_until and self.active == 0

    def state(self, now: float) -> str:
        if self.admin == "maint":
            return "maint"
        if not self.checked_up:
            return "down"
        if self.ejected_until is not None and now < self.ejected_until:
            return "ejected"
        if self.admin == "drain":
            return "draining"
        return "up"

    def observe_state(self, now: float) -> str:
        """
        The state at ``now``, noting when it changed and how long the
        backend has been out of service (call after anything that changes it).
        """
        state = self.state(now)
        if self._state_since is None:
            self._state_since = now
        if state != self._state:
            self._state, self._state_since = state, now
        out = state in ("down", "ejected", "maint")
        if out and self._down_since is None:
            self._down_since = now
        elif not out and self._down_since is not None:
            self.downtime += now - self._down_since
            self._down_since = None
        return state

    def status(self, now: float) -> BackendStatus:
        """A `BackendStatus` snapshot."""
        state = self.observe_state(now)
        downtime = self.downtime
        if self._down_since is not None:
            downtime += now - self._down_since
        return BackendStatus(
            name=self.name, state=state, weight=self.weight, active=self.active,
            requests=self.requests, failures=self.failures,
            consecutive_failures=self.consecutive_failures, latency=self.latency,
            last_latency=self.last_latency, last_check=self.last_check,
            connect_failures=self.connect_failures, retries=self.retries,
            redispatches=self.redispatches, admin=self.admin,
            state_seconds=max(0.0, now - (self._state_since or now)), downtime=downtime,
            bytes_in=self.bytes_in, bytes_out=self.bytes_out,
            responses=tuple(sorted(self.responses.items())),
        )


def note_connect_failed(upstream: Any) -> None:
    """
    Tell ``upstream`` (begun with ``started``) that its connect failed: a
    `Backend` counts it apart from requests; any other `IUpstream` just
    hears ``finished(False, 0)`` (the interface has no more to say).
    """
    connect_failed = getattr(upstream, "connect_failed", None)
    if connect_failed is not None:
        connect_failed()
    else:
        upstream.finished(False, 0.0)


def note_exchanged(upstream: Any, status: int, sent: int, received: int) -> None:
    """
    Tell ``upstream`` the bytes and status of a finished request or
    connection (`Backend.exchanged`); any other `IUpstream` keeps no counts.
    """
    exchanged = getattr(upstream, "exchanged", None)
    if exchanged is not None:
        exchanged(status, sent, received)


def note_retried(upstream: Any, following: Any) -> None:
    """An attempt on ``upstream`` failed and ``following`` gets the request next."""
    retried = getattr(upstream, "retried", None)
    if retried is not None:
        retried(following is not upstream)


def host_endpoint(reactor: Any, host: str, port: int, timeout: float) -> IStreamClientEndpoint:
    """
    A TCP client endpoint for ``host``: `DirectTCPEndpoint` for an IP
    literal (no resolver thread, and no Happy Eyeballs round: a refused
    connection fails at once instead of at the next 0.3 s attempt), else
    ``HostnameEndpoint``.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    return DirectTCPEndpoint(reactor, host, port, timeout)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
