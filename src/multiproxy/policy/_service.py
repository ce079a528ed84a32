"""
The policy as a twistd service: builds the `PolicyHolder` the proxies share
and reloads it on ``SIGHUP``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twisted.application.service import Service
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from multiproxy._signals import SIGHUP, on_signal
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
        reactor=reactor if hasattr(reactor, "connectTCP") else None,
    )


class PolicyService(Service):
    """
    Reloads ``holder`` when the process gets ``SIGHUP`` (if the policy came
    from a file), without touching connections; `reload` is the same thing
    for code and tests.
    """

    log = Logger(namespace="multiproxy.policy")

    def __init__(self, holder: PolicyHolder, reactor: Any) -> None:
        self.holder = holder
        self.reactor = reactor
        self._stop_listening: Any = None

    def startService(self) -> None:
        super().startService()
        if self.holder.reloadable:
            self._stop_listening = on_signal(SIGHUP, self.reactor, self.reload)

    def stopService(self):
        stop, self._stop_listening = self._stop_listening, None
        if stop is not None:
            stop()
        return super().stopService()

    def reload(self) -> bool:
        """Re-read the policy now; True if the new one is in force."""
        return self.holder.reload()

