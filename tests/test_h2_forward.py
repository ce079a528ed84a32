"""The forward proxy as an HTTPS proxy (tls_listen): HTTP/1.1 and HTTP/2 clients, CONNECT over HTTP/2."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

import h2.config
import h2.connection
import h2.events
import pytest
import trustme
from h2_peers import free_port, read_events, start_origin

pytestmark = pytest.mark.integration


@pytest.fixture
def https_proxy(tmp_path):
    ca = trustme.CA()
    cert = tmp_path / "proxy.pem"
    ca.issue_cert("proxy.test").private_key_and_cert_chain_pem.write_to_path(str(cert))
    cafile = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    origin = start_origin()
    port = free_port()
    access = tmp_path / "access.log"
    (tmp_path / "p.toml").write_text(
        f'[log]\naccess = "{access}"\n[[forward]]\nname = "out"\n'
        f'tls_listen = ["tcp:{port}:interface=127.0.0.1"]\n'
        f'connect_ports = [{origin.server_address[1]}]\n'
        f'[forward.tls]\ncerts = [{{ cert = "{cert}" }}]\n[forward.cache]\nenabled = false\n')
    log = tmp_path / "twistd.log"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "multiproxy", "--config", str(tmp_path / "p.toml")],
            stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)
    yield port, cafile, origin, access
    process.terminate()
    process.wait(20)
    origin.shutdown()
    assert "Traceback" not in log.read_text()


def _tls_h2(port: int, cafile):
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_alpn_protocols(["h2", "http/1.1"])
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                               server_hostname="proxy.test")
    assert sock.selected_alpn_protocol() == "h2"
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_an_http1_client_reaches_the_proxy_over_tls(https_proxy):
    port, cafile, origin, _ = https_proxy
    url = f"http://127.0.0.1:{origin.server_address[1]}/plain"
    result = subprocess.run(
        ["curl", "-s", "--max-time", "10", "--proxy", f"https://proxy.test:{port}",
         "--proxy-cacert", str(cafile), "--resolve", f"proxy.test:{port}:127.0.0.1", url],
        capture_output=True, timeout=20)
    assert result.stdout == b"hello /plain", result.stderr


def test_http2_requests_and_a_connect_tunnel_over_one_tls_connection(https_proxy):
    port, cafile, origin, access = https_proxy
    authority = f"127.0.0.1:{origin.server_address[1]}".encode()
    sock, conn = _tls_h2(port, cafile)
    conn.send_headers(1, [(b":method", b"GET"), (b":scheme", b"http"),
                          (b":authority", authority), (b":path", b"/via-h2")], end_stream=True)
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda seen: any(
        isinstance(e, h2.events.StreamEnded) and e.stream_id == 1 for e in seen))
    assert b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived)) == \
        b"hello /via-h2"
    # RFC 9113 8.5: CONNECT with only :method and :authority opens a tunnel.
    conn.send_headers(3, [(b":method", b"CONNECT"), (b":authority", authority)])
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda seen: any(
        isinstance(e, h2.events.ResponseReceived) for e in seen))
    [answer] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert dict(answer.headers)[b":status"] == b"200"
    request = b"GET /in-tunnel HTTP/1.1\r\nHost: origin\r\nConnection: close\r\n\r\n"
    conn.send_data(3, request, end_stream=True)  # half-close: the client is done sending
    sock.sendall(conn.data_to_send())
    events = read_events(sock, conn, lambda seen: any(
        isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) for e in seen))
    data = b"".join(e.data for e in events if isinstance(e, h2.events.DataReceived))
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello /in-tunnel")
    assert any(isinstance(e, h2.events.StreamEnded) for e in events)
    sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = access.read_text().splitlines() if access.exists() else []
        if len(lines) >= 2:
            break
        time.sleep(0.05)
    assert any('"GET http://%s/via-h2 HTTP/2.0" 200' % authority.decode() in line
               for line in lines), lines
    tunnel = [line for line in lines if '"CONNECT %s HTTP/2.0" 200' % authority.decode() in line]
    assert tunnel and "end=done" in tunnel[0], lines  # both sides closed, in order
