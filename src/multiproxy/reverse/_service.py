"""
Assembling a running reverse proxy from a `ReverseConfig`: backend pools
and their health checks, the `ReverseProxy` factory, plain and TLS
listeners, the status listener, certificate reload on SIGHUP and a graceful
shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from multiproxy._proxyservice import ProxyService, parse_listen
from multiproxy._signals import SIGHUP, on_signal
from multiproxy._startup import (
    describe_cache,
    describe_policy,
    describe_pool,
    listening,
    startup_summary,
)
from multiproxy.balancing import (
    Backend,
    BackendPool,
    HealthChecker,
    HTTPCheck,
    TCPCheck,
    TLSOrigination,
    balancer_from_name,
)
from multiproxy.cache import GATEWAY_TARGETS, CacheConfig, caching_fetcher_factory
from multiproxy.h2 import HTTP2Settings
from multiproxy.http._exchange import IFetcher
from multiproxy.pipeline._errors import ConfigError
from multiproxy.reverse._config import BackendConfig, PoolConfig, ReverseConfig, check_config
from multiproxy.reverse._proxy import ReverseProxy
from multiproxy.status import Reading, StatusSite, TrafficCounters, add_status_listeners
from multiproxy.transport._accept import AcceptGuard, GuardedEndpoint
from multiproxy.transport._tls import ServerTLS, tls_server_endpoint

log = Logger()

CacheWrapper = Callable[[IFetcher], IFetcher]
"""Puts the shared cache in front of a fetcher (for routes with ``cache = true``)."""


def make_backend(config: BackendConfig, connect_timeout: float) -> Backend:
    """A `Backend` for one configured backend URL."""
    tls = None
    if config.scheme == "https":
        tls = TLSOrigination(
            server_name=config.server_name or config.host,
            ca_file=config.ca_file,
            verify=config.verify,
            alpn=(b"h2",) if config.http2 else (b"http/1.1",),
        )
    return Backend(
        config.name or config.url, host=config.host, port=config.port, tls=tls,
        weight=config.weight, connect_timeout=connect_timeout, http2=config.http2,
    )


def make_pool(config: PoolConfig, reactor: Any, connect_timeout: float) -> BackendPool:
    """A `BackendPool` (with its balancer) for one configured pool."""
    health = config.health
    return BackendPool(
        config.name,
        [make_backend(b, connect_timeout) for b in config.backends],
        balancer_from_name(config.balance),
        reactor,
        max_failures=health.max_failures,
        backoff=health.backoff,
        max_backoff=health.max_backoff,
    )


def make_health_checker(config: PoolConfig, pool: BackendPool, reactor: Any
                        ) -> HealthChecker | None:
    """The active health checks of a pool, or None when they are off."""
    health = config.health
    if health.check == "none":
        return None
    check = TCPCheck() if health.check == "tcp" else HTTPCheck(
        path=health.path, host=health.host, expect=health.expect)
    return HealthChecker(reactor, pool.backends, check, interval=health.interval,
                         timeout=health.timeout, rise=health.rise, fall=health.fall)


def make_reverse_proxy(
    config: ReverseConfig, reactor: Any, reporters=(), *, policy: Any = None,
    cache: CacheWrapper | None = None,
) -> tuple[ReverseProxy, dict[str, BackendPool], list[HealthChecker]]:
    """The `ReverseProxy` factory, its pools by name and their health checkers."""
    pools = {p.name: make_pool(p, reactor, config.timeouts.connect) for p in config.pools}
    checkers = []
    for p in config.pools:
        checker = make_health_checker(p, pools[p.name], reactor)
        if checker is not None:
            checkers.append(checker)
    if cache is None and any(r.cache for r in config.routes):
        cache = caching_fetcher_factory(
            config.cache or CacheConfig(targets=GATEWAY_TARGETS), reactor)
    factory = ReverseProxy(
        reactor,
        routes=config.route_table(),
        pools=pools,
        name=config.name,
        policy=policy,
        forwarded=config.forwarded,
        via=config.via,
        hsts=config.hsts,
        redirect_https=config.redirect_https,
        https_port=config.https_port,
        http2=HTTP2Settings(tls=config.http2, prior_knowledge=config.http2_prior_knowledge),
        limits=config.limits,
        timeouts=config.timeouts,
        reporters=reporters,
    )
    if cache is not None:
        factory.cached_fetcher = cache(factory.fetcher)
    return factory, pools, checkers


class ReverseService(ProxyService):
    """
    A reverse proxy's listeners, health checks and status page as one service.

    Stopping it is graceful (see `ProxyService`); ``reload`` (also on
    SIGHUP) reads the TLS certificates again.
    """

    def __init__(self, reactor: Any, factory: ReverseProxy, pools: dict[str, BackendPool],
                 shutdown_timeout: float, server_tls: ServerTLS | None = None,
                 reload_on_sighup: bool = True) -> None:
        super().__init__(reactor, factory, shutdown_timeout)
        self.pools = pools
        self.backend_pools = tuple(pools.values())
        self.server_tls = server_tls
        self.reload_on_sighup = reload_on_sighup
        self._stop_sighup: Any = None

    def reload(self) -> None:
        """Reload the TLS certificates; on failure the old ones stay in force."""
        if self.server_tls is None:
            return
        try:
            self.server_tls.reload()
        except ConfigError as e:
            log.error("TLS reload of {name} failed, old certificates kept: {error}",
                      name=self.factory.name, error=str(e))

    def startService(self) -> None:
        super().startService()
        if self.reload_on_sighup and self.server_tls is not None:
            self._stop_sighup = on_signal(SIGHUP, self.reactor, self.reload)

    def stopService(self) -> defer.Deferred:
        stop, self._stop_sighup = self._stop_sighup, None
        if stop is not None:
            stop()
        return super().stopService()


def make_reverse_service(config: ReverseConfig, reactor: Any, reporters=(), *,
                         policy: Any = None, cache: CacheWrapper | None = None,
                         guard: AcceptGuard | None = None) -> ReverseService:
    """
    A `ReverseService` for ``config``; raises `ConfigError` before anything
    listens.  ``cache`` puts a given shared cache in front of the routes
    with ``cache`` set (default: one made from ``config.cache``).
    """
    config = check_config(config)  # a config built in code gets the checks a file gets
    counters = TrafficCounters() if config.status_listen else None
    if counters is not None:
        reporters = (*reporters, counters)
    factory, pools, checkers = make_reverse_proxy(config, reactor, reporters, policy=policy,
                                                  cache=cache)
    server_tls = None
    if config.tls is not None:
        # ALPN: h2 first when the clients may speak it (RFC 9113 3.2).
        server_tls = ServerTLS(config.tls.certificates, config.tls.directory,
                               config.tls.default,
                               alpn=(b"h2", b"http/1.1") if config.http2 else (b"http/1.1",))
    service = ReverseService(reactor, factory, pools, config.shutdown_timeout, server_tls)
    service.setName(config.name)
    def guarded(endpoint: Any) -> Any:
        return endpoint if guard is None else GuardedEndpoint(endpoint, guard)

    for description in config.listen:
        service.add_listener(guarded(_endpoint(reactor, config.name, "listen", description)))
    for description in config.tls_listen:
        endpoint = tls_server_endpoint(
            _endpoint(reactor, config.name, "tls_listen", description), server_tls, reactor)
        service.add_listener(guarded(endpoint))
    for checker in checkers:
        checker.setServiceParent(service)
    if config.status_listen:
        site = StatusSite(reactor, config.name, lambda: list(pools.values()), kind="reverse",
                          counters=counters, token=config.status_token,
                          readings=lambda: _reverse_readings(factory))
        add_status_listeners(service, reactor, config.name, config.status_listen, site)
    cached = sum(1 for r in config.routes if r.cache)
    service.summary = startup_summary(config.name, "reverse proxy", [
        listening("listening on", config.listen),
        listening("TLS on", config.tls_listen),
        listening("status on", config.status_listen),
        f"{len(config.routes)} route{'s' if len(config.routes) != 1 else ''}",
        *(describe_pool(p.name, p.balance, [b.name for b in pools[p.name].backends], p.health)
          for p in config.pools),
        describe_policy(policy),
        describe_cache(config.cache or CacheConfig()) + f" on {cached} of the routes"
        if cached else "cache: off",
    ])
    return service


def _reverse_readings(factory: ReverseProxy) -> list[Reading]:
    return [Reading("connections_open", "multiproxy_client_connections", "gauge",
                    "Client connections open now.", len(factory.connections))]


def _endpoint(reactor: Any, name: str, key: str, description: str) -> Any:
    try:
        return parse_listen(reactor, description)
    except ValueError as e:
        raise ConfigError(f"{name}: {key}: {e}") from None
