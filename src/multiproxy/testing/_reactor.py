"""
`FakeReactor`: a `Clock` with TCP, name resolution and listening, all in memory.

A proxy built with ``FakeReactor`` for its ``reactor`` connects upstream
through ``connectTCP`` (directly, or through ``HostnameEndpoint``, which asks
``nameResolver`` first) and listens through ``listenTCP`` (endpoint strings
such as ``tcp:8080:interface=127.0.0.1`` included).  Both reach the
in-memory `MemoryNetwork` instead of the kernel: a connect to an address
where something listens joins the two factories' protocols; a connect to an
address where nothing listens is refused, and a name nothing was registered
under fails to resolve, exactly as Twisted reports them, so the proxy's own
connect-error path answers (502, 504).

Time is `twisted.internet.task.Clock`'s, except that `FakeReactor.advance`
stops at each timer due on the way and pumps the network before the next,
so a slow origin's reply at t=5 is delivered before a timeout due at t=30
fires, as it would be in real time; and a pump runs the timers already due
(``callLater(0, ...)``), as a real reactor's next turn would.
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import (
    IConnector,
    IHostnameResolver,
    IHostResolution,
    IListeningPort,
    IReactorCore,
    IReactorFromThreads,
    IReactorPluggableNameResolver,
    IReactorSSL,
    IReactorTCP,
    IReactorThreads,
    IReactorTime,
    IResolutionReceiver,
)
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.testing._network import (
    Address,
    MemoryConnection,
    MemoryNetwork,
    describe_address,
    tcp_address,
)

CONNECT_MODES = ("accept", "refuse", "hang")
"""What a listener does with a connect: join it, refuse it, or never answer (a black hole)."""


class TLSNotSupported(error.ConnectError):
    """A proxy connected with TLS (an https:// origin): not supported in memory."""


@implementer(IListeningPort)
class FakeListeningPort:
    """
    A factory listening on the in-memory network at ``host``:``port``.

    ``host`` ``""`` (or ``0.0.0.0`` / ``::``) listens on every address.
    ``connect_mode`` is one of `CONNECT_MODES` (set it to make a backend
    refuse or black-hole connects).
    """

    def __init__(self, reactor: FakeReactor, host: str, port: int, factory: Any,
                 label: str) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.factory = factory
        self.label = label
        self._connect_mode = "accept"
        self.listening = False

    @property
    def connect_mode(self) -> str:
        """What a connect here meets: one of `CONNECT_MODES`."""
        return self._connect_mode

    @connect_mode.setter
    def connect_mode(self, mode: str) -> None:
        if mode not in CONNECT_MODES:
            raise ValueError(f"connect_mode must be one of {', '.join(CONNECT_MODES)}, "
                             f"not {mode!r}")
        self._connect_mode = mode

    def startListening(self) -> None:
        """Start accepting (the factory's ``doStart`` runs)."""
        if not self.listening:
            self.listening = True
            self.reactor.listeners.append(self)
            self.factory.doStart()

    def stopListening(self) -> defer.Deferred:
        """Stop accepting (the factory's ``doStop`` runs); open connections stay."""
        if self.listening:
            self.listening = False
            self.reactor.listeners.remove(self)
            self.factory.doStop()
        return defer.succeed(None)

    def getHost(self) -> Address:
        """The address listened on."""
        return tcp_address(self.host or "0.0.0.0", self.port)

    def serves(self, host: str, port: int) -> bool:
        """Whether a connect to ``host``:``port`` reaches this port."""
        return port == self.port and self.host in (host, "", "0.0.0.0", "::")

    def __repr__(self) -> str:
        return f"<FakeListeningPort {self.label} on {describe_address(self.getHost())}>"


@implementer(IConnector)
class FakeConnector:
    """
    The ``IConnector`` that `FakeReactor.connectTCP` returns.

    ``outcome`` says how the attempt went: ``connecting``, ``connected``,
    or the failure's kind (``refused``, ``unresolved``, ``timed out``,
    ``cancelled``, ``tls unsupported``).
    """

    def __init__(self, reactor: FakeReactor, host: str, port: int, factory: Any,
                 timeout: float) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.factory = factory
        self.timeout = timeout
        self.state = "disconnected"
        self.outcome = "connecting"
        self.tls_on_fake_clock = False
        """True for `FakeReactor.connectSSL`'s TLS, which works in memory."""
        self.connection: MemoryConnection | None = None
        self._timer: Any = None

    def getDestination(self) -> Address:
        """The address connected to."""
        return tcp_address(self.reactor.address_of(self.host) or self.host, self.port)

    def connect(self) -> None:
        """Start connecting (again)."""
        self.state = "connecting"
        self.factory.doStart()
        self.factory.startedConnecting(self)
        self._timer = self.reactor.callLater(self.timeout, self._timed_out)
        self.reactor.network.soon(self.reactor._attempt, self)

    def stopConnecting(self) -> None:
        """Give up a connect in progress (the factory hears ``UserError``)."""
        if self.state == "connecting":
            self.failed(Failure(error.UserError(string="stopConnecting")))

    def disconnect(self) -> None:
        """Close the connection, or give up connecting."""
        if self.state == "connecting":
            self.stopConnecting()
        elif self.connection is not None and self.connection.open:
            self.connection.client.loseConnection()

    def _timed_out(self) -> None:
        self._timer = None
        if self.state == "connecting":
            self.failed(Failure(error.TimeoutError(string=f"connect to {self.host}:{self.port}")))

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def failed(self, reason: Failure) -> None:
        """The connect failed with ``reason``."""
        if self.state != "connecting":
            return
        self._stop_timer()
        self.state = "disconnected"
        self.outcome = _OUTCOMES.get(reason.type, "failed")
        self.factory.clientConnectionFailed(self, reason)
        self.factory.doStop()

    def connected(self, connection: MemoryConnection) -> None:
        """The connect succeeded (before the protocols are connected)."""
        self._stop_timer()
        self.state = "connected"
        self.outcome = "connected"
        self.connection = connection

    def lost(self, reason: Failure) -> None:
        """The connection this connector made is over."""
        self.state = "disconnected"
        self.factory.clientConnectionLost(self, reason)
        self.factory.doStop()


_OUTCOMES = {
    error.ConnectionRefusedError: "refused",
    error.DNSLookupError: "unresolved",
    error.TimeoutError: "timed out",
    error.UserError: "cancelled",
    TLSNotSupported: "tls unsupported",
}


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass


@implementer(IHostnameResolver)
class FakeNameResolver:
    """Resolves the names registered with `FakeReactor.add_name` (and IP literals)."""

    def __init__(self, reactor: FakeReactor) -> None:
        self.reactor = reactor

    def resolveHostName(self, resolutionReceiver: IResolutionReceiver, hostName: str,
                        portNumber: int = 0, addressTypes: Any = None,
                        transportSemantics: str = "TCP") -> IHostResolution:
        """Report the name's one address (none for an unknown name) at the next pump."""
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)

        def answer() -> None:
            address = self.reactor.address_of(hostName)
            if address is not None:
                resolutionReceiver.addressResolved(tcp_address(address, portNumber))
            resolutionReceiver.resolutionComplete()

        self.reactor.network.soon(answer)
        return resolution


class SynchronousThreadPool:
    """
    Stands in for the reactor's thread pool: runs each call at the next pump,
    in the reactor's thread (there are no threads in a test).
    """

    def __init__(self, network: MemoryNetwork) -> None:
        self.network = network

    def callInThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``f(*args, **kwargs)`` at the next pump."""
        self.network.soon(f, *args, **kwargs)

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], None],
                                 f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``f`` at the next pump and hand ``onResult`` (success, result or Failure)."""

        def run() -> None:
            try:
                result = f(*args, **kwargs)
            except BaseException:  # as Twisted's pool does: every failure goes to onResult
                onResult(False, Failure())
            else:
                onResult(True, result)

        self.network.soon(run)


@implementer(IReactorTime, IReactorTCP, IReactorSSL, IReactorPluggableNameResolver,
             IReactorCore, IReactorThreads, IReactorFromThreads)
class FakeReactor(Clock):
    """
    A reactor for tests: fake time, and TCP over an in-memory network.

    Pass it wherever multiproxy takes a ``reactor``.  Names resolve only if
    registered with `add_name` (a `Harness` does that for its fake origins);
    anything else fails as an unknown host does.  ``start`` is the clock's
    first reading (seconds since the epoch; 0 by default).
    """

    fake_addresses = ipaddress.ip_network("198.18.0.0/15")
    """Where names registered without an address get theirs (RFC 2544's benchmarking range)."""

    def __init__(self, start: float = 0.0) -> None:
        super().__init__()
        self.rightNow = start
        self.network = MemoryNetwork()
        self.network.run_due = self._run_due
        self.listeners: list[FakeListeningPort] = []
        self.names: dict[str, str] = {}
        self.nameResolver = FakeNameResolver(self)
        self.running = True
        self.triggers: dict[tuple[str, str], list[tuple[Callable[..., Any], tuple, dict]]] = {}
        self._trigger_ids = itertools.count(1)
        self._trigger_handles: dict[tuple[str, str, int], tuple] = {}
        self._next_address = iter(self.fake_addresses.hosts())
        self._ephemeral_ports = itertools.count(61000)
        self._thread_pool = SynchronousThreadPool(self.network)
        self.connectors: list[FakeConnector] = []
        """Every ``connectTCP`` made, oldest first (each with its ``outcome``)."""

    # names

    def add_name(self, name: str, address: str | None = None) -> str:
        """Make ``name`` resolve (to ``address``, or a fresh fake one); return the address."""
        name = name.lower().rstrip(".")
        if address is None:
            address = self.names.get(name) or str(next(self._next_address))
        self.names[name] = address
        return address

    def address_of(self, host: str) -> str | None:
        """The address ``host`` resolves to: itself for an IP literal, None if unknown."""
        try:
            return str(ipaddress.ip_address(host.strip("[]")))
        except ValueError:
            return self.names.get(host.lower().rstrip("."))

    def name_of(self, address: str) -> str | None:
        """A name registered for ``address``, if any (for messages)."""
        for name, known in self.names.items():
            if known == address:
                return name
        return None

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """Use ``resolver`` instead (``IReactorPluggableNameResolver``); return the old one."""
        previous, self.nameResolver = self.nameResolver, resolver
        return previous

    def resolve(self, name: str, timeout: Any = None) -> defer.Deferred:
        """``IReactorCore.resolve``: the name's address, or ``DNSLookupError``."""
        address = self.address_of(name)
        if address is None:
            return defer.fail(error.DNSLookupError(name))
        return defer.succeed(address)

    # time

    def advance(self, amount: float) -> None:
        """
        Move the clock ``amount`` seconds on, running each timer at its time
        and pumping the network after each, then once more at the end.
        """
        if amount < 0:
            raise ValueError(f"time cannot go back ({amount} s)")
        end = self.rightNow + amount
        self.network.pump()
        while True:
            due = [call.getTime() for call in self.calls]
            upcoming = min(due) if due else None
            if upcoming is None or upcoming > end:
                break
            super().advance(max(0.0, upcoming - self.rightNow))
            self.network.pump()
        super().advance(end - self.rightNow)
        self.network.pump()

    def _run_due(self) -> bool:
        if self.calls and self.calls[0].getTime() <= self.rightNow:
            Clock.advance(self, 0)
            return True
        return False

    # TCP

    def listenTCP(self, port: int, factory: Any, backlog: int = 50,
                  interface: str = "") -> FakeListeningPort:
        """Listen on the in-memory network (port 0 picks a free one)."""
        return self.listen(factory, interface, port, label=type(factory).__name__)

    def listen(self, factory: Any, host: str, port: int, label: str) -> FakeListeningPort:
        """`listenTCP` with a label for messages."""
        if port == 0:
            port = next(p for p in self._ephemeral_ports
                        if not any(lp.serves(host or "0.0.0.0", p) for lp in self.listeners))
        for other in self.listeners:
            if other.port == port and (other.host == host or "" in (host, other.host)):
                raise error.CannotListenError(host, port, OSError("address already in use"))
        listening = FakeListeningPort(self, host, port, factory, label)
        listening.startListening()
        return listening

    def connectTCP(self, host: str, port: int, factory: Any, timeout: float = 30,
                   bindAddress: Any = None) -> FakeConnector:
        """Connect over the in-memory network (outcome at the next pump)."""
        connector = FakeConnector(self, host, port, factory, timeout)
        self.connectors.append(connector)
        connector.connect()
        return connector

    def listening_at(self, host: str, port: int) -> FakeListeningPort | None:
        """What listens where a connect to ``host``:``port`` arrives (an exact host first)."""
        exact = [p for p in self.listeners if p.port == port and p.host == host]
        if exact:
            return exact[0]
        return next((p for p in self.listeners if p.serves(host, port)), None)

    def client_address(self, like: str) -> Address:
        """A fresh local address for a new outgoing connection (same family as ``like``)."""
        return tcp_address("::1" if ":" in like else "127.0.0.1", next(self._ephemeral_ports))

    def _attempt(self, connector: FakeConnector) -> None:
        if connector.state != "connecting":
            return
        address = self.address_of(connector.host)
        if address is None:
            connector.failed(Failure(error.DNSLookupError(connector.host)))
            return
        listening = self.listening_at(address, connector.port)
        if listening is None or listening.connect_mode == "refuse":
            why = ("nothing listens" if listening is None
                   else f"{listening.label} refuses connections")
            connector.failed(Failure(error.ConnectionRefusedError(
                string=f"{why} at {connector.host}:{connector.port} (in memory)")))
            return
        if listening.connect_mode == "hang":
            return  # the connect timeout (the connector's, or the caller's) ends it
        if _wants_tls(connector.factory) and not connector.tls_on_fake_clock:
            # wrapClientTLS's TLS layer flushes its writes on the global
            # reactor, so it could never finish a handshake here: say so
            # instead of hanging.
            name = self.name_of(address) or address
            connector.failed(Failure(TLSNotSupported(string=(
                f"multiproxy.testing: TLS from the proxy to {name}:{connector.port} is not "
                "supported in memory (https:// origins, TLS backends); use http:// in the test"
            ))))
            return
        self.join(connector.factory, listening, connector=connector,
                  client_address=self.client_address(address),
                  server_address=tcp_address(address, connector.port))

    def join(self, client_factory: Any, listening: FakeListeningPort | Any, *,
             client_address: Address, server_address: Address,
             connector: FakeConnector | None = None, label: str | None = None) -> MemoryConnection:
        """
        Connect a protocol of ``client_factory`` to one of ``listening``'s
        factory (a `FakeListeningPort`, or a server factory itself).
        """
        server_factory = getattr(listening, "factory", listening)
        name = label or getattr(listening, "label", type(server_factory).__name__)
        connection = MemoryConnection(self.network, client_address, server_address, name)
        server_protocol = server_factory.buildProtocol(client_address)
        if server_protocol is None:
            if connector is not None:
                connector.failed(Failure(error.ConnectionRefusedError(
                    string=f"{name} refused the connection (buildProtocol returned None)")))
            return connection
        client_protocol = client_factory.buildProtocol(server_address)
        if client_protocol is None:
            if connector is not None:
                connector.failed(Failure(error.ConnectError(
                    string="the client factory's buildProtocol returned None")))
            connection.client.protocol = _Nothing()
            connection.server.protocol = server_protocol
            server_protocol.makeConnection(connection.server)
            connection.close(connection.client, aborted=False)
            return connection
        if connector is not None:
            connector.connected(connection)

            def on_close(end: Any, reason: Failure) -> None:
                if end is connection.client:
                    connector.lost(reason)

            connection.on_close.append(on_close)
        connection.start(client_protocol, server_protocol)
        return connection

    # TLS over the in-memory TCP, with the TLS layer's timers on this clock

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> FakeListeningPort:
        """Listen with TLS (``ssl:`` endpoint strings): `listenTCP` under a TLS layer."""
        from twisted.protocols.tls import TLSMemoryBIOFactory

        wrapped = TLSMemoryBIOFactory(contextFactory, False, factory, clock=self)
        return self.listen(wrapped, interface, port, label=f"TLS {type(factory).__name__}")

    def connectSSL(self, host: str, port: int, factory: Any, contextFactory: Any,
                   timeout: float = 30, bindAddress: Any = None) -> FakeConnector:
        """Connect with TLS: `connectTCP` under a TLS layer whose timers run on this clock."""
        from twisted.protocols.tls import TLSMemoryBIOFactory

        wrapped = TLSMemoryBIOFactory(contextFactory, True, factory, clock=self)
        connector = FakeConnector(self, host, port, wrapped, timeout)
        connector.tls_on_fake_clock = True
        self.connectors.append(connector)
        connector.connect()
        return connector

    # UNIX sockets: refused with a message (not declared as IReactorUNIX)

    def listenUNIX(self, address: str, factory: Any, backlog: int = 50, mode: int = 0o666,
                   wantPID: bool = False) -> Any:
        """Refused: ``unix:`` listeners are not simulated; listen with ``tcp:`` in a test."""
        raise NotImplementedError(
            f"multiproxy.testing: unix: endpoints ({address}) are not in memory; "
            "give the proxy a tcp: listener in the test")

    def connectUNIX(self, address: str, factory: Any, timeout: float = 30,
                    checkPID: bool = False) -> Any:
        """Refused: ``unix:`` backends are not simulated; use a TCP address in a test."""
        raise NotImplementedError(
            f"multiproxy.testing: unix: endpoints ({address}) are not in memory; "
            "give the backend a TCP address in the test")

    # core

    def callWhenRunning(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """The fake reactor is always running: ``f`` runs at the next pump."""
        self.network.soon(f, *args, **kwargs)

    def addSystemEventTrigger(self, phase: str, eventType: str, f: Callable[..., Any],
                              *args: Any, **kwargs: Any) -> tuple[str, str, int]:
        """Keep ``f`` for `fireSystemEvent` (``before``/``during``/``after`` ``eventType``)."""
        handle = (phase, eventType, next(self._trigger_ids))
        self.triggers.setdefault((phase, eventType), []).append((f, args, kwargs))
        self._trigger_handles[handle] = (f, args, kwargs)
        return handle

    def removeSystemEventTrigger(self, triggerID: tuple[str, str, int]) -> None:
        """Forget a trigger added with `addSystemEventTrigger`."""
        entry = self._trigger_handles.pop(triggerID, None)
        if entry is not None:
            self.triggers[(triggerID[0], triggerID[1])].remove(entry)

    def fireSystemEvent(self, eventType: str) -> None:
        """Run the triggers of ``eventType`` (``shutdown``, ...), phase by phase, then pump."""
        for phase in ("before", "during", "after"):
            for f, args, kwargs in list(self.triggers.get((phase, eventType), [])):
                f(*args, **kwargs)
            self.network.pump()

    def stop(self) -> None:
        """Fire the shutdown triggers (what stopping a reactor does)."""
        self.running = False
        self.fireSystemEvent("shutdown")

    def crash(self) -> None:
        """Mark the reactor as not running."""
        self.running = False

    def run(self) -> None:
        """Refused: a test drives the fake reactor with `advance` and the harness."""
        raise NotImplementedError("a FakeReactor is driven by advance() and pump(), not run()")

    def iterate(self, delay: float = 0) -> None:
        """Pump the network once (``delay`` is ignored: time moves with `advance`)."""
        self.network.pump()

    # threads

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``f`` at the next pump."""
        self.network.soon(f, *args, **kwargs)

    def callInThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run ``f`` at the next pump (no threads in a test)."""
        self.network.soon(f, *args, **kwargs)

    def getThreadPool(self) -> SynchronousThreadPool:
        """A pool that runs its calls at the next pump."""
        return self._thread_pool

    def suggestThreadPoolSize(self, size: int) -> None:
        """Accepted and ignored."""

    def pump(self) -> None:
        """Deliver bytes and run queued events until nothing moves (no time passes)."""
        self.network.pump()


class _Nothing:
    def makeConnection(self, transport: Any) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


def _wants_tls(factory: Any) -> bool:
    """Whether ``factory`` (or one it wraps) is a TLS client factory."""
    from twisted.protocols.tls import TLSMemoryBIOFactory

    seen = 0
    while factory is not None and seen < 8:
        if isinstance(factory, TLSMemoryBIOFactory):
            return True
        factory = (getattr(factory, "wrappedFactory", None) or getattr(factory, "factory", None)
                   or getattr(factory, "_wrappedFactory", None))
        seen += 1
    return False
