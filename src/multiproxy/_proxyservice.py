"""
One proxy as a twistd service: its listeners, its helpers, a graceful stop.

Every kind of proxy is assembled into a `ProxyService`: the listeners
accept client connections for the proxy's factory; anything else added
(health checks, a status listener) runs beside them.  Stopping it is the
same for every kind, as HAProxy's soft stop: the listeners stop accepting,
the factory drains (idle HTTP connections close now, busy ones after their
current response), connections in progress get up to ``shutdown_timeout``
seconds to finish, then whatever is left is cut; the helpers stop last.

The factory provides ``connections`` (what is open), ``drain()`` and
``close_all()``; an HTTP factory's idle upstream connections (``pool``) are
closed at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet import defer, task
from twisted.logger import Logger

from multiproxy.pipeline._errors import ConfigError

_log = Logger()


class ProxyService(MultiService):
    """
    A proxy's listeners and helpers as one service, stopped gracefully.
    ``summary``, when set, is logged as it starts (see `multiproxy._startup`).
    """

    def __init__(self, reactor: Any, factory: Any, shutdown_timeout: float) -> None:
        super().__init__()
        self.reactor = reactor
        self.factory = factory
        self.shutdown_timeout = shutdown_timeout
        self.listeners: list[Service] = []
        self.summary: str | None = None
        self.backend_pools: tuple[Any, ...] = ()
        """The proxy's `BackendPool`s (shared by the workers of a host, see `multiproxy._config`)."""

    def startService(self) -> None:
        if self.summary:
            _log.info("{summary}", summary=self.summary)
        super().startService()

    def add_listener(self, endpoint: Any, factory: Any = None) -> None:
        """Accept client connections on ``endpoint`` (stopped first on shutdown)."""
        service = listening_service(endpoint, factory or self.factory)
        service.setServiceParent(self)
        self.listeners.append(service)

    def stopService(self) -> defer.Deferred:
        Service.stopService(self)
        helpers = [s for s in reversed(list(self)) if s not in self.listeners]
        d = defer.gatherResults(
            [defer.maybeDeferred(s.stopService) for s in self.listeners], consumeErrors=True)
        d.addBoth(lambda _: self.drain())
        d.addBoth(lambda _: defer.gatherResults(
            [defer.maybeDeferred(s.stopService) for s in helpers], consumeErrors=True))
        d.addBoth(lambda _: self._close_idle_upstreams())
        return d

    @defer.inlineCallbacks
    def drain(self):  # type: ignore[no-untyped-def]
        """Let the work in progress finish, up to ``shutdown_timeout``; then cut the rest."""
        factory = self.factory
        factory.drain()
        if factory.connections:
            _log.info("{name}: waiting up to {t:g} s for {n} connections to finish",
                      name=factory.name, n=len(factory.connections), t=self.shutdown_timeout)
        deadline = self.reactor.seconds() + self.shutdown_timeout
        while factory.connections and self.reactor.seconds() < deadline:
            yield task.deferLater(self.reactor, 0.05, lambda: None)
        if factory.connections:
            _log.warn("{name}: {n} connections still busy after {t:g} s; closing them",
                      name=factory.name, n=len(factory.connections), t=self.shutdown_timeout)
            factory.close_all()

    def _close_idle_upstreams(self) -> None:
        pool = getattr(self.factory, "pool", None)
        if pool is not None:
            pool.close_idle()


def listening_service(endpoint: Any, factory: Any) -> StreamServerEndpointService:
    """A service listening on ``endpoint`` with ``factory``; a port in use fails start-up."""
    service = StreamServerEndpointService(endpoint, factory)
    # As strports.service does: a port that cannot be bound fails start-up.
    service._raiseSynchronously = True  # type: ignore[attr-defined]
    return service


def parse_listen(reactor: Any, description: str) -> Any:
    """
    The server endpoint for a Twisted endpoint string, e.g. ``tcp:8080``.

    @raise ValueError: saying what is wrong with ``description``, for every
        way ``serverFromString`` refuses one (an unknown type, a bad port,
        a missing certificate file for ``ssl:``).
    """
    from OpenSSL.SSL import Error as TLSError
    from twisted.internet.endpoints import serverFromString

    try:
        return serverFromString(reactor, description)
    except KeyError as e:
        reason = e.args[0] if e.args else "unknown endpoint type"
    except OSError as e:
        reason = f"{e.strerror}: {e.filename}" if e.filename else str(e)
    except TLSError as e:
        reason = f"bad TLS certificate or key ({e})"
    except (ValueError, TypeError) as e:
        reason = str(e) or type(e).__name__
    raise ValueError(f"bad endpoint {description!r}: {reason}")


def check_listen(description: str) -> str:
    """``description`` if `parse_listen` takes it (nothing listens); else ValueError."""
    from twisted.internet.testing import MemoryReactor

    parse_listen(MemoryReactor(), description)
    return description


def listen_from_table(reader: Any, key: str, default: list[str],
                      check: Callable[[str], object] = check_listen) -> tuple[str, ...]:
    """The endpoint strings under ``key`` of a TOML table, each checked by ``check``."""
    values = reader.strings(key, default)
    for index, description in enumerate(values):
        try:
            check(description)
        except ValueError as e:
            raise ConfigError(f"{reader.key(key)}[{index}]: {e}") from None
    return tuple(values)


def add_listen_option(options: Any, key: str, description: str,
                      check: Callable[[str], object] = check_listen) -> None:
    """Append ``description`` to the repeatable option ``key``, refusing a bad one at once."""
    from twisted.python.usage import UsageError

    try:
        check(description)
    except ValueError as e:
        raise UsageError(f"--{key}: {e}") from None
    options[key].append(description)
