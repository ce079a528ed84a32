"""
The shared status code without a network: traffic counters fed access
records, the Prometheus renderer (read back with prometheus_client's
parser), admin request parsing, and the status options of every proxy kind.
"""

from __future__ import annotations

import math
import tomllib

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import task

from multiproxy._config import read_configuration
from multiproxy._tap import Options
from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.pipeline._errors import ConfigError
from multiproxy.pipeline._values import AccessRecord
from multiproxy.status import (
    AdminCommand,
    AdminRefused,
    MetricFamily,
    RateMeter,
    StatusSite,
    StatusSnapshot,
    TrafficCounters,
    read_admin_request,
    render_html,
    render_json,
    render_metrics,
    status_class,
)


def record(**kw) -> AccessRecord:
    kw.setdefault("kind", "http")
    return AccessRecord(proxy="p", started=0.0, client_host="127.0.0.1", **kw)


def counted() -> TrafficCounters:
    c = TrafficCounters()
    c.report(record(status=200, bytes_to_client=100, bytes_from_client=7, cache="MISS"))
    c.report(record(status=200, bytes_to_client=100, cache="HIT"))
    c.report(record(status=304, bytes_to_client=0, cache="REVALIDATED"))
    c.report(record(status=403, ended="denied", rule="no-ads", bytes_to_client=50))
    c.report(record(status=407, ended="auth-required", extra={"auth": "failed"}))
    c.report(record(status=504, ended="upstream-error", upstream_error="connect-timeout"))
    c.report(record(kind="connect", status=200, bytes_to_client=1000, bytes_from_client=300))
    c.report(record(status=0, ended="client-closed"))
    return c


def test_status_class_names_every_hundred_and_no_status() -> None:
    assert [status_class(s) for s in (101, 204, 399, 404, 599, 0, 999)] == [
        "1xx", "2xx", "3xx", "4xx", "5xx", "none", "none"]


def test_counters_add_up_every_record() -> None:
    t = counted().snapshot()
    assert t.total == 8
    assert t.by_class() == {"2xx": 3, "3xx": 1, "4xx": 2, "5xx": 1, "none": 1}
    assert t.requests[("connect", "2xx")] == 1
    assert (t.received_bytes, t.sent_bytes) == (307, 1250)
    assert t.cache == {"miss": 1, "hit": 1, "revalidated": 1}
    assert t.cache_bytes == 100
    assert t.hit_ratio == pytest.approx(2 / 3)
    assert t.denied == {"no-ads": 1}
    assert t.auth_failures == 1
    assert t.upstream_errors == {"connect-timeout": 1}
    assert t.endings["ok"] == 4 and t.endings["client-closed"] == 1


def test_hit_ratio_is_unknown_before_any_lookup() -> None:
    assert TrafficCounters().snapshot().hit_ratio is None


def families(snapshot: StatusSnapshot) -> dict:
    return {f.name: f for f in text_string_to_metric_families(render_metrics(snapshot).decode())}


def test_forward_metrics_parse_with_prometheus_client_and_follow_conventions() -> None:
    snap = StatusSnapshot("fwd", kind="forward", traffic=counted().snapshot(), started_at=10.0,
                          taken_at=20.0)
    found = families(snap)
    # prometheus_client drops a counter's _total from the family name.
    for name in ("multiproxy_requests", "multiproxy_received_bytes", "multiproxy_sent_bytes",
                 "multiproxy_denied", "multiproxy_auth_failures", "multiproxy_upstream_errors",
                 "multiproxy_cache_requests", "multiproxy_cache_served_bytes",
                 "multiproxy_ended"):
        assert found[name].type == "counter", name
    assert found["multiproxy_cache_hit_ratio"].type == "gauge"
    assert found["multiproxy_start_time_seconds"].samples[0].value == 10.0
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in found.values() for s in f.samples}
    assert values[("multiproxy_requests_total",
                   (("class", "4xx"), ("kind", "http"), ("proxy", "fwd")))] == 2
    assert values[("multiproxy_cache_requests_total",
                   (("proxy", "fwd"), ("result", "stale")))] == 0
    ratio = values[("multiproxy_cache_hit_ratio", (("proxy", "fwd"),))]
    assert ratio == pytest.approx(2 / 3)
    for name, _ in values:
        assert name.startswith("multiproxy_")


def test_hit_ratio_is_nan_before_the_first_lookup_and_parses() -> None:
    found = families(StatusSnapshot("r", kind="reverse", traffic=TrafficCounters().snapshot()))
    assert math.isnan(found["multiproxy_cache_hit_ratio"].samples[0].value)
    assert "multiproxy_auth_failures" not in found


def test_a_counter_must_end_in_total() -> None:
    with pytest.raises(ValueError, match="_total"):
        MetricFamily("multiproxy_requests", "counter", "x", ())


def test_json_and_html_show_the_traffic() -> None:
    snap = StatusSnapshot("fwd", kind="forward", traffic=counted().snapshot(), taken_at=0)
    doc = __import__("json").loads(render_json(snap))
    assert doc["traffic"]["requests"]["4xx"] == 2
    assert doc["traffic"]["cache"]["hit_ratio"] == 0.6667
    page = render_html(snap).decode()
    assert 'data-key="denied:no-ads"' in page and "66.7 %" in page
    assert "No backend pools" not in page


# -- admin requests ---------------------------------------------------------------------------

TOKEN = "s3cret-token"


def test_admin_request_reads_the_query_the_form_and_a_bearer_token() -> None:
    assert read_admin_request(b"/admin?pool=web&backend=b1", f"Bearer {TOKEN}".encode(), None,
                              b"action=drain", TOKEN) == AdminCommand("web", "b1", "drain")
    assert read_admin_request(b"/admin", None, b"application/x-www-form-urlencoded",
                              f"pool=web&backend=b%201&action=maint&token={TOKEN}".encode(),
                              TOKEN) == AdminCommand("web", "b 1", "maint")


@pytest.mark.parametrize("token, auth, body, status", [
    (None, f"Bearer {TOKEN}", b"pool=a&backend=b&action=drain", 403),
    (TOKEN, None, b"pool=a&backend=b&action=drain", 403),
    (TOKEN, "Bearer wrong", b"pool=a&backend=b&action=drain", 403),
    (TOKEN, f"Basic {TOKEN}", b"pool=a&backend=b&action=drain", 403),
    (TOKEN, f"Bearer {TOKEN}", b"pool=a&action=drain", 400),
    (TOKEN, f"Bearer {TOKEN}", b"pool=a&backend=b&action=explode", 400),
])
def test_admin_request_refusals(token, auth, body, status) -> None:
    with pytest.raises(AdminRefused) as caught:
        read_admin_request(b"/admin", auth and auth.encode(), None, body, token)
    assert caught.value.status == status


# -- options and TOML keys --------------------------------------------------------------------


def test_every_proxy_kind_takes_status_listen_on_the_command_line() -> None:
    for argv in (["forward", "--status-listen", "tcp:9401"],
                 ["tcp", "--listen", "tcp:9000", "--backend", "tcp:host=127.0.0.1:port=1",
                  "--status-listen", "tcp:9402"],
                 ["reverse", "--backend", "http://127.0.0.1:1", "--status-listen", "tcp:9403",
                  "--status-token", TOKEN]):
        options = Options()
        options.parseOptions(argv)
        config = options.configuration.proxies[0][1]
        assert config.status_listen[0].startswith("tcp:940")
    assert config.status_token == TOKEN


def load(text: str):
    return read_configuration(tomllib.loads(text)).proxies[0][1]


def test_status_listen_in_toml_for_forward_and_tcp() -> None:
    assert load('[[forward]]\nstatus_listen = "tcp:9404"').status_listen == ("tcp:9404",)
    tcp = load('[[tcp]]\nlisten = "tcp:9000"\nbackends = ["tcp:host=h:port=1"]\n'
               'status_listen = ["tcp:9405", "tcp:9406"]')
    assert tcp.status_listen == ("tcp:9405", "tcp:9406")


@pytest.mark.parametrize("extra, message", [
    ('status_token = "short"', r"reverse\[0\]\.status_token: is too short"),
    ('status_token = "has spaces in it"', r"reverse\[0\]\.status_token: must be printable"),
    ('status_token = 12345678', r"reverse\[0\]\.status_token"),
])
def test_bad_status_token_names_the_key(extra, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load(f'[[reverse]]\nbackends = ["http://127.0.0.1:1"]\n'
             f'status_listen = "tcp:9407"\n{extra}')


def test_status_token_needs_a_status_listener() -> None:
    with pytest.raises(ConfigError, match="status_token needs a status listener"):
        load(f'[[reverse]]\nbackends = ["http://127.0.0.1:1"]\nstatus_token = "{TOKEN}"')


def test_bad_tcp_status_listen_is_refused_before_listening() -> None:
    message = r"tcp\[0\]\.status_listen\[0\]: bad endpoint 'nonsense:1': Unknown endpoint type"
    with pytest.raises(ConfigError, match=message):
        load('[[tcp]]\nlisten = "tcp:9000"\nbackends = ["tcp:host=h:port=1"]\n'
             'status_listen = "nonsense:1"')


def test_a_long_check_message_is_cut_in_its_cell_and_whole_in_the_title() -> None:
    from multiproxy.balancing import BackendStatus
    from multiproxy.status import PoolStatus

    message = "connection refused: " + "x" * 300
    b = BackendStatus(name="b", state="down", weight=1, active=0, requests=0, failures=0,
                      consecutive_failures=0, latency=None, last_latency=None,
                      last_check=message)
    page = render_html(StatusSnapshot("r", (PoolStatus("p", (b,)),), taken_at=0)).decode()
    assert f'title="{message}"' in page
    cell = page.split(f'title="{message}">', 1)[1].split("</td>", 1)[0]
    assert len(cell) == 80 and cell.endswith("\u2026")


def test_rate_meter_reads_events_per_second_between_samples_and_keeps_the_most() -> None:
    meter = RateMeter()
    meter.sample(100.0, 0)
    assert (meter.current, meter.most) == (0.0, 0.0)
    meter.sample(101.0, 30)
    meter.sample(102.0, 40)
    assert (meter.current, meter.most) == (10.0, 30.0)
    meter.sample(102.0, 50)  # no time passed: nothing to divide by, the total is kept
    meter.sample(104.0, 50)
    assert (meter.current, meter.most) == (0.0, 30.0)
    meter.sample(105.0, 3)  # the total went down (a reset): never a negative rate
    assert meter.current == 0.0


def test_backend_counts_bytes_both_ways_and_responses_by_class() -> None:
    backend = Backend("b", host="127.0.0.1", port=80)
    for status, sent, received in [(200, 100, 1000), (204, 90, 120), (503, 80, 200),
                                   (0, 50, 0), (101, 70, 500)]:
        backend.exchanged(status, sent, received)
    status = backend.status(0.0)
    assert (status.bytes_in, status.bytes_out) == (390, 1820)
    assert status.responses == (("1xx", 1), ("2xx", 2), ("5xx", 1))


def test_status_site_samples_the_proxy_and_every_backend_once_a_second() -> None:
    clock = task.Clock()
    pool = BackendPool("api", [Backend("b", host="127.0.0.1", port=80)], RoundRobin(), clock)
    counters = TrafficCounters()
    site = StatusSite(clock, "web", lambda: [pool], counters=counters)
    site.doStart()
    for _ in range(6):
        pool.backends[0].started()
        counters.report(AccessRecord(kind="http", proxy="web", started=0.0,
                                     client_host="127.0.0.1", status=200))
    clock.advance(1.0)
    snap = site.snapshot()
    assert (snap.session_rate, snap.session_rate_max) == (6.0, 6.0)
    assert (snap.pools[0].backends[0].session_rate, snap.pools[0].backends[0].session_rate_max
            ) == (6.0, 6.0)
    clock.advance(1.0)
    backend = site.snapshot().pools[0].backends[0]
    assert (backend.session_rate, backend.session_rate_max) == (0.0, 6.0)
    site.doStop()
    assert not clock.getDelayedCalls()
