"""
Tests for the status page renderings (pure), and one that renders the HTML
in a real headless Chromium to check what a person sees.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from multiproxy.balancing import Backend, BackendPool, BackendStatus, RoundRobin
from multiproxy.status import (
    HTML_TYPE,
    JSON_TYPE,
    PROMETHEUS_TYPE,
    PoolStatus,
    StatusSnapshot,
    pool_status,
    render_html,
    render_json,
    render_metrics,
    status_page,
)


def backend(name: str, state: str, *, active: int = 0, requests: int = 0, failures: int = 0,
            latency: float | None = None, weight: int = 1,
            check: str | None = None) -> BackendStatus:
    return BackendStatus(name=name, state=state, weight=weight, active=active,
                         requests=requests, failures=failures, consecutive_failures=0,
                         latency=latency, last_latency=latency, last_check=check)


def snapshot() -> StatusSnapshot:
    return StatusSnapshot(
        proxy="web",
        pools=(
            PoolStatus("api", (
                backend("b1", "up", active=2, requests=100, failures=1, latency=0.00325,
                        check="HTTP 200 in 2 ms"),
                backend("b2", "down", active=0, requests=50, failures=10, weight=2,
                        check="connection refused"),
            ), balance="roundrobin"),
            PoolStatus('odd "name"\n<x>', (backend("s1", "ejected", requests=7),)),
        ),
        taken_at=1_700_000_000.0,
        started_at=1_699_999_000.0,
    )


def test_json_has_every_backend_field_in_order() -> None:
    doc = json.loads(render_json(snapshot()))
    assert doc["proxy"] == "web"
    assert doc["uptime_s"] == 1000.0
    assert [p["name"] for p in doc["pools"]] == ["api", 'odd "name"\n<x>']
    api = doc["pools"][0]
    assert api["up"] == 1 and api["balance"] == "roundrobin"
    assert api["backends"][0] == {
        "name": "b1", "state": "up", "admin": "ready", "weight": 1, "active": 2,
        "requests": 100, "failures": 1, "connect_failures": 0, "retries": 0,
        "redispatches": 0, "consecutive_failures": 0, "latency_ms": 3.25,
        "last_latency_ms": 3.25, "state_s": None, "downtime_s": 0.0,
        "bytes_in": 0, "bytes_out": 0, "responses": {}, "session_rate": 0.0,
        "session_rate_max": 0.0, "last_check": "HTTP 200 in 2 ms",
    }
    assert api["backends"][1]["latency_ms"] is None


_SAMPLE = re.compile(r'^([a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')


def test_prometheus_exposition_is_well_formed() -> None:
    text = render_metrics(snapshot()).decode()
    assert text.endswith("\n")
    declared: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            declared[name] = kind
        elif line.startswith("# HELP "):
            continue
        else:
            m = _SAMPLE.match(line)
            assert m, line
            assert m.group(1) in declared, line
            value = m.group(3)
            assert value == "NaN" or math.isfinite(float(value))
            samples.append((m.group(1), m.group(2), value))
    assert declared["multiproxy_backend_requests_total"] == "counter"
    assert ("multiproxy_backend_up", 'proxy="web",pool="api",backend="b1"', "1") in samples
    assert ("multiproxy_backend_up", 'proxy="web",pool="api",backend="b2"', "0") in samples
    assert ("multiproxy_backend_latency_seconds", 'proxy="web",pool="api",backend="b2"',
            "NaN") in samples
    assert ("multiproxy_backend_latency_seconds", 'proxy="web",pool="api",backend="b1"',
            "0.00325") in samples
    assert ("multiproxy_backend_state", 'proxy="web",pool="api",backend="b2",state="down"',
            "1") in samples
    assert ("multiproxy_pool_backends_up", 'proxy="web",pool="api"', "1") in samples


def test_prometheus_label_values_are_escaped() -> None:
    text = render_metrics(snapshot()).decode()
    assert 'pool="odd \\"name\\"\\n<x>"' in text


def test_html_escapes_names_and_marks_states() -> None:
    page = render_html(snapshot()).decode()
    assert "<x>" not in page and "&lt;x&gt;" in page
    assert '<tr class="up" data-backend="b1">' in page
    assert '<tr class="down" data-backend="b2">' in page
    assert '<tr class="ejected" data-backend="s1">' in page
    assert "1/2 up, roundrobin" in page
    assert 'http-equiv="refresh"' in page
    assert "up 16m 40s" in page


def test_html_without_pools_says_so() -> None:
    page = render_html(StatusSnapshot("p", (), taken_at=0), refresh=None).decode()
    assert "No backend pools are configured." in page
    assert "refresh" not in page


def test_pool_status_reads_a_backend_pool() -> None:
    from twisted.internet.task import Clock

    a = Backend(host="127.0.0.1", port=9001)
    b = Backend(host="127.0.0.1", port=9002, weight=3)
    pool = BackendPool("api", [a, b], RoundRobin(), Clock(), max_failures=1)
    a.started()
    a.finished(True, 0.004)
    b.started()
    b.finished(False, 0.1)
    status = pool_status(pool)
    assert status.name == "api" and status.balance == "roundrobin"
    assert [(x.name, x.state, x.requests, x.failures) for x in status.backends] == [
        ("127.0.0.1:9001", "up", 1, 0), ("127.0.0.1:9002", "ejected", 1, 1)]
    assert status.up == 1
    text = render_metrics(StatusSnapshot("web", (status,))).decode()
    assert 'multiproxy_backend_latency_seconds{proxy="web",pool="api",' \
        'backend="127.0.0.1:9001"} 0.004' in text


def test_status_page_routes_paths_to_formats() -> None:
    snap = snapshot()
    assert status_page(snap, b"/").content_type == HTML_TYPE
    assert status_page(snap, b"/?x=1").status == 200
    assert status_page(snap, b"/status.json").content_type == JSON_TYPE
    assert status_page(snap, b"/json/").content_type == JSON_TYPE
    assert status_page(snap, b"/metrics").content_type == PROMETHEUS_TYPE
    missing = status_page(snap, b"/admin")
    assert missing.status == 404 and b"/metrics" in missing.body


# ---- in a real browser -------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected after rendering: asks the browser's own CSS engine what a person would see.
_PROBE = """
<script>
for (const row of document.querySelectorAll('tr[data-backend]')) {
  const cell = row.querySelector('td.state');
  const box = cell.getBoundingClientRect();
  row.setAttribute('data-seen',
    getComputedStyle(cell).backgroundColor + '|' + cell.innerText + '|' +
    (box.width > 0 && box.height > 0 ? 'visible' : 'hidden'));
}
</script>
"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True, text=True, timeout=60,
    )


@pytest.mark.integration
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_html_status_page_in_headless_chromium_shows_coloured_states(tmp_path: Path) -> None:
    page = render_html(snapshot(), refresh=None).decode()
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", _PROBE + "</body>"))
    result = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    dom = result.stdout
    assert "<table" in dom, result.stderr[-2000:]
    seen = dict(re.findall(r'data-backend="([^"]+)"[^>]*data-seen="([^"]+)"', dom))
    assert seen["b1"] == "rgb(46, 158, 68)|UP|visible"
    assert seen["b2"] == "rgb(221, 51, 51)|DOWN|visible"
    assert seen["s1"] == "rgb(224, 160, 0)|EJECTED|visible"

    shot = tmp_path / "status.png"
    (tmp_path / "page.html").write_text(page)
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,600",
              (tmp_path / "page.html").as_uri())
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
