"""
The forward proxy serving its PAC file to real clients: curl against a
running `ForwardProxy` (content type, caching, HEAD, 405, the 400 every
other origin-form request keeps, an operator's file, the access log), the
address handed out on an in-memory transport (TLS, HTTP/1.0 without Host),
the options and ``[forward.pac]`` table, one-line errors through twistd, and
headless Chromium configured with ``--proxy-pac-url`` loading through it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_twisted
from loopback import curl, raw_exchange
from tests.test_twistd_operations import run_twistd
from twisted.internet import reactor, threads
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.web import resource, server
from zope.interface import directlyProvides

from multiproxy._tablereader import TableReader
from multiproxy.forward import DirectChooser, ForwardProxy, ForwardSettings
from multiproxy.forward._config import ForwardOptions, forward_config_from_table
from multiproxy.forward._pac import PacSettings
from multiproxy.pipeline._errors import ConfigError

OPERATOR_PAC = b'function FindProxyForURL(url, host) {\r\n  return "PROXY ours.example:3128";\r\n}\n'


def _head_and_body(out: bytes) -> tuple[str, bytes]:
    head, _, body = out.partition(b"\r\n\r\n")
    return head.decode("latin-1"), body


def _pac_settings(**kwargs) -> ForwardSettings:
    return ForwardSettings(pac=PacSettings.build(**kwargs))


# -- through curl ---------------------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_the_pac_file_is_served_with_its_content_type_and_a_max_age(forward, reporter):
    out, err, code = await curl("-i", f"http://127.0.0.1:{forward}/proxy.pac")
    assert code == 0, err
    head, body = _head_and_body(out)
    assert head.startswith("HTTP/1.1 200 OK")
    assert "Content-Type: application/x-ns-proxy-autoconfig\r\n" in head
    assert "Cache-Control: max-age=300\r\n" in head
    assert f"Content-Length: {len(body)}\r\n" in head
    assert b"function FindProxyForURL(url, host) {" in body
    # The address the client reached the proxy at, from its Host field.
    assert f'var PROXY = "PROXY 127.0.0.1:{forward}";'.encode() in body
    record = reporter.records[-1]
    assert (record.method, record.target, record.status) == ("GET", "/proxy.pac", 200)
    assert record.upstream is None and record.ended == "pac"
    assert record.bytes_to_client == len(body) and record.user_agent.startswith("curl/")


@pytest_twisted.ensureDeferred
async def test_wpad_dat_and_a_query_string_get_the_same_file(forward):
    pac, _, _ = await curl(f"http://127.0.0.1:{forward}/proxy.pac")
    out, err, code = await curl("-i", f"http://127.0.0.1:{forward}/wpad.dat?v=2")
    assert code == 0, err
    head, body = _head_and_body(out)
    assert "Content-Type: application/x-ns-proxy-autoconfig" in head and body == pac


@pytest_twisted.ensureDeferred
async def test_head_gets_the_length_and_no_body(forward, reporter):
    pac, _, _ = await curl(f"http://127.0.0.1:{forward}/proxy.pac")
    out, err, code = await curl("-I", f"http://127.0.0.1:{forward}/proxy.pac")
    assert code == 0, err
    head, body = _head_and_body(out)
    assert head.startswith("HTTP/1.1 200 ") and body == b""
    assert f"Content-Length: {len(pac)}\r\n" in head
    assert "Content-Type: application/x-ns-proxy-autoconfig" in head
    assert reporter.records[-1].method == "HEAD" and reporter.records[-1].bytes_to_client == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
@pytest_twisted.ensureDeferred
async def test_other_methods_get_405_with_allow(forward, reporter, method):
    out, err, code = await curl("-i", "-X", method, f"http://127.0.0.1:{forward}/proxy.pac")
    assert code == 0, err
    head, body = _head_and_body(out)
    assert head.startswith("HTTP/1.1 405 ")
    assert "Allow: GET, HEAD\r\n" in head and b"FindProxyForURL" not in body
    assert reporter.records[-1].status == 405
    assert reporter.records[-1].extra["reason"] == "the PAC file is read with GET or HEAD"


@pytest.mark.parametrize("path", ["/", "/index.html", "/proxy.pac/", "/PROXY.PAC", "/x/wpad.dat"])
@pytest_twisted.ensureDeferred
async def test_every_other_origin_form_request_is_still_a_400(forward, path):
    out, err, code = await curl("-i", f"http://127.0.0.1:{forward}{path}")
    assert code == 0, err
    head, body = _head_and_body(out)
    assert head.startswith("HTTP/1.1 400 ") and b"absolute URL" in body


@pytest_twisted.ensureDeferred
async def test_switched_off_the_pac_paths_are_400_too(start_forward):
    port, _ = start_forward(settings=ForwardSettings(pac=PacSettings(enabled=False)))
    out, err, code = await curl("-i", f"http://127.0.0.1:{port}/proxy.pac")
    assert code == 0, err
    assert out.startswith(b"HTTP/1.1 400 ") and b"absolute URL" in out


@pytest_twisted.ensureDeferred
async def test_a_configured_proxy_address_and_direct_list_are_handed_out(start_forward):
    port, _ = start_forward(settings=_pac_settings(
        proxy="proxy.example.com:3128", direct=[".corp.example", "<local>"]))
    out, err, code = await curl(f"http://127.0.0.1:{port}/proxy.pac")
    assert code == 0, err
    assert b'var PROXY = "PROXY proxy.example.com:3128";' in out
    assert b'var DIRECT_DOMAINS = ["corp.example"];' in out


@pytest_twisted.ensureDeferred
async def test_an_operator_file_is_served_verbatim(start_forward, tmp_path):
    path = tmp_path / "proxy.pac"
    path.write_bytes(OPERATOR_PAC)
    port, _ = start_forward(settings=_pac_settings(file=str(path)))
    out, err, code = await curl("-i", f"http://127.0.0.1:{port}/wpad.dat")
    assert code == 0, err
    head, body = _head_and_body(out)
    assert body == OPERATOR_PAC
    assert "Content-Type: application/x-ns-proxy-autoconfig" in head


@pytest.mark.parametrize("host", [b"127.0.0.1:0", b"127.0.0.1:99999", b"proxy..example", b"::1"])
@pytest_twisted.ensureDeferred
async def test_a_host_field_that_is_no_address_gets_400(forward, reporter, host):
    answer = await raw_exchange(
        forward, b"GET /proxy.pac HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 "), answer
    assert b"FindProxyForURL" not in answer and b"Host" in answer
    assert reporter.records[-1].ended == "bad-request"


@pytest_twisted.ensureDeferred
async def test_the_connection_goes_on_to_proxy_requests_after_the_pac_file(forward, origin):
    answer = await raw_exchange(
        forward,
        b"GET /proxy.pac HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        b"GET http://127.0.0.1:%d/bytes/3 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Connection: close\r\n\r\n" % origin)
    first, _, second = answer.partition(b"}\n")
    assert first.startswith(b"HTTP/1.1 200 ") and b"FindProxyForURL" in first
    assert second.startswith(b"HTTP/1.1 200 ") and second.endswith(b"\r\n\r\nxxx")


# -- the address handed out, on an in-memory transport -------------------------

def _answer(request: bytes, host_address, tls: bool = False, **pac) -> bytes:
    factory = ForwardProxy(Clock(), settings=_pac_settings(**pac))
    protocol = factory.buildProtocol(None)
    transport = StringTransport(hostAddress=host_address,
                                peerAddress=IPv4Address("TCP", "10.9.9.9", 50000))
    if tls:
        directlyProvides(transport, ISSLTransport)
    protocol.makeConnection(transport)
    protocol.dataReceived(request)
    return transport.value()


def test_behind_a_tls_listener_the_route_is_https():
    answer = _answer(b"GET /proxy.pac HTTP/1.1\r\nHost: proxy.example.com\r\n\r\n",
                     IPv4Address("TCP", "10.0.0.1", 443), tls=True)
    assert b'var PROXY = "HTTPS proxy.example.com:443";' in answer


def test_a_host_without_a_port_means_the_default_port():
    answer = _answer(b"GET /proxy.pac HTTP/1.1\r\nHost: Proxy.Example.COM\r\n\r\n",
                     IPv4Address("TCP", "10.0.0.1", 80))
    assert b'var PROXY = "PROXY proxy.example.com:80";' in answer


@pytest.mark.parametrize("address, route", [
    (IPv4Address("TCP", "10.0.0.1", 3128), b"PROXY 10.0.0.1:3128"),
    (IPv6Address("TCP", "fd00::1", 3128), b"PROXY [fd00::1]:3128"),
])
def test_http10_without_host_gets_the_listeners_address(address, route):
    answer = _answer(b"GET /proxy.pac HTTP/1.0\r\n\r\n", address)
    assert answer.startswith(b"HTTP/1.1 200 ") and b'var PROXY = "' + route + b'";' in answer


def test_a_configured_address_wins_over_host_and_tls():
    answer = _answer(b"GET /proxy.pac HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n",
                     IPv4Address("TCP", "10.0.0.1", 443), tls=True, proxy="p.example:3128")
    assert b'var PROXY = "PROXY p.example:3128";' in answer and b"elsewhere" not in answer


# -- options and the [forward.pac] table ---------------------------------------

def _options(*argv: str) -> PacSettings:
    options = ForwardOptions()
    options.parseOptions(list(argv))
    return options.config.settings.pac


def test_options_build_the_pac_settings(tmp_path):
    assert _options() == PacSettings()
    pac = _options("--pac-direct", ".corp.example", "--pac-direct", "10.0.0.0/8",
                   "--pac-proxy", "Proxy.Example:3128")
    assert [d.text for d in pac.direct] == [".corp.example", "10.0.0.0/8"]
    assert pac.proxy == "proxy.example:3128" and pac.enabled
    path = tmp_path / "proxy.pac"
    path.write_bytes(OPERATOR_PAC)
    pac = _options("--pac-file", str(path))
    assert pac.body == OPERATOR_PAC and pac.file == str(path)


@pytest.mark.parametrize("argv, message", [
    (["--pac-direct", "..x"], "--pac-direct: direct host '..x' starts with two dots"),
    (["--pac-proxy", "proxy.example"], "--pac-proxy: 'proxy.example' needs a port"),
    (["--pac-file", "/no/such.pac"], "--pac-file: cannot read the PAC file '/no/such.pac'"),
    (["--pac-file", "x.pac", "--pac-direct", "a.example"],
     "--pac-file cannot be combined with --pac-direct or --pac-proxy"),
    (["--pac-file", "x.pac", "--pac-proxy", "p:1"],
     "--pac-file cannot be combined with --pac-direct or --pac-proxy"),
])
def test_bad_options_are_refused_naming_the_option(argv, message):
    with pytest.raises(usage.UsageError) as raised:
        _options(*argv)
    assert str(raised.value).startswith(message)


def _table(pac: dict) -> PacSettings:
    reader = TableReader({"pac": pac}, "forward[0]")
    config = forward_config_from_table(reader)
    reader.finish()
    return config.settings.pac


def test_the_pac_table_builds_the_settings(tmp_path):
    assert _table({}) == PacSettings()
    pac = _table({"direct": [".corp.example", "<local>"], "proxy": "p.example:3128"})
    assert [d.kind for d in pac.direct] == ["suffix", "plain"] and pac.proxy == "p.example:3128"
    assert _table({"direct": "intranet"}).direct[0].value == "intranet"
    assert not _table({"enabled": False}).enabled
    path = tmp_path / "proxy.pac"
    path.write_bytes(OPERATOR_PAC)
    assert _table({"file": str(path)}).body == OPERATOR_PAC


@pytest.mark.parametrize("pac, message", [
    ({"direct": ["..x"]}, "forward[0].pac.direct: direct host '..x' starts with two dots"),
    ({"direct": [1]}, "forward[0].pac.direct: expected a list of strings"),
    ({"proxy": "p"}, "forward[0].pac.proxy: 'p' needs a port"),
    ({"proxy": 3128}, "forward[0].pac.proxy: expected a string"),
    ({"enabled": "yes"}, "forward[0].pac.enabled: expected true or false"),
    ({"file": "/no/such.pac"}, "forward[0].pac.file: cannot read the PAC file"),
    ({"file": "x.pac", "direct": ["a.example"]}, "forward[0].pac.file: cannot be combined"),
    ({"url": "http://x/"}, "forward[0].pac.url: unknown key (allowed here: direct, enabled, "
                           "file, proxy)"),
])
def test_a_bad_pac_table_is_refused_naming_the_key(pac, message):
    with pytest.raises(ConfigError) as raised:
        _table(pac)
    assert str(raised.value).startswith(message)


# -- one-line errors through twistd ---------------------------------------------

@pytest.mark.parametrize("argv, toml, message", [
    (["forward", "--pac-file", "missing.pac"], None,
     r"--pac-file: cannot read the PAC file 'missing.pac': No such file or directory$"),
    (["forward", "--pac-file", "page.html"], None,
     r"--pac-file: the PAC file 'page.html' defines no FindProxyForURL function$"),
    (["forward", "--pac-file", "proxy.pac", "--pac-proxy", "p:3128"], None,
     r"--pac-file cannot be combined with --pac-direct or --pac-proxy"),
    ([], '[[forward]]\n[forward.pac]\nfile = "missing.pac"\n',
     r"^twistd multiproxy: error: bad.toml: forward\[0\].pac.file: cannot read the PAC file"),
    ([], '[[forward]]\n[forward.pac]\nproxy = "p:0"\n',
     r"bad.toml: forward\[0\].pac.proxy: 'p:0': '0' is not a port number"),
])
def test_a_bad_pac_option_or_key_is_one_line_through_twistd(tmp_path, argv, toml, message):
    (tmp_path / "page.html").write_text("<html></html>")
    (tmp_path / "proxy.pac").write_bytes(OPERATOR_PAC)
    if toml is not None:
        (tmp_path / "bad.toml").write_text(toml)
        argv = ["--config", "bad.toml", *argv]
    result = run_twistd("--check", *argv, cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("twistd multiproxy: error: ")
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in result.stderr


def test_a_good_pac_file_passes_the_check(tmp_path):
    (tmp_path / "proxy.pac").write_bytes(OPERATOR_PAC)
    result = run_twistd("--check", "forward", "--pac-file", "proxy.pac", cwd=tmp_path)
    assert result.returncode == 0, result.stderr


# -- a browser ------------------------------------------------------------------------

class _TestNames(DirectChooser):
    """Reaches every ``*.test`` host at 127.0.0.1, as Chromium's resolver rules do."""

    def choose(self, intent, excluded=frozenset()):
        if intent.host.endswith(".test"):
            intent = replace(intent, host="127.0.0.1")
        return super().choose(intent, excluded)


def _chromium(pac_url: str, url: str, profile: Path) -> subprocess.CompletedProcess:
    # Chromium never asks a PAC file about loopback names and addresses
    # (its implicit bypass rules; --proxy-bypass-list=<-loopback> only undoes
    # them for --proxy-server), so the pages have names under .test, all
    # resolved to 127.0.0.1 by Chromium and by the proxy's chooser.
    return subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update",
         f"--user-data-dir={profile}", f"--proxy-pac-url={pac_url}",
         "--host-resolver-rules=MAP *.test 127.0.0.1", "--dump-dom", url],
        capture_output=True, text=True, timeout=60,
    )


class _Page(resource.Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        return b"<p>page " + request.path + b"</p>"


@pytest.fixture
def html_origin():
    port = reactor.listenTCP(0, server.Site(_Page()), interface="127.0.0.1")
    yield port.getHost().port
    pytest_twisted.blockon(port.stopListening())


@pytest.mark.skipif(not shutil.which("chromium"), reason="needs chromium")
@pytest_twisted.ensureDeferred
async def test_headless_chromium_follows_the_pac_file(
        start_forward, reporter, html_origin, tmp_path):
    port, _ = start_forward(chooser=_TestNames(),
                            settings=_pac_settings(direct=["direct.test"]))
    pac_url = f"http://127.0.0.1:{port}/proxy.pac"
    proxied = f"http://proxied.test:{html_origin}/through"
    result = await threads.deferToThread(_chromium, pac_url, proxied, tmp_path / "one")
    assert "<p>page /through</p>" in result.stdout, result.stderr[-2000:]
    targets = [(r.method, r.target, r.status) for r in reporter.records]
    assert ("GET", "/proxy.pac", 200) in targets, "Chromium fetched the PAC file"
    assert ("GET", proxied, 200) in targets, "the page came through the proxy"

    direct = f"http://direct.test:{html_origin}/around"
    result = await threads.deferToThread(_chromium, pac_url, direct, tmp_path / "two")
    assert "<p>page /around</p>" in result.stdout, result.stderr[-2000:]
    assert not any("direct.test" in r.target for r in reporter.records), \
        "the direct host was reached without the proxy"


# -- the documentation ----------------------------------------------------------------

def test_the_example_in_docs_pac_md_reads_and_generates_the_file_shown():
    import tomllib

    from multiproxy._config import read_configuration
    from multiproxy.forward._pac import render_pac

    text = (Path(__file__).resolve().parent.parent / "docs" / "pac.md").read_text()
    (toml,) = re.findall(r"```toml\n(.*?)```", text, re.S)
    (shown,) = re.findall(r"```javascript\n(.*?)```", text, re.S)
    ((_, config),) = read_configuration(tomllib.loads(toml)).proxies
    pac = config.settings.pac
    generated = render_pac(pac.proxy, pac.direct).decode().splitlines()
    lines = [line for line in shown.splitlines() if line.strip() != "..."]
    assert all(line in generated for line in lines), lines
