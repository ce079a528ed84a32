"""
Loopback peers for the HTTP/2 front-end tests (tests/test_h2_*.py).

- `start_origin`: a threaded HTTP/1.1 origin on 127.0.0.1 that records what
  reached it (``seen``): ``/big`` is `BIG`, ``/huge`` is `HUGE_SIZE` bytes,
  ``/slow`` answers after a second, ``/hold`` waits until ``release`` is
  set (ten seconds at most); anything else is ``hello PATH``.
- `Proxy`: ``twistd multiproxy`` with a reverse proxy, plain and TLS, in
  front of an origin, its access log and twistd log in files.
- `h2_client`, `read_events`, `get`: a client speaking h2 (the python-hyper
  library) over a socket; `RawClient`: one that writes frames as they are
  given (hyperframe), to do what a well-behaved library refuses to.
- `rss_kib`, `peak_rss_kib`, `reset_peak_rss`: a process's memory from /proc.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import h2.config
import h2.connection
import hyperframe.frame
import trustme

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
BIG = hashlib.sha256(b"seed").digest() * (3 * 1024 * 1024 // 32)
HUGE_SIZE = 20 * 1024 * 1024
_MIB = b"z" * (1024 * 1024)


class Origin(http.server.ThreadingHTTPServer):
    """What the proxy forwards to; ``seen`` holds (method, path, version, headers)."""

    daemon_threads = True
    request_queue_size = 512  # a proxy opening 200 connections at once is not refused
    seen: list
    release: threading.Event


def start_origin() -> Origin:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, body: bytes, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "keep-alive")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _huge(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(HUGE_SIZE))
            self.end_headers()
            try:
                for _ in range(HUGE_SIZE // len(_MIB)):
                    self.wfile.write(_MIB)
            except OSError:
                pass  # the proxy gave up on it

        def do_GET(self):  # noqa: N802
            server.seen.append((self.command, self.path, self.request_version,
                                {k.lower(): v for k, v in self.headers.items()}))
            if self.path == "/huge":
                self._huge()
                return
            if self.path == "/slow":
                time.sleep(1.0)
            elif self.path == "/hold":
                server.release.wait(10)
            self._send(BIG if self.path == "/big" else b"hello " + self.path.encode())

        do_HEAD = do_GET

        def do_POST(self):  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            if self.headers.get("Transfer-Encoding") == "chunked":
                body = b""
                while True:
                    line = self.rfile.readline().strip()
                    if not line:
                        return  # the proxy gave up on it
                    size = int(line, 16)
                    if not size:
                        self.rfile.readline()
                        break
                    body += self.rfile.read(size)
                    self.rfile.readline()
            else:
                body = self.rfile.read(length)
            server.seen.append(("POST", self.path, self.request_version,
                                {k.lower(): v for k, v in self.headers.items()}))
            self._send(hashlib.sha256(body).hexdigest().encode())

        def log_message(self, *args):
            pass

    server = Origin(("127.0.0.1", 0), Handler)
    server.seen = []
    server.release = threading.Event()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proxy:
    """
    ``twistd multiproxy`` with a reverse proxy, plain and TLS, access log to
    a file; ``extra`` is TOML added to its ``[[reverse]]`` table, ``backends``
    the pool's list (TOML; default: the origin).
    """

    def __init__(self, tmp_path: Path, origin: Origin, ca: trustme.CA, extra: str = "",
                 backends: str | None = None) -> None:
        if backends is None:
            backends = f'["http://127.0.0.1:{origin.server_address[1]}"]'
        self.port, self.tls_port = free_port(), free_port()
        cert = tmp_path / "site.pem"
        ca.issue_cert("site.test").private_key_and_cert_chain_pem.write_to_path(str(cert))
        self.cafile = tmp_path / "ca.pem"
        ca.cert_pem.write_to_path(str(self.cafile))
        self.access = tmp_path / "access.log"
        (tmp_path / "p.toml").write_text(
            f'[log]\naccess = "{self.access}"\n[[reverse]]\nname = "site"\n'
            f'listen = ["tcp:{self.port}:interface=127.0.0.1"]\n'
            f'tls_listen = ["tcp:{self.tls_port}:interface=127.0.0.1"]\n{extra}'
            f'[reverse.tls]\ncerts = [{{ cert = "{cert}" }}]\n'
            f'[[reverse.routes]]\npool = "web"\n[reverse.pools.web]\n'
            f'backends = {backends}\n')
        self.log = tmp_path / "twistd.log"
        self.terminated = False
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                 "--pidfile=", "multiproxy", "--config", str(tmp_path / "p.toml")],
                stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.tls_port), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, self.log.read_text()
                time.sleep(0.05)
        raise AssertionError(self.log.read_text())

    def access_lines(self, count: int) -> list[str]:
        """The access log once it holds ``count`` lines (it is written in batches)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            lines = self.access.read_text().splitlines() if self.access.exists() else []
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        raise AssertionError(f"fewer than {count} access log lines")

    def terminate(self) -> None:
        """SIGTERM, once: a second one while twistd shuts down is an error of its own."""
        if self.process.poll() is None and not self.terminated:
            self.terminated = True
            self.process.terminate()

    def stop(self) -> str:
        self.terminate()
        self.process.wait(20)
        return self.log.read_text()


def h2_client(port: int):
    """A socket to ``port`` and a client `H2Connection` that has sent its preface."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding=None))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn


def read_events(sock, conn, until, timeout: float = 10.0) -> list:
    """Read until ``until(events)`` is true (or the connection ends)."""
    seen: list = []
    deadline = time.monotonic() + timeout
    while not until(seen) and time.monotonic() < deadline:
        data = sock.recv(65536)
        if not data:
            break
        seen += conn.receive_data(data)
        out = conn.data_to_send()
        if out:
            sock.sendall(out)
    return seen


def get(path: bytes, authority: bytes = b"site.test") -> list:
    return [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority),
            (b":path", path)]


class RawClient:
    """
    An HTTP/2 client that sends the frames it is given and parses what comes
    back into hyperframe frames; it answers nothing by itself.
    """

    def __init__(self, port: int, settings: dict[int, int] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        first = hyperframe.frame.SettingsFrame(0)
        first.settings = dict(settings or {})
        self.sock.sendall(PREFACE + first.serialize())
        self.frames: list = []
        self.closed = False
        self._buffer = b""

    def send(self, *frames) -> bool:
        """Send ``frames``; False when the proxy has closed the connection."""
        try:
            self.sock.sendall(b"".join(f if isinstance(f, bytes) else f.serialize()
                                       for f in frames))
            return True
        except OSError:
            return False

    def read(self, until, timeout: float = 10.0) -> list:
        """Frames received until ``until(frames)`` is true, the proxy closes, or ``timeout``."""
        deadline = time.monotonic() + timeout
        while not until(self.frames) and not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(262144)
            except socket.timeout:
                break
            except OSError:
                data = b""
            if not data:
                self.closed = True
                break
            self._buffer += data
            while len(self._buffer) >= 9:
                frame, length = hyperframe.frame.Frame.parse_frame_header(
                    memoryview(self._buffer[:9]))
                if len(self._buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(self._buffer[9:9 + length]))
                self._buffer = self._buffer[9 + length:]
                self.frames.append(frame)
        return self.frames

    def goaway(self):
        """The GOAWAY frame received, if any."""
        return next((f for f in self.frames if isinstance(f, hyperframe.frame.GoAwayFrame)),
                    None)

    def close(self) -> None:
        self.sock.close()


def has_goaway(frames) -> bool:
    return any(isinstance(f, hyperframe.frame.GoAwayFrame) for f in frames)


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} for {pid}")


def rss_kib(pid: int) -> int:
    """Resident memory of process ``pid`` now, in KiB."""
    return _status_kib(pid, "VmRSS")


def peak_rss_kib(pid: int) -> int:
    """The most resident memory of ``pid`` since start or since `reset_peak_rss`, in KiB."""
    return _status_kib(pid, "VmHWM")


def reset_peak_rss(pid: int) -> None:
    """Start ``pid``'s peak resident memory again from its current figure (Linux 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
