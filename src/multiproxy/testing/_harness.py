"""
`Harness`: a fake reactor, fake origins, fake clients and a recording reporter together.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from multiproxy.pipeline._interfaces import IReporter
from multiproxy.pipeline._values import AccessRecord
from multiproxy.testing._client import FakeClient
from multiproxy.testing._network import tcp_address
from multiproxy.testing._origin import Answer, FakeOrigin
from multiproxy.testing._reactor import FakeListeningPort, FakeReactor

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


@implementer(IReporter)
class RecordingReporter:
    """An `IReporter` that keeps every `AccessRecord` it is given, in order, in ``records``."""

    def __init__(self) -> None:
        self.records: list[AccessRecord] = []

    def report(self, record: AccessRecord) -> None:
        """Keep ``record``."""
        self.records.append(record)


class NotQuiet(AssertionError):
    """A test ended with timers pending or connections open; the message lists them."""

    def __init__(self, leftovers: list[str]) -> None:
        super().__init__("not quiet:\n" + "\n".join(f"  - {line}" for line in leftovers))
        self.leftovers = leftovers


class Harness:
    """
    Runs proxies in memory, on fake time, against fake origins.

    ``harness.reactor`` is a `FakeReactor`: build the proxy (or a whole
    service) with it, and with ``harness.reporter`` among its reporters to
    see its `AccessRecord`s in ``harness.records``.  `origin` and `serve`
    put servers on the in-memory network, by host and port or URL;
    `connect` opens a `FakeClient` to a proxy; `advance` moves the clock
    (timeouts, health checks, cache ages) without sleeping.  `assert_quiet`
    says which timers and connections a test left behind.

    ``start`` is the clock's first reading in seconds since the epoch.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.reactor = FakeReactor(start)
        self.reporter = RecordingReporter()
        self.origins: list[FakeOrigin] = []
        self.clients: list[FakeClient] = []
        self._started: list[Any] = []  # factories connected to directly, started as listening would

    @property
    def records(self) -> list[AccessRecord]:
        """The access records ``harness.reporter`` received, oldest first."""
        return self.reporter.records

    # servers

    def origin(self, where: str, port: int | None = None, *,
               reply: Answer | None = None) -> FakeOrigin:
        """
        A fake HTTP origin (or backend) at ``where``: a host name or IP
        address (port 80 unless given), or a URL such as
        ``http://127.0.0.1:9001`` or a backend URL of a reverse proxy.

        A host name is made to resolve (to a fake address in 198.18.0.0/15);
        a proxy asking for any other name gets a DNS failure, and for an
        address or port nothing serves, a refused connection.  ``reply``
        answers every request no `FakeOrigin.route` matches.
        """
        host, port = _host_port(where, port)
        address = self.reactor.address_of(host)
        if address is None:
            address = self.reactor.add_name(host)
        origin = FakeOrigin(self.reactor, host, port, reply)
        origin.listening = self.reactor.listen(origin.factory(), address, port,
                                               label=f"fake origin {origin.name}")
        self.origins.append(origin)
        return origin

    def serve(self, factory: Any, where: str, port: int | None = None) -> FakeListeningPort:
        """
        Listen with any Twisted server ``factory`` (a TCP backend, a
        ``twisted.web`` site) at ``where`` (host or ``tcp://host:port``).
        """
        host, port = _host_port(where, port)
        address = self.reactor.address_of(host) or self.reactor.add_name(host)
        return self.reactor.listen(factory, address, port, label=type(factory).__name__)

    # clients

    def connect(self, to: Any, *, client: tuple[str, int] = ("127.0.0.1", 0),
                tls: Any = None) -> FakeClient:
        """
        Open a client connection to ``to``: a proxy (any server protocol
        factory, started with ``doStart`` the first time, as listening with
        it would), or a port number or ``(host, port)`` something listens
        on in memory (a started service's listener).

        ``client`` is the client's address as the proxy sees it (port 0:
        a fresh one); a proxy given as a factory sees itself at
        127.0.0.1:8080.  ``tls`` (a client connection creator, e.g.
        ``optionsForClientTLS(...)``) speaks TLS to a TLS listener.
        """
        fake = FakeClient(self.reactor)
        factory = fake.factory()
        if tls is not None:
            factory = TLSMemoryBIOFactory(tls, True, factory, clock=self.reactor)
        if isinstance(to, int):
            to = ("127.0.0.1", to)
        if isinstance(to, tuple):
            host, port = to
            address = self.reactor.address_of(host)
            listening = self.reactor.listening_at(address, port) if address else None
            if listening is None:
                raise LookupError(
                    f"nothing listens at {host}:{port} in memory (listening: "
                    f"{', '.join(repr(p) for p in self.reactor.listeners) or 'nothing'})"
                )
            if listening.connect_mode != "accept":
                raise ConnectionRefusedError(
                    f"{listening!r} {listening.connect_mode}s connections (its connect_mode)")
            server_address = tcp_address(address, port)
        elif IProtocolFactory.providedBy(to) or hasattr(to, "buildProtocol"):
            listening, server_address = to, tcp_address("127.0.0.1", 8080)
            if not any(started is to for started in self._started):
                to.doStart()  # what listening with it would do; close() stops it
                self._started.append(to)
        else:
            raise TypeError(f"connect to a protocol factory, a port or (host, port), not {to!r}")
        host, port = client
        if port == 0:
            port = self.reactor.client_address(host).port
        client_address = tcp_address(host, port)
        connection = self.reactor.join(factory, listening, client_address=client_address,
                                       server_address=server_address, label="client")
        self.clients.append(fake)
        self.reactor.pump()
        if not fake.connected and fake.close_reason is None and connection.open:
            raise ConnectionError(f"the client connection to {to!r} did not open")
        return fake

    # time

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of fake time pass: each timer runs when due, bytes move between."""
        self.reactor.advance(seconds)

    def pump(self) -> None:
        """Deliver every byte and queued event that can move now (no time passes)."""
        self.reactor.pump()

    # ending

    def leftovers(self) -> list[str]:
        """Readable lines for each pending timer and each open in-memory connection."""
        now = self.reactor.seconds()
        lines = [
            f"timer due at t={_seconds(call.getTime())} (in {_seconds(call.getTime() - now)} s): "
            f"{_describe_call(call)}"
            for call in sorted(self.reactor.getDelayedCalls(), key=lambda c: c.getTime())
        ]
        lines += [f"open connection {c.describe()}" for c in self.reactor.network.connections]
        lines += [f"queued call {_describe(f)}" for f, _, _ in self.reactor.network.pending]
        return lines

    def assert_quiet(self) -> None:
        """
        Raise `NotQuiet`, listing them, if timers are pending or connections
        are open.  Close clients, stop services and let idle timeouts run
        (`advance`) first, or call `close`, which leaves only leaked timers.
        """
        self.reactor.pump()
        leftovers = self.leftovers()
        if leftovers:
            raise NotQuiet(leftovers)

    def close(self) -> None:
        """
        Abort every open connection, stop every listener (and every factory
        `connect` started) and run the shutdown triggers, then pump: what is
        left (`leftovers`) was leaked.
        """
        self.reactor.pump()
        for connection in list(self.reactor.network.connections):
            connection.client.abortConnection()
        for listening in list(self.reactor.listeners):
            listening.stopListening()
        while self._started:
            self._started.pop().doStop()
        self.reactor.fireSystemEvent("shutdown")
        self.reactor.pump()


def _host_port(where: str, port: int | None) -> tuple[str, int]:
    if "://" in where:
        url = urlsplit(where)
        if url.hostname is None:
            raise ValueError(f"no host in {where!r}")
        if url.scheme == "https":
            raise ValueError(
                f"{where}: fake origins speak plain HTTP only (TLS is not supported in memory); "
                "give the backend an http:// URL in the test"
            )
        return url.hostname, url.port or port or _DEFAULT_PORTS.get(url.scheme, 80)
    if where.startswith("[") and "]:" in where:
        host, _, text = where[1:].partition("]:")
        return host, int(text)
    if where.count(":") == 1:
        host, _, text = where.partition(":")
        return host, int(text)
    return where.strip("[]"), port or 80


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _describe(f: Any) -> str:
    owner = getattr(f, "__self__", None)
    name = getattr(f, "__qualname__", None) or repr(f)
    if owner is not None and not isinstance(owner, type):
        return f"{name} of {type(owner).__module__}.{type(owner).__qualname__}"
    return f"{getattr(f, '__module__', '?')}.{name}"


def _describe_call(call: Any) -> str:
    args = ", ".join([repr(a)[:60] for a in call.args]
                     + [f"{k}={v!r}"[:60] for k, v in call.kw.items()])
    return f"{_describe(call.func)}({args})"
