"""
Active health checks run once for all the workers of a host.

With ``--workers N`` each worker builds the same pools; probing from each
would hit every backend N times per interval and let the workers disagree
about which is up.  A `HealthShare` makes one process per pool the prober:
each round the workers ask the master's Redis (``SET key member NX PX``)
who checks; that one probes as always and writes every verdict to a Redis
hash, and the others read the hash and take its states.  A Redis that does
not answer makes every worker probe for itself, as without workers.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.internet import defer

__all__ = ["HealthShare", "Verdict"]

Verdict = tuple[bool, str]
"""A backend's state as the prober saw it: (up, what the last check said)."""


class HealthShare:
    """
    The rounds of one pool's health checks, shared through ``link`` (a
    `multiproxy._redislink.RedisLink`) under ``key`` by processes that each
    name themselves ``member``.  The prober's turn lasts ``ttl`` seconds
    past its last round, so a prober that dies is replaced after that.
    """

    def __init__(self, link, key: bytes, member: str, ttl: float) -> None:
        self.link = link
        self.lock = key + b":prober"
        self.states = key + b":states"
        self.member = member.encode()
        self.ttl_ms = max(1, int(ttl * 1000))

    @defer.inlineCallbacks
    def my_turn(self):  # type: ignore[no-untyped-def]
        """Fires True when this process probes this round (also when Redis cannot tell)."""
        if not self.link.up:
            return True
        try:
            taken = yield self.link.call("SET", self.lock, self.member, "NX", "PX", self.ttl_ms)
            if taken is not None:
                return True
            holder = yield self.link.call("GET", self.lock)
            if holder == self.member:
                yield self.link.call("PEXPIRE", self.lock, self.ttl_ms)
                return True
            return False
        except Exception:  # noqa: BLE001 - RedisUnavailable or a reply error: probe ourselves
            return True

    def publish(self, verdicts: Mapping[str, Verdict]) -> None:
        """Write the prober's verdicts (by backend name) for the other workers."""
        if not self.link.up or not verdicts:
            return
        fields = []
        for name, (up, detail) in verdicts.items():
            fields += [name, ("1|" if up else "0|") + detail]
        self.link.call("HSET", self.states, *fields).addErrback(lambda _f: None)
        self.link.call("PEXPIRE", self.states, self.ttl_ms * 4).addErrback(lambda _f: None)

    @defer.inlineCallbacks
    def read(self):  # type: ignore[no-untyped-def]
        """Fires with the prober's verdicts by backend name ({} when there are none)."""
        try:
            reply = yield self.link.call("HGETALL", self.states)
        except Exception:  # noqa: BLE001 - nothing to read: keep the states we have
            return {}
        verdicts: dict[str, Verdict] = {}
        for name, value in zip(reply[::2], reply[1::2]):
            up, _, detail = bytes(value).decode("utf-8", "replace").partition("|")
            if up in ("0", "1"):  # a torn or foreign value is ignored
                verdicts[bytes(name).decode("utf-8", "replace")] = (up == "1", detail)
        return verdicts
