"""
Passive health shared by the workers of a host.

A pool ejects a backend after ``max_failures`` consecutive failures.  With
``--workers N`` each worker sees only its own share of the traffic, so
each would need ``max_failures`` failures of its own, and while one worker
has a backend out the others keep sending to it.  A `PoolShare` keeps the
count and the ejection in a Redis hash per pool (the master's
``redis-server``): every failure is an ``HINCRBY`` whose reply is the
host's count, a success clears it, and an ejection is written with its end
time so the others take it on their next sync (once a second) or on their
own next failure, whichever comes first.  A Redis that does not answer
leaves each worker counting alone, as without workers.
"""

from __future__ import annotations

import math
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, task

__all__ = ["PoolShare"]

SYNC_INTERVAL = 1.0
"""Seconds between two reads of the pool's shared state."""


class PoolShare(Service):
    """
    The shared passive-health state of one pool, under ``key`` in the Redis
    of ``link`` (a `multiproxy._redislink.RedisLink`).  Attach it with
    `BackendPool.share_with` and run it as a service (its loop reads what
    the other workers wrote).
    """

    def __init__(self, link: Any, key: bytes, clock: Any, keep_for: float) -> None:
        self.link = link
        self.key = key
        self.clock = clock
        self.keep_ms = max(1000, int(keep_for * 1000))
        self.pool: Any = None
        self.counts: dict[str, int] = {}
        """The host's consecutive failures by backend name, as last heard."""
        self._loop: task.LoopingCall | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.sync)
        self._loop.clock = self.clock
        self._loop.start(SYNC_INTERVAL, now=False)

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    # -- what the pool tells the others

    def failed(self, backend: Any) -> defer.Deferred:
        """
        Count a failure of ``backend`` for the host; fires with the host's
        consecutive failures, or None when Redis cannot say (count locally).
        """
        if not self.link.up:
            return defer.succeed(None)
        d = self.link.call("HINCRBY", self.key, backend.name + ":fails", 1)
        self._keep()

        def counted(n: int) -> int:
            self.counts[backend.name] = n
            return n

        return d.addCallbacks(counted, lambda _f: None)

    def succeeded(self, backend: Any) -> None:
        """``backend`` answered: the host's count starts again (a call only when it is not 0)."""
        if not self.counts.get(backend.name) and backend.ejected_until is None:
            return
        self.counts[backend.name] = 0
        if self.link.up:
            self.link.call("HDEL", self.key, backend.name + ":fails",
                           backend.name + ":ejected").addErrback(lambda _f: None)

    def ejected(self, backend: Any) -> None:
        """``backend`` was taken out here: tell the others until when, and how many times."""
        if self.link.up:
            value = f"{backend.ejected_until!r}|{backend.ejections}"
            self.link.call("HSET", self.key, backend.name + ":ejected", value
                           ).addErrback(lambda _f: None)
            self._keep()

    def _keep(self) -> None:
        self.link.call("PEXPIRE", self.key, self.keep_ms).addErrback(lambda _f: None)

    # -- what the others said

    def sync(self) -> defer.Deferred:
        """Read the pool's shared state and take the others' ejections."""
        if not self.link.up or self.pool is None:
            return defer.succeed(None)
        d = self.link.call("HGETALL", self.key)
        return d.addCallbacks(self._adopt, lambda _f: None)

    def _adopt(self, reply: list) -> None:
        fields = {bytes(k).decode("utf-8", "replace"): bytes(v)
                  for k, v in zip(reply[::2], reply[1::2])}
        now = self.clock.seconds()
        for backend in self.pool.backends:
            count = fields.get(backend.name + ":fails", b"0")
            self.counts[backend.name] = int(count) if count.isdigit() else 0
            ejection = _parse_ejection(fields.get(backend.name + ":ejected"))
            if ejection is not None:
                self.pool.adopt_ejection(backend, *ejection)
            elif backend.ejected_until is not None and now >= backend.ejected_until:
                # Past its backoff, and another worker's trial brought it back.
                self.pool.readmit(backend)


def _parse_ejection(value: bytes | None) -> tuple[float, int] | None:
    """``(until, ejections)`` from ``b"1700000000.5|2"``; None for a torn or foreign value."""
    if value is None:
        return None
    until, _, ejections = value.partition(b"|")
    try:
        end, times = float(until), int(ejections)
    except ValueError:
        return None
    return (end, times) if math.isfinite(end) and times > 0 else None
