"""
Configuring a TCP relay: from ``twistd multiproxy tcp`` options or a
``[[tcp]]`` TOML table.  Both produce one `TCPConfig`, checked before
anything listens; `make_tcp_service` turns it into a running service.

The health-check and TLS-certificate keys are the reverse proxy's
(``[tcp.health]`` and ``[tcp.tls]`` are read by the same
`multiproxy.balancing.health_from_table` and
`multiproxy.transport._tlsconfig.tls_from_table` as ``[reverse.health]`` and
``[reverse.tls]``), so both proxies are configured the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python import usage

from multiproxy._accesslog import AccessLogOptions
from multiproxy._proxyservice import (
    ProxyService,
    add_listen_option,
    listen_from_table,
    parse_listen,
)
from multiproxy._startup import describe_policy, describe_pool, listening, startup_summary
from multiproxy._tablereader import TableReader
from multiproxy.balancing import (
    BALANCER_NAMES,
    Backend,
    BackendPool,
    HealthChecker,
    HTTPCheck,
    TCPCheck,
    TLSOrigination,
    balancer_from_name,
)
from multiproxy.balancing._config import HealthConfig, health_from_table
from multiproxy.balancing._options import HealthOptions
from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy._options import ClientPolicyOptions
from multiproxy.status import Reading, StatusSite, TrafficCounters, add_status_listeners
from multiproxy.tcp._haproxy import proxy_header_endpoint
from multiproxy.tcp._proxy import TCPRelayFactory, TCPSettings
from multiproxy.transport._accept import AcceptGuard, GuardedEndpoint
from multiproxy.transport._tls import ServerTLS, tls_server_endpoint
from multiproxy.transport._tlsconfig import TLSCertificateOptions, TLSConfig, tls_from_table

__all__ = [
    "TCPBackendConfig",
    "TCPConfig",
    "TCPOptions",
    "TCPService",
    "make_tcp_service",
    "server_endpoint",
    "tcp_config_from_table",
]

_log = Logger()
_SETTINGS = TCPSettings()
PROXY_PROTOCOL_VERSIONS = ("v1", "v2")


@dataclass(frozen=True, slots=True)
class TCPBackendConfig:
    """
    One backend of a TCP relay.

    @ivar address: a Twisted client endpoint string
        (``tcp:host=10.0.0.5:port=5432``, ``unix:path=/run/db.sock``,
        ``tls:db.internal:5432``).
    @ivar tls: originate TLS over ``address`` (verified against
        ``server_name`` with service-identity, trusting ``ca_file`` or the
        system store; ``verify = false`` turns verification off explicitly).
    @ivar proxy_protocol: "v1" or "v2" to send this backend a PROXY header.
    """

    address: str
    weight: int = 1
    name: str | None = None
    proxy_protocol: str | None = None
    tls: bool = False
    server_name: str | None = None
    ca_file: str | None = None
    verify: bool = True

    def backend(self, connect_timeout: float | None = None) -> Backend:
        """A new `Backend` (with fresh statistics) for this configuration."""
        tls = None
        if self.tls:
            tls = TLSOrigination(self.server_name, self.ca_file, self.verify)
        return Backend(
            self.name, address=self.address, tls=tls, weight=self.weight,
            connect_timeout=connect_timeout, proxy_protocol=self.proxy_protocol,
        )


@dataclass(frozen=True)
class TCPConfig:
    """
    Everything needed to run one TCP relay.

    @ivar listen: listeners (Twisted server endpoint strings; a
        ``haproxy:`` prefix expects a PROXY header first; ``ssl:`` ones
        terminate TLS with their own certificate).
    @ivar tls_listen: listeners that terminate TLS with the SNI-chosen
        certificates of ``tls`` (after the PROXY header, with ``haproxy:``).
    @ivar status_listen: listeners for the status page and metrics.
    """

    name: str = "tcp"
    listen: tuple[str, ...] = ()
    tls_listen: tuple[str, ...] = ()
    tls: TLSConfig | None = None
    backends: tuple[TCPBackendConfig, ...] = ()
    balance: str = "roundrobin"
    settings: TCPSettings = TCPSettings()
    health: HealthConfig = HealthConfig()
    status_listen: tuple[str, ...] = ()
    shutdown_timeout: float = 10.0


def check_tcp_config(config: TCPConfig) -> TCPConfig:
    """Checks that span several keys; `ConfigError` says what to change."""
    where = f"tcp relay {config.name!r}"
    if not config.listen and not config.tls_listen:
        raise ConfigError(f"{where}: no listener; give listen (--listen), e.g. tcp:9000")
    if not config.backends:
        raise ConfigError(
            f"{where}: no backend; give backends (--backend), e.g. tcp:host=127.0.0.1:port=5432"
        )
    if config.tls_listen and config.tls is None:
        raise ConfigError(
            f"{where}: tls_listen needs certificates (tls.certs or tls.dir; --tls-cert or "
            f"--tls-dir)"
        )
    if config.tls is not None and not config.tls_listen:
        raise ConfigError(
            f"{where}: certificates are configured but no TLS listener; add tls_listen "
            f"(--tls-listen), e.g. tcp:9443"
        )
    keys = [(b.address, b.server_name) for b in config.backends]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{where}: the same backend is listed twice")
    try:
        balancer_from_name(config.balance)
    except ValueError as e:
        raise ConfigError(f"{where}: balance: {e}") from None
    for description in config.listen + config.tls_listen + config.status_listen:
        _check_server_description(description, where)
    for backend in config.backends:
        _check_client_description(backend.address, where)
        try:
            backend.backend()
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    return config


def _check_client_description(description: str, where: str) -> None:
    from twisted.internet.testing import MemoryReactor

    try:
        clientFromString(MemoryReactor(), description)
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{where}: backend {description!r} is not a client endpoint ({e}); "
            f"write e.g. tcp:host=127.0.0.1:port=5432"
        ) from None


def _check_server_description(description: str, where: str) -> None:
    from twisted.internet.testing import MemoryReactor

    try:
        server_endpoint(MemoryReactor(), description)
    except ValueError as e:
        raise ConfigError(f"{where}: listen: {e}; write e.g. tcp:9000:interface=127.0.0.1") from None


def server_endpoint(reactor: Any, description: str, tls: Any = None) -> IStreamServerEndpoint:
    """
    The listening endpoint for ``description``.

    A ``haproxy:`` prefix expects a PROXY v1/v2 header first (read with
    `multiproxy.tcp._haproxy`, which keeps half-close and signals the
    header); ``tls`` (a `ServerTLS`) then terminates TLS after the header,
    as HAProxy sends it.
    """
    proxied = description.startswith("haproxy:")
    endpoint = parse_listen(reactor, description[len("haproxy:"):] if proxied else description)
    if proxied:
        endpoint = proxy_header_endpoint(endpoint)
    if tls is not None:
        endpoint = tls_server_endpoint(endpoint, tls, reactor)
    return endpoint


def check_tcp_listen(description: str) -> None:
    """Refuse (ValueError) a listener `server_endpoint` does not take; nothing listens."""
    from twisted.internet.testing import MemoryReactor

    server_endpoint(MemoryReactor(), description)


# -- TOML ----------------------------------------------------------------------------


def tcp_config_from_table(reader: TableReader) -> TCPConfig:
    """Read one ``[[tcp]]`` table; unknown keys and bad values are refused."""
    name = reader.string("name", "tcp")
    listen = listen_from_table(reader, "listen", [], check=check_tcp_listen)
    tls_listen = listen_from_table(reader, "tls_listen", [], check=check_tcp_listen)
    tls_table = reader.table_of("tls")
    tls = tls_from_table(tls_table) if tls_table.table else None
    backends = _backends_from_value(reader)
    balance = reader.string("balance", "roundrobin")
    try:
        balancer_from_name(balance)
    except ValueError as e:
        raise reader.error("balance", str(e)) from None
    proxy_protocol = reader.string("proxy_protocol", None, choices=PROXY_PROTOCOL_VERSIONS)
    settings = TCPSettings(
        connect_timeout=reader.number("connect_timeout", _SETTINGS.connect_timeout,
                                      minimum=0.001),
        idle_timeout=reader.optional_number("idle_timeout"),
        header_timeout=reader.number("header_timeout", _SETTINGS.header_timeout, minimum=0.001),
        retries=reader.integer("retries", _SETTINGS.retries, minimum=0, maximum=100),
        proxy_protocol=proxy_protocol,
        splice=reader.boolean("splice", True),
    )
    health_table = reader.table_of("health")
    health = health_from_table(health_table)
    shutdown = reader.number("shutdown_timeout", 10.0, minimum=0)
    status_listen = listen_from_table(reader, "status_listen", [])
    config = TCPConfig(
        name=name, listen=listen, tls_listen=tls_listen, tls=tls, backends=backends,
        balance=balance, settings=settings, health=health, shutdown_timeout=shutdown,
        status_listen=status_listen,
    )
    return check_tcp_config(config)


def _backends_from_value(reader: TableReader) -> tuple[TCPBackendConfig, ...]:
    value = reader.raw("backends", [])
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise reader.error("backends", "expected a list of endpoint strings or tables")
    backends = []
    for index, item in enumerate(value):
        where = f"{reader.key('backends')}[{index}]"
        if isinstance(item, str):
            backends.append(TCPBackendConfig(item))
            continue
        entry = TableReader(item, where)
        tls_value = entry.raw("tls", False)
        if not isinstance(tls_value, bool):
            raise entry.error("tls", "expected true or false")
        backend = TCPBackendConfig(
            address=entry.string("address"),
            weight=entry.integer("weight", 1, minimum=0, maximum=1000),
            name=entry.string("name", None),
            proxy_protocol=entry.string("proxy_protocol", None, choices=PROXY_PROTOCOL_VERSIONS),
            tls=tls_value,
            server_name=entry.string("server_name", None),
            ca_file=entry.string("ca_file", None),
            verify=entry.boolean("verify", True),
        )
        if backend.tls and backend.server_name is None:
            raise entry.error("server_name", "is required with tls = true (the name to verify)")
        if not backend.tls and (backend.server_name or backend.ca_file or not backend.verify):
            raise entry.error("tls", "server_name, ca_file and verify need tls = true")
        entry.finish()
        backends.append(backend)
    return tuple(backends)


# -- command line ----------------------------------------------------------------------


class TCPOptions(AccessLogOptions, ClientPolicyOptions, HealthOptions, TLSCertificateOptions,
                     usage.Options):
    """``twistd multiproxy tcp``: a layer-4 relay in front of TCP backends."""

    synopsis = "--listen ENDPOINT --backend ENDPOINT [--backend ENDPOINT ...] [options]"
    longdesc = (
        "Run a TCP relay: each client connection is relayed, byte for byte, to one "
        "of the backends. Listeners are Twisted server endpoints (tcp:9000, "
        "ssl:9443:privateKey=key.pem, haproxy:tcp:9000 for a PROXY header first); "
        "backends are Twisted client endpoints (tcp:host=10.0.0.5:port=5432, "
        "tls:db.internal:5432 for verified TLS to the backend)."
    )
    optFlags = [
        ["no-splice", None, "Relay through Python even where Linux splice(2) could be used."],
    ]
    optParameters = [
        ["name", None, "tcp", "Name of this relay in logs."],
        ["balance", None, "roundrobin",
         "Balancer: " + ", ".join(n for n in BALANCER_NAMES if "NAME" not in n) + "."],
        ["connect-timeout", None, _SETTINGS.connect_timeout,
         "Seconds to connect to a backend before trying the next.", float],
        ["idle-timeout", None, 0.0,
         "Seconds without traffic before a connection is closed (0 = never).", float],
        ["header-timeout", None, _SETTINGS.header_timeout,
         "Seconds a client on a haproxy: listener has to send its PROXY header.", float],
        ["retries", None, _SETTINGS.retries,
         "Other backends to try when a connect fails.", int],
        ["proxy-protocol", None, None,
         "Send each backend a PROXY protocol header: v1 (text) or v2 (binary)."],
        ["health-check", None, None,
         "Active health check: tcp (connect; the default), http (GET --health-path) or none."],
        ["health-path", None, None, "Path of an HTTP health check (implies --health-check http)."],
        ["max-failures", None, 3,
         "Failed connections in a row that eject a backend (passive health).", int],
        ["shutdown-timeout", None, 10.0,
         "Seconds open connections may continue after shutdown begins.", float],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["tls-listen"] = []
        self["backend"] = []
        self["status-listen"] = []

    def opt_status_listen(self, description: str) -> None:
        """Status page listener (repeatable): / (HTML), /status.json, /metrics."""
        add_listen_option(self, "status-listen", description)

    def opt_listen(self, description: str) -> None:
        """Listener (repeatable), a Twisted server endpoint: tcp:9000:interface=127.0.0.1."""
        add_listen_option(self, "listen", description, check_tcp_listen)

    def opt_tls_listen(self, description: str) -> None:
        """TLS listener (repeatable) using --tls-cert/--tls-dir: tcp:9443:interface=127.0.0.1."""
        add_listen_option(self, "tls-listen", description, check_tcp_listen)

    def opt_backend(self, description: str) -> None:
        """Backend (repeatable), a Twisted client endpoint: tcp:host=127.0.0.1:port=5432."""
        self["backend"].append(description)

    def postOptions(self) -> None:
        if not self["listen"] and not self["tls-listen"]:
            raise usage.UsageError("give at least one --listen endpoint, e.g. --listen tcp:9000")
        if not self["backend"]:
            raise usage.UsageError(
                "give at least one --backend endpoint, e.g. --backend tcp:host=127.0.0.1:port=5432"
            )
        if self["proxy-protocol"] not in (None, *PROXY_PROTOCOL_VERSIONS):
            raise usage.UsageError(
                f"--proxy-protocol must be v1 or v2, not {self['proxy-protocol']!r}"
            )
        for key in ("connect-timeout", "header-timeout"):
            if self[key] <= 0:
                raise usage.UsageError(f"--{key} must be more than 0")
        for key in ("idle-timeout", "shutdown-timeout", "retries"):
            if self[key] < 0:
                raise usage.UsageError(f"--{key} must not be negative")
        health = self.health_config()
        tls = self.tls_config()
        config = TCPConfig(
            name=self["name"],
            listen=tuple(self["listen"]),
            tls_listen=tuple(self["tls-listen"]),
            tls=tls,
            backends=tuple(TCPBackendConfig(b) for b in self["backend"]),
            balance=self["balance"],
            settings=TCPSettings(
                connect_timeout=self["connect-timeout"],
                idle_timeout=self["idle-timeout"] or None,
                header_timeout=self["header-timeout"],
                retries=self["retries"],
                proxy_protocol=self["proxy-protocol"],
                splice=not self["no-splice"],
            ),
            health=health,
            shutdown_timeout=self["shutdown-timeout"],
            status_listen=tuple(self["status-listen"]),
        )
        try:
            self.config = check_tcp_config(config)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        # --policy FILE, --deny-network, --allow-network, --max-client-* (multiproxy.policy)
        self.policy_source = self.read_policy()


# -- service ---------------------------------------------------------------------------


class TCPService(ProxyService):
    """
    A TCP relay's listeners and health checks; stopping it is graceful
    (see `ProxyService`): open connections run up to ``shutdown_timeout``.

    @ivar factory: the `TCPRelayFactory`.
    @ivar pool: its `BackendPool` (for a status page).
    """

    def __init__(self, reactor: Any, factory: TCPRelayFactory, pool: BackendPool,
                 shutdown_timeout: float) -> None:
        super().__init__(reactor, factory, shutdown_timeout)
        self.pool = pool
        self.backend_pools = (pool,)


def make_tcp_service(
    config: TCPConfig, reactor: Any, reporters: Any = (), policy: Any = None,
    rng: random.Random | None = None, guard: AcceptGuard | None = None,
) -> TCPService:
    """A service running the TCP relay described by ``config``."""
    config = check_tcp_config(config)
    health = config.health
    backends = [b.backend(config.settings.connect_timeout) for b in config.backends]
    pool = BackendPool(
        config.name, backends, balancer_from_name(config.balance, rng), reactor,
        max_failures=health.max_failures, backoff=health.backoff,
        max_backoff=health.max_backoff,
    )
    counters = TrafficCounters() if config.status_listen else None
    if counters is not None:
        reporters = (*reporters, counters)
    factory = TCPRelayFactory(
        reactor, pool, name=config.name, policy=policy, reporters=reporters,
        settings=config.settings,
    )
    service = TCPService(reactor, factory, pool, config.shutdown_timeout)
    service.setName(config.name)
    server_tls = None
    if config.tls is not None:
        # A raw relay negotiates no application protocol, so no ALPN is offered.
        server_tls = ServerTLS(config.tls.certificates, config.tls.directory,
                               config.tls.default, alpn=())
    listeners = [(d, None) for d in config.listen] + [(d, server_tls) for d in config.tls_listen]
    for description, tls in listeners:
        try:
            endpoint = server_endpoint(reactor, description, tls)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{config.name}: bad listen endpoint {description!r}: {e}") from None
        if guard is not None:
            endpoint = GuardedEndpoint(endpoint, guard)
        service.add_listener(endpoint)
    if health.check != "none":
        check = TCPCheck() if health.check == "tcp" else HTTPCheck(
            health.path, health.host, health.expect
        )
        HealthChecker(
            reactor, backends, check, interval=health.interval, timeout=health.timeout,
            rise=health.rise, fall=health.fall,
        ).setServiceParent(service)
    if config.status_listen:
        site = StatusSite(reactor, config.name, lambda: (pool,), kind="tcp", counters=counters,
                          readings=lambda: tcp_readings(factory))
        add_status_listeners(service, reactor, config.name, config.status_listen, site)
    service.summary = startup_summary(config.name, "tcp relay", [
        listening("listening on", config.listen),
        listening("TLS on", config.tls_listen),
        listening("status on", config.status_listen),
        describe_pool(config.name, config.balance, [b.name for b in backends], health),
        describe_policy(policy),
    ])
    return service


def tcp_readings(factory: TCPRelayFactory) -> list[Reading]:
    """What the TCP relay's status page reads live: connections open and accepted."""
    return [
        Reading("connections_open", "multiproxy_client_connections", "gauge",
                "Client connections open now.", len(factory.connections)),
        Reading("connections_total", "multiproxy_connections_total", "counter",
                "Client connections accepted since start.", factory.accepted),
    ]
