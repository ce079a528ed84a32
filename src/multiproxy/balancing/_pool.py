"""
`BackendPool`: chooses a healthy backend through a balancer, and takes
failing backends out of rotation (passive health checks).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from multiproxy.balancing._backend import Backend, BackendStatus
from multiproxy.pipeline._interfaces import IBalancer, IUpstreamChooser
from multiproxy.pipeline._values import Intent

__all__ = ["BackendPool"]

_log = Logger()


@implementer(IUpstreamChooser)
class BackendPool:
    """
    A named group of `Backend`s behind one balancer.

    Passive health: after ``max_failures`` consecutive failed connections or
    requests a backend is ejected for ``backoff`` seconds; past that it gets
    one trial at a time; a failed trial ejects it again for twice as long (up
    to ``max_backoff``), a success puts it back for good.  Active checks (see
    `HealthChecker`) take backends down and up independently.

    @param clock: an `IReactorTime` (``seconds()``), injected for tests.
    """

    def __init__(
        self,
        name: str,
        backends: Sequence[Backend],
        balancer: IBalancer,
        clock: Any,
        *,
        max_failures: int = 3,
        backoff: float = 5.0,
        max_backoff: float = 300.0,
    ) -> None:
        if not backends:
            raise ValueError(f"pool {name!r} has no backends")
        keys = [b.key for b in backends]
        if len(set(keys)) != len(keys):
            raise ValueError(f"pool {name!r} lists the same backend twice")
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.name = name
        self.backends = list(backends)
        self.balancer = balancer
        self.clock = clock
        self.max_failures = max_failures
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.share: Any = None
        """A `PoolShare` when the workers of a host count failures together."""
        for backend in self.backends:
            backend.add_observer(self._finished)

    def __repr__(self) -> str:
        return f"<BackendPool {self.name} {len(self.backends)} backends>"

    def choose(self, intent: Intent | None, excluded: Collection[Any] = frozenset()) -> Backend | None:
        """A healthy backend not in ``excluded`` (keys), chosen by the balancer; or None."""
        now = self.clock.seconds()
        candidates = [
            b for b in self.backends if b.available(now) and b.key not in excluded
        ]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        return self.balancer.pick(candidates, intent)

    def healthy(self) -> list[Backend]:
        """The backends that would be candidates now."""
        now = self.clock.seconds()
        return [b for b in self.backends if b.available(now)]

    def retry_after(self) -> int:
        """
        Whole seconds until a backend may be available again (for a 503's
        ``Retry-After``): the nearest end of an ejection, else 1.
        """
        now = self.clock.seconds()
        waits = [
            b.ejected_until - now for b in self.backends
            if b.checked_up and b.ejected_until is not None and b.ejected_until > now
        ]
        return max(1, int(min(waits) + 0.999)) if waits else 1

    def snapshot(self) -> list[BackendStatus]:
        """Every backend's `BackendStatus`, in configuration order."""
        now = self.clock.seconds()
        return [b.status(now) for b in self.backends]

    # -- passive health

    def share_with(self, share: Any) -> None:
        """
        Count failures and eject together with the other workers of the host
        (a `multiproxy.balancing._sharedpool.PoolShare`).
        """
        self.share = share
        share.pool = self

    def _finished(self, backend: Backend, ok: bool) -> None:
        if ok:
            if self.share is not None:
                self.share.succeeded(backend)
            if backend.ejected_until is not None:
                _log.info("backend {name} of pool {pool} is back after a successful trial",
                          name=backend.name, pool=self.name)
                self.readmit(backend)
            backend.ejections = 0
            return
        if self.share is None:
            self._count(backend, backend.consecutive_failures, "")
            return

        def counted(host_failures: int | None) -> None:
            if host_failures is None:  # Redis cannot say: this worker's count decides
                self._count(backend, backend.consecutive_failures, "")
            else:
                self._count(backend, host_failures, " across the workers")

        self.share.failed(backend).addCallback(counted)

    def _count(self, backend: Backend, failures: int, where: str) -> None:
        if failures < self.max_failures:
            return
        now = self.clock.seconds()
        if backend.ejected_until is not None and now < backend.ejected_until:
            return  # already out: failures of connections begun before the ejection
        wait = min(self.backoff * (2 ** backend.ejections), self.max_backoff)
        backend.ejections += 1
        backend.ejected_until = now + wait
        backend.observe_state(now)
        if self.share is not None:
            self.share.ejected(backend)
        _log.warn(
            "backend {name} of pool {pool} taken out for {wait:g} s after {n} "
            "consecutive failures{where}",
            name=backend.name, pool=self.name, wait=wait, n=failures, where=where,
        )

    def adopt_ejection(self, backend: Backend, until: float, ejections: int) -> None:
        """Another worker took ``backend`` out until ``until`` (its ``ejections``-th time)."""
        if backend.ejected_until is not None and backend.ejected_until >= until:
            return
        backend.ejected_until = until
        backend.ejections = max(backend.ejections, ejections)
        backend.observe_state(self.clock.seconds())

    def readmit(self, backend: Backend) -> None:
        """Put an ejected ``backend`` back in rotation for good (its backoff starts again)."""
        backend.ejected_until = None
        backend.ejections = 0
        backend.observe_state(self.clock.seconds())
