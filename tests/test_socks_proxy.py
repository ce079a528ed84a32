"""The SOCKS proxy over loopback with curl as the client (bad, slow and failed
handshakes are tested in memory in tests/test_socks_handshake.py)."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time

import pytest
import pytest_twisted
from loopback import CURL, curl, origin_site, raw_exchange, wait_for
from twisted.internet import reactor

from multiproxy._tap import Options
from multiproxy.policy import make_policy_holder
from multiproxy.policy._shacrypt import sha_crypt
from multiproxy.socks import SocksProxy, SocksSettings, socks4_reply, socks5_reply

pytestmark = pytest.mark.skipif(CURL is None, reason="needs curl")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def start_socks(reporter):
    """Start a SocksProxy on 127.0.0.1 with the policy of ``twistd multiproxy socks ARGS``."""
    started = []

    def start(*args: str, settings: SocksSettings = SocksSettings(), chooser=None):
        options = Options()
        options.parseOptions(["socks", *args])
        source = options.configuration.policy
        policy = make_policy_holder(source, reactor) if source is not None else None
        factory = SocksProxy(reactor, policy=policy, reporters=(reporter,), settings=settings,
                             chooser=chooser)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        started.append(port)
        return port.getHost().port

    yield start
    for port in started:
        pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def htpasswd(tmp_path):
    path = tmp_path / "htpasswd"
    path.write_text("alice:" + sha_crypt(b"wonderland", "$5$rounds=1000$alicesalt") + "\n")
    return str(path)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("flag", ["--socks5-hostname", "--socks5", "--socks4a", "--socks4"])
@pytest_twisted.ensureDeferred
async def test_curl_fetches_through_each_socks_version(flag, start_socks, origin, reporter):
    port = start_socks()
    host = "localhost" if flag in ("--socks5-hostname", "--socks4a") else "127.0.0.1"
    out, err, code = await curl(flag, f"127.0.0.1:{port}", f"http://{host}:{origin}/bytes/1234")
    assert code == 0, err
    assert out == b"x" * 1234
    await wait_for(lambda: reporter.records)
    (record,) = reporter.records
    assert record.kind == "connect" and record.method == "CONNECT"
    assert record.target == f"{host if host != 'localhost' else 'localhost'}:{origin}"
    assert record.version == {"--socks5-hostname": "SOCKS5", "--socks5": "SOCKS5",
                              "--socks4a": "SOCKS4a", "--socks4": "SOCKS4"}[flag]
    assert record.status == 200 and record.bytes_to_client > 1234


@pytest_twisted.ensureDeferred
async def test_ipv6_literal_destination(start_socks, reporter):
    try:
        listening = reactor.listenTCP(0, origin_site(), interface="::1")
    except Exception:
        pytest.skip("no IPv6 loopback")
    try:
        port = start_socks()
        out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{port}",
                                    f"http://[::1]:{listening.getHost().port}/bytes/10")
        assert code == 0, err
        assert out == b"x" * 10
        await wait_for(lambda: reporter.records)
        assert reporter.records[0].target == f"[::1]:{listening.getHost().port}"
    finally:
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_username_and_password_from_the_htpasswd_file(start_socks, origin, htpasswd,
                                                            reporter):
    port = start_socks("--htpasswd", htpasswd)
    url = f"http://127.0.0.1:{origin}/bytes/5"
    out, err, code = await curl("--proxy", f"socks5h://alice:wonderland@127.0.0.1:{port}", url)
    assert code == 0, err
    assert out == b"xxxxx"
    out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{port}",
                                "--proxy-user", "alice:wonderland", url)
    assert code == 0, err
    out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{port}",
                                "--proxy-user", "alice:wrong", url)
    assert code != 0
    out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{port}", url)
    assert code != 0  # no credentials: the rule --htpasswd adds wants a user
    await wait_for(lambda: len(reporter.records) == 4)
    assert [r.user for r in reporter.records[:2]] == ["alice", "alice"]
    assert [r.ended for r in reporter.records[2:]] == ["auth-failed", "auth-required"]


@pytest_twisted.ensureDeferred
async def test_wrong_password_gets_the_rfc1929_failure_status(start_socks, htpasswd):
    port = start_socks("--htpasswd", htpasswd)
    answer = await raw_exchange(port, b"\x05\x01\x02" + b"\x01\x05alice\x05wrong!"[:-1])
    assert answer == b"\x05\x02\x01\x01"


@pytest_twisted.ensureDeferred
async def test_a_deny_host_rule_is_reply_0x02(start_socks, origin, reporter):
    port = start_socks("--deny-host", "localhost")
    request = (b"\x05\x01\x00\x05\x01\x00\x03\x09localhost" + struct.pack("!H", origin))
    answer = await raw_exchange(port, request)
    assert answer == b"\x05\x00" + socks5_reply(0x02)
    out, err, code = await curl("--socks5-hostname", f"127.0.0.1:{port}",
                                f"http://localhost:{origin}/")
    assert code == 97 and b"(2)" in err  # curl: "Can't complete SOCKS5 connection ... (2)"
    await wait_for(lambda: len(reporter.records) == 2)
    assert {r.ended for r in reporter.records} == {"denied"}
    assert reporter.records[0].rule == "cli-deny-host"


@pytest_twisted.ensureDeferred
async def test_socks4_deny_is_a_rejected_reply(start_socks, origin):
    port = start_socks("--deny-network", "127.0.0.0/8")
    answer = await raw_exchange(
        port, b"\x04\x01" + struct.pack("!H", origin) + socket.inet_aton("127.0.0.1") + b"\x00")
    assert answer == socks4_reply(False)


GREET = b"\x05\x01\x00"


@pytest_twisted.ensureDeferred
async def test_connection_limit_per_client(start_socks, origin, reporter):
    port = start_socks("--max-client-connections", "1")
    held = socket.create_connection(("127.0.0.1", port))
    try:
        held.sendall(GREET)
        await wait_for(lambda: True)
        answer = await raw_exchange(
            port, GREET + b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
            + struct.pack("!H", origin))
        assert answer == b"\x05\x00" + socks5_reply(2)
    finally:
        held.close()
    await wait_for(lambda: any(r.ended == "connection-limit" for r in reporter.records))


# -- twistd ------------------------------------------------------------------------------


def _free_port() -> int:
    return closed_port()


def _run_twistd(tmp_path, *args: str):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), ROOT]))
    log = open(tmp_path / "twistd.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--pidfile=", "multiproxy", *args],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )


def _wait_listening(port: int, process) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert process.poll() is None, "twistd exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("twistd never listened")


def _curl_sync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CURL, "--silent", "--show-error", "--max-time", "10", *args],
                          capture_output=True, env=dict(os.environ, no_proxy="", NO_PROXY=""))


@pytest.fixture
def sync_origin():
    """An origin in a thread of its own (the twistd tests block the test reactor)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"hello from origin"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.integration
def test_twistd_socks_subcommand_end_to_end(tmp_path, sync_origin):
    port = _free_port()
    process = _run_twistd(tmp_path, "--access-log", str(tmp_path / "access.log"), "socks",
                          "--listen", f"tcp:{port}:interface=127.0.0.1",
                          "--deny-host", "blocked.example")
    try:
        _wait_listening(port, process)
        done = _curl_sync("--socks5-hostname", f"127.0.0.1:{port}",
                          f"http://localhost:{sync_origin}/")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"hello from origin"
        denied = _curl_sync("--socks5-hostname", f"127.0.0.1:{port}", "http://blocked.example/")
        assert denied.returncode != 0
    finally:
        process.terminate()
        process.wait(10)
    log = (tmp_path / "twistd.log").read_text()
    assert "Traceback" not in log
    access = (tmp_path / "access.log").read_text()
    assert f"CONNECT localhost:{sync_origin} SOCKS5" in access
    assert "CONNECT blocked.example:80 SOCKS5" in access


@pytest.mark.integration
def test_socks_table_in_a_toml_file(tmp_path, sync_origin):
    port = _free_port()
    (tmp_path / "proxy.toml").write_text(f"""
[log]
access = "{tmp_path / 'access.log'}"

[[socks]]
name = "socks-a"
listen = ["tcp:{port}:interface=127.0.0.1"]
handshake_timeout = 5
connect_timeout = 3

[policy]
[[policy.rules]]
name = "no-blocked"
action = "deny"
hosts = ["blocked.example"]
""")
    process = _run_twistd(tmp_path, "--config", str(tmp_path / "proxy.toml"))
    try:
        _wait_listening(port, process)
        done = _curl_sync("--socks4a", f"127.0.0.1:{port}", f"http://localhost:{sync_origin}/")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"hello from origin"
        denied = _curl_sync("--socks5-hostname", f"127.0.0.1:{port}", "http://blocked.example/")
        assert denied.returncode != 0
    finally:
        process.terminate()
        process.wait(10)
    assert "Traceback" not in (tmp_path / "twistd.log").read_text()
    access = (tmp_path / "access.log").read_text()
    assert f'"CONNECT localhost:{sync_origin} SOCKS4a" 200' in access
    assert '"CONNECT blocked.example:80 SOCKS5" 403' in access and "rule=no-blocked" in access


def test_a_bad_socks_table_is_refused_naming_the_key():
    from multiproxy._config import read_configuration
    from multiproxy.pipeline._errors import ConfigError

    with pytest.raises(ConfigError, match="colour"):
        read_configuration({"socks": [{"listen": ["tcp:1080"], "colour": "blue"}]})
    with pytest.raises(ConfigError, match="connect_timeout"):
        read_configuration({"socks": [{"connect_timeout": -1}]})

