"""
SNI-aware CONNECT tunnels: the policy judges the ClientHello's server name,
``sni_must_match`` refuses domain fronting, ``non_tls`` rules plain tunnels;
driven by ``openssl s_client -proxy`` and raw sockets against real origins.
"""

from __future__ import annotations

import os
import shutil
import tomllib

import pytest
import pytest_twisted
import trustme
from loopback import raw_exchange, wait_for
from twisted.internet import protocol, reactor, ssl, utils
from twisted.python import usage

from multiproxy._accesslog import format_record
from multiproxy._tablereader import TableReader
from multiproxy.forward import ForwardOptions, ForwardSettings
from multiproxy.forward._config import forward_config_from_table
from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy._config import policy_from_options

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def tls_origin(ca, tmp_path):
    """(port, CA file) of a TLS origin whose certificate names three hosts."""
    cert = ca.issue_cert("localhost", "allowed.example", "denied.example")
    pem = b"".join(blob.bytes() for blob in cert.cert_chain_pems) + cert.private_key_pem.bytes()
    options = ssl.PrivateCertificate.loadPEM(pem).options()

    class Greeter(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(b"hello over tls\n")
            self.transport.loseConnection()

    port = reactor.listenSSL(
        0, protocol.Factory.forProtocol(Greeter), options, interface="127.0.0.1"
    )
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield port.getHost().port, str(ca_file)
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def echo_origin():
    """Port of a plain TCP origin that echoes what it reads, upper-cased."""

    class Upper(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(data.upper())

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Upper), interface="127.0.0.1")
    yield port.getHost().port
    pytest_twisted.blockon(port.stopListening())


def s_client(proxy: int, origin: int, servername: str, ca_file: str):
    """``openssl s_client`` through the proxy; fires with (stdout, stderr, exit code)."""
    # stdin from /dev/null with -ign_eof: read until the origin closes, then exit.
    command = (
        f"exec timeout 20 {OPENSSL} s_client -ign_eof -proxy 127.0.0.1:{proxy} "
        f"-connect localhost:{origin} -servername {servername} -CAfile {ca_file} "
        "-verify_return_error < /dev/null"
    )
    return utils.getProcessOutputAndValue("/bin/sh", ("-c", command), env=dict(os.environ))


def start(start_forward, origin_port, deny=(), **settings):
    policy = policy_from_options(deny_hosts=deny, clock=reactor.seconds) if deny else None
    return start_forward(
        policy=policy,
        settings=ForwardSettings(connect_ports=frozenset({origin_port}), **settings),
    )[0]


async def tunnel_record(reporter):
    await wait_for(lambda: any(r.kind == "connect" for r in reporter.records))
    return [r for r in reporter.records if r.kind == "connect"][-1]


@pytest_twisted.ensureDeferred
async def test_sni_name_denied_by_a_rule_ends_the_tunnel(start_forward, tls_origin, reporter):
    origin, ca_file = tls_origin
    proxy = start(start_forward, origin, deny=["denied.example"])
    out, err, code = await s_client(proxy, origin, "denied.example", ca_file)
    assert code != 0
    assert b"access denied" in err  # the alert the proxy sent in the clear
    assert b"hello over tls" not in out
    record = await tunnel_record(reporter)
    assert record.ended == "denied" and record.rule == "cli-deny-host"
    line = format_record(record)
    assert "sni=denied.example" in line and "end=denied" in line


@pytest_twisted.ensureDeferred
async def test_allowed_sni_name_completes_the_handshake_with_the_origin(
    start_forward, tls_origin, reporter
):
    origin, ca_file = tls_origin
    proxy = start(start_forward, origin, deny=["denied.example"])
    out, err, code = await s_client(proxy, origin, "allowed.example", ca_file)
    assert code == 0, err
    assert b"Verify return code: 0 (ok)" in out
    assert b"hello over tls" in out
    record = await tunnel_record(reporter)
    assert record.extra["sni"] == "allowed.example" and record.ended != "denied"
    assert " sni=allowed.example" in format_record(record)


@pytest_twisted.ensureDeferred
async def test_sni_must_match_refuses_domain_fronting(start_forward, tls_origin, reporter):
    origin, ca_file = tls_origin
    proxy = start(start_forward, origin, sni_must_match=True)
    out, err, code = await s_client(proxy, origin, "allowed.example", ca_file)
    assert code != 0 and b"hello over tls" not in out
    record = await tunnel_record(reporter)
    assert record.ended == "denied"
    assert "not the CONNECT host" in record.extra["reason"]


@pytest_twisted.ensureDeferred
async def test_sni_must_match_lets_the_connect_host_through(start_forward, tls_origin):
    origin, ca_file = tls_origin
    proxy = start(start_forward, origin, sni_must_match=True)
    out, err, code = await s_client(proxy, origin, "localhost", ca_file)
    assert code == 0, err
    assert b"hello over tls" in out


CONNECT = b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"


@pytest_twisted.ensureDeferred
async def test_non_tls_tunnel_is_relayed_when_allowed(start_forward, echo_origin, reporter):
    proxy = start(start_forward, echo_origin, non_tls="allow")
    answer = await raw_exchange(
        proxy, CONNECT % (echo_origin, echo_origin) + b"plain words\n", timeout=1.5
    )
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b"PLAIN WORDS\n")
    record = await tunnel_record(reporter)
    assert record.extra["sni"] == "-"


@pytest_twisted.ensureDeferred
async def test_non_tls_tunnel_is_closed_when_denied(start_forward, echo_origin, reporter):
    proxy = start(start_forward, echo_origin, non_tls="deny")
    answer = await raw_exchange(proxy, CONNECT % (echo_origin, echo_origin) + b"plain words\n")
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert b"PLAIN" not in answer
    record = await tunnel_record(reporter)
    assert record.ended == "denied"
    assert record.extra["reason"] == "the tunnel does not start with TLS"


@pytest_twisted.ensureDeferred
async def test_malformed_client_hello_gets_a_decode_error_alert(start_forward, echo_origin, reporter):
    proxy = start(start_forward, echo_origin)
    answer = await raw_exchange(
        proxy, CONNECT % (echo_origin, echo_origin) + b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"
    )
    assert answer.endswith(b"\x15\x03\x01\x00\x02\x02\x32")
    assert (await tunnel_record(reporter)).ended == "denied"


@pytest_twisted.ensureDeferred
async def test_stalled_client_hello_is_refused_after_the_hello_timeout(
    start_forward, echo_origin, reporter
):
    proxy = start(start_forward, echo_origin, hello_timeout=0.3)
    answer = await raw_exchange(proxy, CONNECT % (echo_origin, echo_origin) + b"\x16\x03\x01")
    assert answer.startswith(b"HTTP/1.1 200 ")
    record = await tunnel_record(reporter)
    assert record.ended == "denied"


@pytest_twisted.ensureDeferred
async def test_without_peeking_a_plain_tunnel_has_no_sni_field(
    start_forward, echo_origin, reporter
):
    proxy = start(start_forward, echo_origin, sni_peek=False, non_tls="deny")
    answer = await raw_exchange(proxy, CONNECT % (echo_origin, echo_origin) + b"abc", timeout=1)
    assert answer.endswith(b"ABC")
    record = await tunnel_record(reporter)
    assert "sni" not in record.extra and " sni=" not in format_record(record)


def test_forward_options_take_the_sni_and_non_tls_options():
    options = ForwardOptions()
    options.parseOptions(["--sni-must-match", "--non-tls", "deny"])
    settings = options.config.settings
    assert settings.sni_must_match and settings.non_tls == "deny" and settings.sni_peek


def test_forward_options_refuse_an_unknown_non_tls_rule():
    with pytest.raises(usage.UsageError, match="--non-tls must be allow or deny"):
        ForwardOptions().parseOptions(["--non-tls", "maybe"])


def test_forward_table_reads_sni_must_match_and_non_tls():
    table = tomllib.loads('sni_must_match = true\nnon_tls = "deny"\n')
    settings = forward_config_from_table(TableReader(table, "forward")).settings
    assert settings.sni_must_match and settings.non_tls == "deny"


def test_forward_table_refuses_a_bad_non_tls_value():
    with pytest.raises(ConfigError, match="non_tls"):
        forward_config_from_table(TableReader(tomllib.loads('non_tls = "block"\n'), "forward"))
