"""
Status and metrics for every proxy: the traffic counters (an `IReporter`),
the snapshot of a proxy at one moment with its HTML, JSON and Prometheus
renderings, and the status listener that serves them (``--status-listen``).

See docs/status.md for every metric name.
"""

from multiproxy.status._admin import ADMIN_ACTIONS, AdminCommand, AdminRefused, read_admin_request
from multiproxy.status._counters import TrafficCounters, TrafficCounts, status_class
from multiproxy.status._group import StatusGroup, merge_snapshots
from multiproxy.status._listener import StatusSite, add_status_listeners
from multiproxy.status._metrics import PROMETHEUS_TYPE, MetricFamily, Sample, render_prometheus
from multiproxy.status._page import (
    HTML_TYPE,
    JSON_TYPE,
    PoolStatus,
    Reading,
    StatusPage,
    StatusSnapshot,
    WorkerStatus,
    pool_status,
    proxy_metrics,
    render_html,
    render_json,
    render_metrics,
    status_page,
)
from multiproxy.status._rates import RateMeter

__all__ = [
    "ADMIN_ACTIONS",
    "HTML_TYPE",
    "JSON_TYPE",
    "PROMETHEUS_TYPE",
    "AdminCommand",
    "AdminRefused",
    "MetricFamily",
    "PoolStatus",
    "RateMeter",
    "Reading",
    "Sample",
    "StatusPage",
    "StatusGroup",
    "StatusSite",
    "StatusSnapshot",
    "TrafficCounters",
    "TrafficCounts",
    "WorkerStatus",
    "add_status_listeners",
    "merge_snapshots",
    "pool_status",
    "proxy_metrics",
    "read_admin_request",
    "render_html",
    "render_json",
    "render_metrics",
    "render_prometheus",
    "status_class",
    "status_page",
]
