"""
A Redis of the master's own, for the workers of one host.

With ``--workers N`` every worker is a process of its own, so per-client
limits counted in each would let a client through N times as often, and
each would probe every backend.  The master runs ``redis-server`` on a
loopback port (no persistence); the workers count their limits there when
the configuration names no Redis of its own (the engine that shares them
across hosts, `multiproxy.policy._sharedlimits`), and take turns probing
each pool (`multiproxy.balancing._sharedhealth`).  A Redis that dies is
started again; meanwhile each worker counts and probes alone, as it does
whenever its Redis does not answer.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger

__all__ = ["LocalRedis", "redis_server_binary"]

_log = Logger(namespace="multiproxy.workers")


def redis_server_binary() -> str | None:
    """The path of ``redis-server``, or None when it is not installed."""
    return shutil.which("redis-server") or (
        "/usr/sbin/redis-server" if os.path.exists("/usr/sbin/redis-server") else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _RedisProcess(ProcessProtocol):
    def __init__(self, owner: LocalRedis) -> None:
        self.owner = owner
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason) -> None:
        self.ended.callback(None)
        self.owner._ended(self, reason)


class LocalRedis(Service):
    """
    ``redis-server`` on ``127.0.0.1:port`` for as long as the service runs,
    started again (after ``restart_delay``) if it dies; `url` is where.
    """

    restart_delay = 1.0

    def __init__(self, reactor: Any, binary: str) -> None:
        self.reactor = reactor
        self.binary = binary
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: _RedisProcess | None = None
        self._restart: Any = None

    def startService(self) -> None:
        super().startService()
        self._start()
        _log.info("the workers share per-client limits, health, operator actions and status "
                  "through {url} "
                  "(redis-server run by the master)", url=self.url)

    def _start(self) -> None:
        self._restart = None
        self._process = _RedisProcess(self)
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "warning"]
        self.reactor.spawnProcess(self._process, self.binary, args, env={},
                                  childFDs={0: "w", 1: "r", 2: "r"})

    def _ended(self, process: _RedisProcess, reason) -> None:
        if process is not self._process:
            return
        self._process = None
        if self.running:
            _log.warn("redis-server for the workers ended ({why}); starting it again in "
                      "{delay} s (each worker counts and probes alone meanwhile)",
                      why=reason.getErrorMessage(), delay=self.restart_delay)
            self._restart = self.reactor.callLater(self.restart_delay, self._start)

    def stopService(self) -> defer.Deferred:
        super().stopService()
        if self._restart is not None and self._restart.active():
            self._restart.cancel()
        process, self._process = self._process, None
        if process is None:
            return defer.succeed(None)
        try:
            process.transport.signalProcess("TERM")
        except ProcessExitedAlready:
            pass  # it ended on its own just now: ``ended`` fires anyway
        return process.ended
