"""
The shared cache on a reverse-proxy route, over loopback with real clients:
targeted cache control (CDN-Cache-Control, RFC 9213) and answers from
storage while the pool's backends are stopped or ejected.
"""

from __future__ import annotations

import http.client

import pytest
import pytest_twisted
from loopback import curl
from reverse_peers import NamedBackend
from twisted.internet import defer, reactor, threads
from twisted.web import resource

from multiproxy._tablereader import TableReader
from multiproxy.reverse import reverse_config_from_table
from multiproxy.reverse._service import make_reverse_proxy


class _Fields(resource.Resource):
    """``/r/NAME``: answers ``NAME #n`` with the fields set for NAME in ``fields``."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self.hits: dict[bytes, int] = {}

    def render_GET(self, request):
        name = request.postpath[0] if request.postpath else b""
        self.hits[name] = self.hits.get(name, 0) + 1
        for key, value in self.fields.get(name, []):
            request.setHeader(key, value)
        request.setHeader(b"content-type", b"text/plain")
        return name + b" #%d" % self.hits[name]


@pytest.fixture
def origin():
    backend = NamedBackend("b0")
    fields = _Fields()
    backend.site.resource.putChild(b"r", fields)
    backend.start()
    backend.fields = fields
    yield backend
    pytest_twisted.blockon(backend.stop())


@pytest.fixture
def gateway():
    """Start a reverse proxy from a [[reverse]] table (cache on every route); yields a starter."""
    running = []

    def start(backend_port: int, cache: dict | None = None, health: dict | None = None):
        table = {
            "routes": [{"pool": "web", "cache": True}],
            "pools": {"web": {"backends": [f"http://127.0.0.1:{backend_port}"],
                              "health": {"check": "none", **(health or {})}}},
            "cache": {"size": "1MiB", **(cache or {})},
        }
        config = reverse_config_from_table(TableReader(table, "reverse[0]"))
        factory, pools, _ = make_reverse_proxy(config, reactor)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        running.append((port, factory))
        return port.getHost().port, pools["web"]

    yield start
    for port, factory in running:
        for conn in list(factory.connections):
            conn.transport.abortConnection()
        factory.pool.close_idle()
        pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


def get(port: int, *paths: str):
    """GETs over one keep-alive connection with http.client: [(status, headers, body)]."""

    def run():
        out = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            for path in paths:
                conn.request("GET", path, headers={"Host": "site.test"})
                r = conn.getresponse()
                out.append((r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()))
        finally:
            conn.close()
        return out

    return threads.deferToThread(run)


# -- targeted cache control -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_cdn_cache_control_max_age_beats_cache_control_no_store(origin, gateway):
    origin.fields.fields[b"cdn"] = [(b"CDN-Cache-Control", b"max-age=60"),
                                    (b"Cache-Control", b"no-store")]
    port, _ = gateway(origin.port)
    first, second = await get(port, "/r/cdn", "/r/cdn")
    assert first[2] == second[2] == b"cdn #1"
    assert second[1]["x-cache"] == "HIT" and int(second[1]["age"]) <= 1
    assert origin.fields.hits[b"cdn"] == 1
    # Both fields go on to the client: no-store for the caches after this one,
    # and CDN-Cache-Control for any CDN downstream (RFC 9213 3).
    assert second[1]["cache-control"] == "no-store"
    assert second[1]["cdn-cache-control"] == "max-age=60"


@pytest_twisted.ensureDeferred
async def test_cdn_cache_control_is_ignored_without_a_target_and_stripped_on_request(
        origin, gateway):
    origin.fields.fields[b"cdn"] = [(b"CDN-Cache-Control", b"max-age=60"),
                                    (b"Cache-Control", b"no-store")]
    port, _ = gateway(origin.port, cache={"targets": []})
    answers = await get(port, "/r/cdn", "/r/cdn")
    assert [body for _, _, body in answers] == [b"cdn #1", b"cdn #2"]
    port, _ = gateway(origin.port, cache={"strip_targets": True})
    url = f"http://127.0.0.1:{port}/r/cdn"
    for expected in (b"MISS", b"HIT"):
        out, err, code = await curl("--include", "-H", "Host: site.test", url)
        assert code == 0, err
        head, _, body = out.partition(b"\r\n\r\n")
        assert body == b"cdn #3" and b"X-Cache: " + expected in head
        assert b"cdn-cache-control" not in head.lower()
        assert b"Cache-Control: no-store" in head


@pytest_twisted.ensureDeferred
async def test_invalid_cdn_cache_control_falls_back_to_cache_control(origin, gateway):
    origin.fields.fields[b"bad"] = [(b"CDN-Cache-Control", b"Max-Age=60"),
                                    (b"Cache-Control", b"no-store")]
    port, _ = gateway(origin.port)
    answers = await get(port, "/r/bad", "/r/bad")
    assert [body for _, _, body in answers] == [b"bad #1", b"bad #2"]


# -- backends stopped or ejected --------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_fresh_hit_is_served_when_every_backend_is_ejected(origin, gateway):
    origin.fields.fields[b"fresh"] = [(b"Cache-Control", b"max-age=600")]
    port, pool = gateway(origin.port, health={"max_failures": 1, "backoff": 30})
    [(status, _, body)] = await get(port, "/r/fresh")
    assert (status, body) == (200, b"fresh #1")
    await origin.stop()
    [(status, headers, body)] = await get(port, "/r/other")
    assert status == 503 and b"could be reached" in body and int(headers["retry-after"]) >= 1
    assert pool.healthy() == []  # the only backend is ejected now
    hit, miss = await get(port, "/r/fresh", "/r/other")
    assert (hit[0], hit[2], hit[1]["x-cache"]) == (200, b"fresh #1", "HIT")
    assert miss[0] == 503 and b"no healthy backend in pool web" in miss[2]
    assert 1 <= int(miss[1]["retry-after"]) <= 30


@pytest_twisted.ensureDeferred
async def test_stale_if_error_is_served_when_no_backend_can_be_reached(origin, gateway):
    origin.fields.fields[b"sie"] = [(b"Cache-Control", b"max-age=0, stale-if-error=600")]
    port, pool = gateway(origin.port, health={"max_failures": 1, "backoff": 30})
    await get(port, "/r/sie")
    await origin.stop()
    # First every connect is refused, then the backend is ejected: both are
    # "the origin cannot be reached", and both get the stored copy.
    refused, ejected = await get(port, "/r/sie", "/r/sie")
    assert pool.healthy() == []
    for status, headers, body in (refused, ejected):
        assert (status, body) == (200, b"sie #1")
        assert headers["x-cache"].startswith("STALE") or "stale" in headers["cache-status"]


@pytest_twisted.ensureDeferred
async def test_stale_if_unreachable_applies_to_the_reverse_proxy_too(origin, gateway):
    origin.fields.fields[b"lm"] = [(b"Cache-Control", b"max-age=0"),
                                   (b"Last-Modified", b"Mon, 01 Jan 2024 00:00:00 GMT")]
    origin.fields.fields[b"strict"] = [(b"Cache-Control", b"max-age=0, must-revalidate"),
                                       (b"Last-Modified", b"Mon, 01 Jan 2024 00:00:00 GMT")]
    port, _ = gateway(origin.port, cache={"stale_if_unreachable": 600})
    await get(port, "/r/lm", "/r/strict")
    await origin.stop()
    lm, strict = await get(port, "/r/lm", "/r/strict")
    assert (lm[0], lm[2]) == (200, b"lm #1")
    # must-revalidate forbids it: RFC 9111 5.2.2.2 asks for 504.
    assert strict[0] == 504
