"""
Configuring a reverse proxy: from a ``[[reverse]]`` TOML table or from
``twistd multiproxy reverse`` options.  Both produce one `ReverseConfig`
value, checked before anything listens (see docs/reverse.md).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from functools import partial
from typing import Literal
from urllib.parse import urlsplit

from twisted.python import usage

from multiproxy._accesslog import AccessLogOptions
from multiproxy._proxyservice import add_listen_option, listen_from_table
from multiproxy._tablereader import TableReader
from multiproxy.balancing._balancers import BALANCER_NAMES, balancer_from_name
from multiproxy.balancing._config import HealthConfig, health_from_table
from multiproxy.balancing._options import HealthOptions
from multiproxy.cache import GATEWAY_TARGETS, CacheConfig, cache_from_table
from multiproxy.http._config import (
    HTTP_CLIENT_OPT_PARAMETERS,
    limits_from_table,
    timeouts_from_table,
    via_from_table,
)
from multiproxy.http._server import Timeouts
from multiproxy.http1._parser import Limits
from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy._options import ClientPolicyOptions
from multiproxy.reverse._forwarded import ForwardedSettings, parse_network
from multiproxy.reverse._routing import Route, RouteTable
from multiproxy.transport._tlsconfig import TLSCertificateOptions, TLSConfig, tls_from_table

DEFAULT_LISTEN = "tcp:8000:interface=127.0.0.1"
DEFAULT_POOL = "default"
_TIMEOUTS = Timeouts()

@dataclass(frozen=True, slots=True)
class BackendConfig:
    """
    One backend, from a URL ``http://host[:port]``, ``https://host[:port]``
    or ``h2://host[:port]`` (HTTP/2 in clear text, prior knowledge).

    @ivar server_name: for https: the name sent by SNI and verified in the
        certificate (default: ``host``).
    @ivar verify: for https: False only when configured explicitly.
    @ivar ca_file: for https: CA certificates to trust instead of the system's.
    @ivar http2: for https: offer only ``h2`` in ALPN and speak HTTP/2 (an
        ``h2://`` backend always does).
    """

    url: str
    scheme: Literal["http", "https", "h2"]
    host: str
    port: int
    weight: int = 1
    server_name: str | None = None
    verify: bool = True
    ca_file: str | None = None
    name: str | None = None
    http2: bool = False

    @property
    def authority(self) -> str:
        """``host:port`` as written in a Host field (port left out when default)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_backend_url(url: str, **options: object) -> BackendConfig:
    """
    A `BackendConfig` from ``http://host:port``, ``https://host:port`` or
    ``h2://host:port``.

    @raise ValueError: with a sentence saying what is wrong and what is right.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"backend {url!r}: {e}") from None
    if parts.scheme not in ("http", "https", "h2"):
        raise ValueError(
            f"backend {url!r}: expected http://host:port, https://host:port "
            f"or h2://host:port (HTTP/2 in clear text)"
        )
    if not parts.hostname:
        raise ValueError(f"backend {url!r} has no host; write it as {parts.scheme}://host:port")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"backend {url!r}: credentials in the URL are not supported")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"backend {url!r}: a backend URL has no path; use a route's replace_prefix "
            f"to change paths"
        )
    host = parts.hostname.rstrip(".")
    try:
        host = ipaddress.ip_address(host).compressed
    except ValueError:
        pass
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    if not 0 < port < 65536:
        raise ValueError(f"backend {url!r}: port must be 1-65535")
    if parts.scheme == "h2":
        options = {**options, "http2": True}
    return BackendConfig(url=text, scheme=parts.scheme, host=host, port=port,  # type: ignore[arg-type]
                         **options)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """A named pool: its backends, its balancer's name and its health checks."""

    name: str
    backends: tuple[BackendConfig, ...]
    balance: str = "roundrobin"
    health: HealthConfig = HealthConfig()


@dataclass(frozen=True)
class ReverseConfig:
    """
    Everything needed to run one reverse proxy.

    @ivar listen: plain HTTP listeners (Twisted server endpoint strings).
    @ivar via: the pseudonym in the ``Via`` sent to backends, or None.
    @ivar tls_listen: listeners that terminate TLS with ``tls``.
    @ivar redirect_https: plain listeners answer every request with a 308
        to the same URL on https (``https_port``).
    @ivar hsts: the ``Strict-Transport-Security`` value added to responses
        sent over TLS, or None.
    @ivar http2: offer HTTP/2 by ALPN (``h2``) on the TLS listeners.
    @ivar http2_prior_knowledge: accept HTTP/2 with prior knowledge (the
        connection preface first) on the plain listeners.
    @ivar status_listen: listeners for the status page (never the proxy's).
    @ivar status_token: the token a POST to the status listener's ``/admin``
        must carry to drain, maintain or ready a backend; None: no admin.
    @ivar shutdown_timeout: seconds in-flight requests get on shutdown.
    @ivar cache: the shared cache for routes with ``cache`` set (None: the
        defaults, if any route asks for it, with ``GATEWAY_TARGETS`` as the
        target list).
    """

    name: str = "reverse"
    listen: tuple[str, ...] = (DEFAULT_LISTEN,)
    tls_listen: tuple[str, ...] = ()
    tls: TLSConfig | None = None
    routes: tuple[Route, ...] = ()
    pools: tuple[PoolConfig, ...] = ()
    forwarded: ForwardedSettings = ForwardedSettings()
    via: bytes | None = b"multiproxy"
    redirect_https: bool = False
    https_port: int = 443
    hsts: bytes | None = None
    http2: bool = True
    http2_prior_knowledge: bool = True
    status_listen: tuple[str, ...] = ()
    status_token: str | None = None
    limits: Limits = Limits()
    timeouts: Timeouts = Timeouts()
    shutdown_timeout: float = 30.0
    cache: CacheConfig | None = None

    def route_table(self) -> RouteTable:
        return RouteTable(self.routes)

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


def check_config(config: ReverseConfig) -> ReverseConfig:
    """
    Checks that span several keys; raises `ConfigError` with the fix.
    Returns ``config`` so it can wrap a constructor call.
    """
    if not config.listen and not config.tls_listen:
        raise ConfigError(f"reverse proxy {config.name!r}: no listener; give listen or tls_listen")
    if config.tls_listen and config.tls is None:
        raise ConfigError(
            f"reverse proxy {config.name!r}: tls_listen needs certificates "
            f"(tls.certs or tls.dir; --tls-cert or --tls-dir)"
        )
    if config.tls is not None and not config.tls_listen:
        raise ConfigError(
            f"reverse proxy {config.name!r}: certificates are configured but no TLS "
            f"listener; add tls_listen (--tls-listen), e.g. tcp:8443:interface=127.0.0.1"
        )
    if not config.pools:
        raise ConfigError(f"reverse proxy {config.name!r}: no backend; add a pool with backends")
    names = [p.name for p in config.pools]
    routed = {r.pool for r in config.routes}
    for route in config.routes:
        if route.pool not in names:
            raise ConfigError(
                f"reverse proxy {config.name!r}: route {route.name!r} sends to pool "
                f"{route.pool!r}, which is not defined (pools: {', '.join(names)})"
            )
    unused = [n for n in names if n not in routed]
    if unused:
        raise ConfigError(
            f"reverse proxy {config.name!r}: pool {unused[0]!r} is not used by any route"
        )
    if not config.routes:
        raise ConfigError(f"reverse proxy {config.name!r}: no route")
    if config.status_token is not None:
        problem = status_token_problem(config.status_token)
        if problem:
            raise ConfigError(f"reverse proxy {config.name!r}: status_token {problem}")
        if not config.status_listen:
            raise ConfigError(
                f"reverse proxy {config.name!r}: status_token needs a status listener; "
                f"add status_listen (--status-listen), e.g. tcp:8404:interface=127.0.0.1")
    cached = [r.name for r in config.routes if r.cache]
    if cached and config.cache is not None and not config.cache.enabled:
        raise ConfigError(
            f"reverse proxy {config.name!r}: route {cached[0]!r} asks for the cache, "
            f"but the cache is switched off (cache.enabled = false)"
        )
    try:
        RouteTable(config.routes)
    except ValueError as e:
        raise ConfigError(f"reverse proxy {config.name!r}: {e}") from None
    return config


def status_token_problem(token: str) -> str | None:
    """What is wrong with an admin token (None when it will do)."""
    if len(token) < 8:
        return "is too short: use at least 8 characters"
    if not token.isascii() or not token.isprintable() or " " in token:
        return "must be printable ASCII without spaces"
    return None


# -- TOML ----------------------------------------------------------------------------------------


def reverse_config_from_table(reader: TableReader) -> ReverseConfig:
    """Read one ``[[reverse]]`` table; unknown keys and bad values are refused."""
    name = reader.string("name", "reverse")
    listen = listen_from_table(reader, "listen",
                               [] if reader.has("tls_listen") else [DEFAULT_LISTEN])
    tls_listen = listen_from_table(reader, "tls_listen", [])
    status_listen = listen_from_table(reader, "status_listen", [])
    status_token = reader.string("status_token", None)
    if status_token is not None:
        problem = status_token_problem(status_token)
        if problem:
            raise reader.error("status_token", problem)
    tls_table = reader.table_of("tls")
    tls = tls_from_table(tls_table) if tls_table.table else None

    pools = _pools_from_table(reader)
    routes = _routes_from_table(reader, pools)

    forwarded_table = reader.table_of("forwarded")
    trusted = forwarded_table.strings("trusted", [])
    nets = tuple(forwarded_table.convert("trusted", n, parse_network) for n in trusted)
    forwarded = ForwardedSettings(
        trusted=nets,
        x_forwarded=forwarded_table.boolean("x_forwarded", True),
        forwarded=forwarded_table.boolean("forwarded", True),
        include_port=forwarded_table.boolean("include_port", False),
        by=forwarded_table.string("by", ""),
    )
    forwarded_table.finish()

    hsts = _hsts_from_value(reader, reader.raw("hsts", False))
    via_value = via_from_table(reader)
    limits = limits_from_table(reader)
    timeouts = timeouts_from_table(reader)
    cache_table = reader.table_of("cache")
    # A reverse proxy's cache is a gateway cache: CDN-Cache-Control is for it.
    cache = cache_from_table(cache_table, GATEWAY_TARGETS) if cache_table.table else None
    config = ReverseConfig(
        name=name,
        listen=listen,
        tls_listen=tls_listen,
        tls=tls,
        routes=routes,
        pools=pools,
        forwarded=forwarded,
        via=via_value,
        redirect_https=reader.boolean("redirect_https", False),
        https_port=reader.integer("https_port", 443, minimum=1, maximum=65535),
        hsts=hsts,
        http2=reader.boolean("http2", True),
        http2_prior_knowledge=reader.boolean("http2_prior_knowledge", True),
        status_listen=status_listen,
        status_token=status_token,
        limits=limits,
        timeouts=timeouts,
        shutdown_timeout=reader.number("shutdown_timeout", 30.0, minimum=0),
        cache=cache,
    )
    try:
        return check_config(config)
    except ConfigError as e:
        raise ConfigError(f"{reader.where}: {e}") from None


def _pools_from_table(reader: TableReader) -> tuple[PoolConfig, ...]:
    pools = []
    if reader.has("backends"):
        if reader.has("pools"):
            raise reader.error(
                "backends", "give either backends (one pool) or [reverse.pools.NAME], not both")
        pools.append(_pool_from_table(reader, DEFAULT_POOL))
        return tuple(pools)
    table = reader.raw("pools", {})
    if not isinstance(table, dict):
        raise reader.error("pools", "expected tables [reverse.pools.NAME] with backends")
    for pool_name in table:
        sub = TableReader(table[pool_name], reader.key(f"pools.{pool_name}"))
        pools.append(_pool_from_table(sub, pool_name))
        sub.finish()
    if not pools:
        raise reader.error("pools", "no backend: give backends = [\"http://host:port\"] "
                                    "or [reverse.pools.NAME] tables")
    return tuple(pools)


def _pool_from_table(reader: TableReader, name: str) -> PoolConfig:
    balance = reader.string("balance", "roundrobin")
    reader.convert("balance", balance, balancer_from_name)
    raw = reader.raw("backends")
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise reader.error("backends", 'expected a list of URLs, e.g. ["http://127.0.0.1:9001"]')
    backends = []
    for i, item in enumerate(raw):
        key = f"backends[{i}]"
        if isinstance(item, str):
            backends.append(reader.convert(key, item, parse_backend_url))
        elif isinstance(item, dict):
            sub = TableReader(item, reader.key(key))
            url = sub.string("url")
            options = {
                "weight": sub.integer("weight", 1, minimum=0, maximum=1000),
                "server_name": sub.string("server_name", None),
                "verify": sub.boolean("verify", True),
                "ca_file": sub.string("ca_file", None),
                "name": sub.string("name", None),
                "http2": sub.boolean("http2", False),
            }
            backend = sub.convert("url", url, partial(parse_backend_url, **options))
            sub.finish()
            if backend.scheme != "https" and (
                options["server_name"] or options["ca_file"] or not options["verify"]
            ):
                raise sub.error("url", "server_name, ca_file and verify apply to https backends")
            if backend.scheme == "http" and options["http2"]:
                raise sub.error("http2", "HTTP/2 to a clear-text backend is written "
                                         "h2://host:port (prior knowledge)")
            backends.append(backend)
        else:
            raise reader.error(key, f"expected a URL or a table with url, got {item!r}")
    seen = set()
    for b in backends:
        if (b.scheme, b.host, b.port) in seen:
            raise reader.error("backends", f"{b.url} is listed twice")
        seen.add((b.scheme, b.host, b.port))
    health = health_from_table(reader.table_of("health"))
    return PoolConfig(name, tuple(backends), balance, health)


def _routes_from_table(reader: TableReader, pools: tuple[PoolConfig, ...]) -> tuple[Route, ...]:
    tables = reader.tables("routes")
    if not tables:
        if len(pools) == 1:
            return (Route(pools[0].name),)
        raise reader.error(
            "routes", "several pools need [[reverse.routes]] saying which hosts and paths "
                      "go to which pool")
    routes = []
    names = [p.name for p in pools]
    for sub in tables:
        pool = sub.string("pool", names[0] if len(names) == 1 else None)
        if pool is None:
            raise sub.error("pool", f"is required (one of {', '.join(names)})")
        if pool not in names:
            raise sub.error("pool", f"no pool named {pool!r} (pools: {', '.join(names)})")
        kwargs = dict(
            pool=pool,
            hosts=tuple(sub.strings("hosts", [])),
            path=sub.string("path", "/"),
            strip_prefix=sub.boolean("strip_prefix", False),
            replace_prefix=sub.string("replace_prefix", None),
            host_header=sub.string("host_header", "keep", choices=("keep", "backend")),
            cache=sub.boolean("cache", False),
            name=sub.string("name", ""),
        )
        routes.append(sub.convert("hosts" if kwargs["hosts"] else "path", kwargs,
                                  lambda kw: Route(**kw)))
        sub.finish()
    return tuple(routes)


def _hsts_from_value(reader: TableReader, value: object) -> bytes | None:
    if value is False:
        return None
    if value is True:
        return b"max-age=31536000"
    if isinstance(value, int) and value > 0:
        return f"max-age={value}".encode()
    if isinstance(value, str) and value.startswith("max-age=") and value.isascii() and \
            "\r" not in value and "\n" not in value:
        return value.encode("ascii")
    raise reader.error(
        "hsts", 'expected true, false, a max-age in seconds, or a header value such as '
                '"max-age=31536000; includeSubDomains"')


# -- command line --------------------------------------------------------------------------------


class ReverseOptions(AccessLogOptions, ClientPolicyOptions, HealthOptions, TLSCertificateOptions,
                     usage.Options):
    """
    ``twistd multiproxy reverse``: a reverse HTTP proxy in front of backends
    (with the client-side policy options: ``--policy FILE``,
    ``--deny-network``, ``--allow-network``, per-client limits; and the
    shared health-check and TLS certificate options).
    """

    synopsis = "--backend URL [--backend URL ...] [options]"
    longdesc = (
        "Run a reverse HTTP proxy: clients connect to it as if it were the web "
        "server, and it spreads their requests over the backends. With no "
        "--listen it listens on " + DEFAULT_LISTEN + ". For several pools and "
        "routes by host and path, use the TOML configuration ([[reverse]])."
    )
    optFlags = [
        ["redirect-https", None, "Answer every plain-HTTP request with a 308 redirect to https."],
        ["no-http2", None, "Offer only HTTP/1.1 by ALPN on the TLS listeners (no h2)."],
        ["no-http2-prior-knowledge", None,
         "Do not accept HTTP/2 with prior knowledge on the plain listeners."],
        ["no-verify-backends", None,
         "Do not verify https backends' certificates (encrypted but NOT authenticated)."],
        ["no-x-forwarded", None, "Do not set X-Forwarded-For/-Proto/-Host."],
        ["no-forwarded", None, "Do not set the RFC 7239 Forwarded header."],
        ["no-via", None, "Do not add a Via header to requests sent to backends."],
    ]
    optParameters = [
        ["name", None, "reverse", "Name of this proxy in logs and on the status page."],
        ["balance", None, "roundrobin",
         "Balancer: " + ", ".join(BALANCER_NAMES) + " (NAME: a header or cookie name)."],
        ["https-port", None, 443, "Port written in --redirect-https redirects.", int],
        ["hsts", None, 0,
         "Add Strict-Transport-Security: max-age=SECONDS to HTTPS responses (0 = off).", int],
        ["host-header", None, "keep",
         "Host sent to backends: keep (the client's) or backend (the backend's host:port)."],
        ["ca-file", None, None, "CA certificates (PEM) to verify https backends against, "
         "instead of the system trust store."],
        ["health-check", None, None,
         "Active health check: tcp (connect; the default), http (GET --health-path) or none."],
        ["health-path", None, None,
         "Path of the HTTP health check, 2xx or 3xx is healthy (implies --health-check http)."],
        ["max-failures", None, 3,
         "Failed requests in a row that eject a backend (passive health).", int],
        ["connect-timeout", None, _TIMEOUTS.connect,
         "Seconds to connect to a backend (then the next backend is tried).", float],
        ["response-timeout", None, _TIMEOUTS.response,
         "Seconds to wait for a backend's response head (504 after).", float],
        ["shutdown-timeout", None, 30.0,
         "Seconds in-flight requests may take to finish on shutdown.", float],
        ["status-token", None, None,
         "Token for admin actions (drain, maint, ready) by POST to the status listener's /admin."],
    ] + HTTP_CLIENT_OPT_PARAMETERS

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["tls-listen"] = []
        self["status-listen"] = []
        self["backend"] = []
        self["trust-forwarded"] = []

    def opt_listen(self, description: str) -> None:
        """Plain HTTP listener (repeatable), a Twisted endpoint: tcp:8000:interface=127.0.0.1."""
        add_listen_option(self, "listen", description)

    def opt_tls_listen(self, description: str) -> None:
        """HTTPS listener (repeatable) using --tls-cert/--tls-dir: tcp:8443:interface=127.0.0.1."""
        add_listen_option(self, "tls-listen", description)

    def opt_status_listen(self, description: str) -> None:
        """Status page listener (repeatable): / (HTML), /status.json, /metrics."""
        add_listen_option(self, "status-listen", description)

    def opt_backend(self, url: str) -> None:
        """Backend URL (repeatable): http://host:port, https://host:port or h2://host:port."""
        self["backend"].append(url)

    def opt_trust_forwarded(self, network: str) -> None:
        """Network whose X-Forwarded-*/Forwarded headers are kept (repeatable): 10.0.0.0/8."""
        self["trust-forwarded"].append(network)

    def postOptions(self) -> None:
        try:
            self.config = self._config()
        except (ConfigError, ValueError) as e:
            raise usage.UsageError(str(e)) from None
        # --policy FILE, --deny-network, --allow-network, --max-client-* (multiproxy.policy)
        self.policy_source = self.read_policy()

    def _config(self) -> ReverseConfig:
        if not self["backend"]:
            raise usage.UsageError(
                "give at least one --backend URL, e.g. --backend http://127.0.0.1:9001")
        try:
            balancer_from_name(self["balance"])
        except ValueError as e:
            raise usage.UsageError(f"--balance: {e}") from None
        if self["host-header"] not in ("keep", "backend"):
            raise usage.UsageError(
                f"--host-header must be keep or backend, not {self['host-header']!r}")
        health = self.health_config()
        if self["connect-timeout"] <= 0:
            raise usage.UsageError("--connect-timeout must be more than 0")
        for key in ("response-timeout", "header-timeout", "keepalive-timeout",
                    "shutdown-timeout", "max-body-size", "hsts"):
            if self[key] < 0:
                raise usage.UsageError(f"--{key} must not be negative (0 means none)")
        if not 0 < self["https-port"] < 65536:
            raise usage.UsageError("--https-port must be 1-65535")
        verify = not self["no-verify-backends"]
        backends = []
        for url in self["backend"]:
            try:
                b = parse_backend_url(url)
            except ValueError as e:
                raise usage.UsageError(f"--backend: {e}") from None
            if b.scheme == "https":
                b = replace(b, verify=verify, ca_file=self["ca-file"])
            backends.append(b)
        if len({(b.scheme, b.host, b.port) for b in backends}) != len(backends):
            raise usage.UsageError("--backend: the same backend is given twice")
        try:
            nets = tuple(parse_network(n) for n in self["trust-forwarded"])
        except ValueError as e:
            raise usage.UsageError(f"--trust-forwarded: {e}") from None
        tls = self.tls_config()
        listen = tuple(self["listen"])
        if not listen and not self["tls-listen"]:
            listen = (DEFAULT_LISTEN,)
        return check_config(ReverseConfig(
            name=self["name"],
            listen=listen,
            tls_listen=tuple(self["tls-listen"]),
            tls=tls,
            routes=(Route(DEFAULT_POOL, host_header=self["host-header"]),),
            pools=(PoolConfig(DEFAULT_POOL, tuple(backends), self["balance"], health),),
            forwarded=ForwardedSettings(
                trusted=nets,
                x_forwarded=not self["no-x-forwarded"],
                forwarded=not self["no-forwarded"],
            ),
            via=None if self["no-via"] else b"multiproxy",
            redirect_https=bool(self["redirect-https"]),
            https_port=self["https-port"],
            hsts=f"max-age={self['hsts']}".encode() if self["hsts"] else None,
            http2=not self["no-http2"],
            http2_prior_knowledge=not self["no-http2-prior-knowledge"],
            status_listen=tuple(self["status-listen"]),
            status_token=self["status-token"],
            limits=Limits(max_body=self["max-body-size"] or None),
            timeouts=Timeouts(
                header=self["header-timeout"] or None,
                keepalive=self["keepalive-timeout"] or None,
                connect=self["connect-timeout"],
                response=self["response-timeout"] or None,
            ),
            shutdown_timeout=self["shutdown-timeout"],
        ))
