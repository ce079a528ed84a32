"""
Traffic counters: an `IReporter` that counts every `AccessRecord` a proxy
hands out, and the frozen `TrafficCounts` a status page renders.

Counting needs no I/O and no clock: ``report`` adds one record to plain
dictionaries; ``snapshot`` copies them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from zope.interface import implementer

from multiproxy.pipeline._interfaces import IReporter
from multiproxy.pipeline._values import AccessRecord

CACHE_RESULTS = ("hit", "miss", "revalidated", "stale")
"""The cache outcomes counted (the access log's ``cache=`` column, lower case)."""

SERVED_FROM_CACHE = frozenset({"hit", "revalidated", "stale"})
"""Outcomes whose body came from storage: they count as hits in the hit ratio."""

UPSTREAM_FAILURES = frozenset({"upstream-error", "upstream-truncated", "connect-failed"})
"""Endings that are the upstream's fault."""


def status_class(status: int) -> str:
    """``"2xx"`` for 204; ``"none"`` when no status was sent (the client left first)."""
    if 100 <= status <= 599:
        return f"{status // 100}xx"
    return "none"


@dataclass(frozen=True)
class TrafficCounts:
    """
    What one proxy's finished exchanges add up to, at one moment.

    @ivar requests: exchanges by kind (http, connect, tcp) and status class.
    @ivar received_bytes: bytes from clients (request bodies, tunnel and
        relay bytes); @ivar sent_bytes: bytes to clients.
    @ivar cache: cache outcomes (hit, miss, revalidated, stale).
    @ivar denied: requests the policy refused, by the rule that refused
        them ("-" when no rule is named, e.g. a CONNECT port).
    @ivar endings: every exchange by how it ended (ok, denied, ...).
    @ivar upstream_errors: failures on the upstream side, by kind.
    """

    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    received_bytes: int = 0
    sent_bytes: int = 0
    cache: dict[str, int] = field(default_factory=dict)
    cache_bytes: int = 0
    denied: dict[str, int] = field(default_factory=dict)
    auth_failures: int = 0
    endings: dict[str, int] = field(default_factory=dict)
    upstream_errors: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every exchange counted."""
        return sum(self.requests.values())

    @property
    def cache_lookups(self) -> int:
        return sum(self.cache.values())

    @property
    def hit_ratio(self) -> float | None:
        """Share of cache lookups answered from storage (None before the first lookup)."""
        lookups = self.cache_lookups
        if not lookups:
            return None
        return sum(self.cache.get(r, 0) for r in SERVED_FROM_CACHE) / lookups

    def by_class(self) -> dict[str, int]:
        """Requests by status class, every kind together."""
        out: Counter[str] = Counter()
        for (_, klass), n in self.requests.items():
            out[klass] += n
        return dict(sorted(out.items()))


@implementer(IReporter)
class TrafficCounters:
    """
    Counts the `AccessRecord`s of one proxy (give it to the proxy as one
    more reporter); `snapshot` says what they add up to.
    """

    def __init__(self) -> None:
        self._requests: Counter[tuple[str, str]] = Counter()
        self._received = 0
        self._sent = 0
        self._cache: Counter[str] = Counter()
        self._cache_bytes = 0
        self._denied: Counter[str] = Counter()
        self._auth_failures = 0
        self._endings: Counter[str] = Counter()
        self._upstream: Counter[str] = Counter()
        self._finished = 0

    @property
    def finished(self) -> int:
        """Exchanges counted so far (what session rates are sampled from)."""
        return self._finished

    def report(self, record: AccessRecord) -> None:
        self._finished += 1
        self._requests[(record.kind, status_class(record.status))] += 1
        self._received += record.bytes_from_client
        self._sent += record.bytes_to_client
        ended = record.ended
        self._endings[ended] += 1
        if record.cache:
            result = record.cache.lower()
            self._cache[result] += 1
            if result in SERVED_FROM_CACHE:
                self._cache_bytes += record.bytes_to_client
        if ended == "denied":
            self._denied[record.rule or "-"] += 1
        if record.extra.get("auth") == "failed":
            self._auth_failures += 1
        if ended in UPSTREAM_FAILURES:
            self._upstream[record.upstream_error or ended] += 1

    def snapshot(self) -> TrafficCounts:
        """The counts so far, as a frozen value."""
        return TrafficCounts(
            requests=dict(self._requests),
            received_bytes=self._received,
            sent_bytes=self._sent,
            cache=dict(self._cache),
            cache_bytes=self._cache_bytes,
            denied=dict(self._denied),
            auth_failures=self._auth_failures,
            endings=dict(self._endings),
            upstream_errors=dict(self._upstream),
        )

    def __repr__(self) -> str:
        return f"<TrafficCounters {sum(self._requests.values())} exchanges>"
