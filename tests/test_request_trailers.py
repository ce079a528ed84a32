"""
A request's trailer fields pass to an HTTP/1.1 backend in its chunked body,
from HTTP/1.1 and HTTP/2 clients (tests/test_h2_backends.py covers HTTP/2
backends); fields RFC 9110 6.5.1 keeps out of trailers are dropped.
"""

from __future__ import annotations

import socket
import threading

import h2.events
import pytest
import trustme
from h2_peers import Proxy, h2_client, read_events, start_origin

pytestmark = pytest.mark.integration


class RawOrigin:
    """Reads one request per connection up to its chunked body's end; answers with what came."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n0\r\n" not in data or not data.endswith(b"\r\n\r\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if data:  # the proxy's TCP health checks send nothing
                    self.received.append(data)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


@pytest.fixture
def proxy(tmp_path):
    origin = RawOrigin()
    running = Proxy(tmp_path, start_origin(), trustme.CA(),
                    backends=f'["http://127.0.0.1:{origin.port}"]')
    running.raw_origin = origin
    yield running
    assert "Traceback" not in running.stop()
    origin.sock.close()


def _trailer_section(received: bytes) -> bytes:
    return received.split(b"\r\n0\r\n", 1)[1]


def test_trailers_from_an_http1_client(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
        client.sendall(b"POST /a HTTP/1.1\r\nHost: site.test\r\nTransfer-Encoding: chunked\r\n"
                       b"Connection: close\r\n\r\n3\r\nabc\r\n"
                       b"0\r\nX-Checksum: 456\r\nContent-Length: 9\r\n\r\n")
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
    (received,) = proxy.raw_origin.received
    assert b"\r\n\r\n3\r\nabc\r\n0\r\n" in received
    assert _trailer_section(received) == b"X-Checksum: 456\r\n\r\n"  # Content-Length dropped


def test_trailers_from_an_http2_client(proxy):
    sock, conn = h2_client(proxy.port)
    conn.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"),
                          (b":authority", b"site.test"), (b":path", b"/b")])
    conn.send_data(1, b"abc")
    conn.send_headers(1, [(b"x-checksum", b"789")], end_stream=True)
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda seen: any(
        isinstance(e, h2.events.StreamEnded) for e in seen))
    sock.close()
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == b"ok"
    (received,) = proxy.raw_origin.received
    assert _trailer_section(received) == b"x-checksum: 789\r\n\r\n"
