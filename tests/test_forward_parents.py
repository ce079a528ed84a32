"""
Forwarding through parent proxies: a chain of two multiproxy forward
proxies over loopback, driven with curl (plain http, CONNECT to a TLS
origin, parent credentials checked against an htpasswd file, failover when a
parent is stopped mid-test, the fallback when all are down), what a parent
receives on the wire, and the parts that need no network (URLs, options,
the chooser, how a request is aimed).
"""

from __future__ import annotations

import base64
import json
import tomllib

import bcrypt
import pytest
import pytest_twisted
import trustme
from conftest import RecordingReporter
from loopback import curl, listen_scripted, origin_site, raw_exchange, wait_for
from tests.test_policy_twistd import free_port
from twisted.internet import defer, reactor, ssl
from twisted.internet.task import Clock
from twisted.python import usage

from multiproxy._config import read_configuration
from multiproxy.forward import ForwardOptions, ForwardProxy, ForwardSettings
from multiproxy.forward._config import make_forward_service
from multiproxy.forward._origin import Origin
from multiproxy.forward._parents import (
    ParentChooser,
    ParentConfig,
    ParentProxy,
    ParentRequest,
    ParentTunnel,
    parse_parent_url,
)
from multiproxy.forward._tunnel import connect_request
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import RequestHead
from multiproxy.pipeline._errors import ConfigError
from multiproxy.pipeline._values import Intent
from multiproxy.policy import make_policy_holder

# -- parent URLs ------------------------------------------------------------


def test_parent_url_gives_host_port_and_credentials_percent_decoded():
    parent = parse_parent_url("http://al%40ice:pa%3As%2Fs@Proxy.Example:8000/")
    assert parent == ParentConfig("proxy.example", 8000, "al@ice", "pa:s/s")
    assert parent.proxy_authorization() == b"Basic " + base64.b64encode(b"al@ice:pa:s/s")
    assert parent.url == "http://al%40ice:***@proxy.example:8000"


def test_parent_url_without_port_means_3128_and_without_user_no_credentials():
    parent = parse_parent_url("http://[::1]")
    assert (parent.host, parent.port, parent.proxy_authorization()) == ("::1", 3128, None)
    assert parent.address == "[::1]:3128"


@pytest.mark.parametrize("url, words", [
    ("https://u:secret@proxy:3128", "plain http://"),
    ("proxy.example:3128", "is not a URL"),
    ("http://", "names no host"),
    ("http://proxy:0", "1-65535"),
    ("http://u:secret@proxy:99999", "port"),
    ("http://proxy:3128/path", "no path"),
    ("http://:secret@proxy", "user name"),
])
def test_bad_parent_urls_are_refused_without_showing_the_password(url, words):
    with pytest.raises(ValueError) as info:
        parse_parent_url(url)
    assert words in str(info.value)
    assert "secret" not in str(info.value)


def test_connect_request_names_the_authority_and_carries_the_parent_credentials():
    assert connect_request(b"example.com:443", b"Basic YTpi") == (
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n"
        b"Proxy-Authorization: Basic YTpi\r\n\r\n")
    assert b"Proxy-Authorization" not in connect_request(b"[::1]:443", None)


# -- choosing and aiming, on a clock ------------------------------------------


def intent(kind="http", scheme="http", host="origin.test", port=80):
    return Intent(kind, "child", "127.0.0.1", 5000, host, port, "GET", scheme,
                  f"{scheme}://{host}:{port}/x" if kind == "http" else f"{host}:{port}")


def parents(*urls, clock=None, **kwargs):
    proxies = [ParentProxy(parse_parent_url(u)) for u in urls]
    return ParentChooser(proxies, clock or Clock(), **kwargs), proxies


def test_chooser_takes_the_first_parent_up_and_the_next_when_one_is_excluded():
    chooser, (a, b) = parents("http://10.0.0.1:3128", "http://10.0.0.2:3128")
    assert chooser.choose(intent()) is a
    assert chooser.choose(intent(), {a.key}) is b
    assert chooser.choose(intent(), {a.key, b.key}) is None
    b.checked_up = False  # an active check took it down
    assert chooser.choose(intent(), {a.key}) is None


def test_chooser_skips_a_parent_ejected_after_failures_until_its_backoff_ends():
    clock = Clock()
    chooser, (a, b) = parents("http://10.0.0.1:3128", "http://10.0.0.2:3128", clock=clock,
                              max_failures=2, backoff=5)
    for _ in range(2):
        a.started()
        a.connect_failed()
    assert chooser.choose(intent()) is b
    clock.advance(5)
    assert chooser.choose(intent()) is a  # one trial


def test_tunnels_and_https_go_through_a_parent_tunnel_named_after_the_parent():
    chooser, (a,) = parents("http://10.0.0.1:3128")
    tunnel = chooser.choose(intent("connect", "", "origin.test", 443))
    assert isinstance(tunnel, ParentTunnel) and not tunnel.tls
    assert tunnel.name == "parent:10.0.0.1:3128" and tunnel.parent is a
    https = chooser.choose(intent("http", "https", "origin.test", 443))
    assert https.tls and https.key != tunnel.key
    assert chooser.choose(intent("connect", "", "origin.test", 443), {tunnel.key}) is None
    tunnel.started()
    tunnel.connect_failed()
    assert (a.connect_failures, a.consecutive_failures) == (1, 1)


def test_when_every_parent_is_down_fail_says_502_and_direct_goes_to_the_origin():
    chooser, (a,) = parents("http://10.0.0.1:3128")
    a.checked_up = False
    assert chooser.choose(intent()) is None
    error = chooser.unavailable(None)
    assert (error.status, error.ended) == (502, "no-parent")
    assert "parent:10.0.0.1:3128" in str(error)
    direct, _ = parents("http://10.0.0.1:3128", fallback="direct")
    direct.parents[0].checked_up = False
    origin = direct.choose(intent())
    assert isinstance(origin, Origin) and origin.name == "origin.test:80"


def test_a_request_is_sent_in_absolute_form_with_the_parent_credentials_only_to_a_parent():
    chooser, (a, b) = parents("http://alice:pw@10.0.0.1:3128", "http://10.0.0.2:3128")
    head = RequestHead(b"GET", b"/x", b"HTTP/1.1", Headers([(b"Host", b"origin.test")]))
    request = ParentRequest(intent=intent(), upstream=None, head=head, pool=chooser,
                            absolute=b"http://origin.test/x", path=b"/x").to(a)
    assert request.head.target == b"http://origin.test/x"
    assert request.head.headers.get(b"proxy-authorization") == b"Basic " + base64.b64encode(
        b"alice:pw")
    to_b = request.to(b)
    assert to_b.head.target == b"http://origin.test/x"
    assert b"proxy-authorization" not in to_b.head.headers
    direct = request.to(Origin("http", "origin.test", 80))
    assert direct.head.target == b"/x" and b"proxy-authorization" not in direct.head.headers
    assert head.headers.get(b"proxy-authorization") is None  # the original is untouched


# -- options and configuration -------------------------------------------------


def test_parent_options_are_read_in_order_with_the_fallback():
    options = ForwardOptions()
    options.parseOptions(["--parent", "http://u:p@127.0.0.1:3128", "--parent",
                          "http://127.0.0.1:3129", "--parent-fallback", "direct"])
    config = options.config
    assert [p.address for p in config.parents] == ["127.0.0.1:3128", "127.0.0.1:3129"]
    assert config.parents[0].password == "p" and config.parent_fallback == "direct"


@pytest.mark.parametrize("args, words", [
    (["--parent", "ftp://u:secret@x"], "--parent: "),
    (["--parent", "http://x", "--parent", "http://x:3128"], "listed twice"),
    (["--parent-fallback", "maybe"], "--parent-fallback must be fail or direct"),
])
def test_bad_parent_options_are_refused_in_one_line(args, words):
    with pytest.raises(usage.UsageError) as info:
        ForwardOptions().parseOptions(args)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert "secret" not in str(info.value)


def forward_table(extra: str):
    return read_configuration(tomllib.loads(f"[[forward]]\n{extra}\n"))


def test_parents_in_the_forward_table():
    configuration = forward_table(
        'parents = ["http://u:p@127.0.0.1:3128", "http://127.0.0.1:3129"]\n'
        'parent_fallback = "direct"\n[forward.parent_health]\ninterval = 1\n')
    [(_, config)] = configuration.proxies
    assert [p.port for p in config.parents] == [3128, 3129]
    assert config.parent_fallback == "direct" and config.parent_health.interval == 1


@pytest.mark.parametrize("extra, words", [
    ('parents = ["http://ok:3128", "socks5://u:secret@x"]', "forward[0].parents[1]: "),
    ('parent_fallback = "sometimes"', "forward[0].parent_fallback"),
    ('parents = ["http://x"]\n[forward.parent_health]\ncheck = "http"', "checked with tcp"),
])
def test_bad_parent_keys_are_refused_naming_the_key(extra, words):
    with pytest.raises(ConfigError) as info:
        forward_table(extra)
    assert words in str(info.value) and "secret" not in str(info.value)


def test_the_start_up_line_names_the_parents_with_passwords_masked():
    options = ForwardOptions()
    options.parseOptions(["--parent", "http://alice:secret@127.0.0.1:3128",
                          "--parent", "http://127.0.0.1:3129"])
    service = make_forward_service(options.config, Clock())
    assert ("parents in order (tcp check every 5 s; all down: fail): "
            "http://alice:***@127.0.0.1:3128, http://127.0.0.1:3129") in service.summary
    assert "secret" not in service.summary


# -- a chain of two forward proxies over loopback ---------------------------------


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_origin(ca, tmp_path):
    """(port, path of the CA bundle) of a TLS origin for 'localhost'."""
    cert = ca.issue_cert("localhost")
    pem = b"".join(blob.bytes() for blob in cert.cert_chain_pems) + cert.private_key_pem.bytes()
    options = ssl.PrivateCertificate.loadPEM(pem).options()
    port = reactor.listenSSL(0, origin_site(), options, interface="127.0.0.1")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield port.getHost().port, str(ca_file)
    pytest_twisted.blockon(port.stopListening())


class Running:
    """A forward proxy listening on loopback, which a test may stop."""

    def __init__(self, factory: ForwardProxy) -> None:
        self.factory = factory
        self.listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.port = self.listening.getHost().port
        self.url = f"http://127.0.0.1:{self.port}"
        self.stopped = False

    async def stop(self) -> None:
        """Stop listening and cut every connection, as a parent that goes away does."""
        if self.stopped:
            return
        self.stopped = True
        await self.listening.stopListening()
        for conn in list(self.factory.connections):
            conn.transport.abortConnection()
        self.factory.pool.close_idle()


@pytest.fixture
def chain():
    """``chain(via, parent_urls, **kwargs)`` starts a forward proxy; all stop at the end."""
    started: list[Running] = []

    def start(via: str, parent_urls=(), *, fallback="fail", reporter=None, **kwargs):
        if parent_urls:
            kwargs["chooser"] = ParentChooser(
                [ParentProxy(parse_parent_url(u)) for u in parent_urls], reactor,
                fallback=fallback)
        settings = kwargs.pop("settings", ForwardSettings())
        kwargs["settings"] = ForwardSettings(
            via=via.encode(), connect_ports=settings.connect_ports)
        running = Running(ForwardProxy(reactor, reporters=(reporter or RecordingReporter(),),
                                       **kwargs))
        started.append(running)
        return running

    yield start
    for running in started:
        pytest_twisted.blockon(defer_stop(running))


def defer_stop(running):
    return defer.ensureDeferred(running.stop())


def headers_seen(body: bytes) -> list[tuple[str, str]]:
    return [(k.lower(), v) for k, v in json.loads(body)["headers"]]


@pytest_twisted.ensureDeferred
async def test_curl_through_the_chain_reaches_the_origin_through_the_parent(chain, origin):
    parent_log, child_log = RecordingReporter(), RecordingReporter()
    parent = chain("parent", reporter=parent_log)
    child = chain("child", [parent.url], reporter=child_log)
    url = f"http://127.0.0.1:{origin}/headers"
    out, err, code = await curl("-x", child.url, url)
    assert code == 0, err
    seen = headers_seen(out)
    # Both proxies are on the way, child first (RFC 9110 7.6.3).
    assert [v for k, v in seen if k == "via"] == ["1.1 child", "1.1 parent"]
    assert "proxy-authorization" not in dict(seen)
    [at_parent] = parent_log.records
    assert (at_parent.target, at_parent.status, at_parent.upstream) == (
        url, 200, f"127.0.0.1:{origin}")
    [at_child] = child_log.records
    assert (at_child.status, at_child.upstream) == (200, f"parent:127.0.0.1:{parent.port}")


@pytest_twisted.ensureDeferred
async def test_connections_to_the_parent_are_kept_alive_and_reused(chain, origin):
    parent_log = RecordingReporter()
    parent = chain("parent", reporter=parent_log)
    child = chain("child", [parent.url])
    for n in (1, 2, 3):
        out, err, code = await curl("-x", child.url, f"http://127.0.0.1:{origin}/bytes/{n}")
        assert out == b"x" * n, err
    assert len(parent_log.records) == 3
    assert len(parent.factory.connections) == 1  # one pooled connection carried all three


@pytest_twisted.ensureDeferred
async def test_curl_https_through_the_chain_is_a_connect_through_the_parent(
    chain, tls_origin,
):
    origin_port, ca_file = tls_origin
    ports = ForwardSettings(connect_ports=frozenset({origin_port}))
    parent_log, child_log = RecordingReporter(), RecordingReporter()
    parent = chain("parent", reporter=parent_log, settings=ports)
    child = chain("child", [parent.url], reporter=child_log, settings=ports)
    out, err, code = await curl("-p", "-x", child.url, "--cacert", ca_file,
                                f"https://localhost:{origin_port}/bytes/100")
    assert code == 0, err
    assert out == b"x" * 100
    await wait_for(lambda: parent_log.records and child_log.records)
    [at_parent] = parent_log.records
    assert (at_parent.kind, at_parent.target, at_parent.status) == (
        "connect", f"localhost:{origin_port}", 200)
    [at_child] = child_log.records
    assert (at_child.kind, at_child.status, at_child.upstream) == (
        "connect", 200, f"parent:127.0.0.1:{parent.port}")
    assert at_child.bytes_from_upstream > 100


@pytest_twisted.ensureDeferred
async def test_what_a_parent_receives_absolute_form_with_its_own_credentials_only(
    chain, start_forward,
):
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    fake_parent, received = listen_scripted(answer, close=False)
    try:
        child = chain("child", [f"http://bob:builder@127.0.0.1:{fake_parent.getHost().port}"])
        out, err, code = await curl("-x", child.url, "--proxy-user", "client:secret",
                                    "http://origin.test:8000/a?b=c")
        assert out == b"ok", err
    finally:
        await fake_parent.stopListening()
    head = received[0].partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"GET http://origin.test:8000/a?b=c HTTP/1.1"
    credentials = [f for f in head if f.lower().startswith(b"proxy-authorization:")]
    assert credentials == [b"Proxy-Authorization: Basic " + base64.b64encode(b"bob:builder")]
    assert b"Host: origin.test:8000" in head


PASSWORD_HASH = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).decode()


@pytest.fixture
def parent_with_htpasswd(tmp_path):
    """A parent started by make_forward_service from --htpasswd options; yields its port."""
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(f"alice:{PASSWORD_HASH}\n")
    port = free_port()
    options = ForwardOptions()
    options.parseOptions(["--listen", f"tcp:{port}:interface=127.0.0.1",
                          "--htpasswd", str(htpasswd)])
    log = RecordingReporter()
    service = make_forward_service(options.config, reactor, (log,),
                                   make_policy_holder(options.policy_source, reactor))
    service.startService()
    yield port, log
    pytest_twisted.blockon(service.stopService())


@pytest_twisted.ensureDeferred
async def test_parent_credentials_let_the_child_through_a_parent_that_wants_them(
    chain, origin, parent_with_htpasswd,
):
    port, parent_log = parent_with_htpasswd
    url = f"http://127.0.0.1:{origin}/bytes/5"
    right = chain("child", [f"http://alice:wonderland@127.0.0.1:{port}"])
    out, err, code = await curl("-x", right.url, url)
    assert out == b"xxxxx", err
    assert parent_log.records[-1].user == "alice"
    # Without them the parent's own 407 comes back.
    anonymous = chain("anonymous", [f"http://127.0.0.1:{port}"])
    out, err, code = await curl("-x", anonymous.url, "-w", "%{http_code}", "-o", "/dev/null",
                                url)
    assert out == b"407"


@pytest_twisted.ensureDeferred
async def test_a_parent_refusing_connect_is_a_502_naming_its_status(
    chain, parent_with_htpasswd,
):
    port, _ = parent_with_htpasswd
    child_log = RecordingReporter()
    wrong = chain("child", [f"http://alice:nope@127.0.0.1:{port}"], reporter=child_log)
    answer = await raw_exchange(
        wrong.port, b"CONNECT origin.test:443 HTTP/1.1\r\nHost: origin.test:443\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert b"answered CONNECT origin.test:443 with 407" in answer
    record = child_log.records[-1]
    assert (record.status, record.upstream_error) == (502, "parent-refused")
    assert record.upstream == f"parent:127.0.0.1:{port}"


@pytest_twisted.ensureDeferred
async def test_when_the_first_parent_stops_mid_test_the_next_one_takes_over(
    chain, origin, tls_origin,
):
    origin_port, ca_file = tls_origin
    ports = ForwardSettings(connect_ports=frozenset({origin_port}))
    first_log, second_log, child_log = RecordingReporter(), RecordingReporter(), RecordingReporter()
    first = chain("first", reporter=first_log, settings=ports)
    second = chain("second", reporter=second_log, settings=ports)
    child = chain("child", [first.url, second.url], reporter=child_log, settings=ports)
    url = f"http://127.0.0.1:{origin}/bytes/3"

    out, err, code = await curl("-x", child.url, url)
    assert out == b"xxx", err
    assert (len(first_log.records), len(second_log.records)) == (1, 0)

    await first.stop()
    for _ in range(2):
        out, err, code = await curl("-x", child.url, url)
        assert out == b"xxx", err
    assert len(second_log.records) == 2
    assert child_log.records[-1].upstream == f"parent:127.0.0.1:{second.port}"
    out, err, code = await curl("-p", "-x", child.url, "--cacert", ca_file,
                                f"https://localhost:{origin_port}/bytes/4")
    assert out == b"xxxx", err
    await wait_for(lambda: child_log.records[-1].kind == "connect")
    assert child_log.records[-1].upstream == f"parent:127.0.0.1:{second.port}"
    first_parent = child.factory.chooser.parents[0]
    assert first_parent.connect_failures >= 2 and first_parent.retries >= 2


@pytest_twisted.ensureDeferred
async def test_a_get_the_parent_drops_unanswered_is_replayed_on_the_next_one(chain, origin):
    dropping, received = listen_scripted(b"", close=True)  # reads the request, closes
    try:
        second_log = RecordingReporter()
        second = chain("second", reporter=second_log)
        child = chain("child", [f"http://127.0.0.1:{dropping.getHost().port}", second.url])
        out, err, code = await curl("-x", child.url, f"http://127.0.0.1:{origin}/bytes/2")
        assert out == b"xx", err
        assert len(received) == 1 and len(second_log.records) == 1
        # A POST with a body is not replayed: the client hears of it.
        out, err, code = await curl("-x", child.url, "-d", "x=1", "-w", "%{http_code}",
                                    "-o", "/dev/null", f"http://127.0.0.1:{origin}/echo")
        assert out == b"502"
    finally:
        await dropping.stopListening()


@pytest_twisted.ensureDeferred
async def test_with_every_parent_down_fail_answers_502_and_direct_reaches_the_origin(
    chain, origin,
):
    nobody = f"http://127.0.0.1:{free_port()}"
    url = f"http://127.0.0.1:{origin}/bytes/2"
    fail_log, direct_log = RecordingReporter(), RecordingReporter()
    failing = chain("failing", [nobody], reporter=fail_log)
    out, err, code = await curl("-x", failing.url, "-w", " %{http_code}", url)
    assert out.endswith(b" 502")
    assert b"no parent proxy could be reached" in out
    record = fail_log.records[-1]
    assert (record.ended, record.upstream_error) == ("connect-failed", "connect-refused")
    assert "no parent proxy could be reached" in record.extra["reason"]

    direct = chain("direct", [nobody], fallback="direct", reporter=direct_log)
    out, err, code = await curl("-x", direct.url, url)
    assert out == b"xx", err
    assert direct_log.records[-1].upstream == f"127.0.0.1:{origin}"


@pytest_twisted.ensureDeferred
async def test_health_checks_take_a_stopped_parent_out_before_any_request_tries_it(
    origin, tmp_path,
):
    first, second = free_port(), free_port()
    services = []
    for port in (first, second):
        options = ForwardOptions()
        options.parseOptions(["--listen", f"tcp:{port}:interface=127.0.0.1"])
        services.append(make_forward_service(options.config, reactor))
    child_port = free_port()
    [(_, config)] = read_configuration(tomllib.loads(f"""
[[forward]]
listen = ["tcp:{child_port}:interface=127.0.0.1"]
parents = ["http://127.0.0.1:{first}", "http://127.0.0.1:{second}"]
[forward.parent_health]
interval = 0.05
fall = 1
rise = 1
""")).proxies
    child_log = RecordingReporter()
    child = make_forward_service(config, reactor, (child_log,))
    services.append(child)
    for service in services:
        service.startService()
    try:
        chooser = child.factory.chooser
        await services[0].stopService()
        await wait_for(lambda: not chooser.parents[0].checked_up)
        out, err, code = await curl("-x", f"http://127.0.0.1:{child_port}",
                                    f"http://127.0.0.1:{origin}/bytes/1")
        assert out == b"x", err
        assert child_log.records[-1].upstream == f"parent:127.0.0.1:{second}"
        assert chooser.parents[0].connect_failures == 0  # never tried: the check knew
        assert chooser.parents[0].last_check.startswith("failed")
    finally:
        for service in services[1:]:
            await service.stopService()


@pytest_twisted.ensureDeferred
async def test_an_https_url_asked_in_absolute_form_goes_over_tls_through_a_parent_tunnel(
    chain, tls_origin, monkeypatch,
):
    origin_port, ca_file = tls_origin
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # the child's TLS client trusts the test CA
    ports = ForwardSettings(connect_ports=frozenset({origin_port}))
    parent_log, child_log = RecordingReporter(), RecordingReporter()
    parent = chain("parent", reporter=parent_log, settings=ports)
    child = chain("child", [parent.url], reporter=child_log)
    for n in (5, 6):
        answer = await raw_exchange(child.port, (
            f"GET https://localhost:{origin_port}/bytes/{n} HTTP/1.1\r\n"
            f"Host: localhost:{origin_port}\r\nConnection: close\r\n\r\n").encode())
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n" + b"x" * n)
    assert child_log.records[-1].upstream == f"parent:127.0.0.1:{parent.port}"
    # One tunnel, kept open by the child for its pooled TLS connection, carried both.
    assert parent.factory.tunnels_opened == 1 and not parent_log.records
    await child.stop()
    await wait_for(lambda: parent_log.records)
    assert (parent_log.records[0].kind, parent_log.records[0].target) == (
        "connect", f"localhost:{origin_port}")


@pytest_twisted.ensureDeferred
async def test_the_status_page_shows_the_parents_as_a_pool():
    status = free_port()
    options = ForwardOptions()
    options.parseOptions(["--listen", f"tcp:{free_port()}:interface=127.0.0.1",
                          "--status-listen", f"tcp:{status}:interface=127.0.0.1",
                          "--parent", "http://u:secret@127.0.0.1:3128",
                          "--parent", "http://127.0.0.1:3129"])
    service = make_forward_service(options.config, reactor)
    service.startService()
    try:
        out, err, code = await curl(f"http://127.0.0.1:{status}/status.json")
        assert code == 0, err
    finally:
        await service.stopService()
    [pool] = json.loads(out)["pools"]
    assert pool["name"] == "parents"
    assert [b["name"] for b in pool["backends"]] == [
        "parent:127.0.0.1:3128", "parent:127.0.0.1:3129"]
    assert b"secret" not in out


# -- parents per policy rule -------------------------------------------------------------


def rule_policy(text: str):
    from multiproxy._tablereader import TableReader
    from multiproxy.policy import PolicyHolder, settings_from_table

    settings = settings_from_table(TableReader(tomllib.loads(text)["policy"], "policy"))
    return PolicyHolder(settings, clock=reactor.seconds)


def test_a_rule_names_its_parents_and_bad_ones_are_refused_naming_the_rule():
    policy = rule_policy("""
[policy]
[[policy.rules]]
name = "partners"
action = "allow"
hosts = [".partner.test"]
parents = ["http://user:pw@10.0.0.7:3128", "http://10.0.0.8"]
""")
    decision = policy.decide(intent(host="www.partner.test"))
    assert (decision.rule, decision.parents) == (
        "partners", ("http://user:pw@10.0.0.7:3128", "http://10.0.0.8"))
    with pytest.raises(ConfigError, match=r"policy.rules\[0\].parents.*(in rule 'x')"):
        rule_policy('[policy]\n[[policy.rules]]\nname = "x"\naction = "allow"\n'
                    'parents = ["ftp://10.0.0.7"]\n')
    with pytest.raises(ConfigError, match=r"allow"):
        rule_policy('[policy]\n[[policy.rules]]\nname = "x"\naction = "deny"\n'
                    'parents = ["http://10.0.0.7"]\n')


@pytest_twisted.ensureDeferred
async def test_requests_a_rule_allows_go_through_the_rules_parents_and_others_go_direct(
    chain, origin, tls_origin,
):
    origin_port, ca_file = tls_origin
    ports = ForwardSettings(connect_ports=frozenset({origin_port}))
    first_log, second_log, child_log = RecordingReporter(), RecordingReporter(), RecordingReporter()
    first = chain("first", reporter=first_log, settings=ports)
    second = chain("second", reporter=second_log, settings=ports)
    policy = rule_policy(f"""
[policy]
[[policy.rules]]
name = "via-parents"
action = "allow"
url_regex = "/bytes/"
parents = ["{first.url}", "{second.url}"]
[[policy.rules]]
name = "tunnels-via-parents"
action = "allow"
kinds = ["connect"]
parents = ["{second.url}"]
""")
    child = chain("child", reporter=child_log, settings=ports, policy=policy)
    out, err, code = await curl("-x", child.url, f"http://127.0.0.1:{origin}/bytes/2")
    assert out == b"xx", err
    out, err, code = await curl("-x", child.url, f"http://127.0.0.1:{origin}/headers")
    assert code == 0, err  # no rule names parents for it: straight to the origin
    assert [r.upstream for r in child_log.records] == [
        f"parent:127.0.0.1:{first.port}", f"127.0.0.1:{origin}"]
    assert (len(first_log.records), len(second_log.records)) == (1, 0)
    # The first parent stops: the rule's next parent takes its requests.
    await first.stop()
    out, err, code = await curl("-x", child.url, f"http://127.0.0.1:{origin}/bytes/3")
    assert out == b"xxx", err
    assert child_log.records[-1].upstream == f"parent:127.0.0.1:{second.port}"
    # A tunnel the second rule allows goes through its parent.
    out, err, code = await curl("-p", "-x", child.url, "--cacert", ca_file,
                                f"https://localhost:{origin_port}/bytes/4")
    assert out == b"xxxx", err
    await wait_for(lambda: child_log.records[-1].kind == "connect")
    assert child_log.records[-1].upstream == f"parent:127.0.0.1:{second.port}"
    assert child_log.records[-1].rule == "tunnels-via-parents"
