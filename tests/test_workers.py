"""``--workers N``: real master and worker processes over loopback."""

from __future__ import annotations

import http.client
import http.server
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from multiproxy._config import read_configuration
from multiproxy._tap import Options
from multiproxy._workers import describe_exit, listen_descriptions, parse_workers
from multiproxy.pipeline._errors import ConfigError

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX processes")


# -- options and file keys ------------------------------------------------------------------


def test_workers_option_and_file_key(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text('workers = 3\n[[forward]]\nlisten = ["tcp:0:interface=127.0.0.1"]\n')
    options = Options()
    options.parseOptions(["--config", str(path)])
    assert options.workers == 3
    options = Options()
    options.parseOptions(["--workers", "2", "--config", str(path)])
    assert options.workers == 2
    options = Options()
    options.parseOptions(["--workers", "auto", "forward"])
    assert options.workers == (os.cpu_count() or 1)
    options = Options()
    options.parseOptions(["forward"])
    assert options.workers == 1


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5", "100000"])
def test_bad_worker_counts_are_refused_with_a_sentence(value):
    from twisted.python import usage

    with pytest.raises(usage.UsageError, match="--workers: expected a whole number"):
        Options().parseOptions(["--workers", value, "forward"])


def test_bad_workers_key_names_the_key():
    with pytest.raises(ConfigError, match="workers: expected"):
        read_configuration({"workers": True, "forward": [{}]})
    assert parse_workers("auto") >= 1


def test_listen_descriptions_cover_every_kind_of_listener():
    configuration = read_configuration({
        "forward": [{"listen": ["tcp:0:interface=127.0.0.1", "unix:/tmp/x.sock"]}],
        "tcp": [{"name": "t", "listen": ["haproxy:tcp:0:interface=127.0.0.2"],
                 "backends": ["tcp:host=127.0.0.1:port=1"]}],
    })
    assert listen_descriptions(configuration) == [
        "tcp:0:interface=127.0.0.1", "unix:/tmp/x.sock", "tcp:0:interface=127.0.0.2"]


def test_exit_descriptions_name_the_status_or_signal():
    assert describe_exit(12, 1, None) == "pid 12 exited with status 1"
    assert describe_exit(12, None, 9) == "pid 12 was killed by signal 9 (SIGKILL)"


# -- real processes -------------------------------------------------------------------------


class _Origin(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _origin(body: bytes) -> _Origin:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):  # noqa: N802
            server.paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = _Origin(("127.0.0.1", 0), Handler)
    server.paths = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _reverse_toml(port: int, origin: _Origin, workers: int = 2) -> str:
    return (f'workers = {workers}\n[log]\naccess = false\n[[reverse]]\nname = "site"\n'
            f'listen = ["tcp:{port}:interface=127.0.0.1"]\nshutdown_timeout = 5\n'
            f'[[reverse.routes]]\npool = "web"\n[reverse.pools.web]\n'
            f'backends = ["http://127.0.0.1:{origin.server_address[1]}"]\n')


class _Master:
    """``twistd -n multiproxy`` with workers, its output in a file."""

    def __init__(self, tmp_path: Path, *args: str, path: str | None = None) -> None:
        self.log_path = tmp_path / "master.log"
        self.log_file = open(self.log_path, "wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        if path is not None:  # e.g. one where redis-server cannot be found
            env["PATH"] = path
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--pidfile=", "multiproxy", *args],
            stdout=self.log_file, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, pattern: str, count: int = 1, timeout: float = 30) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.log())
            if len(found) >= count:
                return found
            assert self.process.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError(f"no {count} x {pattern!r} in:\n{self.log()}")

    def serving(self, count: int) -> list[int]:
        return [int(p) for p in self.wait_for(r"worker \d+ \(pid (\d+)\) serving", count)]

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            self.log_file.close()


def _get(port: int, timeout: float = 10) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", "/", headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise AssertionError(f"status {response.status}: {body!r}")
        return body
    finally:
        connection.close()


class _Load:
    """A bounded client: ``threads`` loops of fresh connections until stopped (max ``seconds``)."""

    def __init__(self, port: int, threads: int = 4, seconds: float = 20) -> None:
        self.port = port
        self.bodies: list[tuple[float, bytes]] = []
        self.failures: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._deadline = time.monotonic() + seconds
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                self.bodies.append((time.monotonic(), _get(self.port)))
            except Exception as e:  # noqa: BLE001 - every failure is counted and reported
                self.failures.append((time.monotonic(), repr(e)))
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)


def test_every_worker_serves_the_one_port_and_sigterm_drains_them(tmp_path):
    origin = _origin(b"hello")
    port = _free_port()
    (tmp_path / "m.toml").write_text(_reverse_toml(port, origin, workers=2))
    master = _Master(tmp_path, "--config", "m.toml")
    try:
        pids = master.serving(2)
        assert len(set(pids)) == 2 and master.process.pid not in pids
        load = _Load(port, threads=6)
        time.sleep(2.0)
        load.stop()
        assert load.failures == []
        assert len(load.bodies) > 50
        assert {body for _, body in load.bodies} == {b"hello"}
    finally:
        status = master.stop()
        origin.shutdown()
    assert status in (0, -signal.SIGTERM), master.log()  # twistd re-raises SIGTERM
    served = [int(n) for n in re.findall(r"stopped after (\d+) connections", master.log())]
    assert len(served) == 2 and all(n > 0 for n in served), master.log()
    assert "Traceback" not in master.log()


def test_a_killed_worker_is_replaced_while_requests_keep_succeeding(tmp_path):
    origin = _origin(b"hello")
    port = _free_port()
    master = _Master(tmp_path, "--workers", "2", "--access-log", "none", "reverse",
                     "--listen", f"tcp:{port}:interface=127.0.0.1",
                     "--backend", f"http://127.0.0.1:{origin.server_address[1]}")
    try:
        pids = master.serving(2)
        load = _Load(port, threads=3)
        time.sleep(0.5)
        killed_at = time.monotonic()
        os.kill(pids[0], signal.SIGKILL)
        master.wait_for(rf"pid {pids[0]} was killed by signal 9 \(SIGKILL\)\); "
                        r"starting another in 0.5 s")
        new = master.serving(3)
        assert len(set(new)) == 3
        time.sleep(1.5)
        load.stop()
    finally:
        status = master.stop()
        origin.shutdown()
    assert status in (0, -signal.SIGTERM), master.log()  # twistd re-raises SIGTERM
    # Only requests the killed worker held at that moment (one per client thread) may fail.
    assert len(load.failures) <= 3, load.failures
    assert all(at - killed_at < 0.5 for at, _ in load.failures), load.failures
    assert sum(1 for at, _ in load.bodies if at > killed_at + 1.0) > 20


def test_sighup_swaps_backends_and_a_broken_file_is_refused_without_failures(tmp_path):
    first, second = _origin(b"first"), _origin(b"second")
    port = _free_port()
    config = tmp_path / "m.toml"
    config.write_text(_reverse_toml(port, first, workers=2))
    master = _Master(tmp_path, "--config", "m.toml")
    try:
        master.serving(2)
        load = _Load(port, threads=4)
        time.sleep(0.5)
        config.write_text(_reverse_toml(port, second, workers=2))
        master.process.send_signal(signal.SIGHUP)
        master.wait_for(r"reload: 2 new workers serving; draining 2 old ones")
        master.wait_for(r"stopped after \d+ connections", 2)
        swapped = time.monotonic()
        time.sleep(0.5)
        config.write_text("workers = 2\n[[reverse]\nlisten = nope\n")
        master.process.send_signal(signal.SIGHUP)
        master.wait_for(r"reload refused, the running workers keep serving: .*not valid TOML")
        refused = time.monotonic()
        time.sleep(0.5)
        load.stop()
    finally:
        status = master.stop()
        first.shutdown()
        second.shutdown()
    assert status in (0, -signal.SIGTERM), master.log()  # twistd re-raises SIGTERM
    assert load.failures == [], load.failures
    assert {body for at, body in load.bodies if at > swapped} == {b"second"}
    assert sum(1 for at, _ in load.bodies if at > refused) > 5
    assert len(re.findall(r"reload refused", master.log())) == 1


def test_tls_unix_and_ssl_listeners_are_served_by_workers(tmp_path):
    import ssl

    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "site.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "site.key"))
    leaf.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "both.pem"))
    origin = _origin(b"hello")
    tls_port, ssl_port, sock = _free_port(), _free_port(), tmp_path / "p.sock"
    (tmp_path / "m.toml").write_text(
        f'workers = 2\n[log]\naccess = false\n[[reverse]]\nname = "site"\n'
        f'listen = ["unix:{sock}", "ssl:{ssl_port}:interface=127.0.0.1:privateKey=both.pem"]\n'
        f'tls_listen = ["tcp:{tls_port}:interface=127.0.0.1"]\n'
        f'[reverse.tls]\ndefault = "localhost"\n'
        f'certs = [{{ cert = "site.pem", key = "site.key" }}]\n'
        f'[[reverse.routes]]\npool = "web"\n[reverse.pools.web]\n'
        f'backends = ["http://127.0.0.1:{origin.server_address[1]}"]\n')
    master = _Master(tmp_path, "--config", "m.toml")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    try:
        master.serving(2)
        for port in (tls_port, ssl_port):
            for _ in range(10):
                connection = http.client.HTTPSConnection("localhost", port, context=context,
                                                         timeout=10)
                connection.request("GET", "/", headers={"Connection": "close"})
                assert connection.getresponse().read() == b"hello"
                connection.close()
        for _ in range(10):
            with socket.socket(socket.AF_UNIX) as client:
                client.settimeout(10)
                client.connect(str(sock))
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                reply = b""
                while chunk := client.recv(65536):
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"hello")
    finally:
        status = master.stop()
        origin.shutdown()
    assert status in (0, -signal.SIGTERM), master.log()
    assert not sock.exists()  # the master removes its socket file when it stops


def test_a_disk_cache_with_several_workers_is_refused_before_listening(tmp_path):
    port = _free_port()
    result = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "multiproxy", "--workers", "2", "forward", "--cache-dir",
         str(tmp_path / "cache"), "--listen", f"tcp:{port}:interface=127.0.0.1"],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode != 0
    assert "cannot be shared by 2 worker processes" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_sigusr1_to_the_master_reopens_every_workers_access_log(tmp_path):
    origin = _origin(b"hello")
    port = _free_port()
    log = tmp_path / "access.log"
    master = _Master(tmp_path, "--workers", "2", "--access-log", str(log), "reverse",
                     "--listen", f"tcp:{port}:interface=127.0.0.1",
                     "--backend", f"http://127.0.0.1:{origin.server_address[1]}")
    try:
        master.serving(2)
        for _ in range(10):
            _get(port)
        # Each worker flushes within a second; then logrotate moves the file.
        deadline = time.monotonic() + 10
        while log.read_text().count("\n") < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        log.rename(tmp_path / "access.log.1")
        os.kill(master.process.pid, signal.SIGUSR1)
        time.sleep(0.5)
        for _ in range(20):  # fresh connections: both workers get some
            _get(port)
        deadline = time.monotonic() + 10
        while (not log.exists() or log.read_text().count("\n") < 20) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        master.stop()
        origin.shutdown()
    assert (tmp_path / "access.log.1").read_text().count("\n") == 10
    assert log.read_text().count("\n") == 20, master.log()
    assert "Traceback" not in master.log()


def _admitted(port: int, count: int) -> int:
    """Open ``count`` connections a little apart; ask on each; how many were not refused (429)."""
    socks = []
    for _ in range(count):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        time.sleep(0.05)  # long enough for a worker's count to come back from Redis
    time.sleep(0.3)
    for s in socks:
        s.sendall(b"GET / HTTP/1.1\r\nHost: site\r\n\r\n")
    answers = [s.recv(64) for s in socks]
    for s in socks:
        s.close()
    assert all(a.startswith(b"HTTP/1.1 ") for a in answers), answers
    return sum(1 for a in answers if not a.startswith(b"HTTP/1.1 429"))


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_client_limits_are_counted_once_for_all_workers_in_the_masters_redis(tmp_path):
    origin = _origin(b"hello")
    port = _free_port()
    (tmp_path / "m.toml").write_text(
        _reverse_toml(port, origin) + "[policy.limits]\nconnections_per_client = 2\n")
    master = _Master(tmp_path, "--config", "m.toml")
    try:
        master.serving(2)
        [url] = master.wait_for(
            r"share per-client limits, health, operator actions and status through (redis://127\.0\.0\.1:\d+/0)")
        admitted = []
        for _ in range(4):
            admitted.append(_admitted(port, 8))
            time.sleep(0.5)  # the closes are counted down
        # One count for the host: a worker may let through one connection of
        # a client it has not heard of yet, never the limit twice over.
        assert all(2 <= n <= 3 for n in admitted), admitted
    finally:
        master.stop()
        origin.shutdown()
    redis_port = url.rsplit(":", 1)[1].split("/")[0]
    with pytest.raises(OSError):  # the master's Redis stopped with it
        socket.create_connection(("127.0.0.1", int(redis_port)), timeout=1).close()
    assert "Traceback" not in master.log()


def _health_probes(tmp_path: Path, origin: _Origin, dead: int, **master) -> tuple:
    """Probes of ``origin`` in 2 s from a 2-worker master, 20 answers, the master's log."""
    tmp_path.mkdir(exist_ok=True)
    port = _free_port()
    (tmp_path / "m.toml").write_text(
        f'workers = 2\n[log]\naccess = false\n[[reverse]]\nname = "site"\n'
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\nshutdown_timeout = 5\n'
        f'[[reverse.routes]]\npool = "web"\n[reverse.pools.web]\n'
        f'backends = ["http://127.0.0.1:{origin.server_address[1]}", '
        f'"http://127.0.0.1:{dead}"]\n'
        f'[reverse.pools.web.health]\ncheck = "http"\npath = "/healthz"\ninterval = 0.2\n'
        f'fall = 1\nrise = 1\n')
    process = _Master(tmp_path, "--config", "m.toml", **master)
    try:
        process.serving(2)
        time.sleep(1.0)  # both workers have started probing or following
        before = origin.paths.count("/healthz")
        time.sleep(2.0)
        probes = origin.paths.count("/healthz") - before
        # The dead backend is down in both workers: no request tries it first.
        answers = [_get(port) for _ in range(20)]
    finally:
        process.stop()
    return probes, answers, process.log()


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_one_worker_at_a_time_probes_a_pool_and_every_worker_takes_its_verdicts(tmp_path):
    origin = _origin(b"hello")
    dead = _free_port()
    try:
        # The same two workers, first where the master finds no redis-server.
        alone, _, alone_log = _health_probes(tmp_path / "alone", origin, dead, path="")
        shared, answers, log = _health_probes(tmp_path / "shared", origin, dead)
    finally:
        origin.shutdown()
    assert "redis-server is not installed" in alone_log
    assert "share per-client limits, health, operator actions and status through redis://" in log
    # One prober: about one probe per interval (2 s / 0.2 s), not one per worker.
    assert 5 <= shared <= 0.7 * alone, (shared, alone)
    assert answers == [b"hello"] * 20
    # Said once by the prober (twice at most: before the workers reach their
    # Redis, each probes the first round itself).
    assert log.count("backend http://127.0.0.1:%d is down" % dead) <= 2
    assert "Traceback" not in log + alone_log


def _status(port: int) -> dict:
    import json

    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/status.json", headers={"Connection": "close"})
        return json.loads(connection.getresponse().read())
    finally:
        connection.close()


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")
def test_the_workers_act_as_one_for_ejections_operator_actions_and_the_status_page(tmp_path):
    first, second = _origin(b"one"), _origin(b"two")
    dead = _free_port()
    port, status = _free_port(), _free_port()
    (tmp_path / "m.toml").write_text(
        f'workers = 2\n[log]\naccess = false\n[[reverse]]\nname = "site"\n'
        f'listen = ["tcp:{port}:interface=127.0.0.1"]\nshutdown_timeout = 5\n'
        f'status_listen = "tcp:{status}:interface=127.0.0.1"\nstatus_token = "secret-token"\n'
        f'[[reverse.routes]]\npool = "web"\n[reverse.pools.web]\n'
        f'backends = ["http://127.0.0.1:{first.server_address[1]}", '
        f'"http://127.0.0.1:{second.server_address[1]}", "http://127.0.0.1:{dead}"]\n'
        f'[reverse.pools.web.health]\ncheck = "none"\nmax_failures = 3\nbackoff = 60\n')
    master = _Master(tmp_path, "--config", "m.toml")
    try:
        master.serving(2)
        master.wait_for(r"the workers share .* through redis://")
        time.sleep(1.5)  # both workers have reached the master's Redis
        answers = [_get(port) for _ in range(30)]
        time.sleep(1.5)  # every worker has reported since
        views = [_status(status) for _ in range(6)]  # whichever worker accepts each
        connection = http.client.HTTPConnection("127.0.0.1", status, timeout=10)
        connection.request("POST", "/admin?pool=web&backend=http://127.0.0.1:%d&action=drain"
                           % second.server_address[1],
                           headers={"Authorization": "Bearer secret-token"})
        assert connection.getresponse().status == 303
        connection.close()
        time.sleep(1.5)  # the other worker has read the action
        drained = [_get(port) for _ in range(20)]
    finally:
        master.stop()
        first.shutdown()
        second.shutdown()
    assert set(answers) == {b"one", b"two"}  # the dead backend's failures were retried
    for view in views:
        assert len(view["workers"]) == 2, view
        assert view["traffic"]["finished"] == 30
        [pool] = view["pools"]
        down = next(b for b in pool["backends"] if b["name"].endswith(f":{dead}"))
        # Three failures on the host eject it for both workers (alone, each would
        # need three); a worker may begin one more before it hears.
        assert down["state"] == "ejected" and 3 <= down["connect_failures"] <= 4, down
    assert set(drained) == {b"one"}
    assert "Traceback" not in master.log()
