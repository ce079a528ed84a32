"""
The TOML configuration file: several proxies in one process.

A file holds any number of ``[[forward]]``, ``[[reverse]]`` and ``[[tcp]]``
tables (one per proxy) and an optional ``[log]`` table.  Each kind of proxy
reads its own table with a `TableReader`; this module only dispatches, so a
bad file is refused before anything listens, with a message naming the key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass

from twisted.application.service import IService, MultiService, Service

from multiproxy._accept import AcceptGuard
from multiproxy._accesslog import AccessLog
from multiproxy._errors import ConfigError
from multiproxy._tablereader import TableReader


@dataclass(frozen=True)
class ProxyKind:
    """How one kind of proxy is read from its table and turned into a service."""

    name: str
    from_table: Callable[[TableReader], object]
    make_service: Callable[..., IService]


def proxy_kinds() -> dict[str, ProxyKind]:
    """The kinds of proxy a configuration file may hold, by table name."""
    from multiproxy.forward._config import forward_config_from_table, make_forward_service
    from multiproxy.reverse import make_reverse_service, reverse_config_from_table
    from multiproxy.socks._config import make_socks_service, socks_config_from_table
    from multiproxy.tcp._config import make_tcp_service, tcp_config_from_table

    kinds = [
        ProxyKind("forward", forward_config_from_table, make_forward_service),
        ProxyKind("reverse", reverse_config_from_table, make_reverse_service),
        ProxyKind("tcp", tcp_config_from_table, make_tcp_service),
        ProxyKind("socks", socks_config_from_table, make_socks_service),
    ]
    return {kind.name: kind for kind in kinds}


@dataclass(frozen=True)
class Configuration:
    """A whole configuration file, read and checked."""

    proxies: tuple[tuple[ProxyKind, object], ...]
    access_log: str | None = "-"
    policy: object = None
    """A `multiproxy.policy.PolicySource` shared by every proxy, or None (allow all)."""
    workers: int = 1
    """Worker processes (top-level ``workers``; see `multiproxy._workers`)."""


def read_configuration(data: dict, source: str = "") -> Configuration:
    """Check a parsed TOML document; raise `ConfigError` naming the bad key."""
    reader = TableReader(data, "")
    kinds = proxy_kinds()
    proxies = []
    for name, kind in kinds.items():
        for table in reader.tables(name):
            config = kind.from_table(table)
            table.finish()
            proxies.append((kind, config))
    log = reader.table_of("log")
    access = log.raw("access", "-")
    if access is False:
        access_log = None
    elif isinstance(access, str) and access:
        access_log = access
    else:
        raise log.error("access", 'expected a file path, "-" for stdout, or false')
    log.finish()
    policy = _read_policy(reader, source)
    workers = 1
    if reader.has("workers"):
        from multiproxy._workers import parse_workers

        workers = parse_workers(reader.raw("workers"), "workers")
    try:
        reader.finish()
    except ConfigError as e:
        raise ConfigError(f"{e} (proxy tables: {', '.join(kinds)})") from None
    if not proxies:
        raise ConfigError(
            f"{source or 'configuration'}: no proxy defined; add a [[forward]], "
            f"[[reverse]], [[tcp]] or [[socks]] table"
        )
    names = [getattr(config, "name", "") for _, config in proxies]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two proxies are named {name!r}; give each a distinct name")
    return Configuration(tuple(proxies), access_log, policy, workers)


def _read_policy(reader: TableReader, source: str):
    """The ``[policy]`` table (multiproxy.policy), re-read from ``source`` on SIGHUP."""
    if not reader.has("policy"):
        return None
    from multiproxy.policy import PolicySource, settings_from_table

    settings = settings_from_table(reader.table_of("policy"))
    return PolicySource(settings, source or None)


def load_configuration(path: str) -> Configuration:
    """Read and check the TOML file at ``path``."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    try:
        return read_configuration(data, path)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def make_reporters(reactor, access_log: str | None) -> tuple:
    """The reporters every proxy of a process shares."""
    if access_log is None:
        return ()
    try:
        return (AccessLog(reactor, access_log),)
    except OSError as e:
        raise ConfigError(f"cannot open access log {access_log}: {e.strerror}") from None


class ReportersService(Service):
    """Closes (and so flushes) the shared reporters when the process stops."""

    def __init__(self, reporters: tuple) -> None:
        self.reporters = reporters

    def stopService(self):
        super().stopService()
        for reporter in self.reporters:
            close = getattr(reporter, "close", None)
            if close is not None:
                close()


def make_services(configuration: Configuration, reactor) -> MultiService:
    """One service running every proxy of ``configuration``."""
    top = MultiService()
    reporters = make_reporters(reactor, configuration.access_log)
    # Added first, so it stops last: after every listener has closed.
    ReportersService(reporters).setServiceParent(top)
    # One guard per process: file descriptors are a per-process resource.
    extra: dict = {"guard": AcceptGuard(reactor)}
    if configuration.policy is not None:
        from multiproxy.policy import PolicyService, make_policy_holder

        holder = make_policy_holder(configuration.policy, reactor)
        PolicyService(holder, reactor).setServiceParent(top)
        extra["policy"] = holder
    for kind, config in configuration.proxies:
        kind.make_service(config, reactor, reporters, **extra).setServiceParent(top)
    return top
