"""
The cache in front of a real forward proxy, driven by real clients (curl,
http.client) against a local origin whose responses set the headers under test.
"""

from __future__ import annotations

import http.client
import json
import os
import socket

import pytest
import pytest_twisted
from hardening import no_tracebacks  # noqa: F401  (autouse: a logged traceback fails the test)
from loopback import curl, http_client_request
from twisted.internet import defer, reactor, task, threads
from twisted.web import resource, server

from multiproxy._accesslog import format_record_json
from multiproxy.cache import CacheConfig, DiskStore, SharedCache
from multiproxy.cache._fetcher import CachingFetcher, caching_fetcher_factory


class Scripted(resource.Resource):
    """
    An origin whose answer for ``/<name>`` is set by the test:
    ``routes[name] = (status, [(field, value)], body, delay)``; a request
    with ``If-None-Match`` matching the route's ETag gets 304.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[str, tuple] = {}
        self.seen: list[tuple[bytes, str, dict]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def render(self, request):
        name = request.path.decode().lstrip("/")
        headers = {
            k.decode().lower(): b", ".join(v).decode()
            for k, v in request.requestHeaders.getAllRawHeaders()
        }
        self.seen.append((request.method, name, headers))
        status, fields, body, delay = self.routes.get(name, (404, [], b"no such route\n", 0))
        etag = dict((k.lower(), v) for k, v in fields).get("etag")
        if etag is not None and headers.get("if-none-match") == etag:
            status, body = 304, b""
        request.setResponseCode(status)
        for k, v in fields:
            request.responseHeaders.addRawHeader(k, v)
        if callable(body):
            body = body()
        if isinstance(body, list):  # chunks written ``delay`` seconds apart
            return self._drip(request, list(body), delay)
        if not delay:
            return body
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)

        def finish():
            self.in_flight -= 1
            request.write(body)
            request.finish()

        call = reactor.callLater(delay, finish)
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return server.NOT_DONE_YET

    def _drip(self, request, chunks, delay):
        def step():
            if request.finished or getattr(request, "_disconnected", False):
                return
            if not chunks:
                request.finish()
                return
            request.write(chunks.pop(0))
            reactor.callLater(delay, step)

        request.notifyFinish().addErrback(lambda _: None)
        step()
        return server.NOT_DONE_YET

    def count(self, name: str) -> int:
        return sum(1 for _, n, _ in self.seen if n == name)


@pytest.fixture
def scripted():
    root = Scripted()
    site = server.Site(root)
    site.noisy = False
    site.log = lambda request: None
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    root.port = port.getHost().port
    root.listening = port
    yield root
    if port.connected:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def cached_proxy(start_forward):
    """Start a forward proxy with the cache in front of its pool; returns (port, CachingFetcher)."""

    def start(config: CacheConfig = CacheConfig(), store=None):
        port, factory = start_forward()
        if store is None:
            factory.fetcher = caching_fetcher_factory(config, reactor)(factory.fetcher)
        else:
            cache = SharedCache(store, config, clock=reactor.seconds)
            factory.fetcher = CachingFetcher(factory.fetcher, cache, reactor)
        factory.fetcher.proxy_factory = factory  # for tests that inspect connections
        return port, factory.fetcher

    return start


def url(origin, name):
    return f"http://127.0.0.1:{origin.port}/{name}"


def get(proxy_port, target, headers=None, method="GET"):
    return http_client_request(proxy_port, method, target, headers=headers)


def h(headers):
    return {k.lower(): v for k, v in headers}


@pytest_twisted.ensureDeferred
async def test_second_request_is_a_hit_with_age_and_logged(cached_proxy, scripted, reporter):
    scripted.routes["a"] = (
        200,
        [("Cache-Control", "max-age=3600"), ("Content-Type", "text/plain")],
        b"hello cache",
        0,
    )
    port, _ = cached_proxy()
    out1, err, code = await curl("-x", f"http://127.0.0.1:{port}", "-D", "-", url(scripted, "a"))
    assert code == 0, err
    out2, err, code = await curl("-x", f"http://127.0.0.1:{port}", "-D", "-", url(scripted, "a"))
    assert code == 0, err
    assert out1.endswith(b"hello cache") and out2.endswith(b"hello cache")
    assert b"x-cache: miss" in out1.lower() and b"x-cache: hit" in out2.lower()
    assert b"cache-status: multiproxy; hit; ttl=" in out2.lower()
    assert b"\r\nage: " in out2.lower()
    assert scripted.count("a") == 1
    assert [r.cache for r in reporter.records] == ["MISS", "HIT"]



@pytest_twisted.ensureDeferred
async def test_reporters_see_upstream_bytes_for_a_fetch_and_none_for_a_hit(
    cached_proxy, scripted, reporter
):
    body = b"b" * 1000
    scripted.routes["b"] = (200, [("Cache-Control", "max-age=3600")], body, 0)
    port, _ = cached_proxy()
    for _ in range(2):
        out, err, code = await curl("-x", f"http://127.0.0.1:{port}", url(scripted, "b"))
        assert (code, out) == (0, body), err
    fetched, hit = (json.loads(format_record_json(r)) for r in reporter.records)
    assert (fetched["cache"], hit["cache"]) == ("MISS", "HIT")
    # The origin's head and body as they came off the socket, the request as sent.
    assert len(body) < fetched["upstream_bytes_received"] < len(body) + 400
    assert fetched["upstream_bytes_sent"] > len(b"GET /b HTTP/1.1\r\nHost: \r\n\r\n")
    assert hit["upstream_bytes_received"] == hit["upstream_bytes_sent"] == 0
    assert hit["bytes_sent"] == fetched["bytes_sent"] == len(body)


@pytest_twisted.ensureDeferred
async def test_stale_entry_is_revalidated_with_a_conditional_request(cached_proxy, scripted):
    scripted.routes["v"] = (
        200,
        [("Cache-Control", "max-age=0"), ("ETag", '"v1"')],
        b"version one",
        0,
    )
    port, _ = cached_proxy()
    await get(port, url(scripted, "v"))
    status, headers, body = await get(port, url(scripted, "v"))
    assert (status, body) == (200, b"version one")
    assert h(headers)["x-cache"] == "REVALIDATED"
    assert scripted.seen[-1][2].get("if-none-match") == '"v1"'


@pytest_twisted.ensureDeferred
async def test_changed_resource_replaces_the_stored_copy(cached_proxy, scripted):
    scripted.routes["c"] = (200, [("Cache-Control", "max-age=0"), ("ETag", '"1"')], b"one", 0)
    port, _ = cached_proxy()
    await get(port, url(scripted, "c"))
    scripted.routes["c"] = (200, [("Cache-Control", "max-age=3600"), ("ETag", '"2"')], b"two", 0)
    assert (await get(port, url(scripted, "c")))[2] == b"two"
    status, headers, body = await get(port, url(scripted, "c"))
    assert body == b"two" and h(headers)["x-cache"] == "HIT"


@pytest_twisted.ensureDeferred
async def test_client_conditional_request_gets_304_from_a_fresh_entry(cached_proxy, scripted):
    scripted.routes["e"] = (200, [("Cache-Control", "max-age=3600"), ("ETag", '"abc"')], b"body", 0)
    port, _ = cached_proxy()
    await get(port, url(scripted, "e"))
    status, headers, body = await get(port, url(scripted, "e"), {"If-None-Match": '"abc"'})
    assert (status, body) == (304, b"") and h(headers)["etag"] == '"abc"'
    assert scripted.count("e") == 1


@pytest_twisted.ensureDeferred
async def test_vary_keeps_one_variant_per_language(cached_proxy, scripted):
    def negotiated():
        return scripted.seen[-1][2].get("accept-language", "none").encode()

    scripted.routes["l"] = (
        200,
        [("Cache-Control", "max-age=3600"), ("Vary", "Accept-Language")],
        negotiated,
        0,
    )
    port, _ = cached_proxy()
    assert (await get(port, url(scripted, "l"), {"Accept-Language": "en"}))[2] == b"en"
    assert (await get(port, url(scripted, "l"), {"Accept-Language": "de"}))[2] == b"de"
    status, headers, body = await get(port, url(scripted, "l"), {"Accept-Language": "en"})
    assert body == b"en" and h(headers)["x-cache"] == "HIT"
    assert scripted.count("l") == 2


@pytest_twisted.ensureDeferred
async def test_no_store_and_private_are_not_cached(cached_proxy, scripted):
    scripted.routes["n"] = (200, [("Cache-Control", "no-store")], b"secret", 0)
    scripted.routes["p"] = (200, [("Cache-Control", "private, max-age=60")], b"mine", 0)
    port, _ = cached_proxy()
    for name in ("n", "p", "n", "p"):
        await get(port, url(scripted, name))
    assert scripted.count("n") == 2 and scripted.count("p") == 2


@pytest_twisted.ensureDeferred
async def test_range_and_head_are_answered_from_a_stored_get(cached_proxy, scripted):
    scripted.routes["r"] = (200, [("Cache-Control", "max-age=3600")], b"0123456789", 0)
    port, _ = cached_proxy()
    await get(port, url(scripted, "r"))
    out, err, code = await curl(
        "-x", f"http://127.0.0.1:{port}", "-r", "2-5", "-D", "-", url(scripted, "r")
    )
    assert code == 0, err
    assert out.startswith(b"HTTP/1.1 206") and out.endswith(b"2345")
    assert b"content-range: bytes 2-5/10" in out.lower()
    out, err, code = await curl("-x", f"http://127.0.0.1:{port}", "-I", url(scripted, "r"))
    assert code == 0, err
    assert b"content-length: 10" in out.lower() and b"x-cache: hit" in out.lower()
    assert scripted.count("r") == 1


@pytest_twisted.ensureDeferred
async def test_large_response_streams_to_the_first_client_and_is_stored(cached_proxy, scripted):
    big = os.urandom(3 * 1024 * 1024)
    scripted.routes["big"] = (200, [("Cache-Control", "max-age=3600")], big, 0)
    port, _ = cached_proxy(CacheConfig(max_object_size=8 * 1024 * 1024))
    first = await get(port, url(scripted, "big"))
    second = await get(port, url(scripted, "big"))
    assert first[2] == big and second[2] == big
    assert h(second[1])["x-cache"] == "HIT" and scripted.count("big") == 1


@pytest_twisted.ensureDeferred
async def test_objects_over_the_limit_are_relayed_but_not_stored(cached_proxy, scripted):
    scripted.routes["huge"] = (200, [("Cache-Control", "max-age=3600")], b"y" * 5000, 0)
    port, fetcher = cached_proxy(CacheConfig(max_object_size=1000))
    assert (await get(port, url(scripted, "huge")))[2] == b"y" * 5000
    assert (await get(port, url(scripted, "huge")))[2] == b"y" * 5000
    assert scripted.count("huge") == 2 and fetcher.cache.store.count == 0


@pytest_twisted.ensureDeferred
async def test_concurrent_misses_are_collapsed_into_one_fetch(cached_proxy, scripted):
    scripted.routes["slow"] = (200, [("Cache-Control", "max-age=3600")], b"s" * 20000, 0.3)
    port, _ = cached_proxy()
    results = await defer.gatherResults([get(port, url(scripted, "slow")) for _ in range(6)])
    assert all(r[0] == 200 and r[2] == b"s" * 20000 for r in results)
    assert scripted.count("slow") == 1
    statuses = sorted(h(r[1])["cache-status"] for r in results)
    assert sum("collapsed" in s for s in statuses) == 5


@pytest_twisted.ensureDeferred
async def test_not_shareable_response_makes_waiters_fetch_on_their_own(cached_proxy, scripted):
    scripted.routes["mine"] = (200, [("Cache-Control", "private")], b"personal", 0.2)
    port, _ = cached_proxy()
    results = await defer.gatherResults([get(port, url(scripted, "mine")) for _ in range(3)])
    assert all(r[2] == b"personal" for r in results)
    assert scripted.count("mine") == 3
    # Now known to be unshareable, it is no longer collapsed: no waiting in line.
    scripted.most_in_flight = 0
    results = await defer.gatherResults([get(port, url(scripted, "mine")) for _ in range(3)])
    assert all(r[2] == b"personal" for r in results) and scripted.count("mine") == 6
    assert scripted.most_in_flight == 3


@pytest_twisted.ensureDeferred
async def test_dead_origin_gets_stale_if_error_answer(cached_proxy, scripted):
    scripted.routes["s"] = (
        200,
        [("Cache-Control", "max-age=0, stale-if-error=600"), ("ETag", '"s"')],
        b"still here",
        0,
    )
    port, fetcher = cached_proxy()
    await get(port, url(scripted, "s"))
    await scripted.listening.stopListening()
    fetcher.inner.pool.close_idle()
    status, headers, body = await get(port, url(scripted, "s"))
    assert (status, body) == (200, b"still here")
    assert h(headers)["x-cache"] == "STALE"


@pytest_twisted.ensureDeferred
async def test_dead_origin_without_permission_is_an_error(cached_proxy, scripted):
    scripted.routes["m"] = (
        200,
        [("Cache-Control", "max-age=0, must-revalidate"), ("ETag", '"m"')],
        b"strict",
        0,
    )
    port, fetcher = cached_proxy(CacheConfig(stale_if_unreachable=3600))
    await get(port, url(scripted, "m"))
    await scripted.listening.stopListening()
    fetcher.inner.pool.close_idle()
    status, headers, body = await get(port, url(scripted, "m"))
    assert status == 504


@pytest_twisted.ensureDeferred
async def test_origin_5xx_during_revalidation_serves_stale_if_allowed(cached_proxy, scripted):
    scripted.routes["f"] = (200, [("Cache-Control", "max-age=0, stale-if-error=600")], b"good", 0)
    port, _ = cached_proxy()
    await get(port, url(scripted, "f"))
    scripted.routes["f"] = (503, [], b"down for maintenance", 0)
    status, headers, body = await get(port, url(scripted, "f"))
    assert (status, body) == (200, b"good")
    assert "fwd-status=503" in h(headers)["cache-status"]


@pytest_twisted.ensureDeferred
async def test_only_if_cached_miss_is_504(cached_proxy, scripted):
    port, _ = cached_proxy()
    status, _, _ = await get(port, url(scripted, "none"), {"Cache-Control": "only-if-cached"})
    assert status == 504 and scripted.seen == []


@pytest_twisted.ensureDeferred
async def test_post_invalidates_the_stored_get(cached_proxy, scripted):
    scripted.routes["doc"] = (200, [("Cache-Control", "max-age=3600")], b"v", 0)
    port, _ = cached_proxy()
    await get(port, url(scripted, "doc"))
    await get(port, url(scripted, "doc"), method="POST")
    status, headers, _ = await get(port, url(scripted, "doc"))
    assert h(headers)["x-cache"] == "MISS" and scripted.count("doc") == 3


@pytest_twisted.ensureDeferred
async def test_stale_while_revalidate_answers_at_once_and_refreshes(cached_proxy, scripted):
    scripted.routes["w"] = (
        200,
        [("Cache-Control", "max-age=0, stale-while-revalidate=60"), ("ETag", '"w1"')],
        b"old",
        0,
    )
    port, _ = cached_proxy()
    await get(port, url(scripted, "w"))
    scripted.routes["w"] = (200, [("Cache-Control", "max-age=3600"), ("ETag", '"w2"')], b"new", 0)
    status, headers, body = await get(port, url(scripted, "w"))
    assert body == b"old" and h(headers)["x-cache"] == "STALE"
    for _ in range(100):
        if scripted.count("w") == 2:
            break
        await task.deferLater(reactor, 0.02, lambda: None)
    await task.deferLater(reactor, 0.05, lambda: None)
    status, headers, body = await get(port, url(scripted, "w"))
    assert body == b"new" and h(headers)["x-cache"] == "HIT"


@pytest_twisted.ensureDeferred
async def test_disk_cache_survives_a_restart_of_the_proxy(cached_proxy, scripted, tmp_path):
    scripted.routes["d"] = (200, [("Cache-Control", "max-age=3600")], b"on disk", 0)
    directory = str(tmp_path / "cache")
    port, _ = cached_proxy(store=DiskStore(directory))
    await get(port, url(scripted, "d"))
    port2, _ = cached_proxy(store=DiskStore(directory))
    status, headers, body = await get(port2, url(scripted, "d"))
    assert body == b"on disk" and h(headers)["x-cache"] == "HIT"
    assert scripted.count("d") == 1


@pytest_twisted.ensureDeferred
async def test_damaged_stored_copy_is_answered_502_not_sent_and_then_fetched_again(
    cached_proxy, scripted, tmp_path
):
    scripted.routes["d"] = (200, [("Cache-Control", "max-age=3600")], b"stored body", 0)
    directory = str(tmp_path / "cache")
    port, _ = cached_proxy(store=DiskStore(directory))
    await get(port, url(scripted, "d"))
    [path] = [os.path.join(d, f) for d, _, fs in os.walk(directory + "/data") for f in fs]
    with open(path, "r+b") as f:
        data = f.read()
        f.seek(data.index(b"stored body"))
        f.write(b"STORED")  # same length, wrong bytes: the checksum no longer holds
    status, headers, body = await get(port, url(scripted, "d"))
    assert status == 502 and b"damaged" in body and b"STORED" not in body
    status, headers, body = await get(port, url(scripted, "d"))
    assert status == 200 and body == b"stored body" and h(headers)["x-cache"] == "MISS"
    assert scripted.count("d") == 2


@pytest_twisted.ensureDeferred
async def test_slow_reader_of_a_cached_object_is_streamed_with_backpressure(cached_proxy, scripted):
    big = b"z" * (8 * 1024 * 1024)
    scripted.routes["z"] = (200, [("Cache-Control", "max-age=3600")], big, 0)
    port, fetcher = cached_proxy(CacheConfig(max_object_size=16 * 1024 * 1024, size=64 << 20))
    await get(port, url(scripted, "z"))
    stalled = threads.deferToThread  # the client reads a little, then stops for a while
    import threading

    resume = threading.Event()

    def slow_read():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        try:
            conn.request("GET", url(scripted, "z"))
            response = conn.getresponse()
            got = len(response.read(65536))
            resume.wait(10)
            while chunk := response.read(1 << 20):
                got += len(chunk)
            return response.getheader("x-cache"), got
        finally:
            conn.close()

    reading = stalled(slow_read)
    await task.deferLater(reactor, 0.5, lambda: None)
    buffered = max(
        len(c.transport.dataBuffer) + sum(len(b) for b in c.transport._tempDataBuffer)
        for c in fetcher.proxy_factory.connections
    )
    resume.set()
    x_cache, got = await reading
    assert x_cache == "HIT" and got == len(big)
    # The stalled client held back the stored body instead of it piling up in the proxy.
    assert buffered < len(big) // 2


@pytest_twisted.ensureDeferred
async def test_leader_client_leaving_mid_body_does_not_hurt_waiters_or_the_store(
    cached_proxy, scripted
):
    chunks = [bytes([65 + i]) * 50_000 for i in range(10)]
    scripted.routes["drip"] = (
        200,
        [("Cache-Control", "max-age=3600"), ("Content-Length", str(500_000))],
        chunks,
        0.05,
    )
    port, fetcher = cached_proxy()
    target = url(scripted, "drip")

    # The leader reads the head and a little body, then hangs up.
    leader = socket.create_connection(("127.0.0.1", port))
    leader.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await task.deferLater(reactor, 0.1, lambda: None)
    waiter = get(port, target)  # joins the leader's flight
    await task.deferLater(reactor, 0.1, lambda: None)
    leader.close()
    status, headers, body = await waiter
    assert status == 200 and body == b"".join(chunks)
    assert "collapsed" in h(headers)["cache-status"]
    status, headers, body = await get(port, target)
    assert h(headers)["x-cache"] == "HIT" and body == b"".join(chunks)
    assert scripted.count("drip") == 1


@pytest_twisted.ensureDeferred
async def test_client_leaving_during_a_hit_leaves_the_proxy_healthy(cached_proxy, scripted):
    big = b"q" * (2 * 1024 * 1024)
    scripted.routes["q"] = (200, [("Cache-Control", "max-age=3600")], big, 0)
    port, fetcher = cached_proxy()
    await get(port, url(scripted, "q"))
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET {url(scripted, 'q')} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await task.deferLater(reactor, 0.05, lambda: None)
        s.close()
    await task.deferLater(reactor, 0.1, lambda: None)
    status, headers, body = await get(port, url(scripted, "q"))
    assert h(headers)["x-cache"] == "HIT" and body == big
    assert not fetcher.proxy_factory.connections or all(
        c.exchange is None for c in fetcher.proxy_factory.connections
    )


@pytest_twisted.ensureDeferred
async def test_invalid_or_repeated_expires_is_never_served_fresh(cached_proxy, scripted):
    # RFC 9111 5.3 / RFC 9110 5.6.7: far-future dates in forms that are not an
    # HTTP-date, and an Expires sent twice, mean "already expired".
    far = "Sun, 06 Nov 2094 08:49:37 GMT"
    cases = {
        "dash": [("Expires", "Sun, 06-Nov-2094 08:49:37 GMT")],
        "nocomma": [("Expires", "Sun 06 Nov 2094 08:49:37 GMT")],
        "utc": [("Expires", "Sun, 06 Nov 2094 08:49:37 UTC")],
        "zero": [("Expires", "0")],
        "twice": [("Expires", far), ("Expires", far)],
        "valid": [("Expires", far)],
    }
    for name, fields in cases.items():
        scripted.routes[name] = (200, fields + [("ETag", f'"{name}"')], name.encode(), 0)
    port, _ = cached_proxy()
    for name in cases:
        for _ in range(2):
            status, headers, body = await get(port, url(scripted, name))
            assert status == 200 and body == name.encode()
        if name == "valid":
            assert h(headers)["x-cache"] == "HIT" and scripted.count(name) == 1
        else:
            assert h(headers)["x-cache"] != "HIT", name
            assert scripted.count(name) == 2, name
