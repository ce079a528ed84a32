"""
A proxy's status at one moment, and its three renderings: an HTML page a
person reads, a JSON document and Prometheus metrics.

Rendering is pure: it takes a `StatusSnapshot` (the proxy's traffic
counts, its live readings such as open tunnels, and the `BackendStatus`
values of its pools) and returns bytes.  `status_page` maps a request path
to one of the three, so the listener that serves them stays small.  Every
proxy kind renders through these functions; what differs is only which
parts its snapshot holds.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

from multiproxy.balancing._backend import BackendStatus
from multiproxy.status._counters import CACHE_RESULTS, TrafficCounts
from multiproxy.status._metrics import PROMETHEUS_TYPE, MetricFamily, family, render_prometheus
from multiproxy.status._rates import RateMeter

STATES = ("up", "down", "ejected", "draining", "maint")
"""Backend states: up; down (active checks); ejected (passive checks); draining; maint."""

JSON_TYPE = b"application/json"
HTML_TYPE = b"text/html; charset=utf-8"
HTTP_KINDS = ("forward", "reverse")
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """A named pool's backends at one moment, and the balancer it uses."""

    name: str
    backends: tuple[BackendStatus, ...]
    balance: str = ""

    @property
    def up(self) -> int:
        return sum(1 for b in self.backends if b.state == "up")


def pool_status(pool: Any, rates: Mapping[tuple[str, str], RateMeter] | None = None) -> PoolStatus:
    """
    The `PoolStatus` of a `multiproxy.balancing.BackendPool` now, with the
    session rates of ``rates`` (by pool and backend name) where it has them.
    """
    balancer = pool.balancer
    balance = getattr(balancer, "name", None) or type(balancer).__name__
    backends = pool.snapshot()
    if rates:
        for i, b in enumerate(backends):
            meter = rates.get((pool.name, b.name))
            if meter is not None:
                backends[i] = replace(b, session_rate=meter.current, session_rate_max=meter.most)
    return PoolStatus(pool.name, tuple(backends), str(balance))


@dataclass(frozen=True, slots=True)
class Reading:
    """
    A value read live from the proxy (not counted from access records):
    open tunnels, open connections.  ``key`` names it in JSON and HTML,
    ``metric`` in Prometheus.
    """

    key: str
    metric: str
    kind: str
    help: str
    value: float


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """
    One worker process of a host (``--workers N``) as its last report showed
    it: its slot ``index``, ``pid`` and ``generation`` (one per reload), its
    finished exchanges, session rate and open client connections.
    """

    index: int
    pid: int
    generation: int = 0
    started_at: float | None = None
    taken_at: float = 0.0
    finished: int = 0
    session_rate: float = 0.0
    connections_open: int = 0


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """
    One proxy at ``taken_at`` (seconds since the epoch): its kind
    (forward, reverse, tcp), live readings, traffic counts (None when
    nothing counts them) and backend pools.  ``session_rate`` is the
    proxy's finished requests, tunnels or connections per second over the
    last second, ``session_rate_max`` the most seen.  ``admin``: the page
    offers the drain / maint / ready buttons.  ``workers``: with several
    worker processes, one row each (the figures are then the group's).
    """

    proxy: str
    pools: tuple[PoolStatus, ...] = ()
    taken_at: float = field(default_factory=time.time)
    started_at: float | None = None
    kind: str = "reverse"
    traffic: TrafficCounts | None = None
    readings: tuple[Reading, ...] = ()
    admin: bool = False
    session_rate: float = 0.0
    session_rate_max: float = 0.0
    workers: tuple[WorkerStatus, ...] = ()


# -- JSON ----------------------------------------------------------------------------------------


def _latency_ms(b: BackendStatus) -> float | None:
    return None if b.latency is None else round(b.latency * 1000, 3)


def render_json(snapshot: StatusSnapshot) -> bytes:
    """The snapshot as a JSON document (readings, traffic, then pools and backends in order)."""
    doc: dict[str, Any] = {
        "proxy": snapshot.proxy,
        "kind": snapshot.kind,
        "taken_at": snapshot.taken_at,
        "uptime_s": _uptime(snapshot),
        "session_rate": round(snapshot.session_rate, 3),
        "session_rate_max": round(snapshot.session_rate_max, 3),
    }
    doc.update({r.key: r.value for r in snapshot.readings})
    if snapshot.traffic is not None:
        doc["traffic"] = _traffic_json(snapshot.traffic, snapshot.kind)
    doc["pools"] = [
        {
            "name": pool.name,
            "balance": pool.balance,
            "up": pool.up,
            "backends": [_backend_json(b) for b in pool.backends],
        }
        for pool in snapshot.pools
    ]
    if snapshot.workers:
        doc["workers"] = [_worker_json(w, snapshot.taken_at) for w in snapshot.workers]
    return json.dumps(doc, indent=2).encode("utf-8") + b"\n"


def _worker_json(w: WorkerStatus, now: float) -> dict[str, object]:
    return {
        "index": w.index, "pid": w.pid, "generation": w.generation,
        "uptime_s": None if w.started_at is None else round(max(0.0, now - w.started_at), 3),
        "report_age_s": round(max(0.0, now - w.taken_at), 3),
        "finished": w.finished, "session_rate": round(w.session_rate, 3),
        "connections_open": w.connections_open,
    }


def _traffic_json(t: TrafficCounts, kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "finished": t.total,
        "received_bytes": t.received_bytes,
        "sent_bytes": t.sent_bytes,
        "endings": dict(sorted(t.endings.items())),
        "denied": dict(sorted(t.denied.items())),
        "upstream_errors": dict(sorted(t.upstream_errors.items())),
    }
    if kind in HTTP_KINDS:
        doc["requests"] = t.by_class()
        ratio = t.hit_ratio
        doc["cache"] = {
            **{r: t.cache.get(r, 0) for r in CACHE_RESULTS},
            "served_bytes": t.cache_bytes,
            "hit_ratio": None if ratio is None else round(ratio, 4),
        }
    if kind == "forward":
        doc["auth_failures"] = t.auth_failures
    return doc


def _backend_json(b: BackendStatus) -> dict[str, object]:
    return {
        "name": b.name, "state": b.state, "admin": b.admin, "weight": b.weight,
        "active": b.active, "requests": b.requests, "failures": b.failures,
        "connect_failures": b.connect_failures, "retries": b.retries,
        "redispatches": b.redispatches,
        "consecutive_failures": b.consecutive_failures, "latency_ms": _latency_ms(b),
        "last_latency_ms": None if b.last_latency is None else round(b.last_latency * 1000, 3),
        "state_s": None if b.state_seconds is None else round(b.state_seconds, 3),
        "downtime_s": round(b.downtime, 3),
        "bytes_in": b.bytes_in, "bytes_out": b.bytes_out,
        "responses": dict(b.responses),
        "session_rate": round(b.session_rate, 3),
        "session_rate_max": round(b.session_rate_max, 3),
        "last_check": b.last_check,
    }


# -- Prometheus ----------------------------------------------------------------------------------

_BACKEND_METRICS = (
    ("multiproxy_backend_up", "gauge", "1 when the backend is up (healthy and in rotation), else 0.",
     lambda b: 1 if b.state == "up" else 0),
    ("multiproxy_backend_active", "gauge", "Requests or connections in progress.",
     lambda b: b.active),
    ("multiproxy_backend_requests_total", "counter",
     "Requests or connections sent to the backend (failed connect attempts not included).",
     lambda b: b.requests),
    ("multiproxy_backend_failures_total", "counter",
     "Requests, connections or connect attempts that failed.", lambda b: b.failures),
    ("multiproxy_backend_connect_failures_total", "counter", "Connect attempts that failed.",
     lambda b: b.connect_failures),
    ("multiproxy_backend_retries_total", "counter",
     "Attempts on the backend that failed and were tried again.", lambda b: b.retries),
    ("multiproxy_backend_redispatches_total", "counter",
     "Retries sent to another backend.", lambda b: b.redispatches),
    ("multiproxy_backend_latency_seconds", "gauge",
     "Moving average of the response (or connect) time.",
     lambda b: math.nan if b.latency is None else float(b.latency)),
    ("multiproxy_backend_weight", "gauge", "Configured balancing weight.", lambda b: b.weight),
    ("multiproxy_backend_state_seconds", "gauge", "Time in the current state.",
     lambda b: math.nan if b.state_seconds is None else float(b.state_seconds)),
    ("multiproxy_backend_downtime_seconds_total", "counter",
     "Time spent down, ejected or in maintenance since start.", lambda b: float(b.downtime)),
    ("multiproxy_backend_sent_bytes_total", "counter",
     "Bytes sent to the backend (requests with their heads, relayed client bytes).",
     lambda b: b.bytes_in),
    ("multiproxy_backend_received_bytes_total", "counter",
     "Bytes received from the backend (responses with their heads, relayed bytes).",
     lambda b: b.bytes_out),
    ("multiproxy_backend_session_rate", "gauge",
     "Requests or connections sent to the backend per second, over the last second.",
     lambda b: float(b.session_rate)),
    ("multiproxy_backend_session_rate_max", "gauge",
     "The highest session rate seen since start.", lambda b: float(b.session_rate_max)),
)


def proxy_metrics(snapshot: StatusSnapshot) -> list[MetricFamily]:
    """Every metric of the snapshot, as `MetricFamily` values."""
    proxy = {"proxy": snapshot.proxy}
    out = []
    if snapshot.started_at is not None:
        out.append(family("multiproxy_start_time_seconds", "gauge",
                          "When the proxy started, in seconds since the epoch.",
                          [(proxy, float(snapshot.started_at))]))
    for r in snapshot.readings:
        out.append(family(r.metric, r.kind, r.help, [(proxy, r.value)]))
    if snapshot.traffic is not None:
        out.append(family("multiproxy_session_rate", "gauge",
                          "Finished requests, tunnels or connections per second, over the "
                          "last second.", [(proxy, float(snapshot.session_rate))]))
        out.append(family("multiproxy_session_rate_max", "gauge",
                          "The highest session rate seen since start.",
                          [(proxy, float(snapshot.session_rate_max))]))
        out.extend(_traffic_metrics(snapshot.proxy, snapshot.kind, snapshot.traffic))
    if snapshot.pools:
        out.extend(_pool_metrics(snapshot))
    if snapshot.workers:
        out.extend(_worker_metrics(snapshot))
    return out


def _worker_metrics(snapshot: StatusSnapshot) -> list[MetricFamily]:
    def labels(w: WorkerStatus) -> dict[str, str]:
        return {"proxy": snapshot.proxy, "worker": str(w.index), "pid": str(w.pid)}

    return [
        family("multiproxy_workers", "gauge", "Worker processes reporting (--workers).",
               [({"proxy": snapshot.proxy}, len(snapshot.workers))]),
        family("multiproxy_worker_finished_total", "counter",
               "Finished requests, tunnels or connections of one worker process.",
               [(labels(w), w.finished) for w in snapshot.workers]),
        family("multiproxy_worker_session_rate", "gauge",
               "One worker's session rate, over the last second.",
               [(labels(w), float(w.session_rate)) for w in snapshot.workers]),
        family("multiproxy_worker_client_connections", "gauge",
               "Client connections open now in one worker process.",
               [(labels(w), w.connections_open) for w in snapshot.workers]),
    ]


def _traffic_metrics(name: str, kind: str, t: TrafficCounts) -> list[MetricFamily]:
    proxy = {"proxy": name}
    out = []
    if kind in HTTP_KINDS:
        out.append(family(
            "multiproxy_requests_total", "counter",
            "Finished requests (CONNECT included) by kind and status class.",
            [({"proxy": name, "kind": k, "class": c}, n)
             for (k, c), n in sorted(t.requests.items())],
        ))
    out += [
        family("multiproxy_received_bytes_total", "counter",
               "Bytes received from clients (request bodies, tunnel and relay bytes).",
               [(proxy, t.received_bytes)]),
        family("multiproxy_sent_bytes_total", "counter",
               "Bytes sent to clients (response bodies, tunnel and relay bytes).",
               [(proxy, t.sent_bytes)]),
        family("multiproxy_ended_total", "counter",
               "Finished requests, tunnels or connections by how they ended.",
               [({"proxy": name, "end": e}, n) for e, n in sorted(t.endings.items())]),
        family("multiproxy_denied_total", "counter",
               "Requests or connections the policy refused, by rule.",
               [({"proxy": name, "rule": r}, n) for r, n in sorted(t.denied.items())]),
        family("multiproxy_upstream_errors_total", "counter",
               "Failures reaching or talking to the upstream, by kind.",
               [({"proxy": name, "kind": k}, n) for k, n in sorted(t.upstream_errors.items())]),
    ]
    if kind == "forward":
        out.append(family("multiproxy_auth_failures_total", "counter",
                          "Requests whose proxy credentials were refused.",
                          [(proxy, t.auth_failures)]))
    if kind in HTTP_KINDS:
        ratio = t.hit_ratio
        out += [
            family("multiproxy_cache_requests_total", "counter",
                   "Cache lookups by result (hit, miss, revalidated, stale).",
                   [({"proxy": name, "result": r}, t.cache.get(r, 0)) for r in CACHE_RESULTS]),
            family("multiproxy_cache_served_bytes_total", "counter",
                   "Body bytes sent to clients from the cache (hit, revalidated, stale).",
                   [(proxy, t.cache_bytes)]),
            family("multiproxy_cache_hit_ratio", "gauge",
                   "Share of cache lookups answered from storage (NaN before the first).",
                   [(proxy, math.nan if ratio is None else ratio)]),
        ]
    return out


def _pool_metrics(snapshot: StatusSnapshot) -> list[MetricFamily]:
    out = []

    def labels(pool: PoolStatus, b: BackendStatus) -> dict[str, str]:
        return {"proxy": snapshot.proxy, "pool": pool.name, "backend": b.name}

    for metric, kind, help_text, value_of in _BACKEND_METRICS:
        out.append(family(metric, kind, help_text, [
            (labels(pool, b), value_of(b)) for pool in snapshot.pools for b in pool.backends
        ]))
    out.append(family(
        "multiproxy_backend_state", "gauge",
        "1 for the backend's current state (up, down, ejected, draining, maint), else 0.",
        [({**labels(pool, b), "state": s}, 1 if b.state == s else 0)
         for pool in snapshot.pools for b in pool.backends for s in STATES],
    ))
    out.append(family(
        "multiproxy_backend_responses_total", "counter",
        "Responses from the backend by status class.",
        [({**labels(pool, b), "class": c}, n)
         for pool in snapshot.pools for b in pool.backends for c, n in b.responses],
    ))
    out.append(family(
        "multiproxy_pool_backends_up", "gauge", "Backends up in the pool.",
        [({"proxy": snapshot.proxy, "pool": pool.name}, pool.up) for pool in snapshot.pools],
    ))
    return out


def render_metrics(snapshot: StatusSnapshot) -> bytes:
    """The snapshot in the Prometheus text exposition format (0.0.4)."""
    return render_prometheus(proxy_metrics(snapshot))


# -- HTML ----------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em}
p.meta{color:#666;margin:0 0 1.2em}
table{border-collapse:collapse;margin:0 0 1.6em;background:#fff;table-layout:auto}
caption{text-align:left;font-weight:600;padding:.3em 0}
caption .sum{font-weight:normal;color:#555;margin-left:.6em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right;white-space:nowrap}
th{background:#e8e8ee}
tfoot td{background:#f0f0f4;font-weight:600}
td.name,th.name,td.check{text-align:left}
td.check{white-space:normal;min-width:12em;max-width:24em;overflow-wrap:anywhere;font-size:.9em}
tr.up td.state{background:#2e9e44;color:#fff;font-weight:600}
tr.down td.state{background:#d33;color:#fff;font-weight:600}
tr.ejected td.state,tr.draining td.state{background:#e0a000;color:#fff;font-weight:600}
tr.maint td.state{background:#5470c6;color:#fff;font-weight:600}
tr.down td{background:#fde8e8}
td.state{text-align:center}
table.traffic td.name{font-weight:600}
form.admin p{margin:0 0 1em}
td.admin button{font-size:.85em;margin:0 .15em}
"""


def render_html(snapshot: StatusSnapshot, refresh: int | None = 5) -> bytes:
    """
    A page a person reads at a glance: the proxy's traffic, then one table
    per pool, one row per backend, the state cell green (up), red (down),
    amber (ejected after failures, or draining) or blue (maintenance).
    """
    esc = html.escape
    taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.taken_at))
    meta = f"{esc(snapshot.kind)} proxy &middot; snapshot {taken}"
    uptime = _uptime(snapshot)
    if uptime is not None:
        meta += f" &middot; up {_duration(uptime)}"
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(snapshot.proxy)} status</title>",
    ]
    if refresh and not snapshot.admin:
        head.append(f'<meta http-equiv="refresh" content="{int(refresh)}">')
    head.append(f"<style>{_CSS}</style></head><body>")
    body = [
        f"<h1>{esc(snapshot.proxy)}</h1>",
        f'<p class="meta">{meta}</p>',
    ]
    summary = _summary_rows(snapshot)
    if summary:
        body.append('<table class="traffic"><caption>traffic</caption><tbody>')
        body += [f'<tr data-key="{esc(key)}"><td class="name">{esc(label)}</td><td>{value}</td></tr>'
                 for key, label, value in summary]
        body.append("</tbody></table>")
    if snapshot.admin and snapshot.pools:
        body.append('<form class="admin" method="post" action="/admin">'
                    '<p><label>admin token <input type="password" name="token" '
                    'autocomplete="off"></label></p>')
    for pool in snapshot.pools:
        body.append(_pool_table(pool, snapshot.admin, snapshot.kind in HTTP_KINDS))
    if snapshot.admin and snapshot.pools:
        body.append("</form>")
    if not snapshot.pools and snapshot.kind == "reverse":
        body.append("<p>No backend pools are configured.</p>")
    if snapshot.workers:
        body.append(_worker_table(snapshot))
    body.append("</body></html>")
    return ("\n".join(head + body) + "\n").encode("utf-8")


def _summary_rows(snapshot: StatusSnapshot) -> list[tuple[str, str, str]]:
    rows = [(r.key, r.key.replace("_", " "), _plain(r.value)) for r in snapshot.readings]
    t = snapshot.traffic
    if t is None:
        return rows
    rows.append(("finished", "finished", str(t.total)))
    rows.append(("session_rate", "session rate (per second)", _rate(snapshot.session_rate)))
    rows.append(("session_rate_max", "session rate, most", _rate(snapshot.session_rate_max)))
    if snapshot.kind in HTTP_KINDS:
        for klass, n in t.by_class().items():
            rows.append((f"requests_{klass}", f"responses {klass}", str(n)))
    rows.append(("received_bytes", "bytes in (from clients)", str(t.received_bytes)))
    rows.append(("sent_bytes", "bytes out (to clients)", str(t.sent_bytes)))
    if snapshot.kind in HTTP_KINDS and t.cache_lookups:
        for result in CACHE_RESULTS:
            rows.append((f"cache_{result}", f"cache {result}", str(t.cache.get(result, 0))))
        rows.append(("cache_served_bytes", "bytes served from cache", str(t.cache_bytes)))
        ratio = t.hit_ratio
        rows.append(("cache_hit_ratio", "cache hit ratio",
                     "&ndash;" if ratio is None else f"{ratio * 100:.1f} %"))
    if snapshot.kind == "forward":
        rows.append(("auth_failures", "authentication failures", str(t.auth_failures)))
    for rule, n in sorted(t.denied.items()):
        rows.append((f"denied:{rule}", f"denied by rule {rule}", str(n)))
    for kind, n in sorted(t.upstream_errors.items()):
        rows.append((f"upstream_error:{kind}", f"upstream errors: {kind}", str(n)))
    return rows


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _pool_table(pool: PoolStatus, admin: bool, http: bool) -> str:
    """One pool's backends, as HAProxy's stats page shows a backend section."""
    esc = html.escape
    classes = STATUS_CLASSES if http else ()
    total = len(pool.backends)
    summary = f"{pool.up}/{total} up"
    if pool.balance:
        summary += f", {esc(pool.balance)}"
    admin_head = '<th class="name">admin</th>' if admin else ""
    rows = [
        f'<table class="pool" data-pool="{esc(pool.name)}">',
        f'<caption>{esc(pool.name)}<span class="sum">{summary}</span></caption>',
        ("<thead><tr><th class=\"name\">backend</th><th>state</th><th>for</th><th>down</th>"
         "<th>active</th><th title=\"sessions per second, last second\">rate</th>"
         "<th>max rate</th><th>requests</th>"
         + "".join(f"<th>{c}</th>" for c in classes)
         + "<th>bytes in</th><th>bytes out</th><th>failures</th><th>connect fails</th>"
         "<th>retries</th><th>redisp.</th><th>latency</th><th>weight</th>"
         f"<th class=\"name\">last check</th>{admin_head}</tr></thead><tbody>"),
    ]
    for b in pool.backends:
        state = b.state if b.state in STATES else "down"
        ms = _latency_ms(b)
        latency = "&ndash;" if ms is None else f"{ms:.1f} ms"
        since = "&ndash;" if b.state_seconds is None else _duration(b.state_seconds)
        check = b.last_check or ""
        responses = dict(b.responses)
        cells = (
            f'<tr class="{state}" data-backend="{esc(b.name)}">'
            f'<td class="name">{esc(b.name)}</td>'
            f'<td class="state">{esc(b.state.upper())}</td>'
            f"<td>{since}</td><td>{_duration(b.downtime)}</td>"
            f"<td>{b.active}</td><td>{_rate(b.session_rate)}</td>"
            f"<td>{_rate(b.session_rate_max)}</td><td>{b.requests}</td>"
            + "".join(f"<td>{responses.get(c, 0)}</td>" for c in classes)
            + f"{_bytes_cell(b.bytes_in)}{_bytes_cell(b.bytes_out)}<td>{b.failures}</td>"
            f"<td>{b.connect_failures}</td><td>{b.retries}</td><td>{b.redispatches}</td>"
            f"<td>{latency}</td><td>{b.weight}</td>"
            f'<td class="check" title="{esc(check)}">{esc(_shortened(check))}</td>'
        )
        if admin:
            where = f"/admin?pool={quote(pool.name, safe='')}&amp;backend={quote(b.name, safe='')}"
            buttons = "".join(
                f'<button type="submit" name="action" value="{a}" formaction="{where}"'
                f'{" disabled" if b.admin == a else ""}>{a}</button>'
                for a in ("drain", "maint", "ready")
            )
            cells += f'<td class="admin">{buttons}</td>'
        rows.append(cells + "</tr>")
    rows.append("</tbody>")
    span = 6 if admin else 5
    rows.append(
        f'<tfoot><tr><td class="name">total</td><td class="state">{pool.up}/{total}</td>'
        f"<td></td><td></td>"
        f"<td>{sum(b.active for b in pool.backends)}</td>"
        f"<td>{_rate(sum(b.session_rate for b in pool.backends))}</td><td></td>"
        f"<td>{sum(b.requests for b in pool.backends)}</td>"
        + "".join(f"<td>{sum(dict(b.responses).get(c, 0) for b in pool.backends)}</td>"
                  for c in classes)
        + _bytes_cell(sum(b.bytes_in for b in pool.backends))
        + _bytes_cell(sum(b.bytes_out for b in pool.backends))
        + f"<td>{sum(b.failures for b in pool.backends)}</td>"
        f"<td>{sum(b.connect_failures for b in pool.backends)}</td>"
        f'<td colspan="{span}"></td></tr></tfoot></table>'
    )
    return "\n".join(rows)


def _worker_table(snapshot: StatusSnapshot) -> str:
    """One row per worker process: the figures above are their sum."""
    rows = [
        ('<table class="workers"><caption>workers<span class="sum">'
         f"{len(snapshot.workers)} reporting; the figures above are their sum</span></caption>"),
        ("<thead><tr><th>worker</th><th>pid</th><th>generation</th><th>up</th><th>finished</th>"
         "<th>rate</th><th>connections</th><th>report age</th></tr></thead><tbody>"),
    ]
    for w in snapshot.workers:
        up = "&ndash;" if w.started_at is None else _duration(snapshot.taken_at - w.started_at)
        age = max(0.0, snapshot.taken_at - w.taken_at)
        rows.append(
            f'<tr data-worker="{w.index}" data-pid="{w.pid}"><td>{w.index}</td><td>{w.pid}</td>'
            f"<td>{w.generation}</td><td>{up}</td><td>{w.finished}</td>"
            f"<td>{_rate(w.session_rate)}</td><td>{w.connections_open}</td>"
            f"<td>{age:.1f} s</td></tr>")
    rows.append("</tbody></table>")
    return "\n".join(rows)


def _rate(per_second: float) -> str:
    return f"{per_second:.0f}" if per_second >= 10 or per_second == 0 else f"{per_second:.1f}"


def _bytes_cell(count: int) -> str:
    """A byte count for a table cell: readable units, the exact count in its title."""
    value, unit = float(count), "B"
    for bigger in ("KiB", "MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    shown = f"{count} B" if unit == "B" else f"{value:.1f} {unit}"
    return f'<td title="{count} bytes">{shown}</td>'


def _shortened(text: str, limit: int = 80) -> str:
    """A long health-check message cut for its cell (the whole text is the cell's title)."""
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def _uptime(snapshot: StatusSnapshot) -> float | None:
    if snapshot.started_at is None:
        return None
    return max(0.0, round(snapshot.taken_at - snapshot.started_at, 3))


def _duration(seconds: float) -> str:
    s = int(seconds)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {s}s"
    return f"{s}s"


# -- routing -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusPage:
    """What the status listener answers: status code, content type and body."""

    status: int
    content_type: bytes
    body: bytes


def status_page(snapshot: StatusSnapshot, path: bytes) -> StatusPage:
    """
    Answer a GET on the status listener: ``/`` HTML, ``/status.json`` (or
    ``/json``) JSON, ``/metrics`` Prometheus; anything else 404.
    """
    route = path.split(b"?", 1)[0].rstrip(b"/") or b"/"
    if route == b"/":
        return StatusPage(200, HTML_TYPE, render_html(snapshot))
    if route in (b"/status.json", b"/json"):
        return StatusPage(200, JSON_TYPE, render_json(snapshot))
    if route == b"/metrics":
        return StatusPage(200, PROMETHEUS_TYPE, render_metrics(snapshot))
    return StatusPage(
        404, b"text/plain; charset=utf-8",
        b"Not found. Try / (HTML), /status.json (JSON) or /metrics (Prometheus).\n",
    )
