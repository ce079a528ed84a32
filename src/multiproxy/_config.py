"""
The TOML configuration file: several proxies in one process.

A file holds any number of ``[[forward]]``, ``[[reverse]]`` and ``[[tcp]]``
tables (one per proxy) and an optional ``[log]`` table.  Each kind of proxy
reads its own table with a `TableReader`; this module only dispatches, so a
bad file is refused before anything listens, with a message naming the key.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.application.service import IService, MultiService
from twisted.internet import defer
from twisted.logger import Logger

from multiproxy._accesslog import FORMATS, AccessLog
from multiproxy._signals import SIGUSR1, on_signal
from multiproxy._tablereader import TableReader
from multiproxy.pipeline._errors import ConfigError
from multiproxy.transport._accept import AcceptGuard

if TYPE_CHECKING:
    from multiproxy.status._page import WorkerStatus

_log = Logger()


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
    access_log_format: str = "combined"
    """A name of `multiproxy._accesslog.FORMATS` (``[log] format``)."""


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
    access_log_format = log.string("format", "combined", choices=tuple(FORMATS))
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
    return Configuration(tuple(proxies), access_log, policy, workers, access_log_format)


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


def make_reporters(reactor, access_log: str | None, access_log_format: str = "combined") -> tuple:
    """The reporters every proxy of a process shares."""
    if access_log is None:
        return ()
    try:
        return (AccessLog(reactor, access_log, format=access_log_format),)
    except OSError as e:
        raise ConfigError(f"cannot open access log {access_log}: {e.strerror}") from None


class ProcessService(MultiService):
    """
    Every proxy of a process, and the reporters they share.

    Stopping it stops the proxies first and waits for them to drain, so every
    request that finishes while draining is reported; then the reporters are
    closed (and so flushed).  SIGUSR1 reopens the access log files.
    """

    def __init__(self, reactor, reporters: tuple) -> None:
        super().__init__()
        self.reactor = reactor
        self.reporters = reporters
        self._stop_reopening: Callable[[], None] = lambda: None

    def startService(self) -> None:
        super().startService()
        if any(hasattr(r, "reopen") for r in self.reporters):
            self._stop_reopening = on_signal(SIGUSR1, self.reactor, self.reopen)

    def reopen(self) -> None:
        """Open every reporter's file again by name (after logrotate moved it)."""
        for reporter in self.reporters:
            reopen = getattr(reporter, "reopen", None)
            if reopen is None:
                continue
            try:
                reopen()
            except OSError as e:
                _log.error("cannot reopen access log {path}: {error}; still writing to the old file",
                           path=getattr(reporter, "path", "?"), error=e.strerror)

    def stopService(self):
        self._stop_reopening()
        d = defer.maybeDeferred(super().stopService)
        d.addBoth(self._close_reporters)
        return d

    def _close_reporters(self, result):
        for reporter in self.reporters:
            close = getattr(reporter, "close", None)
            if close is not None:
                close()
        return result


def make_services(configuration: Configuration, reactor,
                  shared_redis: str | None = None, worker: WorkerStatus | None = None
                  ) -> MultiService:
    """
    One service running every proxy of ``configuration``.  In a worker of
    ``--workers N`` (``worker`` says which), ``shared_redis`` is the
    master's Redis, where the workers share their state (`share_state`).
    """
    reporters = make_reporters(reactor, configuration.access_log,
                               configuration.access_log_format)
    top = ProcessService(reactor, reporters)
    # One guard per process: file descriptors are a per-process resource.
    extra: dict = {"guard": AcceptGuard(reactor)}
    if configuration.policy is not None:
        from multiproxy.policy import PolicyService, make_policy_holder

        holder = make_policy_holder(configuration.policy, reactor)
        PolicyService(holder, reactor).setServiceParent(top)
        extra["policy"] = holder
    for kind, config in configuration.proxies:
        kind.make_service(config, reactor, reporters, **extra).setServiceParent(top)
    if shared_redis is not None:
        if worker is None:
            from multiproxy.status._page import WorkerStatus

            worker = WorkerStatus(0, os.getpid())
        share_state(top, shared_redis, reactor, worker)
    return top


def share_state(top: MultiService, url: str, reactor, worker: WorkerStatus) -> None:
    """
    Make the workers of a host act as one through the Redis at ``url``:
    the workers build the same services, so the n-th health checker and
    every named pool and status page of a proxy are the same in each.
    One worker probes each pool per round (`HealthShare`); failures count
    and ejections hold for all (`PoolShare`); every status page shows the
    whole group and an operator's action reaches every worker (`StatusGroup`).
    """
    from multiproxy._redislink import redis_link
    from multiproxy.balancing._health import HealthChecker
    from multiproxy.balancing._sharedhealth import HealthShare
    from multiproxy.balancing._sharedpool import PoolShare
    from multiproxy.status._group import StatusGroup
    from multiproxy.status._listener import StatusSite

    link = redis_link(url, reactor, 0.25, 0.25, "worker state")
    for proxy in top:
        services = list(_services_under(proxy))
        checkers = [s for s in services if isinstance(s, HealthChecker)]
        for index, checker in enumerate(checkers):
            key = f"multiproxy:health:{proxy.name}:{index}".encode()
            checker.share = HealthShare(link, key, str(worker.pid), ttl=checker.interval * 3)
        for pool in getattr(proxy, "backend_pools", ()):
            share = PoolShare(link, f"multiproxy:pool:{proxy.name}:{pool.name}".encode(),
                              reactor, keep_for=2 * pool.max_backoff + 60)
            pool.share_with(share)
            share.setServiceParent(proxy)
        sites = {id(s.factory): s.factory for s in services
                 if isinstance(getattr(s, "factory", None), StatusSite)}
        for site in sites.values():
            site.group = StatusGroup(link, site.proxy_name, site.kind, worker, site.set_admin)


def _services_under(service):
    yield service
    for child in getattr(service, "services", ()):
        yield from _services_under(child)
