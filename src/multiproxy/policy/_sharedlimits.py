"""
Client limits counted across a fleet through Redis.

`SharedRequestRate` and `SharedConnectionLimit` decide synchronously, like
the per-process limits they extend, from the fleet's count as Redis last
reported it plus this process's increments still on their way; each
decision sends its increment to Redis without waiting.  While Redis does
not answer (`RedisLink.up` is False) they count per process, exactly as
`RequestRateLimit` and `ConnectionLimit` do.

The fleet's rate is counted in fixed windows of ``burst / rate`` seconds
(at least one) holding ``burst`` requests each (Redis INCR with an expiry):
a client can get up to twice ``burst`` across a window edge, and each host
may let a few more through while its increments are in flight.
Connections are an INCR/DECR counter per client whose expiry is renewed on
every change; a host learns the fleet's count for a client from the
replies to its own changes, so the first connection a host sees from a
client is admitted even when the client's connections elsewhere have
reached the limit (each host may admit one more than the limit), so the counts of a host that died without closing its
connections are forgotten after ``connection_ttl`` seconds.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Hashable

from multiproxy._redislink import RedisLink
from multiproxy.policy._networks import NetworkSet, client_address
from multiproxy.policy._ratelimit import ConnectionLimit, RequestRateLimit, client_key

__all__ = ["SharedConnectionLimit", "SharedRequestRate"]

_TRACKED = 100_000


def _key_text(key: Hashable) -> bytes:
    if isinstance(key, tuple):
        return f"{key[0]}:{key[1]:x}".encode("ascii")
    return str(key).encode("utf-8", "replace")


class SharedRequestRate(RequestRateLimit):
    """A `RequestRateLimit` whose count is shared by every process using ``link``."""

    def __init__(
        self, rate: float, burst: float | None = None, *, clock: Callable[[], float],
        link: RedisLink, prefix: bytes = b"multiproxy:", ipv6_prefix: int = 64,
        max_clients: int = 100_000, exempt: NetworkSet | None = None,
    ) -> None:
        super().__init__(rate, burst, clock=clock, ipv6_prefix=ipv6_prefix,
                         max_clients=max_clients, exempt=exempt)
        self.link = link
        self.prefix = prefix
        self.window = max(1.0, self.burst / self.rate)
        self.per_window = max(1, int(self.burst))
        # (client key, window) -> [count Redis reported, increments in flight]
        self._fleet: OrderedDict[tuple[Hashable, int], list[int]] = OrderedDict()

    def allow(self, client_host: str) -> bool:
        if not self.link.up:
            return super().allow(client_host)
        if self.exempt is not None and client_address(client_host) in self.exempt:
            return True
        key = client_key(client_host, self.ipv6_prefix)
        window = int(self._clock() // self.window)
        slot = self._fleet.get((key, window))
        if slot is None:
            slot = self._fleet[(key, window)] = [0, 0]
            while len(self._fleet) > min(self.max_clients, _TRACKED):
                self._fleet.popitem(last=False)
        if slot[0] + slot[1] >= self.per_window:
            return False
        slot[1] += 1
        rkey = self.prefix + b"r:" + _key_text(key) + b":" + str(window).encode("ascii")
        d = self.link.call("INCR", rkey)
        d.addCallback(self._counted, slot, rkey)
        d.addErrback(self._lost, slot)
        return True

    def _counted(self, reply, slot: list[int], rkey: bytes) -> None:
        slot[1] -= 1
        slot[0] = max(slot[0], int(reply))
        if int(reply) == 1:
            self.link.call("PEXPIRE", rkey, int(self.window * 2000)).addErrback(
                lambda _f: None
            )

    def _lost(self, _failure, slot: list[int]) -> None:
        slot[1] -= 1

    def retry_after(self, client_host: str) -> int:
        if not self.link.up:
            return super().retry_after(client_host)
        now = self._clock()
        return max(1, math.ceil((math.floor(now / self.window) + 1) * self.window - now))


class SharedConnectionLimit(ConnectionLimit):
    """A `ConnectionLimit` whose counts are shared by every process using ``link``."""

    def __init__(
        self, per_client: int, *, link: RedisLink, prefix: bytes = b"multiproxy:",
        ipv6_prefix: int = 64, exempt: NetworkSet | None = None, connection_ttl: float = 600.0,
    ) -> None:
        super().__init__(per_client, ipv6_prefix=ipv6_prefix, exempt=exempt)
        self.link = link
        self.prefix = prefix
        self.connection_ttl = connection_ttl
        # client key -> [fleet count Redis reported, changes in flight]
        self._fleet: dict[Hashable, list[int]] = {}
        self._refreshing: set[Hashable] = set()

    def acquire(self, client_host: str) -> Callable[[], None] | None:
        if not self.link.up:
            return super().acquire(client_host)
        if self.exempt is not None and client_address(client_host) in self.exempt:
            return super().acquire(client_host)
        key = client_key(client_host, self.ipv6_prefix)
        slot = self._fleet.setdefault(key, [0, 0])
        local = self._counts.get(key, 0)
        rkey = self.prefix + b"k:" + _key_text(key)
        if local >= self.per_client:
            return None
        if slot[0] + slot[1] >= self.per_client:
            # Refused on what Redis said last: ask again, or a client whose
            # connections elsewhere have closed would stay refused here.
            self._refresh(key, slot, rkey)
            return None
        release_local = super().acquire(client_host)
        if release_local is None:
            return None
        self._change(key, slot, rkey, "INCR")
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            release_local()
            self._change(key, self._fleet.setdefault(key, [0, 0]), rkey, "DECR")

        return release

    def _refresh(self, key: Hashable, slot: list[int], rkey: bytes) -> None:
        if key in self._refreshing:
            return
        self._refreshing.add(key)

        def got(reply) -> None:
            self._refreshing.discard(key)
            slot[0] = max(0, int(reply or 0))

        self.link.call("GET", rkey).addCallbacks(
            got, lambda _f: self._refreshing.discard(key)
        )

    def _change(self, key: Hashable, slot: list[int], rkey: bytes, verb: str) -> None:
        slot[1] += 1 if verb == "INCR" else -1
        if not self.link.up:
            slot[1] = 0
            return
        d = self.link.call(verb, rkey)
        step = 1 if verb == "INCR" else -1
        d.addCallback(self._counted, key, slot, rkey, step)
        d.addErrback(self._lost, slot, step)

    def _counted(self, reply, key: Hashable, slot: list[int], rkey: bytes, step: int) -> None:
        slot[1] -= step
        slot[0] = max(0, int(reply))
        if int(reply) < 0:  # the counter had expired under open connections
            self.link.call("DEL", rkey).addErrback(lambda _f: None)
        self.link.call("PEXPIRE", rkey, int(self.connection_ttl * 1000)).addErrback(
            lambda _f: None
        )
        if slot[0] == 0 and slot[1] == 0 and self._fleet.get(key) is slot:
            del self._fleet[key]

    def _lost(self, _failure, slot: list[int], step: int) -> None:
        slot[1] -= step
