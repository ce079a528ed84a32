"""
The cache store on Redis, through real processes over loopback: two
forward proxies (on 127.0.0.1 and 127.0.0.2) share one redis-server, a
response stored through one is a HIT through the other, Redis stopped
mid-test is bypassed and sharing resumes when it is back, a large body
streams out of Redis in chunks, and a foreign value under the prefix is
ignored.
"""

from __future__ import annotations

import hashlib
import re
import http.client
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tests.redis_server import RedisServer, free_port, redis_available

from multiproxy._redislink import parse_redis_url
from multiproxy.cache._redis import CHUNK_SIZE, decode_record, encode_record
from multiproxy.cache._store import StoredResponse

pytestmark = pytest.mark.integration

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
          "--pidfile="]
BIG = 6 * 1024 * 1024 + 12345


class _Origin(BaseHTTPRequestHandler):
    counts: dict[str, int] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        _Origin.counts[self.path] = _Origin.counts.get(self.path, 0) + 1
        if self.path.startswith("/slow"):
            time.sleep(0.6)
        if self.path.startswith("/big"):
            body = hashlib.sha256(b"seed").digest() * (BIG // 32) + b"e" * (BIG % 32)
        else:
            body = f"body of {self.path} #{_Origin.counts[self.path]}".encode()
        self.send_response(200)
        self.send_header("Cache-Control", "max-age=300")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    _Origin.counts = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Origin)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def redis():
    if not redis_available():
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


def _wait_listening(host: str, port: int, process, output) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(output.read_text())
        try:
            http.client.HTTPConnection(host, port, timeout=0.5).connect()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("proxy did not start")


@pytest.fixture
def proxies(redis, tmp_path):
    yield from _proxies(tmp_path, "--cache-redis", redis.url, "--max-object-size", "16MiB")


def _proxies(tmp_path, *options):
    started = []
    for n, host in enumerate(("127.0.0.1", "127.0.0.2")):
        port = free_port(host)
        out = tmp_path / f"proxy{n}.log"
        with out.open("w") as f:
            process = subprocess.Popen(
                [*TWISTD, "multiproxy", "forward", "--listen", f"tcp:{port}:interface={host}",
                 *options],
                stdout=f, stderr=subprocess.STDOUT,
            )
        started.append((host, port, process, out))
    try:
        for host, port, process, out in started:
            _wait_listening(host, port, process, out)
        _get_until_shared(started)
        yield started
    finally:
        for _, _, process, _ in started:
            process.terminate()
        for _, _, process, _ in started:
            process.wait(timeout=20)


def _get(proxy, url: str) -> tuple[int, str, bytes]:
    host, port = proxy[0], proxy[1]
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=("127.0.0.1", 0))
    try:
        conn.request("GET", url)
        response = conn.getresponse()
        return response.status, response.getheader("Cache-Status") or "", response.read()
    finally:
        conn.close()


def _get_until_shared(started) -> None:
    """Wait until both proxies see Redis (their first ping has come back)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        logs = [p[3].read_text() for p in started]
        if all("Site starting" in text or "starting on" in text for text in logs):
            time.sleep(0.3)
            return
        time.sleep(0.05)


def test_a_response_stored_through_one_host_is_a_hit_through_the_other(proxies, origin):
    a, b = proxies[0], proxies[1]
    url = f"http://127.0.0.1:{origin}/shared"
    status, cache, body = _get(a, url)
    assert (status, body) == (200, b"body of /shared #1")
    assert "fwd=uri-miss" in cache and "stored" in cache
    time.sleep(0.2)  # the record is published once its chunks are acknowledged
    status, cache, body = _get(b, url)
    assert (status, body) == (200, b"body of /shared #1")
    assert cache.startswith("multiproxy; hit")
    assert _Origin.counts["/shared"] == 1


def test_a_large_body_streams_out_of_redis_in_chunks(proxies, origin, redis):
    a, b = proxies[0], proxies[1]
    url = f"http://127.0.0.1:{origin}/big"
    status, _, first = _get(a, url)
    assert status == 200 and len(first) == BIG
    time.sleep(0.5)
    status, cache, second = _get(b, url)
    assert status == 200 and cache.startswith("multiproxy; hit")
    assert hashlib.sha256(second).digest() == hashlib.sha256(first).digest()
    assert _Origin.counts["/big"] == 1
    # The body is in Redis as bounded chunks, not one value.
    keys = redis.command(b"KEYS", b"multiproxy:c:*")
    assert keys.count(b"multiproxy:c:") == BIG // CHUNK_SIZE


def _chunk_reads(redis) -> int:
    """How many GETs (body chunks) Redis has answered."""
    stats = redis.command(b"INFO", b"commandstats")
    found = re.search(rb"cmdstat_get:calls=(\d+)", stats)
    return int(found.group(1)) if found else 0


def test_a_process_reads_a_hot_body_from_redis_once(proxies, origin, redis):
    a, b = proxies[0], proxies[1]
    url = f"http://127.0.0.1:{origin}/big"
    status, _, first = _get(a, url)
    assert status == 200
    time.sleep(0.5)
    _get(b, url)  # b reads the body's chunks from Redis ...
    before = _chunk_reads(redis)
    assert before >= BIG // CHUNK_SIZE
    status, cache, again = _get(b, url)  # ... and the next hit from its own memory
    assert status == 200 and cache.startswith("multiproxy; hit")
    assert hashlib.sha256(again).digest() == hashlib.sha256(first).digest()
    assert _chunk_reads(redis) == before


def test_redis_stopped_is_bypassed_and_sharing_resumes_when_it_is_back(proxies, origin, redis):
    a, b = proxies[0], proxies[1]
    redis.stop()
    for n in range(3):
        started = time.monotonic()
        status, cache, body = _get(a if n % 2 else b, f"http://127.0.0.1:{origin}/down")
        assert status == 200 and body == f"body of /down #{n + 1}".encode()
        assert "hit" not in cache
        assert time.monotonic() - started < 2.0
    redis.start()
    url = f"http://127.0.0.1:{origin}/back"
    deadline = time.monotonic() + 10
    while True:  # each proxy probes every second
        _get(a, url)
        time.sleep(0.2)
        _, cache, _ = _get(b, url)
        if cache.startswith("multiproxy; hit"):
            break
        assert time.monotonic() < deadline, "sharing did not resume"
        url += "x"
    for _, _, _, out in proxies:
        text = out.read_text()
        assert text.count("unavailable (") == 1, text
        assert "answers again" in text
        assert "Traceback" not in text


def test_concurrent_misses_on_two_hosts_make_one_origin_fetch(proxies, origin):
    url = f"http://127.0.0.1:{origin}/slow"
    results = []
    threads = [
        threading.Thread(target=lambda p=p: results.append(_get(p, url)))
        for p in (proxies[0], proxies[1], proxies[0], proxies[1])
    ]
    for t in threads:
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(10)
    assert [(s, b) for s, _, b in results] == [(200, b"body of /slow #1")] * 4
    assert _Origin.counts["/slow"] == 1


def test_a_foreign_value_under_the_prefix_is_ignored(proxies, origin, redis):
    a = proxies[0]
    url = f"http://127.0.0.1:{origin}/foreign"
    mkey = b"multiproxy:m:" + hashlib.sha1(url.encode()).hexdigest().encode()
    redis.command(b"HSET", mkey, b"", b"MPR1 not a record at all")
    status, cache, body = _get(a, url)
    assert (status, body) == (200, b"body of /foreign #1")
    assert "hit" not in cache


def test_a_torn_record_is_refused():
    meta = StoredResponse(b"http://x/", 200, b"OK", b"", (), 1.0, 1.0, 1.0, 0, 60.0,
                          body_length=5)
    raw = encode_record(meta, b"0" * 16, CHUNK_SIZE, 0, 99.0, b"hello")
    assert decode_record(raw)[0].url == b"http://x/"
    for torn in (raw[:-1], raw[:10], raw[:-5] + b"jello", b"XXXX" + raw[4:]):
        with pytest.raises(ValueError):
            decode_record(torn)


def test_redis_urls_are_checked():
    assert str(parse_redis_url("redis://10.0.0.1:6380/2")) == "redis://10.0.0.1:6380/2"
    assert parse_redis_url("redis://localhost").port == 6379
    for bad in ("http://x:1/0", "redis://:1/0", "redis://x:1/db"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


def test_twistd_refuses_a_malformed_redis_url():
    result = subprocess.run(
        [*TWISTD, "multiproxy", "forward", "--listen", "tcp:0:interface=127.0.0.1",
         "--cache-redis", "redis://host:notaport/0"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "--cache-redis: expected redis://HOST:PORT/DB" in result.stdout + result.stderr


def _allowed_in_one_window(started, url: str, count: int) -> int:
    while time.time() % 1.0 > 0.2:  # start just after a one-second window begins
        time.sleep(0.01)
    statuses = [_get(started[n % 2], url)[0] for n in range(count)]
    assert set(statuses) <= {200, 429}
    return statuses.count(200)


def test_the_client_rate_is_one_rate_across_hosts(redis, origin, tmp_path):
    url = f"http://127.0.0.1:{origin}/rated"
    shared = _proxies(tmp_path, "--no-cache", "--max-client-rate", "5",
                      "--limits-redis", redis.url)
    started = next(shared)
    try:
        # Per process, each of the two would let 5 through: 10 in all.
        assert 5 <= _allowed_in_one_window(started, url, 16) <= 7
        redis.stop()
        time.sleep(0.3)
        _get(started[0], url), _get(started[1], url)  # each notices Redis is gone
        time.sleep(1.1)
        assert _allowed_in_one_window(started, url, 16) >= 8  # counted per process again
        for _, _, _, out in started:
            assert "client limits are counted per process" in out.read_text()
    finally:
        shared.close()


def test_the_resp_client_parses_replies_fed_one_byte_at_a_time():
    pytest.importorskip("hiredis")
    from twisted.internet.testing import StringTransport

    from multiproxy._redislink import RedisReplyError, RedisUnavailable, RespProtocol

    protocol = RespProtocol()
    transport = StringTransport()
    protocol.makeConnection(transport)
    got, failed = [], []
    for command in (("GET", b"k"), ("HGETALL", b"h"), ("SET", b"k", 1), ("GET", b"gone")):
        protocol.execute(*command).addCallbacks(got.append, failed.append)
    assert transport.value().startswith(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*2\r\n$7\r\nHGETALL")
    for byte in b"$3\r\nabc\r\n*2\r\n$1\r\nf\r\n$0\r\n\r\n-WRONGTYPE no\r\n":
        protocol.dataReceived(bytes([byte]))
    assert got == [b"abc", [b"f", b""]]
    assert failed[0].check(RedisReplyError)
    protocol.connectionLost(None)
    assert failed[1].check(RedisUnavailable)


def test_the_client_connection_limit_is_one_count_across_hosts(redis, origin, tmp_path):
    url = f"http://127.0.0.1:{origin}/counted"
    shared = _proxies(tmp_path, "--no-cache", "--max-client-connections", "2",
                      "--limits-redis", redis.url)
    started = next(shared)
    held = []
    try:
        for _ in range(2):  # two keep-alive connections held open on the first host
            conn = http.client.HTTPConnection(started[0][0], started[0][1], timeout=10,
                                              source_address=("127.0.0.1", 0))
            conn.request("GET", url)
            response = conn.getresponse()
            response.read()
            assert response.status == 200
            held.append(conn)
        # The second host learns the fleet's count from its first connection's
        # increment (admitted: a host may admit one more than the limit) ...
        assert _get(started[1], url)[0] == 200
        time.sleep(0.3)
        # ... and then refuses: per process it would admit two.
        assert _get(started[1], url)[0] == 429
        for conn in held:
            conn.close()
        held = []
        time.sleep(0.5)
        _get(started[1], url)  # refused on stale knowledge, which it refreshes
        time.sleep(0.3)
        assert _get(started[1], url)[0] == 200
    finally:
        for conn in held:
            conn.close()
        shared.close()


def test_a_proxy_configured_by_toml_shares_with_one_configured_by_options(redis, origin,
                                                                            tmp_path):
    host_port = free_port("127.0.0.2")
    config = tmp_path / "multiproxy.toml"
    config.write_text(
        f"[[forward]]\nlisten = ['tcp:{host_port}:interface=127.0.0.2']\n"
        f"[forward.cache]\nredis = '{redis.url}'\nredis_prefix = 'fleet:'\n"
        f"redis_timeout = 0.5\n"
        f"[policy.limits]\nrequests_per_second = 1000\nredis = '{redis.url}'\n"
    )
    out = tmp_path / "toml.log"
    with out.open("w") as f:
        process = subprocess.Popen([*TWISTD, "multiproxy", "--config", str(config)],
                                   stdout=f, stderr=subprocess.STDOUT)
    try:
        _wait_listening("127.0.0.2", host_port, process, out)
        time.sleep(1.0)
        url = f"http://127.0.0.1:{origin}/toml"
        toml_proxy = ("127.0.0.2", host_port)
        assert "stored" in _get(toml_proxy, url)[1]
        time.sleep(0.2)
        assert _get(toml_proxy, url)[1].startswith("multiproxy; hit")
        assert b"fleet:m:" in redis.command(b"KEYS", b"fleet:*")
        assert b"multiproxy:r:" in redis.command(b"KEYS", b"multiproxy:r:*")
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_a_bad_redis_key_in_the_cache_table_is_refused(tmp_path):
    from multiproxy._tablereader import TableReader
    from multiproxy.cache import cache_from_table
    from multiproxy.pipeline._errors import ConfigError

    with pytest.raises(ConfigError, match=r"forward\[0\]\.cache\.redis: expected redis://"):
        cache_from_table(TableReader({"redis": "redis://x:y/0"}, "forward[0].cache"))
    with pytest.raises(ConfigError, match="cannot be used together with dir"):
        cache_from_table(TableReader({"redis": "redis://x/0", "dir": str(tmp_path)},
                                     "forward[0].cache"))
