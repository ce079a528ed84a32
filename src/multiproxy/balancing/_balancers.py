"""
Load-balancing algorithms (pure: no reactor, no I/O).

Each balancer provides `IBalancer`: ``pick(candidates, intent)`` returns one
of a non-empty sequence of healthy upstreams.  They read three attributes
of a candidate, with defaults for upstreams that lack them: ``key`` (its
identity), ``weight`` (default 1) and ``active`` (connections in progress,
default 0).  `balancer_from_name` builds one from its configuration name.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from zope.interface import implementer

from multiproxy.balancing._ring import HashRing
from multiproxy.pipeline._interfaces import IBalancer
from multiproxy.pipeline._values import Intent

__all__ = [
    "BALANCER_NAMES",
    "ConsistentHash",
    "LeastConnections",
    "PowerOfTwoChoices",
    "RoundRobin",
    "WeightedRoundRobin",
    "balancer_from_name",
]


def _weight(candidate: Any) -> int:
    return max(0, int(getattr(candidate, "weight", 1)))


def _active(candidate: Any) -> int:
    return int(getattr(candidate, "active", 0))


def _load(candidate: Any) -> float:
    weight = _weight(candidate)
    return _active(candidate) / weight if weight else float("inf")


@implementer(IBalancer)
class RoundRobin:
    """
    Each candidate in turn, ignoring weights.

    The rotation is a position, not a count: each pick takes the first
    candidate after the last one picked, in configuration order.  A retry
    after a failed attempt (the pool's ``choose`` with the failed backend
    excluded) therefore moves on to the backend after the failed one, and
    the next request to the one after that: a backend that keeps failing is
    passed over rather than handing its turn to one neighbour each time, and
    the healthy ones stay within one request of even.  Counting picks modulo
    the number of candidates would advance twice per retried request, over
    a candidate list of changing length.
    """

    name = "roundrobin"

    def __init__(self) -> None:
        self._order: dict[Any, int] = {}  # a key's place in configuration order
        self._last: int = -1  # the place of the last candidate picked

    def pick(self, candidates: Sequence[Any], intent: Intent | None = None) -> Any:
        order = self._order
        places = []
        for candidate in candidates:
            key = getattr(candidate, "key", candidate)
            place = order.get(key)
            if place is None:
                place = order[key] = len(order)
            places.append(place)
        last = self._last
        after = [i for i, place in enumerate(places) if place > last]
        index = min(after, key=places.__getitem__) if after else min(
            range(len(places)), key=places.__getitem__
        )
        self._last = places[index]
        return candidates[index]


@implementer(IBalancer)
class WeightedRoundRobin:
    """
    Smooth weighted round robin (nginx's): a backend of weight 3 next to one
    of weight 1 gets A A B A rather than A A A B, so bursts are spread.
    Candidates of weight 0 are only picked when all weights are 0.
    """

    name = "weighted"

    def __init__(self) -> None:
        self._current: dict[Any, int] = {}

    def pick(self, candidates: Sequence[Any], intent: Intent | None = None) -> Any:
        current = self._current
        keys = [c.key for c in candidates]
        if len(current) != len(keys) or any(k not in current for k in keys):
            # The candidate set changed: keep the state of those still here.
            current = self._current = {k: current.get(k, 0) for k in keys}
        total = 0
        best = None
        best_value = 0
        for candidate, key in zip(candidates, keys):
            weight = _weight(candidate)
            total += weight
            value = current[key] + weight
            current[key] = value
            if best is None or value > best_value:
                best, best_value = candidate, value
        if total == 0:
            return candidates[0]
        current[best.key] -= total
        return best


@implementer(IBalancer)
class LeastConnections:
    """
    The candidate with the fewest active connections per unit of weight;
    ties go round robin, so an idle pool still spreads its load.
    """

    name = "leastconn"

    def __init__(self) -> None:
        self._turn = 0

    def pick(self, candidates: Sequence[Any], intent: Intent | None = None) -> Any:
        lowest = min(_load(c) for c in candidates)
        tied = [c for c in candidates if _load(c) == lowest]
        self._turn = (self._turn + 1) % (1 << 30)
        return tied[self._turn % len(tied)]


@implementer(IBalancer)
class PowerOfTwoChoices:
    """
    Two candidates drawn at random, the less loaded one wins: nearly as good
    as least connections without every choice looking at every backend, and
    no herd onto one backend when several proxies share the same view.
    """

    name = "p2c"

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng if rng is not None else random.Random()

    def pick(self, candidates: Sequence[Any], intent: Intent | None = None) -> Any:
        if len(candidates) == 1:
            return candidates[0]
        first, second = self.rng.sample(range(len(candidates)), 2)
        a, b = candidates[first], candidates[second]
        return a if _load(a) <= _load(b) else b


@implementer(IBalancer)
class ConsistentHash:
    """
    Sticky choice by consistent hashing of the client address, a header or a
    cookie: the same key keeps its backend, and a backend joining or leaving
    remaps only about ``1/n`` of the keys.  Weights scale the virtual nodes.
    A request without the header or cookie is hashed on its client address.

    @param on: ``"client"``, ``"header"`` or ``"cookie"``.
    @param field: the header or cookie name (case-insensitive for headers).
    """

    def __init__(self, on: str = "client", field: str = "", vnodes: int = 160) -> None:
        if on not in ("client", "header", "cookie"):
            raise ValueError(f"hash on {on!r}: expected client, header or cookie")
        if on != "client" and not field:
            raise ValueError(f"hash on {on} needs a {on} name, as in hash:{on}=NAME")
        self.on = on
        self.field = field
        self.vnodes = vnodes
        self._field_bytes = field.lower().encode("latin-1") if on == "header" else field.encode()
        self._ring: HashRing[Any] | None = None
        self._ring_for: tuple[tuple[Any, int], ...] = ()

    @property
    def name(self) -> str:
        return "hash:client" if self.on == "client" else f"hash:{self.on}={self.field}"

    def key_of(self, intent: Intent | None) -> bytes:
        """The bytes hashed for ``intent``."""
        if intent is None:
            return b""
        headers = intent.headers
        if headers is not None and self.on == "header":
            value = headers.get(self._field_bytes)
            if value is not None:
                return b"h:" + value
        elif headers is not None and self.on == "cookie":
            value = _cookie(headers.get_all(b"cookie"), self._field_bytes)
            if value is not None:
                return b"c:" + value
        return b"a:" + intent.client_host.encode("ascii", "replace")

    def pick(self, candidates: Sequence[Any], intent: Intent | None = None) -> Any:
        signature = tuple((c.key, _weight(c)) for c in candidates)
        ring = self._ring
        if ring is None or signature != self._ring_for:
            ring = self._ring = HashRing(
                [(c.key, c, _weight(c)) for c in candidates], self.vnodes
            )
            self._ring_for = signature
        return ring.lookup(self.key_of(intent))


def _cookie(values: list[bytes], name: bytes) -> bytes | None:
    for value in values:
        for part in value.split(b";"):
            key, eq, rest = part.strip().partition(b"=")
            if eq and key == name:
                return rest.strip().strip(b'"')
    return None


BALANCER_NAMES = (
    "roundrobin", "weighted", "leastconn", "p2c",
    "hash:client", "hash:header=NAME", "hash:cookie=NAME",
)
"""The names `balancer_from_name` accepts (NAME: a header or cookie name)."""


def balancer_from_name(name: str, rng: random.Random | None = None) -> IBalancer:
    """
    Build a balancer from its configuration name (one of `BALANCER_NAMES`).

    @raise ValueError: with a sentence listing the valid names.
    """
    simple = {
        "roundrobin": RoundRobin, "weighted": WeightedRoundRobin,
        "leastconn": LeastConnections,
    }
    if name in simple:
        return simple[name]()
    if name == "p2c":
        return PowerOfTwoChoices(rng)
    if name == "hash:client":
        return ConsistentHash("client")
    for on in ("header", "cookie"):
        prefix = f"hash:{on}="
        if name.startswith(prefix) and name[len(prefix):].strip():
            return ConsistentHash(on, name[len(prefix):].strip())
    raise ValueError(
        f"unknown balancer {name!r}; use one of {', '.join(BALANCER_NAMES)}"
    )
