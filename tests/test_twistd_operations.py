"""
Running multiproxy as an operator does, through real twistd processes:
a graceful stop on SIGTERM, twistd's own shutdown lines, the access log
reopened on SIGUSR1 (logrotate), the JSON access log, ``--check``,
``--version`` and one-line errors for bad options and files.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.test_policy_twistd import TWISTD, free_port, listening, wait_until

import multiproxy

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="POSIX signals")


class _SlowHandler(BaseHTTPRequestHandler):
    """``/slow``: 3000 bytes sent over about 1.5 s; anything else: ``ok``."""

    def do_GET(self):  # noqa: N802
        body_parts = [b"x" * 1000] * 3 if self.path.endswith("/slow") else [b"ok"]
        self.send_response(200)
        self.send_header("Content-Length", str(sum(map(len, body_parts))))
        self.end_headers()
        for part in body_parts:
            self.wfile.write(part)
            self.wfile.flush()
            if len(body_parts) > 1:
                time.sleep(0.5)

    def log_message(self, *args):
        pass


@pytest.fixture
def origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    out = open(tmp_path / "twistd.out", "wb")
    return subprocess.Popen([*TWISTD, "multiproxy", *args], stdout=out, stderr=subprocess.STDOUT,
                            cwd=tmp_path)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def curl(proxy_port: int, url: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "15", "-x",
         f"http://127.0.0.1:{proxy_port}", *extra, url],
        capture_output=True, timeout=30,
    )


def run_twistd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*TWISTD, "multiproxy", *args], capture_output=True, text=True,
                          timeout=60, cwd=cwd)


# -- stopping ---------------------------------------------------------------------


def test_sigterm_lets_a_download_finish_logs_it_and_keeps_twistds_shutdown_lines(
        tmp_path, origin):
    port = free_port()
    process = start(tmp_path, "forward", "--listen", f"tcp:{port}:interface=127.0.0.1",
                    "--access-log", "-", "--no-cache")
    try:
        wait_until(lambda: listening(port))
        download = subprocess.Popen(
            ["curl", "--silent", "--max-time", "15", "-x", f"http://127.0.0.1:{port}",
             f"http://127.0.0.1:{origin}/slow"], stdout=subprocess.PIPE)
        time.sleep(0.5)  # the response has started
        process.send_signal(signal.SIGTERM)
        body, _ = download.communicate(timeout=20)
        assert body == b"x" * 3000, "the download in flight finished"
        # twistd ends by re-raising the signal that stopped it, as init systems expect
        assert process.wait(timeout=20) == -signal.SIGTERM
    finally:
        stop(process)
    output = (tmp_path / "twistd.out").read_text()
    assert re.search(rf'"GET http://127.0.0.1:{origin}/slow HTTP/1.1" 200 3000 ', output), output
    assert "Received SIGTERM" in output
    assert "Server Shut Down." in output, "twistd's own lines after SIGTERM are kept"
    assert "Traceback" not in output


def test_a_tunnel_past_the_shutdown_timeout_is_cut_and_the_process_ends(tmp_path, origin):
    port = free_port()
    process = start(tmp_path, "forward", "--listen", f"tcp:{port}:interface=127.0.0.1",
                    "--connect-ports", str(origin), "--shutdown-timeout", "0.5",
                    "--access-log", "none")
    try:
        wait_until(lambda: listening(port))
        tunnel = socket.create_connection(("127.0.0.1", port), timeout=10)
        tunnel.sendall(f"CONNECT 127.0.0.1:{origin} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert tunnel.recv(100).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == -signal.SIGTERM
        assert time.monotonic() - started < 10
        assert tunnel.recv(100) == b"", "the idle tunnel was closed at the deadline"
        tunnel.close()
    finally:
        stop(process)
    output = (tmp_path / "twistd.out").read_text()
    assert "still busy after 0.5 s; closing them" in output


# -- logs -------------------------------------------------------------------------


def test_sigusr1_reopens_the_access_log_after_logrotate_moved_it(tmp_path, origin):
    port = free_port()
    log = tmp_path / "access.log"
    process = start(tmp_path, "forward", "--listen", f"tcp:{port}:interface=127.0.0.1",
                    "--access-log", str(log), "--no-cache")
    try:
        wait_until(lambda: listening(port))
        assert curl(port, f"http://127.0.0.1:{origin}/before").stdout == b"ok"
        wait_until(lambda: log.exists() and "/before" in log.read_text())
        log.rename(tmp_path / "access.log.1")
        process.send_signal(signal.SIGUSR1)
        wait_until(lambda: log.exists())
        assert curl(port, f"http://127.0.0.1:{origin}/after").stdout == b"ok"
        wait_until(lambda: "/after" in log.read_text())
    finally:
        stop(process)
    assert "/after" not in (tmp_path / "access.log.1").read_text()
    assert "/before" not in log.read_text()
    assert process.returncode == -signal.SIGTERM


def test_json_access_log_after_the_subcommand_has_one_object_per_line(tmp_path, origin):
    port = free_port()
    log = tmp_path / "access.json"
    process = start(tmp_path, "forward", "--listen", f"tcp:{port}:interface=127.0.0.1",
                    "--access-log", str(log), "--access-log-format", "json", "--no-cache")
    try:
        wait_until(lambda: listening(port))
        curl(port, f"http://127.0.0.1:{origin}/a", "-A", 'agent "quoted"\u00e9')
        curl(port, "http://127.0.0.1:1/refused")
    finally:
        stop(process)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["target"] for r in records] == [
        f"http://127.0.0.1:{origin}/a", "http://127.0.0.1:1/refused"]
    first, second = records
    assert first["status"] == 200 and first["bytes_sent"] == 2 and first["method"] == "GET"
    assert first["client"] == "127.0.0.1" and first["proxy"] == "forward"
    assert first["user_agent"].startswith('agent "quoted"')
    assert first["upstream"] == f"127.0.0.1:{origin}" and first["end"] == "ok"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["status"] == 502


# -- checking and errors ------------------------------------------------------------


def _readme_toml() -> str:
    text = (ROOT / "README.md").read_text()
    return re.search(r"```toml\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "examples").glob("*.toml")))
def test_every_example_file_loads_as_shipped(name):
    result = run_twistd("--check", "--config", f"examples/{name}")
    assert result.returncode == 0, result.stderr
    assert f"examples/{name}: valid" in result.stdout


def test_the_readmes_configuration_loads_as_shipped(tmp_path):
    (tmp_path / "proxy.toml").write_text(_readme_toml())
    result = run_twistd("--check", "--config", "proxy.toml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


def test_check_refuses_what_only_building_finds_without_listening(tmp_path):
    port = free_port()
    (tmp_path / "bad.toml").write_text(
        f'[log]\naccess = "{tmp_path}/no/such/dir/access.log"\n'
        f'[[forward]]\nlisten = "tcp:{port}:interface=127.0.0.1"\n')
    result = run_twistd("--check", "--config", str(tmp_path / "bad.toml"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"twistd multiproxy: error: cannot open access log {tmp_path}/no/such/dir/access.log: "
        f"No such file or directory"]
    assert not listening(port)


@pytest.mark.parametrize(
    ("argv", "toml", "message"),
    [
        ([], '[[forward]]\nlisten = ["tcp:8080:interface=127.0.0.1", "bogus:1"]\n',
         r"bad.toml: forward\[0\]\.listen\[1\]: bad endpoint 'bogus:1': Unknown endpoint type"),
        ([], '[[forward]]\nconect_timeout = 3\n',
         r"forward\[0\]\.conect_timeout: unknown key"),
        ([], '[[reverse]]\ntls_listen = "tcp:8443"\n[reverse.tls]\ndir = "missing-certs"\n'
         '[reverse.pools.default]\nbackends = ["http://127.0.0.1:9"]\n',
         r"certificate directory 'missing-certs' does not exist"),
        ([], '[log]\nformat = "xml"\n[[forward]]\n',
         r"log\.format: must be one of combined, json; got 'xml'"),
        (["forward", "--listen", "tcp:notaport"], None, r"--listen: bad endpoint 'tcp:notaport'"),
        (["forward", "--access-log-format", "xml"], None, r"--access-log-format must be"),
        (["forward", "--no-such-option"], None, r"option --no-such-option not recognized"),
        (["reverse", "--listen", "ssl:8443:privateKey=nokey.pem"], None,
         r"--listen: bad endpoint 'ssl:8443:privateKey=nokey.pem': No such file"),
    ],
)
def test_a_bad_option_or_file_is_one_line_on_stderr_and_exit_status_1(
        tmp_path, argv, toml, message):
    if toml is not None:
        (tmp_path / "bad.toml").write_text(toml)
        argv = ["--config", "bad.toml", *argv]
    result = run_twistd(*argv, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("twistd multiproxy: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert "Usage:" not in result.stdout and "Traceback" not in result.stderr


def test_version_names_multiproxy_and_twisted():
    import twisted

    result = run_twistd("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == (
        f"multiproxy {multiproxy.__version__} (Twisted {twisted.__version__})")


def test_the_package_version_is_the_installed_distributions():
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("multiproxy")
    except PackageNotFoundError:
        pytest.skip("multiproxy is not installed, only on the path")
    assert multiproxy.__version__ == installed


def test_forward_help_lists_the_access_log_options():
    result = run_twistd("forward", "--help")
    assert "--access-log=" in result.stdout and "--access-log-format=" in result.stdout
    assert "--shutdown-timeout=" in result.stdout




@pytest.mark.parametrize("blocked, argv, extra", [
    ("hiredis", ["forward", "--cache-redis", "redis://127.0.0.1:6379/0"], "multiproxy[redis]"),
    ("bcrypt", ["forward", "--htpasswd", "users.htpasswd"], "multiproxy[auth]"),
])
def test_a_missing_optional_dependency_names_the_extra_to_install(
        tmp_path, blocked, argv, extra):
    (tmp_path / "users.htpasswd").write_text(
        "alice:$2b$04$abcdefghijklmnopqrstuu2zNwzHnW0ho9p3JhhCMuWf7XeOq4j5K\n")
    # None in sys.modules makes "import <blocked>" fail as if it were not installed.
    code = (f"import sys; sys.modules[{blocked!r}] = None; "
            "from twisted.scripts.twistd import run; run()")
    result = subprocess.run(
        [sys.executable, "-c", code, "-n", "--pidfile=", "multiproxy", "--check", *argv],
        capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert extra in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
