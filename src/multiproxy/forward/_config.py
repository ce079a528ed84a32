"""
Configuring a forward proxy: from the command line or a ``[[forward]]`` table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.python import usage

from multiproxy._accesslog import AccessLogOptions
from multiproxy._proxyservice import (
    ProxyService,
    add_listen_option,
    listen_from_table,
    parse_listen,
)
from multiproxy._startup import (
    describe_cache,
    describe_parents,
    describe_policy,
    listening,
    startup_summary,
)
from multiproxy._tablereader import TableReader
from multiproxy.balancing import HealthChecker, HealthConfig, TCPCheck, health_from_table
from multiproxy.cache import (
    CACHE_OPT_FLAGS,
    CACHE_OPT_PARAMETERS,
    CacheConfig,
    CacheTargetOptions,
    cache_from_options,
    cache_from_table,
)
from multiproxy.cache._fetcher import caching_fetcher_factory
from multiproxy.forward._inspect import InspectConfig, Inspector
from multiproxy.forward._origin import DirectChooser
from multiproxy.forward._pac import PacSettings, parse_direct, parse_proxy_address
from multiproxy.forward._parents import (
    PARENT_FALLBACKS,
    ParentChooser,
    ParentConfig,
    ParentProxy,
    parse_parent_url,
)
from multiproxy.forward._proxy import NON_TLS_RULES, XFF_MODES, ForwardProxy, ForwardSettings
from multiproxy.h2 import HTTP2Settings
from multiproxy.http._config import (
    HTTP_CLIENT_OPT_PARAMETERS,
    limits_from_table,
    timeouts_from_table,
    via_from_table,
)
from multiproxy.http._server import Timeouts
from multiproxy.http1._parser import Limits
from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy._hosts import parse_host_pattern
from multiproxy.policy._options import DenyPageOptions, PolicyOptions
from multiproxy.status import Reading, StatusSite, TrafficCounters, add_status_listeners
from multiproxy.transport._accept import AcceptGuard, GuardedEndpoint
from multiproxy.transport._tls import ServerTLS, tls_server_endpoint
from multiproxy.transport._tlsconfig import TLSCertificateOptions, TLSConfig, tls_from_table

DEFAULT_LISTEN = "tcp:8080:interface=127.0.0.1"
_TIMEOUTS = Timeouts()
_LIMITS = Limits()
SHUTDOWN_TIMEOUT = 30.0
"""Seconds requests and tunnels in progress get to finish on shutdown (as the reverse proxy's)."""


@dataclass(frozen=True)
class ForwardConfig:
    """Everything needed to run one forward proxy."""

    name: str = "forward"
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    settings: ForwardSettings = ForwardSettings()
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    extras: dict = field(default_factory=dict)
    cache: CacheConfig = CacheConfig()
    """The shared HTTP cache in front of the upstream side (``[forward.cache]``)."""
    shutdown_timeout: float = SHUTDOWN_TIMEOUT
    """Seconds requests and tunnels in progress may take to finish on shutdown."""
    status_listen: tuple[str, ...] = ()
    """Listeners for the status page and metrics (never the proxy's own)."""
    inspect: InspectConfig | None = None
    """TLS inspection of chosen CONNECT hosts (``[forward.inspect]``); None: never."""
    parents: tuple[ParentConfig, ...] = ()
    """Parent proxies to forward through, tried in this order (none: go to origins)."""
    parent_fallback: str = "fail"
    """When every parent is down: "fail" (502) or "direct" (to the origin)."""
    parent_health: HealthConfig = HealthConfig()
    """How the parents are checked (TCP connects) and when one is taken out."""
    tls_listen: tuple[str, ...] = ()
    """HTTPS proxy listeners: clients reach the proxy itself over TLS (``tls``)."""
    tls: TLSConfig | None = None
    """The certificates of the ``tls_listen`` listeners (``[forward.tls]``)."""
    http2: bool = True
    """Offer HTTP/2 by ALPN on the ``tls_listen`` listeners (CONNECT included, RFC 9113 8.5)."""


def parse_ports(text: str) -> frozenset[int]:
    """``"443, 8443"`` -> {443, 8443}; ValueError naming the bad entry."""
    ports = set()
    for item in str(text).split(","):
        item = item.strip()
        if not item.isdigit() or not 0 < int(item) < 65536:
            raise ValueError(f"{item!r} is not a port number (1-65535)")
        ports.add(int(item))
    if not ports:
        raise ValueError("at least one port is needed")
    return frozenset(ports)


def forward_config_from_table(reader: TableReader) -> ForwardConfig:
    """Read one ``[[forward]]`` table; unknown keys and bad values are refused."""
    name = reader.string("name", "forward")
    tls_listen = listen_from_table(reader, "tls_listen", [])
    listen = listen_from_table(reader, "listen", [] if tls_listen else [DEFAULT_LISTEN])
    if not listen and not tls_listen:
        raise reader.error("listen", "needs at least one endpoint, e.g. 'tcp:8080'")
    tls_table = reader.table_of("tls")
    tls = tls_from_table(tls_table) if tls_table.table else None
    http2 = reader.boolean("http2", True)
    via_value = via_from_table(reader)
    ports = reader.raw("connect_ports", [443])
    if not isinstance(ports, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536 for p in ports
    ):
        raise reader.error("connect_ports", f"expected a list of port numbers, got {ports!r}")
    settings = ForwardSettings(
        via=via_value,
        x_forwarded_for=reader.string("x_forwarded_for", "add", choices=XFF_MODES),
        connect_ports=frozenset(ports),
        pac=pac_from_table(reader.table_of("pac")),
        **_tunnel_settings_from_table(reader),
    )
    limits = limits_from_table(reader)
    timeouts = timeouts_from_table(reader)
    cache = cache_from_table(reader.table_of("cache"))
    shutdown = reader.number("shutdown_timeout", SHUTDOWN_TIMEOUT, minimum=0)
    status_listen = listen_from_table(reader, "status_listen", [])
    inspect = inspect_from_table(reader.table_of("inspect")) if reader.has("inspect") else None
    return check_forward_config(ForwardConfig(
        name, listen, settings, limits, timeouts, cache=cache, shutdown_timeout=shutdown,
        status_listen=status_listen, inspect=inspect, tls_listen=tls_listen, tls=tls,
        http2=http2, **_parents_from_table(reader)))


def check_forward_config(config: ForwardConfig) -> ForwardConfig:
    """``config`` if its TLS listeners and certificates go together; else `ConfigError`."""
    if config.tls_listen and config.tls is None:
        raise ConfigError(f"forward proxy {config.name!r}: tls_listen needs certificates "
                          "(tls.certs or tls.dir; --tls-cert or --tls-dir)")
    if config.tls is not None and not config.tls_listen:
        raise ConfigError(f"forward proxy {config.name!r}: certificates are configured but no "
                          "TLS listener; add tls_listen (--tls-listen), e.g. "
                          "tcp:8443:interface=127.0.0.1")
    return config


def inspect_from_table(reader: TableReader) -> InspectConfig:
    """``[forward.inspect]``: ``ca`` (a directory), ``hosts``, ``never``, ``trust``."""
    if not reader.has("ca"):
        raise reader.error("ca", "the directory of the inspection CA is needed "
                                 "(make one with: multiproxy ca --out DIR)")
    config = InspectConfig(
        ca=reader.string("ca"),
        hosts=tuple(reader.convert("hosts", reader.strings("hosts", []), _host_patterns)),
        never=tuple(reader.convert("never", reader.strings("never", []), _host_patterns)),
        trust=tuple(reader.strings("trust", [])),
        cache_size=int(reader.number("cache_size", 1000, minimum=1)),
    )
    if not config.hosts:
        raise reader.error("hosts", "list the hosts to inspect, e.g. [\".example.com\"]")
    reader.finish()
    return config


def _host_patterns(patterns: list[str]) -> list[str]:
    for pattern in patterns:
        parse_host_pattern(pattern)  # ValueError says what is wrong
    return patterns


def _parents_from_table(reader: TableReader) -> dict:
    """``parents``, ``parent_fallback`` and the ``parent_health`` table."""
    parents = []
    for index, url in enumerate(reader.strings("parents", [])):
        try:
            parents.append(parse_parent_url(url))
        except ValueError as e:
            raise ConfigError(f"{reader.key('parents')}[{index}]: {e}") from None
    _check_distinct(parents, lambda message: reader.error("parents", message))
    fallback = reader.string("parent_fallback", "fail", choices=PARENT_FALLBACKS)
    health = health_from_table(reader.table_of("parent_health"))
    if health.check == "http":
        raise ConfigError(f"{reader.key('parent_health')}.check: parents are checked with "
                          "tcp (or none), not http")
    return {"parents": tuple(parents), "parent_fallback": fallback, "parent_health": health}


def _check_distinct(parents: list[ParentConfig], error) -> None:
    seen = set()
    for parent in parents:
        if parent.address in seen:
            raise error(f"{parent.address} is listed twice")
        seen.add(parent.address)


def _tunnel_settings_from_table(reader: TableReader) -> dict:
    """The CONNECT tunnel's ClientHello keys: ``sni_peek``, ``sni_must_match``, ``non_tls``."""
    values = {}
    for key in ("sni_peek", "sni_must_match"):
        values[key] = reader.boolean(key, getattr(ForwardSettings(), key))
    values["non_tls"] = reader.string("non_tls", "allow", choices=NON_TLS_RULES)
    if values["sni_must_match"] and not values["sni_peek"]:
        raise reader.error("sni_must_match", "needs sni_peek = true (the SNI must be read)")
    return values


def pac_from_table(reader: TableReader) -> PacSettings:
    """
    A ``[forward.pac]`` table: ``enabled`` (default true), ``direct``,
    ``proxy``, or ``file`` (an operator's PAC file, read now) instead of both.
    """
    enabled = reader.boolean("enabled", True)
    direct = reader.strings("direct", [])
    proxy = reader.string("proxy", None)
    file = reader.string("file", None)
    reader.finish()
    if file is not None:
        if direct or proxy is not None:
            raise reader.error("file", "cannot be combined with direct or proxy "
                                       "(the PAC file says which hosts go direct, and where)")
        return reader.convert("file", file, lambda path: PacSettings.build(
            enabled=enabled, file=path))
    direct = tuple(reader.convert("direct", text, parse_direct) for text in direct)
    if proxy is not None:
        proxy = reader.convert("proxy", proxy, parse_proxy_address)
    return PacSettings(enabled, direct, proxy)


class ForwardOptions(AccessLogOptions, PolicyOptions, DenyPageOptions, CacheTargetOptions,
                     TLSCertificateOptions, usage.Options):
    """``twistd multiproxy forward``: a forward HTTP proxy (the default)."""

    synopsis = "[options]"
    longdesc = (
        "Run a forward HTTP proxy: clients send absolute-form requests and CONNECT "
        "through it. With no options it listens on " + DEFAULT_LISTEN + "."
    )
    optFlags = [
        ["no-via", None, "Do not add a Via header (RFC 9110 7.6.3)."],
        ["no-http2", None, "Offer only HTTP/1.1 by ALPN on the --tls-listen listeners (no h2)."],
        ["no-sni-peek", None,
         "Relay CONNECT tunnels without reading their TLS ClientHello (no SNI rules or log)."],
        ["sni-must-match", None,
         "Refuse a CONNECT tunnel whose TLS SNI name is not the CONNECT host (domain fronting)."],
    ] + CACHE_OPT_FLAGS
    optParameters = [
        ["name", None, "forward", "Name of this proxy in logs."],
        ["via-name", None, "multiproxy", "Pseudonym sent in the Via header."],
        ["x-forwarded-for", None, "add",
         "What to do with X-Forwarded-For: add (append the client address), leave, delete."],
        ["connect-ports", None, "443",
         "Comma-separated destination ports CONNECT tunnels may reach."],
        ["non-tls", None, "allow",
         "A CONNECT tunnel that does not start with TLS: allow or deny."],
        ["max-head-size", None, _LIMITS.max_head,
         "Largest request head in bytes; larger heads get 431.", int],
        ["max-request-line", None, _LIMITS.max_request_line,
         "Longest request line in bytes; longer ones get 414.", int],
        ["idle-timeout", None, _TIMEOUTS.client_idle,
         "Seconds a client may pause while sending a request body (408 after).", float],
        ["connect-timeout", None, _TIMEOUTS.connect,
         "Seconds to connect to an upstream, name lookup included (504 after).", float],
        ["response-timeout", None, _TIMEOUTS.response,
         "Seconds to wait for the upstream's response head (504 after).", float],
        ["tunnel-idle-timeout", None, _TIMEOUTS.tunnel_idle,
         "Seconds a CONNECT tunnel may be idle before it is closed.", float],
        ["shutdown-timeout", None, SHUTDOWN_TIMEOUT,
         "Seconds requests and tunnels in progress may take to finish on shutdown.", float],
        ["inspect-ca", None, None,
         "Inspect TLS for the --inspect-host hosts with the CA in this directory "
         "(ca.pem, ca.key; make one with: multiproxy ca --out DIR)."],
        ["pac-proxy", None, None,
         "The proxy address the PAC file (/proxy.pac, /wpad.dat) hands out, HOST:PORT "
         "(default: the address the client reached this proxy at)."],
        ["pac-file", None, None,
         "Serve this PAC file at /proxy.pac and /wpad.dat instead of a generated one."],
        ["parent-fallback", None, "fail",
         "When every --parent is down: fail (answer 502) or direct (go to the origin)."],
    ] + HTTP_CLIENT_OPT_PARAMETERS + CACHE_OPT_PARAMETERS

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["tls-listen"] = []
        self["status-listen"] = []
        self["inspect-host"] = []
        self["never-inspect"] = []
        self["inspect-trust"] = []
        self["pac-direct"] = []
        self["parent"] = []

    def opt_inspect_host(self, pattern: str) -> None:
        """Inspect CONNECT tunnels to these hosts (repeatable), e.g. .example.com."""
        self["inspect-host"].append(pattern)

    def opt_never_inspect(self, pattern: str) -> None:
        """Never inspect these hosts, even if --inspect-host matches (repeatable)."""
        self["never-inspect"].append(pattern)

    def opt_inspect_trust(self, path: str) -> None:
        """Trust the CA certificates in this PEM file for inspected origins (repeatable)."""
        self["inspect-trust"].append(path)

    def opt_parent(self, url: str) -> None:
        """
        Forward through this parent proxy (repeatable, tried in order):
        http://[user:password@]host[:port], port 3128 by default.
        """
        try:
            parent = parse_parent_url(url)
        except ValueError as e:
            raise usage.UsageError(f"--parent: {e}") from None
        self["parent"].append(parent)

    def opt_listen(self, description: str) -> None:
        """Twisted server endpoint to listen on (repeatable), e.g. tcp:8080:interface=127.0.0.1."""
        add_listen_option(self, "listen", description)

    def opt_tls_listen(self, description: str) -> None:
        """
        HTTPS proxy listener (repeatable; clients reach the proxy over TLS,
        HTTP/2 by ALPN) with --tls-cert/--tls-dir, e.g. tcp:8443:interface=127.0.0.1.
        """
        add_listen_option(self, "tls-listen", description)

    def opt_status_listen(self, description: str) -> None:
        """Status page listener (repeatable): / (HTML), /status.json, /metrics."""
        add_listen_option(self, "status-listen", description)

    def opt_pac_direct(self, host: str) -> None:
        """
        A destination the PAC file sends direct, not through the proxy (repeatable):
        host.example.com, .example.com (and subdomains), 10.0.0.0/8, <local> (names
        without a dot).
        """
        try:
            self["pac-direct"].append(parse_direct(host))
        except ValueError as e:
            raise usage.UsageError(f"--pac-direct: {e}") from None

    def read_pac(self) -> PacSettings:
        """The PAC file the options describe (``--pac-*``), checked and read now."""
        direct, proxy, file = self["pac-direct"], self["pac-proxy"], self["pac-file"]
        if file is not None:
            if direct or proxy is not None:
                raise usage.UsageError(
                    "--pac-file cannot be combined with --pac-direct or --pac-proxy "
                    "(the PAC file says which hosts go direct, and where)")
            try:
                return PacSettings.build(file=file)
            except ValueError as e:
                raise usage.UsageError(f"--pac-file: {e}") from None
        if proxy is not None:
            try:
                proxy = parse_proxy_address(proxy)
            except ValueError as e:
                raise usage.UsageError(f"--pac-proxy: {e}") from None
        return PacSettings(direct=tuple(direct), proxy=proxy)

    def postOptions(self) -> None:
        try:
            ports = parse_ports(self["connect-ports"])
        except ValueError as e:
            raise usage.UsageError(f"--connect-ports: {e}") from None
        if self["x-forwarded-for"] not in XFF_MODES:
            raise usage.UsageError(
                f"--x-forwarded-for must be one of {', '.join(XFF_MODES)}, "
                f"not {self['x-forwarded-for']!r}"
            )
        for key in ("max-head-size", "max-request-line", "max-body-size"):
            if self[key] < 0:
                raise usage.UsageError(f"--{key} must not be negative")
        for key in ("header-timeout", "keepalive-timeout", "idle-timeout", "connect-timeout",
                    "response-timeout", "tunnel-idle-timeout"):
            if self[key] < 0:
                raise usage.UsageError(f"--{key} must not be negative (0 means no limit)")
        if self["shutdown-timeout"] < 0:
            raise usage.UsageError("--shutdown-timeout must not be negative")
        if self["connect-timeout"] == 0:
            raise usage.UsageError("--connect-timeout must be more than 0")
        if self["non-tls"] not in NON_TLS_RULES:
            raise usage.UsageError(f"--non-tls must be allow or deny, not {self['non-tls']!r}")
        if self["sni-must-match"] and self["no-sni-peek"]:
            raise usage.UsageError("--sni-must-match needs the SNI: drop --no-sni-peek")
        if self["parent-fallback"] not in PARENT_FALLBACKS:
            raise usage.UsageError(
                f"--parent-fallback must be fail or direct, not {self['parent-fallback']!r}")
        _check_distinct(self["parent"], lambda message: usage.UsageError(f"--parent: {message}"))
        via = None if self["no-via"] else self["via-name"].encode("ascii", "replace")
        if via is not None and (not via or b" " in via):
            raise usage.UsageError("--via-name must be a single word, e.g. multiproxy")
        tls_listen = tuple(self["tls-listen"])
        listen = tuple(self["listen"]) or (() if tls_listen else (DEFAULT_LISTEN,))
        # --policy FILE, --deny-host, --allow-network, ... (multiproxy.policy)
        self.policy_source = self.read_policy()
        self.config = ForwardConfig(
            name=self["name"],
            listen=listen,
            settings=ForwardSettings(
                via=via, x_forwarded_for=self["x-forwarded-for"], connect_ports=ports,
                sni_peek=not self["no-sni-peek"], sni_must_match=bool(self["sni-must-match"]),
                non_tls=self["non-tls"], pac=self.read_pac(),
            ),
            limits=Limits(
                max_head=self["max-head-size"],
                max_request_line=self["max-request-line"],
                max_body=self["max-body-size"] or None,
            ),
            timeouts=Timeouts(
                header=self["header-timeout"] or None,
                keepalive=self["keepalive-timeout"] or None,
                client_idle=self["idle-timeout"] or None,
                connect=self["connect-timeout"],
                response=self["response-timeout"] or None,
                tunnel_idle=self["tunnel-idle-timeout"] or None,
            ),
            cache=cache_from_options(self),
            shutdown_timeout=self["shutdown-timeout"],
            status_listen=tuple(self["status-listen"]),
            inspect=self._inspect_config(),
            parents=tuple(self["parent"]),
            parent_fallback=self["parent-fallback"],
            tls_listen=tls_listen,
            tls=self.tls_config(),
            http2=not self["no-http2"],
        )
        try:
            check_forward_config(self.config)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None

    def _inspect_config(self) -> InspectConfig | None:
        hosts, never = self["inspect-host"], self["never-inspect"]
        if self["inspect-ca"] is None:
            if hosts or never or self["inspect-trust"]:
                raise usage.UsageError("--inspect-host, --never-inspect and --inspect-trust "
                                       "need --inspect-ca DIR")
            return None
        if not hosts:
            raise usage.UsageError("--inspect-ca needs at least one --inspect-host PATTERN")
        for option, patterns in (("--inspect-host", hosts), ("--never-inspect", never)):
            for pattern in patterns:
                try:
                    parse_host_pattern(pattern)
                except ValueError as e:
                    raise usage.UsageError(f"{option}: {e}") from None
        return InspectConfig(self["inspect-ca"], tuple(hosts), tuple(never),
                             tuple(self["inspect-trust"]))


def make_forward_proxy(config: ForwardConfig, reactor, reporters=(), policy=None) -> ForwardProxy:
    """
    The `ForwardProxy` factory described by ``config``; ``policy`` is an
    `IPolicy`.  The shared cache, unless switched off, wraps its fetcher.
    """
    inspector = None
    if config.inspect is not None:
        try:
            inspector = Inspector(config.inspect)
        except ConfigError as e:
            raise ConfigError(f"{config.name}: {e}") from None
    factory = ForwardProxy(
        reactor,
        name=config.name,
        policy=policy,
        chooser=(make_parent_chooser(config, reactor, inspector) if config.parents
                 else None),
        settings=config.settings,
        limits=config.limits,
        timeouts=config.timeouts,
        reporters=reporters,
        inspector=inspector,
        parent_fallback=config.parent_fallback,
    )
    # Clients of an HTTPS proxy may speak HTTP/2 (ALPN); never by prior knowledge in the clear.
    factory.http2 = HTTP2Settings(tls=config.http2, prior_knowledge=False, websockets=False) \
        if config.tls_listen else None
    wrap = caching_fetcher_factory(config.cache, reactor)
    if wrap is not None:
        factory.fetcher = wrap(factory.fetcher)
    return factory


def make_parent_chooser(config: ForwardConfig, reactor,
                        inspector: Inspector | None = None) -> ParentChooser:
    """
    The `ParentChooser` for the parents of ``config`` (passive health as it
    says); https origins behind them are verified as ``inspector`` trusts.
    """
    connect = config.timeouts.connect
    health = config.parent_health
    direct = DirectChooser(connect, origin_tls=inspector.origin_tls if inspector else None)
    return ParentChooser(
        [ParentProxy(parent, connect) for parent in config.parents], reactor,
        fallback=config.parent_fallback, direct=direct,
        max_failures=health.max_failures, backoff=health.backoff,
        max_backoff=health.max_backoff,
    )


def make_forward_service(
    config: ForwardConfig, reactor, reporters=(), policy=None, guard: AcceptGuard | None = None
) -> ProxyService:
    """
    A service listening on every endpoint of ``config``; with ``guard``,
    accepting pauses before the process runs out of file descriptors.
    """
    counters = TrafficCounters() if config.status_listen else None
    if counters is not None:
        reporters = (*reporters, counters)
    factory = make_forward_proxy(config, reactor, reporters, policy)
    service = ProxyService(reactor, factory, config.shutdown_timeout)
    service.setName(config.name)
    server_tls = None
    if config.tls_listen:
        assert config.tls is not None
        server_tls = ServerTLS(config.tls.certificates, config.tls.directory, config.tls.default,
                               alpn=(b"h2", b"http/1.1") if config.http2 else (b"http/1.1",))
    listeners = [(d, "listen", None) for d in config.listen] + [
        (d, "tls_listen", server_tls) for d in config.tls_listen]
    for description, key, tls in listeners:
        try:
            endpoint = parse_listen(reactor, description)
        except ValueError as e:
            raise ConfigError(f"{config.name}: {key}: {e}") from None
        if tls is not None:
            endpoint = tls_server_endpoint(endpoint, tls, reactor)
        if guard is not None:
            endpoint = GuardedEndpoint(endpoint, guard)
        service.add_listener(endpoint)
    chooser = factory.chooser
    parents = chooser.pool if isinstance(chooser, ParentChooser) else None
    if parents is not None:
        service.backend_pools = (parents,)
    health = config.parent_health
    if parents is not None and health.check != "none":
        HealthChecker(reactor, parents.backends, TCPCheck(), interval=health.interval,
                      timeout=health.timeout, rise=health.rise, fall=health.fall,
                      ).setServiceParent(service)
    if config.status_listen:
        site = StatusSite(reactor, config.name, lambda: () if parents is None else (parents,),
                          kind="forward", counters=counters,
                          readings=lambda: forward_readings(factory))
        add_status_listeners(service, reactor, config.name, config.status_listen, site)
    service.summary = startup_summary(config.name, "forward proxy", [
        listening("listening on", config.listen),
        listening("TLS on", config.tls_listen),
        listening("status on", config.status_listen),
        describe_parents([p.url for p in config.parents], config.parent_fallback, health),
        describe_policy(policy),
        describe_cache(config.cache),
        (f"inspecting TLS to {', '.join(config.inspect.hosts)} with the CA in "
         f"{config.inspect.ca}" if config.inspect else ""),
        config.settings.pac.describe(),
    ])
    return service


def forward_readings(factory: ForwardProxy) -> list[Reading]:
    """What the forward proxy's status page reads live: connections and tunnels."""
    return [
        Reading("connections_open", "multiproxy_client_connections", "gauge",
                "Client connections open now.", len(factory.connections)),
        Reading("tunnels_open", "multiproxy_tunnels_open", "gauge",
                "CONNECT tunnels relaying now.", factory.tunnels_open),
        Reading("tunnels_total", "multiproxy_tunnels_total", "counter",
                "CONNECT tunnels established since start.", factory.tunnels_opened),
    ]
