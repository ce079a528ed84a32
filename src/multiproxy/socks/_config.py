"""
Configuring a SOCKS proxy: from ``twistd multiproxy socks`` options or a
``[[socks]]`` TOML table.  Both produce one `SocksConfig`, checked before
anything listens; `make_socks_service` turns it into a running service.

The access policy is the one every proxy shares: the command line takes the
forward proxy's policy options (`multiproxy.policy._options.PolicyOptions`:
``--deny-host``, ``--htpasswd``, ``--policy FILE``, ...), a file its
``[policy]`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from multiproxy._accesslog import AccessLogOptions
from multiproxy._proxyservice import (
    ProxyService,
    add_listen_option,
    check_listen,
    listen_from_table,
    parse_listen,
)
from multiproxy._startup import describe_policy, listening, startup_summary
from multiproxy._tablereader import TableReader
from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy._options import PolicyOptions
from multiproxy.socks._proxy import SocksProxy, SocksSettings
from multiproxy.status import Reading, StatusSite, TrafficCounters, add_status_listeners
from multiproxy.transport._accept import AcceptGuard, GuardedEndpoint

__all__ = [
    "DEFAULT_SOCKS_LISTEN",
    "SocksConfig",
    "SocksOptions",
    "make_socks_service",
    "socks_config_from_table",
]

DEFAULT_SOCKS_LISTEN = "tcp:1080:interface=127.0.0.1"
_SETTINGS = SocksSettings()
SHUTDOWN_TIMEOUT = 30.0


@dataclass(frozen=True)
class SocksConfig:
    """Everything needed to run one SOCKS proxy."""

    name: str = "socks"
    listen: tuple[str, ...] = (DEFAULT_SOCKS_LISTEN,)
    settings: SocksSettings = SocksSettings()
    shutdown_timeout: float = SHUTDOWN_TIMEOUT
    """Seconds tunnels in progress may take to finish on shutdown."""
    status_listen: tuple[str, ...] = ()
    """Listeners for the status page and metrics (docs/status.md)."""


def _check(config: SocksConfig) -> SocksConfig:
    if not config.listen:
        raise ConfigError(f"socks proxy {config.name!r}: no listener; give listen, e.g. tcp:1080")
    for description in config.listen + config.status_listen:
        try:
            check_listen(description)
        except ValueError as e:
            raise ConfigError(
                f"socks proxy {config.name!r}: listen: {e}; write e.g. tcp:1080:interface=127.0.0.1"
            ) from None
    return config


def socks_config_from_table(reader: TableReader) -> SocksConfig:
    """Read one ``[[socks]]`` table; unknown keys and bad values are refused."""
    name = reader.string("name", "socks")
    listen = listen_from_table(reader, "listen", [DEFAULT_SOCKS_LISTEN])
    if not listen:
        raise reader.error("listen", "needs at least one endpoint, e.g. 'tcp:1080'")
    settings = SocksSettings(
        handshake_timeout=reader.number("handshake_timeout", _SETTINGS.handshake_timeout,
                                        minimum=0.001),
        connect_timeout=reader.number("connect_timeout", _SETTINGS.connect_timeout,
                                      minimum=0.001),
        idle_timeout=reader.optional_number("idle_timeout")
        if reader.has("idle_timeout") else _SETTINGS.idle_timeout,
    )
    shutdown = reader.number("shutdown_timeout", SHUTDOWN_TIMEOUT, minimum=0)
    status_listen = listen_from_table(reader, "status_listen", [])
    return _check(SocksConfig(name, listen, settings, shutdown, status_listen))


class SocksOptions(AccessLogOptions, PolicyOptions, usage.Options):
    """``twistd multiproxy socks``: a SOCKS5 / SOCKS4a proxy."""

    synopsis = "[--listen ENDPOINT ...] [options]"
    longdesc = (
        "Run a SOCKS proxy: SOCKS5 (RFC 1928) CONNECT to IPv4, IPv6 and host-name "
        "destinations, with username/password authentication (RFC 1929, --htpasswd), "
        "and SOCKS4/SOCKS4a. With no options it listens on " + DEFAULT_SOCKS_LISTEN + "."
    )
    optParameters = [
        ["name", None, "socks", "Name of this proxy in logs."],
        ["handshake-timeout", None, _SETTINGS.handshake_timeout,
         "Seconds a client has to finish the SOCKS handshake.", float],
        ["connect-timeout", None, _SETTINGS.connect_timeout,
         "Seconds to connect to a destination, name lookup included (reply 0x06 after).",
         float],
        ["idle-timeout", None, _SETTINGS.idle_timeout,
         "Seconds a tunnel may be idle before it is closed (0 = never).", float],
        ["shutdown-timeout", None, SHUTDOWN_TIMEOUT,
         "Seconds tunnels in progress may take to finish on shutdown.", float],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["status-listen"] = []

    def opt_status_listen(self, description: str) -> None:
        """Status page listener (repeatable): / (HTML), /status.json, /metrics."""
        add_listen_option(self, "status-listen", description)

    def opt_listen(self, description: str) -> None:
        """Twisted server endpoint to listen on (repeatable), e.g. tcp:1080:interface=127.0.0.1."""
        add_listen_option(self, "listen", description)

    def postOptions(self) -> None:
        for key in ("handshake-timeout", "connect-timeout"):
            if self[key] <= 0:
                raise usage.UsageError(f"--{key} must be more than 0")
        if self["idle-timeout"] < 0:
            raise usage.UsageError("--idle-timeout must not be negative (0 means no limit)")
        if self["shutdown-timeout"] < 0:
            raise usage.UsageError("--shutdown-timeout must not be negative")
        config = SocksConfig(
            name=self["name"],
            listen=tuple(self["listen"]) or (DEFAULT_SOCKS_LISTEN,),
            settings=SocksSettings(
                handshake_timeout=self["handshake-timeout"],
                connect_timeout=self["connect-timeout"],
                idle_timeout=self["idle-timeout"] or None,
            ),
            shutdown_timeout=self["shutdown-timeout"],
            status_listen=tuple(self["status-listen"]),
        )
        try:
            self.config = _check(config)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        # --policy FILE, --deny-host, --htpasswd, --max-client-* (multiproxy.policy)
        self.policy_source = self.read_policy()


def make_socks_service(
    config: SocksConfig, reactor: Any, reporters: Any = (), policy: Any = None,
    guard: AcceptGuard | None = None,
) -> ProxyService:
    """A service listening on every endpoint of ``config``; stopping it is graceful."""
    config = _check(config)
    counters = TrafficCounters() if config.status_listen else None
    if counters is not None:
        reporters = (*reporters, counters)
    factory = SocksProxy(reactor, name=config.name, policy=policy, reporters=reporters,
                         settings=config.settings)
    service = ProxyService(reactor, factory, config.shutdown_timeout)
    service.setName(config.name)
    for description in config.listen:
        endpoint = parse_listen(reactor, description)
        if guard is not None:
            endpoint = GuardedEndpoint(endpoint, guard)
        service.add_listener(endpoint)
    if config.status_listen:
        site = StatusSite(reactor, config.name, kind="socks", counters=counters,
                          readings=lambda: [Reading(
                              "connections_open", "multiproxy_client_connections", "gauge",
                              "Client connections open now.", len(factory.connections))])
        add_status_listeners(service, reactor, config.name, config.status_listen, site)
    service.summary = startup_summary(config.name, "socks proxy", [
        listening("listening on", config.listen),
        listening("status on", config.status_listen),
        describe_policy(policy),
    ])
    return service
