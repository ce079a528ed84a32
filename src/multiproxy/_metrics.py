"""
Counters and gauges of every proxy, for the status listener.

`Metrics` is one plain registry per proxy: numbers filed under a metric name
and a tuple of label pairs, with no I/O and no reactor.  `snapshot` copies
them into a dict and `merge_snapshots` adds several snapshots up, so figures
from several worker processes can be summed before they are shown.

`ProxyMetrics` is the `IReporter` that fills a registry from the
`AccessRecord` of each finished request, tunnel or connection; the few
figures no record carries (tunnels or connections open now) are read from
the proxy when a snapshot is taken.

Names follow the Prometheus conventions: a ``multiproxy_`` prefix, counters
ending in ``_total``, sizes in ``_bytes`` and times in ``_seconds``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from zope.interface import implementer

from multiproxy._interfaces import IReporter
from multiproxy._values import AccessRecord

__all__ = [
    "FAMILIES",
    "Labels",
    "Metrics",
    "MetricFamily",
    "ProxyMetrics",
    "RateMeter",
    "merge_snapshots",
    "status_class",
]

Labels = tuple[tuple[str, str], ...]
"""Label pairs of one series, in a fixed order."""

Snapshot = dict[str, dict[Labels, float]]


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """A metric's type (``counter`` or ``gauge``) and its help text."""

    kind: str
    help: str


FAMILIES: Mapping[str, MetricFamily] = {
    # every proxy
    "multiproxy_requests_total": MetricFamily(
        "counter", "Finished requests, tunnels or connections, by status class."),
    "multiproxy_received_bytes_total": MetricFamily(
        "counter", "Bytes received from clients."),
    "multiproxy_sent_bytes_total": MetricFamily("counter", "Bytes sent to clients."),
    "multiproxy_upstream_errors_total": MetricFamily(
        "counter", "Exchanges that ended in an upstream error, by kind."),
    "multiproxy_denials_total": MetricFamily(
        "counter", "Requests the access policy refused, by rule."),
    "multiproxy_auth_failures_total": MetricFamily(
        "counter", "Requests answered 407: credentials missing or wrong."),
    "multiproxy_connections_open": MetricFamily("gauge", "Client connections open now."),
    "multiproxy_session_rate": MetricFamily(
        "gauge", "Finished requests or connections in the last second."),
    "multiproxy_session_rate_max": MetricFamily(
        "gauge", "Highest session rate seen since start."),
    # forward proxy
    "multiproxy_tunnels_total": MetricFamily("counter", "CONNECT tunnels opened."),
    "multiproxy_tunnels_open": MetricFamily("gauge", "CONNECT tunnels open now."),
    "multiproxy_cache_requests_total": MetricFamily(
        "counter", "Requests the shared cache looked up, by outcome (hit, miss, revalidated, ...)."),
    "multiproxy_cache_served_bytes_total": MetricFamily(
        "counter", "Body bytes sent to clients from the cache (hits and revalidations)."),
    # per backend (reverse proxy and TCP relay)
    "multiproxy_backend_responses_total": MetricFamily(
        "counter", "Responses (or connections) a backend served, by status class."),
    "multiproxy_backend_received_bytes_total": MetricFamily(
        "counter", "Bytes received from the backend."),
    "multiproxy_backend_sent_bytes_total": MetricFamily("counter", "Bytes sent to the backend."),
    "multiproxy_backend_session_rate": MetricFamily(
        "gauge", "Requests or connections the backend finished in the last second."),
    "multiproxy_backend_session_rate_max": MetricFamily(
        "gauge", "Highest backend session rate seen since start."),
}
"""Every metric `ProxyMetrics` writes, by name."""

CACHE_SERVED = frozenset({"hit", "revalidated", "stale"})
"""Cache outcomes whose body came out of the cache."""


def status_class(status: int) -> str:
    """``"2xx"`` for 204; ``"other"`` for no status (a TCP connection, a reset)."""
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class RateMeter:
    """Events per second over the last whole second, and the highest such rate seen."""

    __slots__ = ("_second", "_count", "_previous", "maximum")

    def __init__(self) -> None:
        self._second = 0
        self._count = 0
        self._previous = 0
        self.maximum = 0

    def tick(self, now: float) -> None:
        """One event at time ``now``."""
        self._roll(int(now))
        self._count += 1
        if self._count > self.maximum:
            self.maximum = self._count

    def rate(self, now: float) -> int:
        """Events in the last whole second before ``now``."""
        self._roll(int(now))
        return self._previous

    def _roll(self, second: int) -> None:
        if second == self._second:
            return
        self._previous = self._count if second == self._second + 1 else 0
        self._second, self._count = second, 0


class Metrics:
    """A registry of plain counters and gauges, keyed by name and labels."""

    def __init__(self) -> None:
        self.values: Snapshot = {}

    def add(self, name: str, amount: float = 1, labels: Labels = ()) -> None:
        """Add ``amount`` to the series ``name{labels}``."""
        series = self.values.setdefault(name, {})
        series[labels] = series.get(labels, 0) + amount

    def set(self, name: str, value: float, labels: Labels = ()) -> None:
        """Set the series ``name{labels}`` to ``value`` (a gauge)."""
        self.values.setdefault(name, {})[labels] = value

    def get(self, name: str, labels: Labels = ()) -> float:
        """The value of ``name{labels}`` (0 when never written)."""
        return self.values.get(name, {}).get(labels, 0)

    def total(self, name: str, **match: str) -> float:
        """The sum of every series of ``name`` whose labels include ``match``."""
        wanted = set(match.items())
        return sum(v for labels, v in self.values.get(name, {}).items()
                   if wanted <= set(labels))

    def snapshot(self) -> Snapshot:
        """A copy of every series, safe to keep, send or merge."""
        return {name: dict(series) for name, series in self.values.items()}


def merge_snapshots(snapshots: Iterable[Mapping[str, Mapping[Labels, float]]]) -> Snapshot:
    """The series of several snapshots (one per worker process) added up."""
    merged: Snapshot = {}
    for snapshot in snapshots:
        for name, series in snapshot.items():
            into = merged.setdefault(name, {})
            for labels, value in series.items():
                into[labels] = into.get(labels, 0) + value
    return merged


@implementer(IReporter)
class ProxyMetrics:
    """
    The figures of one proxy, counted from its access records.

    @param clock: seconds now (``reactor.seconds``), for the session rates.
    @param live: called per snapshot; returns gauges read from the proxy
        itself (``{"multiproxy_tunnels_open": 2}``).
    """

    def __init__(self, proxy: str, clock: Callable[[], float],
                 live: Callable[[], Mapping[str, float]] | None = None) -> None:
        self.proxy = proxy
        self.clock = clock
        self.live = live
        self.metrics = Metrics()
        self.rate = RateMeter()
        self.backend_rates: dict[str, RateMeter] = {}
        self._labels: Labels = (("proxy", proxy),)

    def report(self, record: AccessRecord) -> None:
        try:
            self._count(record)
        except Exception:  # noqa: BLE001 - IReporter.report must not raise
            pass

    def _count(self, record: AccessRecord) -> None:
        add = self.metrics.add
        mine = self._labels
        now = self.clock()
        klass = status_class(record.status)
        add("multiproxy_requests_total", 1, mine + (("kind", record.kind), ("code", klass)))
        add("multiproxy_received_bytes_total", record.bytes_from_client, mine)
        add("multiproxy_sent_bytes_total", record.bytes_to_client, mine)
        self.rate.tick(now)
        ended = record.ended
        if ended == "denied":
            add("multiproxy_denials_total", 1, mine + (("rule", record.rule or "-"),))
        elif ended == "auth-required":
            add("multiproxy_auth_failures_total", 1, mine)
        elif ended.startswith("upstream-") or ended in ("connect-failed", "no-backend"):
            add("multiproxy_upstream_errors_total", 1, mine + (("kind", ended),))
        elif record.status in (502, 503, 504) and record.upstream:
            add("multiproxy_upstream_errors_total", 1, mine + (("kind", f"http-{record.status}"),))
        if record.kind == "connect" and record.status == 200:
            add("multiproxy_tunnels_total", 1, mine)
        if record.cache:
            outcome = record.cache.lower()
            add("multiproxy_cache_requests_total", 1, mine + (("outcome", outcome),))
            if outcome in CACHE_SERVED:
                add("multiproxy_cache_served_bytes_total", record.bytes_to_client, mine)
        backend = record.upstream
        if backend and record.kind != "connect" and (record.kind == "tcp" or record.status):
            labels = mine + (("backend", backend),)
            add("multiproxy_backend_responses_total", 1, labels + (("code", klass),))
            add("multiproxy_backend_received_bytes_total", record.bytes_from_upstream, labels)
            add("multiproxy_backend_sent_bytes_total", record.bytes_to_upstream, labels)
            meter = self.backend_rates.get(backend)
            if meter is None:
                meter = self.backend_rates[backend] = RateMeter()
            meter.tick(now)

    def snapshot(self) -> Snapshot:
        """Every series now, the live gauges and session rates included."""
        now = self.clock()
        metrics = self.metrics
        metrics.set("multiproxy_session_rate", self.rate.rate(now), self._labels)
        metrics.set("multiproxy_session_rate_max", self.rate.maximum, self._labels)
        for backend, meter in self.backend_rates.items():
            labels = self._labels + (("backend", backend),)
            metrics.set("multiproxy_backend_session_rate", meter.rate(now), labels)
            metrics.set("multiproxy_backend_session_rate_max", meter.maximum, labels)
        if self.live is not None:
            for name, value in self.live().items():
                metrics.set(name, value, self._labels)
        return metrics.snapshot()

    def hit_ratio(self) -> float | None:
        """Share of cache lookups answered from the cache, or None before any."""
        looked_up = self.metrics.total("multiproxy_cache_requests_total")
        if not looked_up:
            return None
        served = sum(self.metrics.total("multiproxy_cache_requests_total", outcome=o)
                     for o in CACHE_SERVED)
        return served / looked_up
