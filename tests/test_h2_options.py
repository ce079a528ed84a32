"""The HTTP/2 switches as a new user types them: twistd command-line options, real clients."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

import pytest
import trustme
from h2_peers import PREFACE, free_port, start_origin
from hyperframe.frame import SettingsFrame

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    ca = trustme.CA()
    root = tmp_path_factory.mktemp("certs")
    ca.issue_cert("site.test").private_key_and_cert_chain_pem.write_to_path(str(root / "s.pem"))
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    return root / "s.pem", root / "ca.pem"


class _Twistd:
    def __init__(self, tmp_path, *args: str, wait_for: int) -> None:
        self.log = tmp_path / "twistd.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
                 "--pidfile=", "multiproxy", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", wait_for), timeout=1).close()
                return
            except OSError:
                assert self.process.poll() is None, self.log.read_text()
                time.sleep(0.05)
        raise AssertionError(self.log.read_text())

    def stop(self) -> str:
        self.process.terminate()
        self.process.wait(20)
        return self.log.read_text()


def _alpn(port: int, cafile) -> str | None:
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_alpn_protocols(["h2", "http/1.1"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                             server_hostname="site.test") as sock:
        return sock.selected_alpn_protocol()


def _first_answer_to_the_preface(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(PREFACE + SettingsFrame(0).serialize())
        return sock.recv(4096)


@pytest.mark.parametrize("off", [False, True])
def test_reverse_http2_options(tmp_path, certs, off):
    cert, cafile = certs
    origin = start_origin()
    port, tls_port = free_port(), free_port()
    flags = ["--no-http2", "--no-http2-prior-knowledge"] if off else []
    proxy = _Twistd(tmp_path, "reverse", "--listen", f"tcp:{port}:interface=127.0.0.1",
                    "--tls-listen", f"tcp:{tls_port}:interface=127.0.0.1", "--tls-cert", str(cert),
                    "--backend", f"http://127.0.0.1:{origin.server_address[1]}", *flags,
                    wait_for=tls_port)
    try:
        assert _alpn(tls_port, cafile) == ("http/1.1" if off else "h2")
        answer = _first_answer_to_the_preface(port)
        if off:
            assert answer.startswith(b"HTTP/1.1 ")  # read as HTTP/1, and refused
        else:
            assert answer[3] == 0x4  # an HTTP/2 SETTINGS frame first (RFC 9113 3.4)
    finally:
        log = proxy.stop()
        origin.shutdown()
    assert "Traceback" not in log


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
@pytest.mark.parametrize("off", [False, True])
def test_forward_https_proxy_options(tmp_path, certs, off):
    cert, cafile = certs
    origin = start_origin()
    tls_port = free_port()
    flags = ["--no-http2"] if off else []
    proxy = _Twistd(tmp_path, "forward", "--tls-listen", f"tcp:{tls_port}:interface=127.0.0.1",
                    "--tls-cert", str(cert), "--no-cache", *flags, wait_for=tls_port)
    try:
        assert _alpn(tls_port, cafile) == ("http/1.1" if off else "h2")
        result = subprocess.run(
            ["curl", "-s", "--max-time", "10", "--proxy", f"https://site.test:{tls_port}",
             "--proxy-cacert", str(cafile), "--resolve", f"site.test:{tls_port}:127.0.0.1",
             f"http://127.0.0.1:{origin.server_address[1]}/cli"],
            capture_output=True, timeout=20)
        assert result.stdout == b"hello /cli", result.stderr
    finally:
        log = proxy.stop()
        origin.shutdown()
    assert "Traceback" not in log


def test_forward_tls_listen_without_a_certificate_is_refused_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "multiproxy", "--check", "forward", "--tls-listen",
         "tcp:0:interface=127.0.0.1"], capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert result.returncode != 0
    assert "tls_listen needs certificates" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
