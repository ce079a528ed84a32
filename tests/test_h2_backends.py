"""
HTTP/2 to the reverse proxy's backends: nginx speaking h2 in clear text and
over TLS, and a grpcio server, driven by curl, nghttp and the grpcio client
over loopback.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import sys
import time

import pytest
import trustme
from h2_backends import BIG_SIZE, HUGE_SIZE, Nginx, ScriptedBackend, start_grpc
from h2_peers import Proxy, free_port, start_origin

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not (shutil.which("nginx") or shutil.which("/usr/sbin/nginx")),
                       reason="needs nginx (.ci/run installs it)"),
]

CURL = shutil.which("curl")


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def origin():
    server = start_origin()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def nginx(ca, origin):
    server = Nginx(ca, origin.server_address[1])
    yield server
    server.stop()


@pytest.fixture
def start(tmp_path, ca, origin):
    """``start(backends, extra="")``: a reverse proxy in front of ``backends`` (TOML list)."""
    running = []

    def run(backends: str, extra: str = "") -> Proxy:
        proxy = Proxy(tmp_path, origin, ca, extra=extra, backends=backends)
        running.append(proxy)
        return proxy

    yield run
    for proxy in running:
        log = proxy.stop()
        assert "Traceback" not in log, log


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-sS", "--max-time", "20", *args], capture_output=True,
                          timeout=30)


def _who(text: bytes) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.decode().split())


def test_h2_backend_serves_http1_and_http2_clients(start, nginx):
    proxy = start(f'["h2://127.0.0.1:{nginx.port}"]')
    one = _curl("--http1.1", f"http://127.0.0.1:{proxy.port}/who")
    two = _curl("--http2-prior-knowledge", "-w", " client=%{http_version}",
                f"http://127.0.0.1:{proxy.port}/who")
    for result in (one, two):
        who = _who(result.stdout)
        assert who["proto"] == "HTTP/2.0", result
        assert who["te"] == "trailers"  # the proxy takes trailers, and says so
    assert _who(two.stdout)["client"] == "2"
    lines = proxy.access_lines(2)
    assert "HTTP/1.1\" 200" in lines[0] and "HTTP/2.0\" 200" in lines[1]
    assert f"up=h2://127.0.0.1:{nginx.port}" in lines[0]


def test_concurrent_requests_share_one_connection(start, nginx):
    proxy = start(f'["h2://127.0.0.1:{nginx.port}"]')
    urls = [f"http://127.0.0.1:{proxy.port}/who?{i}" for i in range(20)]
    # 20 HTTP/1.1 connections to the proxy at once, each one request.
    result = _curl("--http1.1", "--parallel", "--parallel-immediate", "--parallel-max", "20",
                   *urls)
    answers = [_who(line.encode()) for line in result.stdout.decode().splitlines()]
    assert len(answers) == 20
    assert len({a["conn"] for a in answers}) == 1, answers
    assert sorted(int(a["n"]) for a in answers)[-1] >= 20


def test_https_backend_with_alpn_h2(start, nginx, ca, tmp_path):
    cafile = tmp_path / "backend-ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    proxy = start(f'[{{ url = "https://127.0.0.1:{nginx.tls_port}", http2 = true, '
                  f'server_name = "backend.test", ca_file = "{cafile}" }}]')
    who = _who(_curl(f"http://127.0.0.1:{proxy.port}/who").stdout)
    assert who["proto"] == "HTTP/2.0"


def test_https_backend_that_does_not_choose_h2_is_a_clear_502(start, nginx, ca, tmp_path):
    cafile = tmp_path / "backend-ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    proxy = start(f'[{{ url = "https://127.0.0.1:{nginx.tls_h1_port}", http2 = true, '
                  f'server_name = "backend.test", ca_file = "{cafile}" }}]')
    result = _curl("-w", "%{http_code}", f"http://127.0.0.1:{proxy.port}/who")
    assert result.stdout.endswith(b"502"), result
    assert b"did not choose HTTP/2 (h2) in TLS ALPN" in result.stdout


def test_large_bodies_both_ways_under_flow_control(start, nginx, tmp_path):
    proxy = start(f'["h2://127.0.0.1:{nginx.port}"]')
    big = _curl(f"http://127.0.0.1:{proxy.port}/big")
    assert len(big.stdout) == BIG_SIZE and big.stdout == nginx.big
    upload = tmp_path / "upload"
    upload.write_bytes(bytes(range(251)) * 9000)  # 2.2 MB: many windows of 1 MiB at most
    for framing in ([], ["-H", "Transfer-Encoding: chunked"]):
        echoed = _curl("--data-binary", f"@{upload}", *framing,
                       f"http://127.0.0.1:{proxy.port}/echo")
        assert echoed.stdout == hashlib.sha256(upload.read_bytes()).hexdigest().encode()


def test_a_client_that_stops_reading_stops_the_backend_stream(start, nginx):
    """Flow control is backpressure: the proxy holds about a window, not the body."""
    from h2_peers import rss_kib

    proxy = start(f'["h2://127.0.0.1:{nginx.port}"]')
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        before = rss_kib(proxy.process.pid)
        client.sendall(b"GET /huge HTTP/1.1\r\nHost: site.test\r\n\r\n")
        time.sleep(2)  # the client reads nothing
        held = rss_kib(proxy.process.pid) - before
        # 40 MiB asked for: the proxy holds its stream window (1 MiB) and the
        # socket buffers, not the body.
        assert held < 12 * 1024, held
        got = 0
        client.settimeout(10)
        while got < HUGE_SIZE:
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
        assert got > HUGE_SIZE  # the head and the whole body, once the client reads


def test_goaway_moves_new_requests_to_a_fresh_connection(start, ca, origin):
    tired = Nginx(ca, origin.server_address[1], keepalive_requests=3)
    try:
        proxy = start(f'["h2://127.0.0.1:{tired.port}"]')
        urls = [f"http://127.0.0.1:{proxy.port}/who?{i}" for i in range(10)]
        result = _curl(*urls)  # one keep-alive client connection, one request after another
        answers = [_who(line.encode()) for line in result.stdout.decode().splitlines()]
        assert len(answers) == 10, result
        assert max(int(a["n"]) for a in answers) <= 3
        assert len({a["conn"] for a in answers}) >= 4
    finally:
        tired.stop()


@pytest.mark.parametrize("mode", ["goaway-first", "refuse-first"])
def test_requests_the_backend_never_processed_are_sent_again(start, mode):
    backend = ScriptedBackend(mode)
    try:
        proxy = start(f'["h2://127.0.0.1:{backend.port}"]')
        # A POST too (RFC 9113 8.7: a stream the server did not process may be retried).
        result = _curl("-X", "POST", "-w", " %{http_code}", f"http://127.0.0.1:{proxy.port}/p")
        assert result.stdout == b"ok /p 200", result
        first, again = backend.seen
        assert first[1] == again[1] == b"/p"
        assert (again[0] > first[0]) == (mode == "goaway-first")  # GOAWAY: a new connection
    finally:
        backend.stop()


def test_request_trailers_reach_an_h2_backend_from_http2_and_http1_clients(start):
    import h2.events
    from h2_peers import h2_client, read_events

    backend = ScriptedBackend("serve")
    try:
        proxy = start(f'["h2://127.0.0.1:{backend.port}"]')
        sock, conn = h2_client(proxy.port)
        conn.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"),
                              (b":authority", b"site.test"), (b":path", b"/t2")])
        conn.send_data(1, b"abc")
        conn.send_headers(1, [(b"x-checksum", b"123"), (b"authorization", b"no")],
                          end_stream=True)
        sock.sendall(conn.data_to_send())
        events = read_events(sock, conn, lambda seen: any(
            isinstance(e, h2.events.StreamEnded) for e in seen))
        sock.close()
        body = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
        # RFC 9110 6.5.1: a field that must not be a trailer (authorization) is dropped.
        assert body == b"ok /t2 trailers=x-checksum=123"

        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as plain:
            plain.sendall(b"POST /t1 HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                          b"0\r\nX-Checksum: 456\r\n\r\n")
            answer = b""
            while chunk := plain.recv(65536):
                answer += chunk
        assert answer.endswith(b"\r\n\r\nok /t1 trailers=x-checksum=456"), answer
    finally:
        backend.stop()


def test_an_h2_backend_that_never_answers_is_a_504(start):
    backend = ScriptedBackend("hang")
    try:
        proxy = start(f'["h2://127.0.0.1:{backend.port}"]', extra="response_timeout = 1\n")
        started = time.monotonic()
        result = _curl("-w", " %{http_code}", f"http://127.0.0.1:{proxy.port}/slow")
        assert result.stdout.endswith(b" 504"), result
        assert b"no response within 1 s" in result.stdout
        assert time.monotonic() - started < 5
        assert [path for _, path in backend.seen] == [b"/slow"]  # a GET, but not replayed
    finally:
        backend.stop()


def test_dead_h2_backend_fails_over(start, nginx):
    dead = free_port()
    proxy = start(f'["h2://127.0.0.1:{dead}", "h2://127.0.0.1:{nginx.port}"]')
    for i in range(4):
        who = _who(_curl(f"http://127.0.0.1:{proxy.port}/who?{i}").stdout)
        assert who["proto"] == "HTTP/2.0"


def test_http_health_check_speaks_http2(start, nginx):
    proxy = start(f'["h2://127.0.0.1:{nginx.port}"]\n[reverse.pools.web.health]\n'
                  'check = "http"\npath = "/health"\ninterval = 0.2\n')
    _curl(f"http://127.0.0.1:{proxy.port}/who")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        log = (nginx.root / "access.log").read_text()
        if '"GET /health HTTP/2.0" 204' in log and "multiproxy-health-check" in log:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(log[-2000:])


def test_websocket_to_an_h2_backend_is_refused_clearly(start, nginx):
    proxy = start(f'["h2://127.0.0.1:{nginx.port}"]')
    result = _curl("-w", "%{http_code}", "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
                   "-H", "Sec-WebSocket-Version: 13", "-H",
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                   f"http://127.0.0.1:{proxy.port}/ws")
    assert result.stdout.endswith(b"502")
    assert b"not supported" in result.stdout


def test_http2_option_on_a_clear_text_url_is_refused_by_check(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[[reverse]]\nlisten = ["tcp:0"]\n'
                      'backends = [{ url = "http://127.0.0.1:9000", http2 = true }]\n')
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "multiproxy", "--config", str(config), "--check"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "h2://host:port" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


# -- gRPC through the proxy ---------------------------------------------------------


@pytest.fixture
def grpc_backend():
    pytest.importorskip("grpc")
    server, port, calls = start_grpc()
    yield port, calls
    server.stop(0)


def test_grpc_unary_stream_and_status_through_the_proxy(start, grpc_backend, ca):
    import grpc

    port, calls = grpc_backend
    proxy = start(f'["h2://127.0.0.1:{port}"]')
    with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
        reply, call = channel.unary_unary("/test.Echo/Unary").with_call(b"ping", timeout=10)
        assert reply == b"echo:ping"
        assert ("x-echo-trailer", "yes") in [(m.key, m.value) for m in call.trailing_metadata()]
        parts = list(channel.unary_stream("/test.Echo/Stream")(b"q", timeout=10))
        assert parts == [b"part %d of q" % i for i in range(5)]
        with pytest.raises(grpc.RpcError) as failed:
            channel.unary_unary("/test.Echo/Fail")(b"x", timeout=10)
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    assert failed.value.details() == "no such thing"
    assert ("x-why", "on purpose") in [(m.key, m.value) for m in failed.value.trailing_metadata()]
    assert calls == ["unary", "stream", "fail"]  # each call reached the server once
    lines = proxy.access_lines(3)
    assert all('"POST /test.Echo/' in line and "HTTP/2.0\" 200" in line for line in lines)

    # Over TLS with ALPN h2 on the proxy's front end too.
    with grpc.secure_channel(
        f"127.0.0.1:{proxy.tls_port}",
        grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes()),
        options=(("grpc.ssl_target_name_override", "site.test"),),
    ) as channel:
        assert channel.unary_unary("/test.Echo/Unary")(b"tls", timeout=10) == b"echo:tls"


def test_a_grpc_call_is_never_replayed_a_get_is_once(start):
    import grpc

    backend = ScriptedBackend("drop")
    try:
        proxy = start(f'["h2://127.0.0.1:{backend.port}"]')
        with grpc.insecure_channel(f"127.0.0.1:{proxy.port}") as channel:
            with pytest.raises(grpc.RpcError) as failed:
                channel.unary_unary("/test.Echo/Unary")(b"once", timeout=10)
        # The proxy's 502 reaches the gRPC client as UNAVAILABLE (gRPC's HTTP mapping).
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
        assert [path for _, path in backend.seen] == [b"/test.Echo/Unary"]
        result = _curl("-w", "%{http_code}", f"http://127.0.0.1:{proxy.port}/page")
        assert result.stdout.endswith(b"502")
        # An idempotent GET: replayed once.
        assert [path for _, path in backend.seen[1:]] == [b"/page", b"/page"]
    finally:
        backend.stop()
