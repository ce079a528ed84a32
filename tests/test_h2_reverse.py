"""HTTP/2 on the reverse proxy's front end, with real clients (curl, nghttp, h2) over loopback."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import threading
import time

import h2.errors
import h2.events
import h2.settings
import pytest
import trustme
from h2_peers import BIG, Proxy, get, h2_client, read_events, start_origin

pytestmark = pytest.mark.integration

CURL = shutil.which("curl")
NGHTTP = shutil.which("nghttp")


def _curl_has_http2() -> bool:
    if CURL is None:
        return False
    return "HTTP2" in subprocess.run([CURL, "--version"], capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def proxy(tmp_path, ca):
    origin = start_origin()
    running = Proxy(tmp_path, origin, ca)
    running.origin = origin
    yield running
    log = running.stop()
    origin.shutdown()
    assert "Traceback" not in log, log


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "-s", "--max-time", "20", *args], capture_output=True,
                          timeout=30)


@pytest.mark.skipif(not _curl_has_http2(), reason="needs curl with HTTP/2")
def test_curl_with_prior_knowledge_and_over_tls_by_alpn(proxy):
    plain = _curl("--http2-prior-knowledge", "-w", "\n%{http_version}",
                  f"http://127.0.0.1:{proxy.port}/a")
    assert plain.stdout == b"hello /a\n2"
    tls = _curl("--http2", "--cacert", str(proxy.cafile), "-w", "\n%{http_version}",
                "--resolve", f"site.test:{proxy.tls_port}:127.0.0.1",
                f"https://site.test:{proxy.tls_port}/b")
    assert tls.stdout == b"hello /b\n2", tls.stderr
    # An HTTP/1.1 client on the same listeners is served as before.
    old = _curl("--http1.1", "-w", "\n%{http_version}", f"http://127.0.0.1:{proxy.port}/c")
    assert old.stdout == b"hello /c\n1.1"
    # Each stream is one exchange in the access log, with the protocol shown.
    lines = proxy.access_lines(3)
    assert sum('"GET /a HTTP/2.0" 200' in line for line in lines) == 1
    assert sum('"GET /b HTTP/2.0" 200' in line for line in lines) == 1
    assert sum('"GET /c HTTP/1.1" 200' in line for line in lines) == 1
    # The backend gets HTTP/1.1 with the :authority as Host.
    method, path, version, headers = proxy.origin.seen[0]
    assert (method, path, version) == ("GET", "/a", "HTTP/1.1")
    assert headers["host"] == f"127.0.0.1:{proxy.port}"


@pytest.mark.skipif(not _curl_has_http2(), reason="needs curl with HTTP/2")
def test_bodies_stream_both_ways_whole(proxy, tmp_path):
    got = _curl("--http2-prior-knowledge", f"http://127.0.0.1:{proxy.port}/big")
    assert hashlib.sha256(got.stdout).digest() == hashlib.sha256(BIG).digest()
    upload = tmp_path / "upload.bin"
    upload.write_bytes(BIG[: 1024 * 1024 + 7])
    sent = _curl("--http2-prior-knowledge", "--data-binary", f"@{upload}",
                 f"http://127.0.0.1:{proxy.port}/up")
    assert sent.stdout == hashlib.sha256(upload.read_bytes()).hexdigest().encode()
    head = _curl("--http2-prior-knowledge", "-I", f"http://127.0.0.1:{proxy.port}/x")
    assert head.stdout.startswith(b"HTTP/2 200") and b"content-length: 8" in head.stdout


@pytest.mark.skipif(NGHTTP is None, reason="needs nghttp (nghttp2-client)")
def test_many_streams_on_one_connection(proxy):
    urls = [f"http://127.0.0.1:{proxy.port}/s{i}" for i in range(20)]
    result = subprocess.run([NGHTTP, "-n", "-s", *urls], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    paths = sorted(p for _, p, _, _ in proxy.origin.seen)
    assert paths == sorted(f"/s{i}" for i in range(20))


def test_a_client_that_does_not_read_pauses_the_backend_instead_of_filling_memory(proxy):
    sock, conn = h2_client(proxy.port)
    conn.send_headers(1, get(b"/big"), end_stream=True)
    sock.sendall(conn.data_to_send())
    # Read the HEADERS and the first window's worth, then stop giving window back.
    events = read_events(sock, conn, lambda seen: sum(
        len(e.data) for e in seen if isinstance(e, h2.events.DataReceived)) >= 65535)
    received = sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived))
    assert received == 65535  # the initial stream window, not more
    time.sleep(1.0)
    # The rest is held by the proxy and the backend, not sent; now open the window.
    conn.increment_flow_control_window(len(BIG))
    conn.increment_flow_control_window(len(BIG), stream_id=1)
    sock.sendall(conn.data_to_send())

    def done(seen):
        return any(isinstance(e, h2.events.StreamEnded) for e in seen)

    events = read_events(sock, conn, done, timeout=20)
    for event in events:
        if isinstance(event, h2.events.DataReceived):
            conn.acknowledge_received_data(event.flow_controlled_length, 1)
    received += sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived))
    assert done(events) and received == len(BIG)
    sock.close()


def test_malformed_requests_are_refused_before_they_reach_the_backend(proxy):
    sock, conn = h2_client(proxy.port)
    # A :path with a space would be two request-line fields after translation.
    bad = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"site.test"),
           (b":path", b"/a b")]
    conn.send_headers(1, bad, end_stream=True)
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda seen: any(
        isinstance(e, (h2.events.StreamReset, h2.events.ConnectionTerminated)) for e in seen))
    reset = [e for e in events if isinstance(e, h2.events.StreamReset)]
    assert reset and reset[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    # The connection carries on: the next stream is served.
    conn.send_headers(3, get(b"/ok"), end_stream=True)
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda seen: any(
        isinstance(e, h2.events.StreamEnded) for e in seen))
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == \
        b"hello /ok"
    assert [p for _, p, _, _ in proxy.origin.seen] == ["/ok"]
    sock.close()


def test_http2_can_be_switched_off(tmp_path, ca):
    origin = start_origin()
    running = Proxy(tmp_path, origin, ca,
                     extra="http2 = false\nhttp2_prior_knowledge = false\n")
    try:
        sock, conn = h2_client(running.port)
        sock.sendall(b"")  # the preface went with the SETTINGS
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 ")  # read as HTTP/1, and refused
        sock.close()
        if _curl_has_http2():
            tls = _curl("--http2", "--cacert", str(running.cafile), "-w", "\n%{http_version}",
                        "--resolve", f"site.test:{running.tls_port}:127.0.0.1",
                        f"https://site.test:{running.tls_port}/b")
            assert tls.stdout == b"hello /b\n1.1"  # ALPN offered only http/1.1
    finally:
        running.stop()
        origin.shutdown()


def _websocket_backend():
    """A backend that completes the WebSocket handshake and echoes the bytes that follow."""
    import base64
    import socketserver

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = self.request.recv(4096)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            server.heads.append(head)
            fields = {k.strip().lower(): v.strip() for k, _, v in
                      (line.partition(b":") for line in head.split(b"\r\n")[1:])}
            accept = base64.b64encode(hashlib.sha1(
                fields[b"sec-websocket-key"] + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            self.request.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                                 b"\r\n\r\n" + rest)
            while True:
                chunk = self.request.recv(4096)
                if not chunk:
                    return
                self.request.sendall(chunk)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.heads = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_websocket_over_http2_is_an_http11_upgrade_to_the_backend(tmp_path, ca):
    backend = _websocket_backend()
    running = Proxy(tmp_path, backend, ca)
    try:
        sock, conn = h2_client(running.port)
        events = read_events(sock, conn, lambda seen: any(
            isinstance(e, h2.events.RemoteSettingsChanged) for e in seen))
        [settings] = [e for e in events if isinstance(e, h2.events.RemoteSettingsChanged)]
        assert settings.changed_settings[
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL].new_value == 1
        conn.send_headers(1, [(b":method", b"CONNECT"), (b":protocol", b"websocket"),
                              (b":scheme", b"http"), (b":authority", b"site.test"),
                              (b":path", b"/chat"), (b"sec-websocket-version", b"13")])
        sock.sendall(conn.data_to_send())
        events = read_events(sock, conn, lambda seen: any(
            isinstance(e, h2.events.ResponseReceived) for e in seen))
        [answer] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert dict(answer.headers)[b":status"] == b"200"  # RFC 8441 5
        mask = b"\x01\x02\x03\x04"
        frame = b"\x81\x85" + mask + bytes(c ^ mask[i % 4] for i, c in enumerate(b"hello"))
        conn.send_data(1, frame)
        sock.sendall(conn.data_to_send())
        events = read_events(sock, conn, lambda seen: sum(
            len(e.data) for e in seen if isinstance(e, h2.events.DataReceived)) >= len(frame))
        assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == frame
        head = backend.heads[0].lower()
        assert head.startswith(b"get /chat http/1.1")
        assert b"upgrade: websocket" in head and b"sec-websocket-key: " in head
        sock.close()
    finally:
        log = running.stop()
        backend.shutdown()
    assert "Traceback" not in log


def _trailer_backend():
    """A backend answering every request with a chunked body and trailer fields."""
    import socketserver

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = self.request.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                _, _, data = data.partition(b"\r\n\r\n")
                self.request.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/grpc\r\n"
                    b"Transfer-Encoding: chunked\r\nTrailer: grpc-status, grpc-message\r\n\r\n"
                    b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n"
                    b"content-length: 5\r\n\r\n")

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_trailers_pass_end_to_end_to_http11_and_http2_clients(tmp_path, ca):
    backend = _trailer_backend()
    running = Proxy(tmp_path, backend, ca)
    try:
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(b"GET /call HTTP/1.1\r\nHost: site.test\r\nTE: trailers\r\n"
                         b"Connection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.endswith(b"5\r\nhello\r\n0\r\ngrpc-status: 0\r\ngrpc-message: fine\r\n\r\n")
        sock, conn = h2_client(running.port)
        conn.send_headers(1, get(b"/call") + [(b"te", b"trailers")], end_stream=True)
        sock.sendall(conn.data_to_send())
        events = read_events(sock, conn, lambda seen: any(
            isinstance(e, h2.events.StreamEnded) for e in seen))
        [trailers] = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
        assert trailers.headers == [(b"grpc-status", b"0"), (b"grpc-message", b"fine")]
        assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == \
            b"hello"
        sock.close()
    finally:
        log = running.stop()
        backend.shutdown()
    assert "Traceback" not in log
