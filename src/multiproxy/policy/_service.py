"""
The policy as a twistd service: builds the `PolicyHolder` the proxies share
and reloads it on ``SIGHUP``.
"""

from __future__ import annotations

import signal
from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from multiproxy.policy._config import PolicySource
from multiproxy.policy._holder import PolicyHolder

__all__ = ["PolicyService", "make_policy_holder"]


def make_policy_holder(source: PolicySource, reactor: Any) -> PolicyHolder:
    """
    The `PolicyHolder` for ``source`` on ``reactor``: time from
    ``reactor.seconds``, password hashes checked in the reactor's thread pool,
    reloadable when the policy came from a file.
    """
    run_blocking = None
    if source.settings.auth is not None and hasattr(reactor, "getThreadPool"):
        run_blocking = partial(deferToThreadPool, reactor, reactor.getThreadPool())
    return PolicyHolder(
        source.settings, clock=reactor.seconds,
        load=source.load if source.path is not None else None,
        run_blocking=run_blocking, source=source.path or "the command line",
    )


class PolicyService(Service):
    """
    Reloads ``holder`` when the process gets ``SIGHUP`` (if the policy came
    from a file), without touching connections; `reload` is the same thing
    for code and tests.  The previous ``SIGHUP`` handler is put back when the
    service stops.
    """

    log = Logger(namespace="multiproxy.policy")

    def __init__(self, holder: PolicyHolder, reactor: Any) -> None:
        self.holder = holder
        self.reactor = reactor
        self._previous: Any = None
        self._installed = False

    def startService(self) -> None:
        super().startService()
        if self.holder.reloadable and hasattr(signal, "SIGHUP"):
            self._previous = signal.signal(signal.SIGHUP, self._on_signal)
            self._installed = True

    def stopService(self):
        if self._installed:
            signal.signal(signal.SIGHUP, self._previous)
            self._installed = False
        return super().stopService()

    def reload(self) -> bool:
        """Re-read the policy now; True if the new one is in force."""
        return self.holder.reload()

    def _on_signal(self, signum: int, frame: Any) -> None:
        # Signal handlers run between bytecodes; do the work in the reactor.
        self.reactor.callFromThread(self.reload)
