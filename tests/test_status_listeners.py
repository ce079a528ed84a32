"""
The status listener of every proxy kind, over loopback after real traffic:
the forward proxy, the TCP relay and the reverse proxy, built from TOML as
twistd builds them; counts must match what was sent, and every /metrics
page must parse with prometheus_client.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import tomllib

import bcrypt
import pytest
import pytest_twisted
from loopback import curl, raw_exchange
from prometheus_client.parser import text_string_to_metric_families
from reverse_peers import NamedBackend
from twisted.internet import defer, reactor, task, threads

from multiproxy._config import make_services, read_configuration

PASSWORD_HASH = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).decode()
GOOD = "alice:wonderland"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def backend():
    b = NamedBackend("b0")
    b.start()
    yield b
    pytest_twisted.blockon(b.stop())


@pytest.fixture
def running():
    started = []

    def start(text: str):
        service = make_services(read_configuration(tomllib.loads(text)), reactor)
        service.startService()
        started.append(service)
        return service

    yield start
    for service in started:
        pytest_twisted.blockon(defer.maybeDeferred(service.stopService))


def pause() -> defer.Deferred:
    return task.deferLater(reactor, 0.05, lambda: None)


def metrics(text: bytes) -> dict[tuple[str, tuple], float]:
    """Every sample of a /metrics page, parsed by prometheus_client, by (name, labels)."""
    out = {}
    for fam in text_string_to_metric_families(text.decode()):
        assert fam.documentation, fam.name
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def fetch(proxy: int, url: str, *args: str) -> tuple[int, int]:
    """(status, body size) of one request through the forward proxy with curl."""
    out, _, _ = await curl("-x", f"http://127.0.0.1:{proxy}", "-o", "/dev/null",
                                "-w", "%{http_code} %{size_download}", *args, url)
    status, size = out.decode().split()
    return int(status), int(size)


async def status_doc(port: int) -> dict:
    out, err, code = await curl(f"http://127.0.0.1:{port}/status.json")
    assert code == 0, err
    return json.loads(out)


@pytest_twisted.ensureDeferred
async def test_forward_status_counts_the_traffic_sent(backend, running):
    port, status = free_port(), free_port()
    dead = free_port()
    running(f"""
[log]
access = false
[policy]
[policy.auth]
realm = "t"
users = {{ alice = "{PASSWORD_HASH}" }}
[[policy.rules]]
name = "blocked"
action = "deny"
url_regex = "/forbidden"
[[policy.rules]]
name = "login"
action = "authenticate"
[[policy.rules]]
name = "users"
action = "allow"
authenticated = true

[[forward]]
name = "fwd"
listen = "tcp:{port}:interface=127.0.0.1"
status_listen = "tcp:{status}:interface=127.0.0.1"
connect_ports = [{backend.port}]
""")
    origin = f"http://127.0.0.1:{backend.port}"
    sent = []
    sent.append(await fetch(port, f"{origin}/who", "-U", GOOD))
    sent.append(await fetch(port, f"{origin}/who", "-U", GOOD))
    sent.append(await fetch(port, f"{origin}/cached", "-U", GOOD))
    sent.append(await fetch(port, f"{origin}/cached", "-U", GOOD))
    body = b"z" * 1234
    sent.append(await fetch(port, f"{origin}/echo", "-U", GOOD, "--data-binary", body.decode()))
    sent.append(await fetch(port, f"{origin}/forbidden", "-U", GOOD))
    sent.append(await fetch(port, f"{origin}/who"))  # no credentials: 407
    sent.append(await fetch(port, f"{origin}/who", "-U", "alice:nope"))  # refused: 407
    sent.append(await fetch(port, f"http://127.0.0.1:{dead}/", "-U", GOOD))
    assert [s for s, _ in sent] == [200, 200, 200, 200, 200, 403, 407, 407, 502]

    # A CONNECT tunnel with exact bytes each way.
    auth = base64.b64encode(GOOD.encode()).decode()
    inner = b"GET /bytes/1000 HTTP/1.0\r\nHost: x\r\n\r\n"
    reply = await raw_exchange(port, (
        f"CONNECT 127.0.0.1:{backend.port} HTTP/1.1\r\nHost: 127.0.0.1:{backend.port}\r\n"
        f"Proxy-Authorization: Basic {auth}\r\n\r\n").encode() + inner)
    assert reply.startswith(b"HTTP/1.1 200 ")
    tunnel_out = len(reply.partition(b"\r\n\r\n")[2])
    assert tunnel_out > 1000

    doc = await status_doc(status)
    for _ in range(100):
        if doc["traffic"]["finished"] == 10 and doc["tunnels_open"] == 0:
            break
        await pause()
        doc = await status_doc(status)
    assert doc["kind"] == "forward" and doc["proxy"] == "fwd"
    assert doc["tunnels_open"] == 0 and doc["tunnels_total"] == 1
    traffic = doc["traffic"]
    assert traffic["requests"] == {"2xx": 6, "4xx": 3, "5xx": 1}
    assert traffic["received_bytes"] == len(body) + len(inner)
    assert traffic["sent_bytes"] == sum(size for _, size in sent) + tunnel_out
    assert traffic["denied"] == {"blocked": 1}
    assert traffic["auth_failures"] == 1
    assert traffic["upstream_errors"] == {"connect-refused": 1}
    assert traffic["cache"]["hit"] == 1
    assert traffic["cache"]["served_bytes"] == 2  # the second /cached: "b0"
    lookups = sum(traffic["cache"][r] for r in ("hit", "miss", "revalidated", "stale"))
    assert traffic["cache"]["hit_ratio"] == round(1 / lookups, 4)

    out, _, _ = await curl(f"http://127.0.0.1:{status}/metrics")
    m = metrics(out)
    p = ("proxy", "fwd")
    assert m[("multiproxy_requests_total", (("class", "2xx"), ("kind", "http"), p))] == 5
    assert m[("multiproxy_requests_total", (("class", "2xx"), ("kind", "connect"), p))] == 1
    assert m[("multiproxy_requests_total", (("class", "4xx"), ("kind", "http"), p))] == 3
    assert m[("multiproxy_denied_total", (p, ("rule", "blocked")))] == 1
    assert m[("multiproxy_auth_failures_total", (p,))] == 1
    assert m[("multiproxy_upstream_errors_total", (("kind", "connect-refused"), p))] == 1
    assert m[("multiproxy_tunnels_total", (p,))] == 1
    assert m[("multiproxy_tunnels_open", (p,))] == 0
    assert m[("multiproxy_cache_requests_total", (p, ("result", "hit")))] == 1
    assert m[("multiproxy_cache_served_bytes_total", (p,))] == 2
    assert m[("multiproxy_received_bytes_total", (p,))] == len(body) + len(inner)
    assert m[("multiproxy_sent_bytes_total", (p,))] == traffic["sent_bytes"]

    page, _, _ = await curl(f"http://127.0.0.1:{status}/")
    assert b"<h1>fwd</h1>" in page and b"denied by rule blocked" in page
    # The status page is not reachable through the proxy.
    code, _ = await fetch(port, f"http://127.0.0.1:{status}/metrics")
    assert code == 407


@pytest_twisted.ensureDeferred
async def test_tcp_status_counts_connections_bytes_and_backend_states(backend, running):
    port, status, dead = free_port(), free_port(), free_port()
    lone, lone_status = free_port(), free_port()
    running(f"""
[log]
access = false
[[tcp]]
name = "relay"
listen = "tcp:{port}:interface=127.0.0.1"
status_listen = "tcp:{status}:interface=127.0.0.1"
backends = ["tcp:host=127.0.0.1:port={backend.port}", "tcp:host=127.0.0.1:port={dead}"]
[tcp.health]
interval = 0.1
rise = 1
fall = 1

[[tcp]]
name = "lonely"
listen = "tcp:{lone}:interface=127.0.0.1"
status_listen = "tcp:{lone_status}:interface=127.0.0.1"
backends = ["tcp:host=127.0.0.1:port={dead}"]
retries = 0
[tcp.health]
check = "none"
""")
    for _ in range(100):
        doc = await status_doc(status)
        states = [b["state"] for b in doc["pools"][0]["backends"]]
        if states == ["up", "down"]:
            break
        await pause()
    assert states == ["up", "down"]
    request = b"GET /who HTTP/1.0\r\n\r\n"
    replies = [await raw_exchange(port, request) for _ in range(2)]
    assert all(r.endswith(b"b0") for r in replies)
    assert await raw_exchange(lone, b"hello") == b""

    for _ in range(100):
        doc = await status_doc(status)
        if doc["traffic"]["finished"] == 2 and doc["connections_open"] == 0:
            break
        await pause()
    assert doc["kind"] == "tcp"
    assert doc["connections_total"] == 2 and doc["connections_open"] == 0
    assert doc["traffic"]["received_bytes"] == 2 * len(request)
    assert doc["traffic"]["sent_bytes"] == sum(len(r) for r in replies)
    relayed = doc["pools"][0]["backends"][0]
    assert relayed["requests"] == 2
    assert (relayed["bytes_in"], relayed["bytes_out"]) == (2 * len(request),
                                                           sum(len(r) for r in replies))
    assert relayed["responses"] == {}  # no HTTP status for a relayed connection

    out, _, _ = await curl(f"http://127.0.0.1:{status}/metrics")
    m = metrics(out)
    p = ("proxy", "relay")
    b0 = f"tcp:host=127.0.0.1:port={backend.port}"
    bd = f"tcp:host=127.0.0.1:port={dead}"
    assert m[("multiproxy_connections_total", (p,))] == 2
    assert m[("multiproxy_sent_bytes_total", (p,))] == sum(len(r) for r in replies)
    assert m[("multiproxy_backend_up", (("backend", b0), ("pool", "relay"), p))] == 1
    assert m[("multiproxy_backend_state",
              (("backend", bd), ("pool", "relay"), p, ("state", "down")))] == 1
    assert sum(v for (name, _), v in m.items() if name == "multiproxy_ended_total") == 2
    assert doc["traffic"]["upstream_errors"] == {}
    assert not any(name == "multiproxy_requests_total" for name, _ in m)

    for _ in range(100):
        lonely = await status_doc(lone_status)
        if lonely["traffic"]["finished"] == 1:
            break
        await pause()
    assert lonely["traffic"]["upstream_errors"] == {"connect-refused": 1}
    assert lonely["traffic"]["endings"] == {"connect-failed": 1}


@pytest_twisted.ensureDeferred
async def test_reverse_status_counts_and_admin_actions_need_the_token(backend, running):
    other = NamedBackend("b1")
    other.start()
    try:
        port, status = free_port(), free_port()
        running(f"""
[log]
access = false
[[reverse]]
name = "site"
listen = "tcp:{port}:interface=127.0.0.1"
status_listen = "tcp:{status}:interface=127.0.0.1"
status_token = "s3cret-token"
backends = [{{ url = "http://127.0.0.1:{backend.port}", name = "one" }},
            {{ url = "http://127.0.0.1:{other.port}", name = "two" }}]
[reverse.health]
check = "none"
""")
        for _ in range(4):
            out, err, code = await curl(f"http://127.0.0.1:{port}/who")
            assert code == 0, err
        admin = f"http://127.0.0.1:{status}/admin?pool=default&backend=one"
        out, _, _ = await curl("-w", "%{http_code}", "-o", "/dev/null", "-d", "action=drain",
                               admin)
        assert out == b"403"
        out, _, _ = await curl("-w", "%{http_code}", "-o", "/dev/null",
                               "-d", "action=drain&token=wrong-token", admin)
        assert out == b"403"
        out, _, _ = await curl("-w", "%{http_code}", "-o", "/dev/null", "-H",
                               "Authorization: Bearer s3cret-token", "-d", "action=drain", admin)
        assert out == b"303"
        doc = await status_doc(status)
        one = doc["pools"][0]["backends"][0]
        assert (one["name"], one["state"], one["admin"]) == ("one", "draining", "drain")
        # Drained: new requests all go to the other backend.
        for _ in range(3):
            out, _, _ = await curl(f"http://127.0.0.1:{port}/who")
            assert out == b"b1"
        out, _, _ = await curl("-w", "%{http_code}", "-o", "/dev/null",
                               "-d", "action=maint&token=s3cret-token&pool=default&backend=one",
                               f"http://127.0.0.1:{status}/admin")
        assert out == b"303"
        assert (await status_doc(status))["pools"][0]["backends"][0]["state"] == "maint"
        out, _, _ = await curl("-w", "%{http_code}", "-o", "/dev/null",
                               "-d", "action=ready&token=s3cret-token", admin)
        assert out == b"303"
        doc = await status_doc(status)
        assert doc["pools"][0]["backends"][0]["state"] == "up"
        assert doc["traffic"]["requests"] == {"2xx": 7}

        out, _, _ = await curl(f"http://127.0.0.1:{status}/metrics")
        m = metrics(out)
        p = ("proxy", "site")
        assert m[("multiproxy_requests_total", (("class", "2xx"), ("kind", "http"), p))] == 7
        assert m[("multiproxy_backend_requests_total",
                  (("backend", "two"), ("pool", "default"), p))] == 5
        page, _, _ = await curl(f"http://127.0.0.1:{status}/")
        assert b'name="token"' in page and b'value="drain"' in page
        assert b"s3cret-token" not in page
    finally:
        await other.stop()



@pytest_twisted.ensureDeferred
async def test_reverse_status_shows_per_backend_bytes_responses_and_session_rates(
    backend, running
):
    port, status = free_port(), free_port()
    running(f"""
[log]
access = false
[[reverse]]
name = "site"
listen = "tcp:{port}:interface=127.0.0.1"
status_listen = "tcp:{status}:interface=127.0.0.1"
backends = [{{ url = "http://127.0.0.1:{backend.port}", name = "one" }}]
[reverse.health]
check = "none"
""")
    urls = [f"http://127.0.0.1:{port}/bytes/5000"] * 3 + [f"http://127.0.0.1:{port}/status/404"]
    out, err, code = await curl("-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                                "-o", "/dev/null", *urls)
    assert code == 0, err
    # Past one sampling interval the rates have been read at least twice.
    await task.deferLater(reactor, 1.3, lambda: None)
    doc = await status_doc(status)
    one = doc["pools"][0]["backends"][0]
    assert one["responses"] == {"2xx": 3, "4xx": 1}
    # Heads included: more than the bodies the backend sent, a head per request sent to it.
    assert 3 * 5000 < one["bytes_out"] < 3 * 5000 + 4 * 400
    assert 4 * len(b"GET /bytes/5000 HTTP/1.1\r\n\r\n") < one["bytes_in"] < 4 * 600
    # Four requests in about a second, whichever side of a sample they fell.
    assert 1 <= one["session_rate_max"] <= 4.5 and one["session_rate"] <= one["session_rate_max"]
    assert 1 <= doc["session_rate_max"] <= 4.5

    out, _, _ = await curl(f"http://127.0.0.1:{status}/metrics")
    m = metrics(out)
    labels = (("backend", "one"), ("pool", "default"), ("proxy", "site"))
    by_class = {dict(k[1])["class"]: v for k, v in m.items()
                if k[0] == "multiproxy_backend_responses_total"}
    assert by_class == {"2xx": 3, "4xx": 1}
    assert m[("multiproxy_backend_received_bytes_total", labels)] == one["bytes_out"]
    assert m[("multiproxy_backend_sent_bytes_total", labels)] == one["bytes_in"]
    assert m[("multiproxy_backend_session_rate_max", labels)] >= 1
    assert m[("multiproxy_session_rate_max", (("proxy", "site"),))] >= 1

    page, _, _ = await curl(f"http://127.0.0.1:{status}/")
    for column in (b"<th>max rate</th>", b"<th>2xx</th>", b"<th>5xx</th>", b"<th>bytes out</th>"):
        assert column in page
    assert f'title="{one["bytes_out"]} bytes"'.encode() in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Typed into the live page as a person would: the token, then the drain button of "one".
_CLICK = """
<script>
document.querySelector('input[name=token]').value = 's3cret-token';
document.querySelector('tr[data-backend="one"] button[value="drain"]').click();
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest_twisted.ensureDeferred
async def test_drain_button_in_headless_chromium_drains_the_backend(backend, running, tmp_path):
    port, status = free_port(), free_port()
    running(f"""
[log]
access = false
[[reverse]]
listen = "tcp:{port}:interface=127.0.0.1"
status_listen = "tcp:{status}:interface=127.0.0.1"
status_token = "s3cret-token"
backends = [{{ url = "http://127.0.0.1:{backend.port}", name = "one" }}]
[reverse.health]
check = "none"
""")
    page, _, _ = await curl(f"http://127.0.0.1:{status}/")
    # The live page, with its buttons' relative /admin targets resolved to the listener.
    html = page.decode().replace("<head>", f'<head><base href="http://127.0.0.1:{status}/">', 1)
    probe = tmp_path / "click.html"
    probe.write_text(html.replace("</body>", _CLICK + "</body>"))

    def browse():
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-proxy-server", f"--user-data-dir={tmp_path / 'p'}",
             "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
            check=False, capture_output=True, text=True, timeout=60)

    result = await threads.deferToThread(browse)
    for _ in range(100):
        one = (await status_doc(status))["pools"][0]["backends"][0]
        if one["admin"] == "drain":
            break
        await pause()
    assert (one["state"], one["admin"]) == ("draining", "drain"), result.stderr[-1500:]


@pytest_twisted.ensureDeferred
async def test_socks_status_counts_tunnels_and_bytes(backend, running):
    port, status = free_port(), free_port()
    running(f"""
[log]
access = false
[[socks]]
name = "sox"
listen = "tcp:{port}:interface=127.0.0.1"
status_listen = "tcp:{status}:interface=127.0.0.1"
""")
    sizes = []
    for _ in range(2):
        out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{port}", "-o", "/dev/null",
                                    "-w", "%{size_header} %{size_download}",
                                    f"http://127.0.0.1:{backend.port}/bytes/500")
        assert code == 0, err
        sizes.append(tuple(int(n) for n in out.split()))
    assert [body for _, body in sizes] == [500, 500]
    for _ in range(100):
        doc = await status_doc(status)
        if doc["traffic"]["finished"] == 2 and doc["connections_open"] == 0:
            break
        await pause()
    assert doc["kind"] == "socks" and doc["traffic"]["finished"] == 2
    # A SOCKS tunnel carries the origin's response heads too.
    assert doc["traffic"]["sent_bytes"] == sum(head + body for head, body in sizes)
    out, _, _ = await curl(f"http://127.0.0.1:{status}/metrics")
    m = metrics(out)
    assert m[("multiproxy_sent_bytes_total", (("proxy", "sox"),))] == doc["traffic"]["sent_bytes"]
    assert m[("multiproxy_client_connections", (("proxy", "sox"),))] == 0
