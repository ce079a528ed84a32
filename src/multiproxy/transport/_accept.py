"""
Accepting connections without running out of file descriptors.

When a process has no descriptor left, Twisted's accept loop falls back on a
reserved descriptor: it accepts every waiting connection and closes it at
once, logging a line for each one it drops (a flood under a connection
storm), and new connections are refused until descriptors free up.
`AcceptGuard` keeps the process from getting there: it counts the client
connections of every listener it guards and, at ``max_connections``, stops
accepting on all of them, so new clients wait in the kernel's listen
backlog instead of being dropped (a connection the accept loop had already
taken in the same batch is closed at once, quietly, and counted); accepting
resumes when the count is back under the low-water mark.  A busy period is
logged once when it starts and once when it is over, however often the
limit is reached in between.

`GuardedEndpoint` wraps any ``IStreamServerEndpoint`` so that what listens
through it is counted by a guard::

    guard = AcceptGuard(reactor)   # one per process: descriptors are per process
    endpoint = GuardedEndpoint(serverFromString(reactor, "tcp:8080"), guard)
    StreamServerEndpointService(endpoint, factory)

The default limit leaves room for one upstream connection per client and a
reserve for everything else: ``(RLIMIT_NOFILE - reserve) // 2``
(`default_max_connections`).
"""

from __future__ import annotations

import resource
from typing import Any

from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from zope.interface import implementer

__all__ = ["AcceptGuard", "GuardedEndpoint", "default_max_connections"]

log = Logger()


def default_max_connections(reserve: int | None = None) -> int:
    """
    Client connections that fit in this process's descriptor limit: two
    descriptors per client (its own and one upstream), after ``reserve``
    for listeners, pooled connections, logs and the like (by default 64, or
    a quarter of a small limit).
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    if reserve is None:
        reserve = min(64, soft // 4)
    return max(1, (soft - reserve) // 2)


class AcceptGuard:
    """
    Stops accepting on every guarded listening port while ``max_connections``
    client connections are open; resumes at ``resume_at`` or fewer.

    A busy period (the limit reached, perhaps again and again) is logged
    twice: a warning when it starts, and once accepting has gone on
    uninterrupted for ``quiet_period`` seconds, one line saying how often the
    limit was reached and how many connections were closed unserved.

    @ivar open: client connections open now.
    @ivar paused: whether accepting is stopped.
    @ivar episodes: how many times the limit has been reached.
    @ivar refused: connections closed at once because they were accepted
        (in the same accept batch) after the limit was reached.
    """

    def __init__(
        self,
        reactor,
        max_connections: int | None = None,
        *,
        resume_at: int | None = None,
        quiet_period: float = 10.0,
    ) -> None:
        self.reactor = reactor
        self.max_connections = max_connections or default_max_connections()
        self.resume_at = (
            resume_at if resume_at is not None else max(0, self.max_connections * 9 // 10)
        )
        if not 0 <= self.resume_at < self.max_connections:
            raise ValueError("resume_at must be below max_connections")
        self.quiet_period = quiet_period
        self.open = 0
        self.paused = False
        self.episodes = 0
        self.refused = 0
        self._ports: list[Any] = []
        self._busy_since: float | None = None
        self._busy_episodes = 0
        self._busy_refused = 0
        self._calm_call: Any = None

    # -- ports ---------------------------------------------------------------

    def watch(self, port: Any) -> None:
        """Pause and resume accepting on ``port`` (an ``IListeningPort``) with the others."""
        self._ports.append(port)
        if self.paused:
            _stop_accepting(port)

    def forget(self, port: Any) -> None:
        if port in self._ports:
            self._ports.remove(port)

    def wrap(self, factory: Factory) -> Factory:
        """A factory building ``factory``'s protocols, counted by this guard."""
        return _CountingFactory(self, factory)

    # -- counting ------------------------------------------------------------

    def opened(self) -> None:
        self.open += 1
        if self.open >= self.max_connections and not self.paused:
            self._pause()

    def closed(self) -> None:
        self.open -= 1
        if self.paused and self.open <= self.resume_at:
            self._resume()

    def _pause(self) -> None:
        self.paused = True
        self.episodes += 1
        for port in self._ports:
            _stop_accepting(port)
        if self._calm_call is not None:
            # Still the same busy period: counted, not logged.
            self._calm_call.cancel()
            self._calm_call = None
            self._busy_episodes += 1
            return
        self._busy_since = self.reactor.seconds()
        self._busy_episodes = 1
        self._busy_refused = self.refused
        log.warn(  # noqa: G010 -- a twisted.logger.Logger, whose method is warn
            "{open} client connections open (the limit for this process's file descriptors): "
            "not accepting new connections until some close",
            open=self.open,
        )

    def _resume(self) -> None:
        self.paused = False
        for port in self._ports:
            _start_accepting(port)
        self._calm_call = self.reactor.callLater(self.quiet_period, self._calm)

    def _calm(self) -> None:
        self._calm_call = None
        log.info(
            "accepting connections normally again: the limit of {limit} was reached {episodes} "
            "times in {seconds:.0f} s, and {refused} connections were closed unserved",
            limit=self.max_connections,
            episodes=self._busy_episodes,
            seconds=self.reactor.seconds() - (self._busy_since or 0.0),
            refused=self.refused - self._busy_refused,
        )


def _stop_accepting(port: Any) -> None:
    stop = getattr(port, "stopReading", None)
    if stop is not None:
        stop()


def _start_accepting(port: Any) -> None:
    if getattr(port, "connected", True) and not getattr(port, "disconnecting", False):
        start = getattr(port, "startReading", None)
        if start is not None:
            start()


class _CountingFactory(Factory):
    """Builds the wrapped factory's protocols and tells the guard when each one ends."""

    def __init__(self, guard: AcceptGuard, wrapped: Factory) -> None:
        self.guard = guard
        self.wrapped = wrapped
        self.noisy = getattr(wrapped, "noisy", False)

    def logPrefix(self) -> str:
        # The listening port names its factory ("ForwardProxy starting on 8080").
        inner = getattr(self.wrapped, "logPrefix", None)
        return inner() if inner is not None else type(self.wrapped).__name__

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def buildProtocol(self, addr):
        guard = self.guard
        if guard.paused:
            # Accepted in the same batch after the limit was reached: the
            # port closes it when given no protocol (no log line).
            guard.refused += 1
            return None
        protocol = self.wrapped.buildProtocol(addr)
        if protocol is None:
            return None
        lost = protocol.connectionLost

        def connectionLost(reason=None, _lost=lost):
            # An instance attribute: no wrapper in the data path, one call at the end.
            del protocol.connectionLost
            guard.closed()
            return _lost(reason)

        protocol.connectionLost = connectionLost
        guard.opened()
        return protocol


@implementer(IStreamServerEndpoint)
class GuardedEndpoint:
    """An ``IStreamServerEndpoint`` whose listening ports and connections an `AcceptGuard` counts."""

    def __init__(self, endpoint, guard: AcceptGuard) -> None:
        self.endpoint = endpoint
        self.guard = guard

    def listen(self, factory):
        d = self.endpoint.listen(self.guard.wrap(factory))

        def listening(port):
            self.guard.watch(port)
            return port

        return d.addCallback(listening)
