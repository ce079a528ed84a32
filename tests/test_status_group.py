"""The status of a proxy across the workers of a host: reports, merging and shared admin actions."""

from __future__ import annotations

import json
import time

from prometheus_client.parser import text_string_to_metric_families
from tests.fake_redis import linked
from twisted.internet import task

from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.balancing._backend import BackendStatus
from multiproxy.pipeline._values import AccessRecord
from multiproxy.status import (
    AdminCommand,
    PoolStatus,
    StatusGroup,
    StatusSite,
    StatusSnapshot,
    TrafficCounters,
    WorkerStatus,
    merge_snapshots,
    render_html,
    render_json,
    render_metrics,
)
from multiproxy.status._group import STALE_AFTER, decode_report, encode_report


def _record(status=200, sent=100):
    return AccessRecord(kind="http", proxy="web", started=0.0, client_host="127.0.0.1",
                        status=status, bytes_to_client=sent)


def _worker_site(link, clock, index):
    """One worker's status site of proxy "web": a pool of two backends and its counters."""
    pool = BackendPool("api", [Backend("a", host="10.0.0.1", port=80),
                               Backend("b", host="10.0.0.2", port=80)], RoundRobin(), clock)
    counters = TrafficCounters()
    site = StatusSite(clock, "web", lambda: [pool], counters=counters, token="t")
    site.group = StatusGroup(link, "web", "reverse", WorkerStatus(index, 1000 + index),
                             site.set_admin)
    site.doStart()
    return site, pool, counters


def test_every_worker_answers_for_the_whole_group():
    clock = task.Clock()
    links = linked(2)
    (one, pool1, c1), (two, pool2, c2) = (_worker_site(link, clock, i)
                                          for i, link in enumerate(links))
    for _ in range(3):
        c1.report(_record())
        pool1.backends[0].started()
    for _ in range(5):
        c2.report(_record(status=503, sent=10))
        pool2.backends[0].started()
    pool2.backends[0].finished(False, 0.0)
    clock.advance(1.0)  # each sampler writes its report and reads the other's:
    clock.advance(1.0)  # a report is at most one interval old
    for site in (one, two):
        snap = site.snapshot()
        assert snap.traffic.total == 8
        assert snap.traffic.by_class() == {"2xx": 3, "5xx": 5}
        assert snap.traffic.sent_bytes == 3 * 100 + 5 * 10
        backend = snap.pools[0].backends[0]
        assert (backend.requests, backend.failures) == (8, 1)
        assert [(w.index, w.pid, w.finished) for w in snap.workers] == [
            (0, 1000, 3), (1, 1001, 5)]
    doc = json.loads(render_json(one.snapshot()))
    assert [w["finished"] for w in doc["workers"]] == [3, 5]
    assert doc["traffic"]["finished"] == 8
    metrics = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(render_metrics(two.snapshot()).decode())
               for s in f.samples}
    assert metrics[("multiproxy_workers", (("proxy", "web"),))] == 2
    assert metrics[("multiproxy_worker_finished_total",
                    (("pid", "1001"), ("proxy", "web"), ("worker", "1")))] == 5
    assert metrics[("multiproxy_requests_total",
                    (("class", "5xx"), ("kind", "http"), ("proxy", "web")))] == 5
    page = render_html(one.snapshot()).decode()
    assert 'data-worker="1" data-pid="1001"' in page
    for site in (one, two):
        site.doStop()


def test_an_operator_action_on_one_worker_reaches_the_others():
    clock = task.Clock()
    links = linked(2)
    (one, pool1, _), (two, pool2, _) = (_worker_site(link, clock, i)
                                        for i, link in enumerate(links))
    one.apply(AdminCommand(pool="api", backend="b", action="drain"))
    assert pool1.backends[1].admin == "drain"
    assert pool2.backends[1].admin == "ready"
    clock.advance(1.0)
    assert pool2.backends[1].admin == "drain"
    assert two.snapshot().pools[0].backends[1].state == "draining"
    # A worker started later (a replacement) takes the action on its first report.
    late, late_pool, _ = _worker_site(linked(1)[0].__class__(links[0].data), clock, 2)
    clock.advance(1.0)
    assert late_pool.backends[1].admin == "drain"
    for site in (one, two, late):
        site.doStop()


def test_a_worker_that_stopped_reporting_is_left_out():
    clock = task.Clock()
    [link] = linked(1)
    site, _, counters = _worker_site(link, clock, 0)
    counters.report(_record())
    gone = StatusSnapshot("web", traffic=TrafficCounters().snapshot(),
                          taken_at=time.time() - STALE_AFTER - 1)
    link.data[b"multiproxy:status:web"] = {
        b"77": encode_report(gone, WorkerStatus(1, 77)),
        b"78": b"{not json",  # torn
    }
    clock.advance(1.0)
    snap = site.snapshot()
    assert [w.pid for w in snap.workers] == [1000]
    assert snap.traffic.total == 1
    site.doStop()
    assert b"1000" not in link.data[b"multiproxy:status:web"]  # a stopped worker leaves at once


def test_without_redis_a_worker_shows_its_own_figures():
    clock = task.Clock()
    [link] = linked(1)
    link.up = False
    site, _, counters = _worker_site(link, clock, 0)
    counters.report(_record())
    clock.advance(1.0)
    snap = site.snapshot()
    assert snap.traffic.total == 1
    assert [w.index for w in snap.workers] == [0]
    site.doStop()


def _backend(**kw):
    fields = dict(name="a", state="up", weight=1, active=0, requests=0, failures=0,
                  consecutive_failures=0, latency=None, last_latency=None, last_check=None)
    fields.update(kw)
    return BackendStatus(**fields)


def test_merging_sums_counts_keeps_the_worst_state_and_weighs_latency_by_requests():
    a = StatusSnapshot("web", (PoolStatus("api", (_backend(requests=30, latency=0.010,
                                                            active=2, session_rate_max=4.0),)),))
    b = StatusSnapshot("web", (PoolStatus("api", (_backend(requests=10, latency=0.030,
                                                            state="ejected", active=1,
                                                            consecutive_failures=3,
                                                            session_rate_max=9.0),)),))
    [merged] = merge_snapshots([a, b]).pools[0].backends
    assert (merged.state, merged.active, merged.requests) == ("ejected", 3, 40)
    assert merged.consecutive_failures == 3
    assert abs(merged.latency - 0.015) < 1e-9
    assert merged.session_rate_max == 9.0


def test_a_report_survives_its_encoding():
    counters = TrafficCounters()
    counters.report(_record(status=404))
    snap = StatusSnapshot("web", (PoolStatus("api", (_backend(responses=(("2xx", 4),)),), "rr"),),
                          traffic=counters.snapshot(), taken_at=100.0, started_at=50.0,
                          session_rate=2.5)
    back = decode_report(encode_report(snap, WorkerStatus(3, 42, 2)), "web", "reverse")
    assert back.traffic == snap.traffic
    assert back.pools == snap.pools
    assert (back.taken_at, back.started_at, back.session_rate) == (100.0, 50.0, 2.5)
    assert back.workers == (WorkerStatus(3, 42, 2, 50.0, 100.0, 1, 2.5, 0),)
    assert decode_report(b'{"worker": [1, 2, 3]}', "web", "reverse") is None
