"""
HTTP/2 backends started by the tests of tests/test_h2_backends.py.

- `Nginx`: nginx speaking HTTP/2 in clear text (prior knowledge) and over
  TLS (ALPN h2; ``tls_h1_port`` is TLS with HTTP/1.1 only) on 127.0.0.1:
  ``/who`` answers with nginx's connection number, request count on it and
  protocol; ``/big`` is a static file, ``/huge`` a 40 MiB one;
  ``/echo`` goes on to an HTTP/1.1 origin (the proxy's body arrives at nginx
  over HTTP/2, then travels on).  ``keepalive_requests`` bounds the requests
  per connection, after which nginx sends GOAWAY.
- `start_grpc`: a grpcio server (HTTP/2 only) with a generic handler, no
  code generation: ``/test.Echo/Unary`` echoes, ``/test.Echo/Stream``
  answers with several messages, ``/test.Echo/Fail`` ends with NOT_FOUND and
  trailing metadata; ``calls`` counts what reached it.
- `ScriptedBackend`: an h2 server that drops requests, answers the first
  with GOAWAY or resets it with REFUSED_STREAM.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from concurrent import futures
from pathlib import Path

from h2_peers import free_port

BIG_SIZE = 3 * 1024 * 1024 + 17
HUGE_SIZE = 40 * 1024 * 1024


class Nginx:
    def __init__(self, ca, echo_port: int, keepalive_requests: int = 1000) -> None:
        self.exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.root = Path(tempfile.mkdtemp(prefix="mp-nginx-h2-"))
        os.chmod(self.root, 0o755)  # nginx workers run as an unprivileged user
        www = self.root / "www"
        www.mkdir(mode=0o755)
        self.big = bytes(range(256)) * (BIG_SIZE // 256) + b"x" * (BIG_SIZE % 256)
        (www / "big").write_bytes(self.big)
        with (www / "huge").open("wb") as huge:
            huge.truncate(HUGE_SIZE)
        cert = self.root / "site.pem"
        ca.issue_cert("backend.test").private_key_and_cert_chain_pem.write_to_path(str(cert))
        self.port, self.tls_port, self.tls_h1_port = free_port(), free_port(), free_port()
        (self.root / "nginx.conf").write_text(f"""
worker_processes 1;
daemon off;
error_log {self.root}/error.log info;
pid {self.root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log {self.root}/access.log;
    keepalive_requests {keepalive_requests};
    http2_max_concurrent_streams 128;
    client_max_body_size 64m;
    server {{
        listen 127.0.0.1:{self.port} http2;
        listen 127.0.0.1:{self.tls_port} ssl http2;
        listen 127.0.0.1:{self.tls_h1_port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {cert};
        root {www};
        location /who {{
            add_header X-Connection $connection;
            return 200 "conn=$connection n=$connection_requests proto=$server_protocol host=$host te=$http_te\\n";
        }}
        location /health {{
            return 204;
        }}
        location /echo {{
            proxy_http_version 1.1;
            proxy_pass http://127.0.0.1:{echo_port};
        }}
    }}
}}
""")
        self.process = subprocess.Popen(
            [self.exe, "-c", str(self.root / "nginx.conf"), "-p", str(self.root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nginx did not start: " + self.error_log())

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_grpc():
    """A grpcio server on 127.0.0.1 (clear text); returns (server, port, calls)."""
    import grpc

    calls: list[str] = []

    def unary(request: bytes, context) -> bytes:
        calls.append("unary")
        context.set_trailing_metadata((("x-echo-trailer", "yes"),))
        return b"echo:" + request

    def stream(request: bytes, context):
        calls.append("stream")
        for i in range(5):
            yield b"part %d of %s" % (i, request)

    def fail(request: bytes, context) -> bytes:
        calls.append("fail")
        context.set_trailing_metadata((("x-why", "on purpose"),))
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")

    handler = grpc.method_handlers_generic_handler("test.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, calls


class ScriptedBackend:
    """
    An HTTP/2 server (h2, one thread per connection) that misbehaves as told:
    ``drop`` closes the connection on every request, without answering;
    ``goaway-first`` answers the first request with GOAWAY (last stream 0:
    not processed) and closes, and serves later connections; ``refuse-first`` resets the first request with
    REFUSED_STREAM and serves the rest; ``hang`` never answers; ``serve``
    serves every request.
    Served requests get ``ok PATH``, and ``trailers=name=value,...`` when the
    request had trailer fields;
    ``seen`` lists (connection number, path) of every request that arrived.
    """

    def __init__(self, mode: str) -> None:
        import threading

        self.mode = mode
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.seen: list[tuple[int, bytes]] = []
        self._connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self._connections += 1
            threading.Thread(target=self._serve, args=(client, self._connections),
                             daemon=True).start()

    def _serve(self, client: socket.socket, number: int) -> None:
        import h2.config
        import h2.connection
        import h2.errors
        import h2.events

        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                    header_encoding=None))
        conn.initiate_connection()
        client.sendall(conn.data_to_send())
        paths: dict[int, bytes] = {}
        trailers: dict[int, list] = {}
        with client:
            while True:
                try:
                    data = client.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        paths[event.stream_id] = dict(event.headers)[b":path"]
                    elif isinstance(event, h2.events.TrailersReceived):
                        trailers[event.stream_id] = event.headers
                    elif isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length,
                                                       event.stream_id)
                    if not isinstance(event, h2.events.StreamEnded):
                        continue
                    sid = event.stream_id
                    path = paths.pop(sid)
                    first = not self.seen
                    self.seen.append((number, path))
                    if self.mode == "drop":
                        return
                    if self.mode == "hang":
                        continue
                    if self.mode == "goaway-first" and first:
                        conn.close_connection(last_stream_id=0)
                        client.sendall(conn.data_to_send())
                        return
                    if self.mode == "refuse-first" and first:
                        conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                        continue
                    body = b"ok " + path
                    if sid in trailers:
                        body += b" trailers=" + b",".join(
                            n + b"=" + v for n, v in trailers.pop(sid))
                    conn.send_headers(sid, [(b":status", b"200"),
                                            (b"content-length", b"%d" % len(body))])
                    conn.send_data(sid, body, end_stream=True)
                client.sendall(conn.data_to_send())

    def stop(self) -> None:
        self.sock.close()
