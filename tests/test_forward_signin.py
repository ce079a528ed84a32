"""
Authentication a browser can answer, through twistd with the bundled
work-hours example: a request that signing in would allow is challenged with
407 and ``Proxy-Authenticate`` (CONNECT included), wrong passwords too, failed
sign-ins are rate-limited per client address, and a request denied whoever
asks keeps its 403 page.  Driven with curl and headless Chromium.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from tests.test_policy_twistd import TWISTD, free_port, listening, wait_until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "work_hours.toml"
REALM = 'Basic realm="Example Corp proxy"'


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from the origin\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def origin_port():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def example_config(tmp: Path, port: int) -> str:
    """The bundled example, its block made to apply to loopback at any hour."""
    text = EXAMPLE.read_text()
    text = re.sub(r'^(days|hours) = .*\n', "", text, flags=re.M)
    text = re.sub(r'^hosts = \[".facebook.com".*$', 'hosts = ["127.0.0.1"]', text, flags=re.M)
    text = text.replace('listen = ["tcp:8080:interface=127.0.0.1"]',
                        f'listen = ["tcp:{port}:interface=127.0.0.1"]')
    text = text.replace('access = "-"', f'access = "{tmp / "access.log"}"')
    text = text.replace('realm = "Example Corp proxy"',
                        'realm = "Example Corp proxy"\nmax_failures = 3')
    # A request refused whoever asks: before the staff exemption.
    text = text.replace('[[policy.rules]]\nname = "staff-exempt"',
                        '[[policy.rules]]\nname = "never"\naction = "deny"\n'
                        'hosts = ["blocked.test"]\n\n[[policy.rules]]\nname = "staff-exempt"', 1)
    assert 'hosts = ["127.0.0.1"]' in text and "\ndays = " not in text
    path = tmp / "work_hours.toml"
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signin")
    port = free_port()
    config = example_config(tmp, port)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    process = subprocess.Popen(
        TWISTD + ["--logfile", str(tmp / "twistd.log"), "multiproxy", "--config", config],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: listening(port) or process.poll() is not None)
        assert process.poll() is None, (tmp / "twistd.log").read_text()
        yield port, tmp / "access.log"
    finally:
        process.terminate()
        process.wait(10)


def curl(port: int, *args: str) -> tuple[str, str]:
    """(status line and headers of the proxy's answer, body) via ``curl -x``."""
    result = subprocess.run(
        ["curl", "--silent", "--max-time", "10", "-D", "-", "-x", f"http://127.0.0.1:{port}",
         *args], capture_output=True, text=True, timeout=20,
    )
    head, _, body = result.stdout.partition("\n\n")
    return head, body


def test_anonymous_request_that_signing_in_would_allow_is_challenged(proxy, origin_port):
    port, _ = proxy
    head, body = curl(port, f"http://127.0.0.1:{origin_port}/")
    assert head.startswith("HTTP/1.1 407 ")
    assert f"Proxy-Authenticate: {REALM}" in head
    assert "Social media is blocked during work hours" in body


def test_wrong_password_is_challenged_not_treated_as_anonymous(proxy, origin_port):
    port, _ = proxy
    head, _ = curl(port, "--proxy-user", "alice:wrong", "--interface", "127.0.0.3",
                   f"http://127.0.0.1:{origin_port}/")
    assert head.startswith("HTTP/1.1 407 ") and REALM in head


def test_right_password_reaches_the_origin(proxy, origin_port):
    port, _ = proxy
    head, body = curl(port, "--proxy-user", "alice:wonderland",
                      f"http://127.0.0.1:{origin_port}/")
    assert head.startswith("HTTP/1.1 200 ") and body == "hello from the origin\n"


def test_connect_is_challenged_too(proxy):
    port, _ = proxy
    result = subprocess.run(
        ["curl", "--silent", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_connect}",
         "-p", "-x", f"http://127.0.0.1:{port}", "http://127.0.0.1:443/"],
        capture_output=True, text=True, timeout=20,
    )
    assert result.stdout == "407"
    head, _ = curl(port, "-p", "--proxy-user", "bob:wrong", "--interface", "127.0.0.4",
                   "http://127.0.0.1:443/")
    assert head.startswith("HTTP/1.1 407 ") and REALM in head


def test_request_denied_whoever_asks_keeps_the_deny_page(proxy):
    port, _ = proxy
    for who in ((), ("--proxy-user", "alice:wonderland")):
        head, body = curl(port, *who, "http://blocked.test/")
        assert head.startswith("HTTP/1.1 403 ") and "Proxy-Authenticate" not in head


def test_failed_sign_ins_are_rate_limited_per_client_address(proxy, origin_port):
    port, log = proxy
    url = f"http://127.0.0.1:{origin_port}/"
    here = ("--interface", "127.0.0.2")
    for _ in range(3):  # max_failures = 3 in a minute
        head, _ = curl(port, *here, "--proxy-user", "alice:guess", url)
        assert head.startswith("HTTP/1.1 407 ")
    head, _ = curl(port, *here, "--proxy-user", "alice:guess", url)
    assert head.startswith("HTTP/1.1 429 ") and "Retry-After: " in head
    # Not even the right password is checked now...
    head, _ = curl(port, *here, "--proxy-user", "alice:wonderland", url)
    assert head.startswith("HTTP/1.1 429 ")
    # ...but another client address is not held back.
    head, body = curl(port, "--interface", "127.0.0.5", "--proxy-user", "alice:wonderland", url)
    assert head.startswith("HTTP/1.1 200 ")


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")
def test_headless_chromium_gets_a_407_challenge(proxy, origin_port, tmp_path):
    port, log = proxy
    url = f"http://127.0.0.1:{origin_port}/from-chromium"
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path}", f"--proxy-server=http://127.0.0.1:{port}",
         "--proxy-bypass-list=<-loopback>", "--dump-dom", url],
        capture_output=True, timeout=60,
    )
    wait_until(lambda: "/from-chromium" in log.read_text(), timeout=10)
    lines = [line for line in log.read_text().splitlines() if "/from-chromium" in line]
    assert any(" 407 " in line for line in lines), lines


def _intent(host: str, user: str | None = None):
    from multiproxy.pipeline._values import Intent
    return Intent("http", "forward", "10.0.0.1", 1234, host, 80, "GET", "http",
                  f"http://{host}/", (), user=user)


def test_sign_in_could_allow_only_when_an_earlier_allow_rule_names_users():
    from multiproxy.policy._index import RuleSet
    from multiproxy.policy._rules import Rule
    rules = RuleSet([
        Rule.build("never", "deny", hosts=["blocked.test"]),
        Rule.build("it-downloads", "allow", groups=["it"], hosts=["downloads.test"]),
        Rule.build("anonymous-out", "deny", authenticated=False, hosts=["members.test"]),
        Rule.build("social", "deny", hosts=["social.test", "downloads.test"]),
    ], default="allow", clock=lambda: 0.0)
    assert not rules.sign_in_could_allow(_intent("blocked.test"))
    assert rules.sign_in_could_allow(_intent("downloads.test"))
    assert rules.sign_in_could_allow(_intent("members.test"))
    assert not rules.sign_in_could_allow(_intent("social.test"))
    assert not rules.sign_in_could_allow(_intent("downloads.test", user="alice"))


def test_sign_in_failures_block_after_the_limit_until_the_window_passes():
    from twisted.internet.task import Clock

    from multiproxy.policy._ratelimit import SignInFailures
    clock = Clock()
    failures = SignInFailures(2, 60.0, clock=clock.seconds)
    failures.record("10.0.0.1")
    clock.advance(10)
    assert failures.blocked("10.0.0.1") is None
    failures.record("10.0.0.1")
    assert failures.blocked("10.0.0.1") == 50
    assert failures.blocked("10.0.0.2") is None
    clock.advance(50)
    assert failures.blocked("10.0.0.1") is None and failures.count("10.0.0.1") == 1
