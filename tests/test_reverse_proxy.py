"""
The reverse proxy driven over loopback: several real backends (twisted.web),
real clients (http.client, curl, raw sockets).  Backend failures (killed,
refusing, dropping, slow, unusable) are tested in memory in
tests/test_reverse_failures.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import random
from collections import Counter

import pytest
import pytest_twisted
from loopback import curl, raw_exchange, wait_for
from reverse_peers import (
    NamedBackend,
    RunningProxy,
    WebSocketClient,
    listen_websocket_echo,
    make_pool,
)
from twisted.internet import defer, protocol, reactor, threads

from multiproxy.balancing import Backend, BackendPool, PowerOfTwoChoices
from multiproxy.reverse import ForwardedSettings, Route


@pytest.fixture
def backends():
    """Three named backends on loopback: b0, b1, b2."""
    started = [NamedBackend(f"b{i}") for i in range(3)]
    for b in started:
        b.start()
    yield started
    for b in started:
        pytest_twisted.blockon(b.stop())


@pytest.fixture
def proxies(reporter):
    running = []

    def start(pools, routes=None, **kwargs):
        kwargs.setdefault("reporters", (reporter,))
        proxy = RunningProxy(pools, routes, **kwargs)
        running.append(proxy)
        return proxy

    yield start
    for proxy in running:
        pytest_twisted.blockon(proxy.stop())


@pytest.fixture
def services_from_toml():
    """Start every proxy of a TOML text ("{port}" becomes a free port); returns that port."""
    import socket
    import tomllib

    from multiproxy._config import make_services, read_configuration

    running = []

    def start(text: str) -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        config = read_configuration(tomllib.loads(text.replace("{port}", str(port))))
        service = make_services(config, reactor)
        service.startService()
        running.append(service)
        return port

    yield start
    for service in running:
        pytest_twisted.blockon(defer.maybeDeferred(service.stopService))


def fetch_many(port: int, paths, headers=None, method="GET", body=None, keepalive=True):
    """Requests over one keep-alive connection (http.client, in a thread): [(status, headers, body)]."""

    def run():
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            for path in paths:
                conn.request(method, path, body=body, headers=dict(headers or {}))
                r = conn.getresponse()
                out.append((r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()))
                if not keepalive:
                    conn.close()
        finally:
            conn.close()
        return out

    return threads.deferToThread(run)


# ---- balancing -------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_roundrobin_spreads_evenly_over_three_backends(backends, proxies):
    proxy = proxies({"web": make_pool("web", [b.port for b in backends])})
    answers = await fetch_many(proxy.port, ["/who"] * 30)
    assert Counter(body for _, _, body in answers) == {b"b0": 10, b"b1": 10, b"b2": 10}


@pytest_twisted.ensureDeferred
async def test_weighted_follows_weights(backends, proxies):
    pool = BackendPool("web", [
        Backend("b0", host="127.0.0.1", port=backends[0].port, weight=1),
        Backend("b1", host="127.0.0.1", port=backends[1].port, weight=3),
    ], __import__("multiproxy.balancing", fromlist=["x"]).balancer_from_name("weighted"), reactor)
    proxy = proxies({"web": pool})
    answers = await fetch_many(proxy.port, ["/who"] * 40)
    assert Counter(body for _, _, body in answers) == {b"b0": 10, b"b1": 30}


@pytest_twisted.ensureDeferred
async def test_leastconn_prefers_the_idle_backend(backends, proxies):
    proxy = proxies({"web": make_pool("web", [b.port for b in backends[:2]], "leastconn")})
    pool = proxy.factory.chooser.pools["web"]
    # Hold a slow request on whichever backend gets it, then the next ones
    # must avoid that backend while it is busy.
    slow = fetch_many(proxy.port, ["/slow/0.6"])
    await wait_for(lambda: sum(b.active for b in pool.backends) == 1)
    busy = next(b for b in pool.backends if b.active == 1)
    answers = await fetch_many(proxy.port, ["/who"] * 6)
    idle_name = next(b.name for b in backends[:2] if f"web-{backends.index(b)}" != busy.name)
    assert {body for _, _, body in answers} == {idle_name.encode()}
    await slow


@pytest_twisted.ensureDeferred
async def test_power_of_two_choices_uses_every_backend(backends, proxies):
    pool = BackendPool("web", make_pool("web", [b.port for b in backends]).backends,
                       PowerOfTwoChoices(random.Random(7)), reactor)
    proxy = proxies({"web": pool})
    answers = await fetch_many(proxy.port, ["/who"] * 30)
    counts = Counter(body for _, _, body in answers)
    assert set(counts) == {b"b0", b"b1", b"b2"}


@pytest_twisted.ensureDeferred
async def test_hash_on_client_address_is_sticky(backends, proxies):
    proxy = proxies({"web": make_pool("web", [b.port for b in backends], "hash:client")})
    answers = await fetch_many(proxy.port, ["/who"] * 12, keepalive=False)
    assert len({body for _, _, body in answers}) == 1


@pytest_twisted.ensureDeferred
async def test_sticky_cookie_sessions_survive_a_backend_leaving(backends, proxies):
    proxy = proxies({"web": make_pool("web", [b.port for b in backends], "hash:cookie=session",
                                      max_failures=1)})
    sessions = [f"user{i}" for i in range(24)]

    async def placement():
        seen = {}
        for s in sessions:
            [(status, _, body)] = await fetch_many(proxy.port, ["/who"],
                                                   headers={"Cookie": f"a=1; session={s}"})
            assert status == 200
            seen[s] = body
        return seen

    before = await placement()
    again = await placement()
    assert again == before
    assert len(set(before.values())) == 3
    # b1 leaves: only its sessions move, everybody else keeps their backend.
    await backends[1].stop()
    after = await placement()
    for s in sessions:
        if before[s] != b"b1":
            assert after[s] == before[s], s
        else:
            assert after[s] in (b"b0", b"b2")


# ---- routing and headers -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_routes_by_host_and_path_with_rewrite(backends, proxies):
    pools = {
        "api": make_pool("api", [backends[0].port]),
        "www": make_pool("www", [backends[1].port]),
        "tenants": make_pool("tenants", [backends[2].port]),
    }
    routes = [
        Route("api", hosts=("example.test",), path="/api", strip_prefix=True),
        Route("www", hosts=("example.test",)),
        Route("tenants", hosts=("*.example.test",)),
    ]
    proxy = proxies(pools, routes)
    cases = [("example.test", "/api/who", b"b0"), ("example.test", "/who", b"b1"),
             ("shop.example.test", "/who", b"b2")]
    for host, path, expected in cases:
        [(status, _, body)] = await fetch_many(proxy.port, [path], headers={"Host": host})
        assert (status, body) == (200, expected), (host, path)
    assert backends[0].hits[-1] == b"/who"
    [(status, _, body)] = await fetch_many(proxy.port, ["/"], headers={"Host": "other.test"})
    assert status == 404
    assert b"no route for other.test/" in body


@pytest_twisted.ensureDeferred
async def test_forwarding_headers_reach_the_backend(backends, proxies):
    proxy = proxies({"web": make_pool("web", [backends[0].port])},
                    forwarded=ForwardedSettings.from_strings([]))
    [(status, _, body)] = await fetch_many(
        proxy.port, ["/headers"], headers={"Host": "site.test", "X-Forwarded-For": "6.6.6.6",
                                           "Forwarded": "for=6.6.6.6"})
    fields = {}
    for k, v in json.loads(body)["headers"]:
        fields.setdefault(k.lower(), []).append(v)
    assert fields["x-forwarded-for"] == ["127.0.0.1"]
    assert fields["x-forwarded-proto"] == ["http"]
    assert fields["x-forwarded-host"] == ["site.test"]
    assert fields["forwarded"] == ["for=127.0.0.1;host=site.test;proto=http"]
    assert fields["host"] == ["site.test"]
    assert fields["via"] == ["1.1 multiproxy"]


@pytest_twisted.ensureDeferred
async def test_host_header_rewritten_to_the_backend(backends, proxies):
    port = backends[0].port
    proxy = proxies({"web": make_pool("web", [port])}, [Route("web", host_header="backend")])
    [(status, _, body)] = await fetch_many(proxy.port, ["/headers"], headers={"Host": "site.test"})
    fields = {k.lower(): v for k, v in json.loads(body)["headers"]}
    assert fields["host"] == f"127.0.0.1:{port}"
    assert fields["x-forwarded-host"] == "site.test"


@pytest_twisted.ensureDeferred
async def test_absolute_form_never_makes_it_a_forward_proxy(backends, proxies):
    proxy = proxies({"web": make_pool("web", [backends[0].port])},
                    [Route("web", hosts=("site.test",)), Route("web", path="/other")])
    out = await raw_exchange(proxy.port, b"GET http://evil.test/who HTTP/1.1\r\n"
                                         b"Host: site.test\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 421 ")
    assert not backends[0].hits
    out = await raw_exchange(proxy.port, b"GET http://site.test/who HTTP/1.1\r\n"
                                         b"Host: evil.test\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 ")
    assert out.endswith(b"b0")


@pytest_twisted.ensureDeferred
async def test_connect_is_refused(backends, proxies):
    proxy = proxies({"web": make_pool("web", [backends[0].port])})
    out = await raw_exchange(proxy.port, b"CONNECT example.test:443 HTTP/1.1\r\n"
                                         b"Host: example.test:443\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405 ")
    assert not backends[0].hits


@pytest_twisted.ensureDeferred
async def test_h2c_upgrade_is_not_forwarded(backends, proxies):
    proxy = proxies({"web": make_pool("web", [backends[0].port])})
    [(status, headers, body)] = await fetch_many(proxy.port, ["/headers"], headers={
        "Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c",
        "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA"})
    assert status == 200
    names = {k.lower() for k, _ in json.loads(body)["headers"]}
    assert "upgrade" not in names and "http2-settings" not in names
    assert "upgrade" not in headers


@pytest_twisted.ensureDeferred
async def test_redirect_to_https_and_no_hsts_on_plain_http(backends, proxies):
    proxy = proxies({"web": make_pool("web", [backends[0].port])}, redirect_https=True,
                    https_port=8443, hsts=b"max-age=60")
    out = await raw_exchange(proxy.port, b"POST /a/b?c=d HTTP/1.1\r\nHost: Site.Test:8080\r\n"
                                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
    head = out.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 308 ")
    assert b"\r\nLocation: https://site.test:8443/a/b?c=d" in head
    assert b"strict-transport-security" not in head.lower()
    assert not backends[0].hits


# ---- streaming and pooling ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_backend_connections_are_kept_alive_and_reused(backends, proxies):
    proxy = proxies({"web": make_pool("web", [backends[0].port])})
    answers = await fetch_many(proxy.port, ["/who"] * 5, keepalive=False)
    assert [s for s, _, _ in answers] == [200] * 5
    assert backends[0].connections == 1
    assert proxy.factory.pool.idle_count() == 1


@pytest_twisted.ensureDeferred
async def test_large_bodies_stream_both_ways(backends, proxies):
    proxy = proxies({"web": make_pool("web", [backends[0].port])})
    body = bytes(range(256)) * 8192  # 2 MiB
    [(status, headers, answer)] = await fetch_many(proxy.port, ["/echo"], method="POST",
                                                   body=body)
    assert status == 200 and answer == body
    out, err, code = await curl(proxy.url("/bytes/3000000"))
    assert code == 0, err
    assert hashlib.sha256(out).hexdigest() == hashlib.sha256(b"x" * 3000000).hexdigest()


@pytest_twisted.ensureDeferred
async def test_access_log_names_route_and_backend(backends, proxies, reporter):
    proxy = proxies({"web": make_pool("web", [backends[0].port])})
    await fetch_many(proxy.port, ["/who"])
    record = reporter.records[-1]
    assert (record.status, record.upstream, record.extra["route"]) == (200, "web-0", "*/")


# ---- WebSocket ---------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_websocket_echo_through_the_proxy(proxies, reporter):
    port, seen = listen_websocket_echo(b"ws1")
    try:
        proxy = proxies({"ws": make_pool("ws", [port.getHost().port])})
        client = WebSocketClient(b"chat.test")
        await protocol.ClientCreator(reactor, lambda: client).connectTCP("127.0.0.1", proxy.port)
        head = await client.handshake
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"Sec-WebSocket-Accept: " in head
        from reverse_peers import ws_accept

        assert ws_accept(client.key) in head
        for text in (b"hello", b"x" * 70000, b"bye"):
            client.send_text(text)
        frames = await client.wait_frames(3)
        assert frames == [(1, b"ws1: hello"), (1, b"ws1: " + b"x" * 70000), (1, b"ws1: bye")]
        handshake = seen[0].lower()
        assert b"upgrade: websocket" in handshake and b"connection: upgrade" in handshake
        assert b"x-forwarded-for: 127.0.0.1" in handshake
        client.transport.loseConnection()
        await client.closed
        await wait_for(lambda: reporter.records and reporter.records[-1].status == 101)
        assert reporter.records[-1].ended.startswith("websocket-")
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_websocket_refused_by_backend_gets_its_answer(backends, proxies):
    proxy = proxies({"web": make_pool("web", [backends[0].port])})
    out = await raw_exchange(proxy.port, b"GET /status/403 HTTP/1.1\r\nHost: h\r\n"
                                         b"Upgrade: websocket\r\nConnection: Upgrade, close\r\n"
                                         b"Sec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n"
                                         b"\r\n")
    assert out.startswith(b"HTTP/1.1 403 ")
    assert out.endswith(b"status\n")


# ---- policy ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_policy_plugin_sees_the_routed_intent_and_can_deny(backends, proxies):
    from zope.interface import implementer

    from multiproxy.pipeline._interfaces import IPolicy
    from multiproxy.pipeline._values import ALLOW, Decision

    seen = []

    @implementer(IPolicy)
    class NoAdmin:
        def decide(self, intent):
            seen.append(intent)
            if "/admin" in intent.target:
                return Decision("deny", rule="no-admin", message="admin is internal")
            return ALLOW

    proxy = proxies({"web": make_pool("web", [backends[0].port])}, policy=NoAdmin())
    [(status, _, body)] = await fetch_many(proxy.port, ["/admin/x"], headers={"Host": "S.test"})
    assert status == 403 and b"admin is internal" in body
    assert not backends[0].hits
    [(status, _, _)] = await fetch_many(proxy.port, ["/who"], headers={"Host": "s.test:8080"})
    assert status == 200
    intent = seen[-1]
    assert (intent.kind, intent.host, intent.port, intent.scheme, intent.method) == (
        "http", "s.test", 8080, "http", "GET")
    assert intent.target == "http://s.test:8080/who"


@pytest_twisted.ensureDeferred
async def test_toml_policy_rules_and_rate_limit_apply(backends, services_from_toml):
    port = services_from_toml(f"""
[log]
access = false
[policy]
default = "allow"
[[policy.rules]]
name = "no-private"
action = "deny"
hosts = ["private.test"]
[policy.limits]
requests_per_second = 2
burst = 2

[[reverse]]
listen = "tcp:{{port}}:interface=127.0.0.1"
backends = ["http://127.0.0.1:{backends[0].port}"]
""")
    [(status, _, body)] = await fetch_many(port, ["/who"], headers={"Host": "private.test"})
    assert status == 403 and b"no-private" in body
    answers = await fetch_many(port, ["/who"] * 6, headers={"Host": "public.test"})
    statuses = [s for s, _, _ in answers]
    assert 200 in statuses and 429 in statuses
    assert "retry-after" in next(h for s, h, _ in answers if s == 429)


# ---- the shared cache on a route -------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_route_with_cache_answers_repeats_from_the_cache(backends, services_from_toml):
    port = services_from_toml(f"""
[log]
access = false
[[reverse]]
listen = "tcp:{{port}}:interface=127.0.0.1"
[[reverse.routes]]
path = "/cached"
pool = "web"
cache = true
[[reverse.routes]]
pool = "web"
[reverse.pools.web]
backends = ["http://127.0.0.1:{backends[0].port}"]
[reverse.cache]
size = "1MiB"
""")
    answers = await fetch_many(port, ["/cached/a"] * 3 + ["/who"] * 2,
                               headers={"Host": "site.test"})
    assert [(s, body) for s, _, body in answers] == [(200, b"b0")] * 5
    assert backends[0].hits.count(b"/cached/a") == 1
    assert backends[0].hits.count(b"/who") == 2
    assert "hit" in answers[2][1].get("cache-status", "").lower() or \
        answers[2][1].get("x-cache", "").upper().startswith("HIT")



@pytest_twisted.ensureDeferred
async def test_roundrobin_stays_even_when_a_refused_connect_is_retried(backends, proxies):
    # Three backends, the middle one refusing and never ejected: each request
    # that reaches it is retried once, and the retry must not advance the
    # rotation a second time (that gave 6 and 3 of 9).
    dead = NamedBackend("dead")
    dead_port = dead.start()
    await dead.stop()
    for count in (9, 30):
        pool = make_pool("web", [backends[0].port, dead_port, backends[1].port],
                         max_failures=10**6)
        proxy = proxies({"web": pool})
        answers = await fetch_many(proxy.port, ["/who"] * count, keepalive=False)
        assert {s for s, _, _ in answers} == {200}
        spread = Counter(body for _, _, body in answers)
        assert set(spread) == {b"b0", b"b1"}
        assert abs(spread[b"b0"] - spread[b"b1"]) <= 1, spread
        assert pool.backends[1].failures >= count // 3
