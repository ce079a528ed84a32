"""
The status listener every proxy kind can have: GET ``/`` (HTML),
``/status.json`` and ``/metrics`` (Prometheus), and, with a token, POST
``/admin`` to drain a backend, served by the shared HTTP server protocol
on an endpoint apart from the proxy's, so it is never reachable through a
route.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import quote

from twisted.application.service import MultiService
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from multiproxy._proxyservice import listening_service, parse_listen
from multiproxy.http._server import Exchange, HTTPProxyFactory, HTTPServerProtocol, Timeouts
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import Limits
from multiproxy.pipeline._errors import ConfigError
from multiproxy.status._admin import AdminCommand, AdminRefused, read_admin_request
from multiproxy.status._counters import TrafficCounters
from multiproxy.status._group import StatusGroup
from multiproxy.status._page import Reading, StatusSnapshot, pool_status, status_page
from multiproxy.status._rates import SAMPLE_INTERVAL, RateMeter

log = Logger()

_FORM_LIMIT = 8192


class _NoTransport:
    """Stands in for an upstream transport: a form this small needs no backpressure."""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass


class _FormReader:
    """Collects a small request body, then calls ``done(body)``."""

    transport = _NoTransport()

    def __init__(self, done: Callable[[bytes], None]) -> None:
        self.chunks: list[bytes] = []
        self.done = done

    def body_data(self, data: bytes) -> None:
        self.chunks.append(data)

    def body_end(self) -> None:
        self.done(b"".join(self.chunks))


class StatusProtocol(HTTPServerProtocol):
    """Answers status requests from the current snapshot; forwards nothing."""

    factory: StatusSite
    allowed_methods = b"GET, HEAD, POST"

    def handle(self, exchange: Exchange) -> None:
        head = exchange.request
        route = head.target.split(b"?", 1)[0].rstrip(b"/")
        if route == b"/admin":
            if head.method != b"POST":
                exchange.respond(405, Headers([(b"Allow", b"POST")]),
                                 b"405 Method Not Allowed: admin actions are POSTs\n")
                return
            if exchange.body is None:
                self._admin(exchange, b"")
            else:
                exchange.body.attach(_FormReader(lambda body: self._admin(exchange, body)))
            return
        if head.method not in (b"GET", b"HEAD"):
            exchange.respond(405, Headers([(b"Allow", b"GET, HEAD")]),
                             b"405 Method Not Allowed: the status page is read-only\n")
            return
        page = status_page(self.factory.snapshot(), head.target)
        exchange.respond(page.status, Headers([
            (b"Content-Type", page.content_type),
            (b"Cache-Control", b"no-store"),
        ]), page.body)

    def _admin(self, exchange: Exchange, body: bytes) -> None:
        head = exchange.request
        headers = head.headers
        try:
            command = read_admin_request(
                head.target, headers.get(b"authorization"), headers.get(b"content-type"),
                body, self.factory.token,
            )
            self.factory.apply(command)
        except AdminRefused as e:
            exchange.record.ended = "denied" if e.status == 403 else "bad-request"
            exchange.respond(e.status, Headers([
                (b"Content-Type", b"text/plain; charset=utf-8"),
                (b"Cache-Control", b"no-store"),
            ]), f"{e.status} {e}\n".encode())
            return
        log.info("{proxy}: backend {backend} of pool {pool} set to {action} from {client}",
                 proxy=self.factory.proxy_name, backend=command.backend, pool=command.pool,
                 action=command.action, client=self.client_host)
        message = f"backend {command.backend} of pool {command.pool}: {command.action}\n"
        # 303: a browser that posted the page's form goes back to the page.
        exchange.respond(303, Headers([
            (b"Location", b"/"),
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Cache-Control", b"no-store"),
        ]), message.encode("utf-8"))


class StatusSite(HTTPProxyFactory):
    """
    The factory for a status listener of one proxy.

    @param kind: the proxy's kind (forward, reverse, tcp).
    @param pools: a callable returning the `BackendPool`s to show (called
        per request, so reloaded configurations show up).
    @param counters: the proxy's `TrafficCounters`, if any.
    @param readings: a callable returning live `Reading`s (open tunnels...).
    @param token: the admin token; without one, admin actions are refused.
    """

    protocol = StatusProtocol

    def __init__(self, reactor: Any, name: str,
                 pools: Callable[[], Sequence[Any]] = lambda: (),
                 started_at: float | None = None, *, kind: str = "reverse",
                 counters: TrafficCounters | None = None,
                 readings: Callable[[], Iterable[Reading]] = lambda: (),
                 token: str | None = None) -> None:
        super().__init__(
            reactor, name=f"{name}-status", fetcher=None,  # type: ignore[arg-type]
            limits=Limits(max_body=_FORM_LIMIT),
            timeouts=Timeouts(header=10.0, keepalive=10.0, client_idle=10.0),
            via=None,
        )
        self.proxy_name = name
        self.kind = kind
        self.pools = pools
        self.counters = counters
        self.readings = readings
        self.token = token
        self.started_at = time.time() if started_at is None else started_at
        self.session_rate = RateMeter()  # the proxy's finished exchanges
        self.backend_rates: dict[tuple[str, str], RateMeter] = {}
        self._sampler = LoopingCall(self.sample_rates)
        self._sampler.clock = reactor
        self.group: StatusGroup | None = None
        """Set in a worker of ``--workers N``: the page then shows the whole group."""

    def startFactory(self) -> None:
        # Listening on the first status endpoint: rates are sampled while the page can be read.
        self._sampler.start(SAMPLE_INTERVAL, now=True)

    def stopFactory(self) -> None:
        if self._sampler.running:
            self._sampler.stop()
        if self.group is not None:
            self.group.leave()

    def sample_rates(self) -> None:
        """
        Sample the proxy's and every backend's session totals (once a
        second); in a group of workers, trade reports with the others.
        """
        now = self.reactor.seconds()
        if self.counters is not None:
            self.session_rate.sample(now, self.counters.finished)
        rates = self.backend_rates
        for pool in self.pools():
            for backend in pool.backends:
                meter = rates.get((pool.name, backend.name))
                if meter is None:
                    meter = rates[(pool.name, backend.name)] = RateMeter()
                meter.sample(now, backend.requests)
        if self.group is not None:
            self.group.exchange(self.own_snapshot())

    def snapshot(self) -> StatusSnapshot:
        """The proxy as it is now (with several workers, all of them)."""
        if self.group is None:
            return self.own_snapshot()
        return self.group.view(self.own_snapshot())

    def own_snapshot(self) -> StatusSnapshot:
        """This process's part of the proxy as it is now."""
        return StatusSnapshot(
            proxy=self.proxy_name,
            pools=tuple(pool_status(p, self.backend_rates) for p in self.pools()),
            session_rate=self.session_rate.current,
            session_rate_max=self.session_rate.most,
            taken_at=time.time(),
            started_at=self.started_at,
            kind=self.kind,
            traffic=None if self.counters is None else self.counters.snapshot(),
            readings=tuple(self.readings()),
            admin=bool(self.token),
        )

    def apply(self, command: AdminCommand) -> None:
        """
        Carry out ``command`` (in every worker of a group); `AdminRefused`
        (404) names a pool or backend that is not there.
        """
        self.set_admin(command.pool, command.backend, command.action)
        if self.group is not None:
            self.group.publish_action(command.pool, command.backend, command.action,
                                      self.reactor.seconds())

    def set_admin(self, pool_name: str, backend_name: str, action: str) -> None:
        """Set one backend's admin state here (`AdminRefused` if there is no such backend)."""
        for pool in self.pools():
            if pool.name != pool_name:
                continue
            for backend in pool.backends:
                if backend.name == backend_name:
                    backend.set_admin(action, pool.clock.seconds())
                    return
            raise AdminRefused(404, f"pool {pool_name} has no backend "
                                    f"{quote(backend_name, safe=':/')}")
        raise AdminRefused(404, f"no pool named {quote(pool_name, safe='')}")


def add_status_listeners(parent: MultiService, reactor: Any, proxy: str,
                         descriptions: Sequence[str], site: StatusSite) -> None:
    """
    Listen with ``site`` on each endpoint of ``descriptions`` (the proxy's
    ``status_listen``) as children of ``parent``, beside the proxy's own
    listeners (so the page still answers while the proxy drains); a bad
    endpoint string is a `ConfigError` naming the key.
    """
    for description in descriptions:
        try:
            endpoint = parse_listen(reactor, description)
        except ValueError as e:
            raise ConfigError(f"{proxy}: status_listen: {e}") from None
        listening_service(endpoint, site).setServiceParent(parent)
