"""
One proxy's status across the workers of a host.

With ``--workers N`` a status request reaches whichever worker accepts it,
and each worker counts only what it served.  Once a second every worker
writes its own `StatusSnapshot` into a Redis hash (the master's
``redis-server``, one field per worker process) and reads the others',
so any worker answers for the whole group: counters and gauges summed,
backend states merged (the worst wins: a backend one worker will not use is
not fully up), and a row per worker.  Operator actions (drain, maint,
ready) go through the same hash, so a POST to one worker reaches all.

Encoding and merging are pure functions; `StatusGroup` holds the Redis
side.  A worker whose report is older than `STALE_AFTER` has gone and is
left out; a torn or foreign value is ignored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from twisted.internet import defer

from multiproxy.balancing._backend import BackendStatus
from multiproxy.status._counters import TrafficCounts
from multiproxy.status._page import PoolStatus, Reading, StatusSnapshot, WorkerStatus

__all__ = [
    "STALE_AFTER",
    "StatusGroup",
    "decode_report",
    "encode_report",
    "merge_snapshots",
]

STALE_AFTER = 3.0
"""Seconds after which a worker's last report no longer counts (it has gone)."""

STATE_ORDER = ("up", "draining", "ejected", "down", "maint")
"""Backend states from best to worst: merging keeps the worst any worker reports."""


# -- one worker's report -------------------------------------------------------------------------


def encode_report(snapshot: StatusSnapshot, worker: WorkerStatus) -> bytes:
    """``snapshot`` and who took it, as JSON for the other workers."""
    traffic = snapshot.traffic
    doc = {
        "worker": [worker.index, worker.pid, worker.generation],
        "taken_at": snapshot.taken_at,
        "started_at": snapshot.started_at,
        "session_rate": snapshot.session_rate,
        "session_rate_max": snapshot.session_rate_max,
        "readings": [[r.key, r.metric, r.kind, r.help, r.value] for r in snapshot.readings],
        "traffic": None if traffic is None else {
            "requests": [[k, c, n] for (k, c), n in traffic.requests.items()],
            "received_bytes": traffic.received_bytes,
            "sent_bytes": traffic.sent_bytes,
            "cache": traffic.cache,
            "cache_bytes": traffic.cache_bytes,
            "denied": traffic.denied,
            "auth_failures": traffic.auth_failures,
            "endings": traffic.endings,
            "upstream_errors": traffic.upstream_errors,
        },
        "pools": [[p.name, p.balance, [b.as_dict() for b in p.backends]] for p in snapshot.pools],
    }
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def decode_report(data: bytes, proxy: str, kind: str) -> StatusSnapshot | None:
    """The `StatusSnapshot` in ``data`` (its ``workers`` the one reporting); None if torn."""
    try:
        doc = json.loads(data)
        index, pid, generation = (int(v) for v in doc["worker"])
        traffic = doc["traffic"]
        snapshot = StatusSnapshot(
            proxy=proxy,
            kind=kind,
            taken_at=float(doc["taken_at"]),
            started_at=None if doc["started_at"] is None else float(doc["started_at"]),
            session_rate=float(doc["session_rate"]),
            session_rate_max=float(doc["session_rate_max"]),
            readings=tuple(Reading(str(k), str(m), str(t), str(h), float(v))
                           for k, m, t, h, v in doc["readings"]),
            traffic=None if traffic is None else TrafficCounts(
                requests={(str(k), str(c)): int(n) for k, c, n in traffic["requests"]},
                received_bytes=int(traffic["received_bytes"]),
                sent_bytes=int(traffic["sent_bytes"]),
                cache=_counts(traffic["cache"]),
                cache_bytes=int(traffic["cache_bytes"]),
                denied=_counts(traffic["denied"]),
                auth_failures=int(traffic["auth_failures"]),
                endings=_counts(traffic["endings"]),
                upstream_errors=_counts(traffic["upstream_errors"]),
            ),
            pools=tuple(PoolStatus(str(name), tuple(_backend(b) for b in backends), str(balance))
                        for name, balance, backends in doc["pools"]),
        )
        finished = 0 if snapshot.traffic is None else snapshot.traffic.total
        connections = sum(r.value for r in snapshot.readings if r.key == "connections_open")
        worker = WorkerStatus(index=index, pid=pid, generation=generation,
                              started_at=snapshot.started_at, taken_at=snapshot.taken_at,
                              finished=finished, session_rate=snapshot.session_rate,
                              connections_open=int(connections))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not all(map(math.isfinite, (snapshot.taken_at, snapshot.session_rate))):
        return None
    return replace(snapshot, workers=(worker,))


def _counts(value: Any) -> dict[str, int]:
    return {str(k): int(n) for k, n in value.items()}


def _backend(value: dict[str, Any]) -> BackendStatus:
    fields = dict(value)
    fields["responses"] = tuple((str(c), int(n)) for c, n in fields.get("responses", ()))
    return BackendStatus(**fields)


# -- merging -------------------------------------------------------------------------------------


def merge_snapshots(snapshots: Sequence[StatusSnapshot]) -> StatusSnapshot:
    """
    The group's snapshot from each worker's (the first one's names, order,
    admin flag and time): counters and gauges summed, backend states the
    worst, latencies averaged by requests, one `WorkerStatus` per worker.
    """
    first = snapshots[0]
    if len(snapshots) == 1:
        return first
    starts = [s.started_at for s in snapshots if s.started_at is not None]
    traffic = [s.traffic for s in snapshots if s.traffic is not None]
    return replace(
        first,
        started_at=min(starts) if starts else None,
        session_rate=sum(s.session_rate for s in snapshots),
        session_rate_max=max(s.session_rate_max for s in snapshots),
        readings=_merge_readings(snapshots),
        traffic=_merge_traffic(traffic) if traffic else None,
        pools=_merge_pools(snapshots),
        workers=tuple(sorted((w for s in snapshots for w in s.workers),
                             key=lambda w: (w.index, w.generation, w.pid))),
    )


def _merge_readings(snapshots: Sequence[StatusSnapshot]) -> tuple[Reading, ...]:
    merged: dict[str, Reading] = {}
    for snapshot in snapshots:
        for r in snapshot.readings:
            seen = merged.get(r.key)
            merged[r.key] = r if seen is None else replace(seen, value=seen.value + r.value)
    return tuple(merged.values())


def _sum_counts(dicts: Iterable[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        for k, n in d.items():
            out[k] = out.get(k, 0) + n
    return out


def _merge_traffic(counts: Sequence[TrafficCounts]) -> TrafficCounts:
    return TrafficCounts(
        requests=_sum_counts(t.requests for t in counts),
        received_bytes=sum(t.received_bytes for t in counts),
        sent_bytes=sum(t.sent_bytes for t in counts),
        cache=_sum_counts(t.cache for t in counts),
        cache_bytes=sum(t.cache_bytes for t in counts),
        denied=_sum_counts(t.denied for t in counts),
        auth_failures=sum(t.auth_failures for t in counts),
        endings=_sum_counts(t.endings for t in counts),
        upstream_errors=_sum_counts(t.upstream_errors for t in counts),
    )


def _merge_pools(snapshots: Sequence[StatusSnapshot]) -> tuple[PoolStatus, ...]:
    seen: dict[tuple[str, str], list[BackendStatus]] = {}
    for snapshot in snapshots:
        for pool in snapshot.pools:
            for b in pool.backends:
                seen.setdefault((pool.name, b.name), []).append(b)
    return tuple(
        replace(pool, backends=tuple(_merge_backend(seen[(pool.name, b.name)])
                                     for b in pool.backends))
        for pool in snapshots[0].pools
    )


def _merge_backend(views: list[BackendStatus]) -> BackendStatus:
    first = views[0]
    if len(views) == 1:
        return first
    worst = max(views, key=lambda b: _state_rank(b.state))
    timed = [(b.latency, b.requests) for b in views if b.latency is not None]
    weight = sum(n for _, n in timed)
    if not timed:
        latency = None
    elif weight:
        latency = sum(lat * n for lat, n in timed) / weight
    else:
        latency = sum(lat for lat, _ in timed) / len(timed)
    last = [b.last_latency for b in views if b.last_latency is not None]
    checks = [b.last_check for b in views if b.last_check is not None]
    since = [b.state_seconds for b in views if b.state_seconds is not None]
    return replace(
        first,
        state=worst.state,
        admin=worst.admin if worst.admin != "ready" else first.admin,
        active=sum(b.active for b in views),
        requests=sum(b.requests for b in views),
        failures=sum(b.failures for b in views),
        consecutive_failures=max(b.consecutive_failures for b in views),
        latency=latency,
        last_latency=last[0] if last else None,
        last_check=checks[0] if checks else None,
        connect_failures=sum(b.connect_failures for b in views),
        retries=sum(b.retries for b in views),
        redispatches=sum(b.redispatches for b in views),
        state_seconds=min(since) if since else None,
        downtime=max(b.downtime for b in views),
        bytes_in=sum(b.bytes_in for b in views),
        bytes_out=sum(b.bytes_out for b in views),
        responses=tuple(sorted(_sum_counts(dict(b.responses) for b in views).items())),
        session_rate=sum(b.session_rate for b in views),
        session_rate_max=max(b.session_rate_max for b in views),
    )


def _state_rank(state: str) -> int:
    return STATE_ORDER.index(state) if state in STATE_ORDER else len(STATE_ORDER)


# -- the Redis side ------------------------------------------------------------------------------


class StatusGroup:
    """
    This worker's place in the status of proxy ``proxy`` shared through
    ``link`` (a `multiproxy._redislink.RedisLink`): `exchange` writes its
    report and reads the others' (once a second, from the status
    listener's sampler); `view` merges them.  ``apply`` carries out an
    operator action another worker received.
    """

    def __init__(self, link: Any, proxy: str, kind: str, worker: WorkerStatus,
                 apply: Callable[[str, str, str], None]) -> None:
        self.link = link
        self.proxy = proxy
        self.kind = kind
        self.worker = worker
        self.apply = apply
        self.reports = b"multiproxy:status:" + proxy.encode()
        self.actions = b"multiproxy:admin:" + proxy.encode()
        self.others: list[StatusSnapshot] = []
        self.session_rate_max = 0.0
        self._applied: dict[bytes, bytes] = {}

    def exchange(self, mine: StatusSnapshot) -> defer.Deferred:
        """Publish ``mine``, then take the other workers' reports and actions."""
        if not self.link.up:
            self.others = []
            return defer.succeed(None)
        field = str(self.worker.pid).encode()
        self.link.call("HSET", self.reports, field, encode_report(mine, self.worker)
                       ).addErrback(lambda _f: None)
        self.link.call("PEXPIRE", self.reports, int(STALE_AFTER * 4000)).addErrback(lambda _f: None)
        reports = self.link.call("HGETALL", self.reports)
        reports.addCallback(self._take_reports, field, mine.taken_at)
        actions = self.link.call("HGETALL", self.actions)
        actions.addCallback(self._take_actions)
        d = defer.DeferredList([reports, actions], consumeErrors=True)
        return d.addCallback(lambda _: None)

    def _take_reports(self, reply: list, mine: bytes, now: float) -> None:
        others = []
        for field, value in zip(reply[::2], reply[1::2]):
            if bytes(field) == mine:
                continue
            snapshot = decode_report(bytes(value), self.proxy, self.kind)
            if snapshot is not None and now - snapshot.taken_at <= STALE_AFTER:
                others.append(snapshot)
        self.others = others

    def _take_actions(self, reply: list) -> None:
        for field, value in zip(reply[::2], reply[1::2]):
            field, value = bytes(field), bytes(value)
            if self._applied.get(field) == value:
                continue
            self._applied[field] = value
            pool, _, backend = field.decode("utf-8", "replace").partition("\n")
            action = value.decode("ascii", "replace").partition("@")[0]
            if backend and action:
                try:
                    self.apply(pool, backend, action)
                except Exception:  # noqa: BLE001, S112 - a pool or backend this worker lacks
                    continue

    def publish_action(self, pool: str, backend: str, action: str, at: float) -> None:
        """An operator set ``backend`` of ``pool`` to ``action`` here: the others follow."""
        field = f"{pool}\n{backend}".encode()
        value = f"{action}@{at!r}".encode()
        self._applied[field] = value
        if self.link.up:
            self.link.call("HSET", self.actions, field, value).addErrback(lambda _f: None)

    def view(self, mine: StatusSnapshot) -> StatusSnapshot:
        """The group's snapshot: ``mine`` (fresh) with the others' last reports."""
        own = replace(mine, workers=(replace(self.worker, taken_at=mine.taken_at,
                                             started_at=mine.started_at,
                                             finished=_finished(mine),
                                             session_rate=mine.session_rate,
                                             connections_open=_connections(mine)),))
        merged = merge_snapshots([own, *self.others])
        self.session_rate_max = max(self.session_rate_max, merged.session_rate,
                                    merged.session_rate_max)
        return replace(merged, session_rate_max=self.session_rate_max)

    def leave(self) -> None:
        """This worker stops: its row goes at once instead of after `STALE_AFTER`."""
        if self.link.up:
            self.link.call("HDEL", self.reports, str(self.worker.pid)).addErrback(lambda _f: None)


def _finished(snapshot: StatusSnapshot) -> int:
    return 0 if snapshot.traffic is None else snapshot.traffic.total


def _connections(snapshot: StatusSnapshot) -> int:
    return int(sum(r.value for r in snapshot.readings if r.key == "connections_open"))
