"""
The reverse proxy's status page: per-backend state as JSON, Prometheus text
and HTML.

Rendering is pure: it takes a `StatusSnapshot` (the `BackendStatus` values
of every `BackendPool` at one moment, see `pool_status`) and returns bytes.  `status_page` maps a request path to one
of the three renderings, so the listener that serves them stays trivial.
"""

from __future__ import annotations

import html
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

from multiproxy.balancing._backend import BackendStatus

STATES = ("up", "down", "ejected", "draining")
"""Backend states: up; down (active checks); ejected (passive checks); draining."""

JSON_TYPE = b"application/json"
PROMETHEUS_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
HTML_TYPE = b"text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """A named pool's backends at one moment, and the balancer it uses."""

    name: str
    backends: tuple[BackendStatus, ...]
    balance: str = ""

    @property
    def up(self) -> int:
        return sum(1 for b in self.backends if b.state == "up")


def pool_status(pool: Any) -> PoolStatus:
    """The `PoolStatus` of a `multiproxy.balancing.BackendPool` now."""
    balancer = pool.balancer
    balance = getattr(balancer, "name", None) or type(balancer).__name__
    return PoolStatus(pool.name, tuple(pool.snapshot()), str(balance))


def _latency_ms(b: BackendStatus) -> float | None:
    return None if b.latency is None else round(b.latency * 1000, 3)


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """Every pool of one proxy at ``taken_at`` (seconds since the epoch)."""

    proxy: str
    pools: tuple[PoolStatus, ...]
    taken_at: float = field(default_factory=time.time)
    started_at: float | None = None


def render_json(snapshot: StatusSnapshot) -> bytes:
    """The snapshot as a JSON document (pools, then backends, in order)."""
    doc = {
        "proxy": snapshot.proxy,
        "taken_at": snapshot.taken_at,
        "uptime_s": _uptime(snapshot),
        "pools": [
            {
                "name": pool.name,
                "balance": pool.balance,
                "up": pool.up,
                "backends": [_backend_json(b) for b in pool.backends],
            }
            for pool in snapshot.pools
        ],
    }
    return json.dumps(doc, indent=2).encode("utf-8") + b"\n"


def _backend_json(b: BackendStatus) -> dict[str, object]:
    return {
        "name": b.name, "state": b.state, "weight": b.weight, "active": b.active,
        "requests": b.requests, "failures": b.failures,
        "consecutive_failures": b.consecutive_failures, "latency_ms": _latency_ms(b),
        "last_latency_ms": None if b.last_latency is None else round(b.last_latency * 1000, 3),
        "last_check": b.last_check,
    }


_METRICS = (
    ("multiproxy_backend_up", "gauge", "1 when the backend is up (healthy), else 0.",
     lambda b: 1 if b.state == "up" else 0),
    ("multiproxy_backend_active", "gauge", "Requests or connections in progress.",
     lambda b: b.active),
    ("multiproxy_backend_requests_total", "counter", "Requests or connections begun.",
     lambda b: b.requests),
    ("multiproxy_backend_failures_total", "counter", "Requests or connections that failed.",
     lambda b: b.failures),
    ("multiproxy_backend_latency_milliseconds", "gauge", "Recent average response time.",
     lambda b: math.nan if b.latency is None else b.latency * 1000),
    ("multiproxy_backend_weight", "gauge", "Configured balancing weight.",
     lambda b: b.weight),
)


def render_prometheus(snapshot: StatusSnapshot) -> bytes:
    """The snapshot in the Prometheus text exposition format (0.0.4)."""
    lines = []
    for metric, kind, help_text, value_of in _METRICS:
        lines.append(f"# HELP {metric} {help_text}")
        lines.append(f"# TYPE {metric} {kind}")
        for pool in snapshot.pools:
            for b in pool.backends:
                labels = _labels(proxy=snapshot.proxy, pool=pool.name, backend=b.name)
                lines.append(f"{metric}{{{labels}}} {_number(value_of(b))}")
    lines.append("# HELP multiproxy_pool_backends_up Backends up in the pool.")
    lines.append("# TYPE multiproxy_pool_backends_up gauge")
    for pool in snapshot.pools:
        lines.append(
            f"multiproxy_pool_backends_up{{{_labels(proxy=snapshot.proxy, pool=pool.name)}}} "
            f"{pool.up}"
        )
    return ("\n".join(lines) + "\n").encode("utf-8")


def _labels(**labels: str) -> str:
    return ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return repr(round(value, 3))
    return str(value)


_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .2em}
p.meta{color:#666;margin:0 0 1.2em}
table{border-collapse:collapse;margin:0 0 1.6em;width:58em;background:#fff}
caption{text-align:left;font-weight:600;padding:.3em 0}
caption .sum{font-weight:normal;color:#555;margin-left:.6em}
th,td{border:1px solid #ccc;padding:.3em .7em;text-align:right}
th{background:#e8e8ee}
tfoot td{background:#f0f0f4;font-weight:600}
td.name,th.name,td.check{text-align:left}
tr.up td.state{background:#2e9e44;color:#fff;font-weight:600}
tr.down td.state{background:#d33;color:#fff;font-weight:600}
tr.ejected td.state,tr.draining td.state{background:#e0a000;color:#fff;font-weight:600}
tr.down td{background:#fde8e8}
td.state{text-align:center}
"""


def render_html(snapshot: StatusSnapshot, refresh: int | None = 5) -> bytes:
    """
    A page a person reads at a glance: one table per pool, one row per
    backend, the state cell green (up), red (down) or amber (ejected after
    failures, or draining).
    """
    esc = html.escape
    taken = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(snapshot.taken_at))
    meta = f"snapshot {taken}"
    uptime = _uptime(snapshot)
    if uptime is not None:
        meta += f" &middot; up {_duration(uptime)}"
    head = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(snapshot.proxy)} status</title>",
    ]
    if refresh:
        head.append(f'<meta http-equiv="refresh" content="{int(refresh)}">')
    head.append(f"<style>{_CSS}</style></head><body>")
    body = [
        f"<h1>{esc(snapshot.proxy)}</h1>",
        f'<p class="meta">{meta}</p>',
    ]
    for pool in snapshot.pools:
        body.append(_pool_table(pool))
    if not snapshot.pools:
        body.append("<p>No backend pools are configured.</p>")
    body.append("</body></html>")
    return ("\n".join(head + body) + "\n").encode("utf-8")


def _pool_table(pool: PoolStatus) -> str:
    esc = html.escape
    total = len(pool.backends)
    summary = f"{pool.up}/{total} up"
    if pool.balance:
        summary += f", {esc(pool.balance)}"
    rows = [
        f'<table class="pool" data-pool="{esc(pool.name)}">',
        f'<caption>{esc(pool.name)}<span class="sum">{summary}</span></caption>',
        "<thead><tr><th class=\"name\">backend</th><th>state</th><th>active</th>"
        "<th>requests</th><th>failures</th><th>latency</th><th>weight</th>"
        "<th class=\"name\">last check</th></tr></thead><tbody>",
    ]
    for b in pool.backends:
        state = b.state if b.state in STATES else "down"
        ms = _latency_ms(b)
        latency = "&ndash;" if ms is None else f"{ms:.1f} ms"
        rows.append(
            f'<tr class="{state}" data-backend="{esc(b.name)}">'
            f'<td class="name">{esc(b.name)}</td>'
            f'<td class="state">{esc(b.state.upper())}</td>'
            f"<td>{b.active}</td><td>{b.requests}</td><td>{b.failures}</td>"
            f"<td>{latency}</td><td>{b.weight}</td>"
            f'<td class="check">{esc(b.last_check or "")}</td></tr>'
        )
    rows.append("</tbody>")
    rows.append(
        f'<tfoot><tr><td class="name">total</td><td class="state">{pool.up}/{total}</td>'
        f"<td>{sum(b.active for b in pool.backends)}</td>"
        f"<td>{sum(b.requests for b in pool.backends)}</td>"
        f"<td>{sum(b.failures for b in pool.backends)}</td>"
        '<td></td><td></td><td class="check"></td></tr></tfoot></table>'
    )
    return "\n".join(rows)


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
        return StatusPage(200, PROMETHEUS_TYPE, render_prometheus(snapshot))
    return StatusPage(
        404, b"text/plain; charset=utf-8",
        b"Not found. Try / (HTML), /status.json (JSON) or /metrics (Prometheus).\n",
    )

