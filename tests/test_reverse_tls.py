"""
Tests for multiproxy.transport._tls: SNI certificate choice, TLS policy, ALPN, reload,
and verification of https upstreams.

Handshakes are checked twice: in memory (two pyOpenSSL connections joined by
their BIOs, no reactor) and over loopback with ``openssl s_client``, the way
a person would check a server.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import pytest_twisted
import trustme
from cryptography import x509
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface.verify import verifyObject

from multiproxy.pipeline._errors import ConfigError
from multiproxy.transport._tls import (
    CertificateFile,
    ServerTLS,
    certificate_names,
    client_tls,
    tls_client_endpoint,
    tls_server_endpoint,
)

OPENSSL = shutil.which("openssl")


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def certdir(tmp_path: Path, ca: trustme.CA) -> Path:
    """A directory with a.test and b.test (cert+key in one file) and *.w.test (key apart)."""
    d = tmp_path / "certs"
    d.mkdir()
    ca.issue_cert("a.test").private_key_and_cert_chain_pem.write_to_path(str(d / "a.pem"))
    ca.issue_cert("b.test", "www.b.test").private_key_and_cert_chain_pem.write_to_path(
        str(d / "b.pem"))
    wild = ca.issue_cert("*.w.test")
    wild.cert_chain_pems[0].write_to_path(str(d / "w.crt"))
    wild.private_key_pem.write_to_path(str(d / "w.key"))
    (d / "README.txt").write_text("not a certificate")
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return d


def _serial(pem_or_der: bytes) -> int:
    return x509.load_der_x509_certificate(pem_or_der).serial_number


def _file_serial(path: Path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


def handshake(
    server_tls: ServerTLS,
    server_name: bytes | None,
    alpn: list[bytes] | None = None,
    max_version: int | None = None,
) -> SSL.Connection:
    """Join a client and a server connection in memory; return the client after the handshake."""
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_version is not None:
        ctx.set_min_proto_version(SSL.TLS1_VERSION)
        ctx.set_max_proto_version(max_version)
        ctx.set_cipher_list(b"DEFAULT@SECLEVEL=0")
    if alpn:
        ctx.set_alpn_protos(alpn)
    client = SSL.Connection(ctx, None)
    if server_name:
        client.set_tlsext_host_name(server_name)
    client.set_connect_state()
    server = server_tls.serverConnectionForTLS(None)
    server.set_accept_state()
    for _ in range(20):
        for src, dst in ((client, server), (server, client)):
            try:
                src.do_handshake()
            except SSL.WantReadError:
                pass
            try:
                data = src.bio_read(65536)
            except SSL.WantReadError:
                data = b""
            if data:
                dst.bio_write(data)
        if client.get_peer_certificate() is not None and server.get_cipher_name():
            try:
                client.do_handshake()
                return client
            except SSL.WantReadError:
                pass
    raise AssertionError("handshake did not finish")


def test_server_tls_provides_the_twisted_interface(certdir: Path) -> None:
    verifyObject(IOpenSSLServerConnectionCreator, ServerTLS(directory=str(certdir)))


def test_directory_names_come_from_san(certdir: Path) -> None:
    tls = ServerTLS(directory=str(certdir))
    assert tls.names == ["*.w.test", "a.test", "b.test", "www.b.test"]


def test_sni_selects_matching_certificate_in_memory(certdir: Path) -> None:
    tls = ServerTLS(directory=str(certdir))
    for name, file in [(b"a.test", "a.pem"), (b"b.test", "b.pem"), (b"WWW.B.TEST", "b.pem"),
                       (b"x.w.test", "w.crt")]:
        client = handshake(tls, name)
        got = client.get_peer_certificate().to_cryptography().serial_number
        assert got == _file_serial(certdir / file), name


def test_wildcard_certificate_covers_one_label_only(certdir: Path) -> None:
    tls = ServerTLS(directory=str(certdir), default="a.test")
    client = handshake(tls, b"x.y.w.test")
    assert client.get_peer_certificate().to_cryptography().serial_number == _file_serial(
        certdir / "a.pem")


def test_no_sni_and_unknown_name_get_the_default(certdir: Path) -> None:
    tls = ServerTLS(directory=str(certdir), default="b.test")
    for name in (None, b"unknown.example"):
        client = handshake(tls, name)
        assert client.get_peer_certificate().to_cryptography().serial_number == _file_serial(
            certdir / "b.pem")


def test_default_is_first_file_when_not_configured(certdir: Path) -> None:
    client = handshake(ServerTLS(directory=str(certdir)), None)
    assert client.get_peer_certificate().to_cryptography().serial_number == _file_serial(
        certdir / "a.pem")


def test_alpn_selects_http11_and_tolerates_h2_only_clients(certdir: Path) -> None:
    tls = ServerTLS(directory=str(certdir))
    assert handshake(tls, b"a.test", alpn=[b"h2", b"http/1.1"]).get_alpn_proto_negotiated() == (
        b"http/1.1")
    assert handshake(tls, b"a.test", alpn=[b"h2"]).get_alpn_proto_negotiated() == b""


def test_tls12_is_accepted_and_tls11_refused(certdir: Path) -> None:
    tls = ServerTLS(directory=str(certdir))
    assert handshake(tls, b"a.test", max_version=SSL.TLS1_2_VERSION).get_protocol_version_name() \
        == "TLSv1.2"
    with pytest.raises(SSL.Error):
        handshake(tls, b"a.test", max_version=SSL.TLS1_1_VERSION)


def test_listed_certificates_with_explicit_names(tmp_path: Path, ca: trustme.CA) -> None:
    leaf = ca.issue_cert("listed.test")
    leaf.cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    leaf.private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    tls = ServerTLS([CertificateFile(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"),
                                     names=("alias.test",))])
    assert tls.names == ["alias.test"]


def test_common_name_is_used_without_san(ca: trustme.CA) -> None:
    import datetime

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn-only.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    assert certificate_names(cert) == ("cn-only.test",)


def test_mismatched_key_is_refused_with_the_file_name(tmp_path: Path, ca: trustme.CA) -> None:
    ca.issue_cert("a.test").cert_chain_pems[0].write_to_path(str(tmp_path / "c.pem"))
    ca.issue_cert("a.test").private_key_pem.write_to_path(str(tmp_path / "k.pem"))
    with pytest.raises(ConfigError, match="c.pem.*cannot be used"):
        ServerTLS([CertificateFile(str(tmp_path / "c.pem"), str(tmp_path / "k.pem"))])


def test_missing_files_and_unknown_default_are_config_errors(certdir: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read certificate"):
        ServerTLS([CertificateFile("/nonexistent/x.pem")])
    with pytest.raises(ConfigError, match="does not exist"):
        ServerTLS(directory="/nonexistent/dir")
    with pytest.raises(ConfigError, match="no certificate"):
        ServerTLS()
    with pytest.raises(ConfigError, match="'c.test' is not among"):
        ServerTLS(directory=str(certdir), default="c.test")


def test_reload_serves_new_certificate_to_new_handshakes(certdir: Path, ca: trustme.CA) -> None:
    tls = ServerTLS(directory=str(certdir))
    before = handshake(tls, b"a.test").get_peer_certificate().to_cryptography().serial_number
    ca.issue_cert("a.test").private_key_and_cert_chain_pem.write_to_path(str(certdir / "a.pem"))
    ca.issue_cert("c.test").private_key_and_cert_chain_pem.write_to_path(str(certdir / "c.pem"))
    tls.reload()
    after = handshake(tls, b"a.test").get_peer_certificate().to_cryptography().serial_number
    assert after != before
    assert after == _file_serial(certdir / "a.pem")
    assert "c.test" in tls.names


def test_failed_reload_keeps_the_old_certificates(certdir: Path) -> None:
    tls = ServerTLS(directory=str(certdir))
    serial = _file_serial(certdir / "b.pem")
    (certdir / "b.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"
                                   "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigError, match="b.pem"):
        tls.reload()
    got = handshake(tls, b"b.test").get_peer_certificate().to_cryptography().serial_number
    assert got == serial


# ---- over loopback, with real clients ---------------------------------------------------------


class _Hello(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello\n")
        self.transport.loseConnection()


class _Collect(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if b"\n" in self.data and not self.done.called:
            self.done.callback(self.data)
            self.transport.loseConnection()

    def connectionLost(self, reason: object) -> None:
        if not self.done.called:
            self.done.errback(reason)


@pytest.fixture
def listening(reactor, certdir: Path):  # type: ignore[no-untyped-def]
    tls = ServerTLS(directory=str(certdir), default="a.test")
    factory = protocol.Factory.forProtocol(_Hello)
    endpoint = tls_server_endpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), tls)
    port = pytest_twisted.blockon(endpoint.listen(factory))
    yield port.getHost().port, tls
    pytest_twisted.blockon(defer.maybeDeferred(port.stopListening))


@pytest.fixture
def reactor():  # type: ignore[no-untyped-def]
    from twisted.internet import reactor as r

    return r


def _s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [OPENSSL, "s_client", "-ign_eof", "-connect", f"127.0.0.1:{port}", *args],
        input="", capture_output=True, text=True, timeout=20,
    )


def _deferred_s_client(port: int, *args: str) -> defer.Deferred[str]:
    from twisted.internet import threads

    return threads.deferToThread(lambda: _s_client(port, *args))


@pytest.mark.integration
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest_twisted.inlineCallbacks
def test_openssl_s_client_gets_the_certificate_for_each_servername(listening, certdir):
    port, _ = listening
    ca = str(certdir.parent / "ca.pem")
    for name in ("a.test", "b.test"):
        out = yield _deferred_s_client(port, "-servername", name, "-verify_hostname", name,
                                       "-CAfile", ca, "-verify_return_error", "-alpn", "http/1.1")
        assert "Verify return code: 0 (ok)" in out.stdout, out.stdout + out.stderr
        assert "ALPN protocol: http/1.1" in out.stdout
        assert "hello" in out.stdout
    out = yield _deferred_s_client(port, "-noservername", "-verify_hostname", "a.test",
                                   "-CAfile", ca, "-verify_return_error")
    assert "Verify return code: 0 (ok)" in out.stdout, out.stdout + out.stderr
    out = yield _deferred_s_client(port, "-noservername", "-verify_hostname", "b.test",
                                   "-CAfile", ca, "-verify_return_error")
    assert "Verify return code: 0" not in out.stdout


@pytest.mark.integration
@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest_twisted.inlineCallbacks
def test_openssl_s_client_with_tls11_is_refused_by_the_server(listening):
    port, _ = listening
    out = yield _deferred_s_client(port, "-servername", "a.test", "-tls1_1",
                                   "-cipher", "DEFAULT@SECLEVEL=0")
    assert out.returncode != 0
    assert "protocol version" in out.stdout + out.stderr
    assert "hello" not in out.stdout


@defer.inlineCallbacks
def _fetch(reactor, port: int, creator) -> defer.Deferred[bytes]:  # type: ignore[no-untyped-def]
    endpoint = tls_client_endpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port), creator)
    proto = yield endpoint.connect(protocol.Factory.forProtocol(_Collect))
    data = yield proto.done
    return data


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_client_tls_verifies_against_a_ca_file(reactor, listening, certdir):
    port, _ = listening
    ca = str(certdir.parent / "ca.pem")
    data = yield _fetch(reactor, port, client_tls("b.test", ca_file=ca))
    assert data == b"hello\n"


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_client_tls_refuses_a_certificate_for_another_name(reactor, listening, certdir):
    port, _ = listening
    ca = str(certdir.parent / "ca.pem")
    # The server has no certificate for c.test and answers with a.test's.
    with pytest.raises(VerificationError):
        yield _fetch(reactor, port, client_tls("c.test", ca_file=ca))


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_client_tls_refuses_an_untrusted_ca_with_system_trust(reactor, listening):
    port, _ = listening
    with pytest.raises(SSL.Error):
        yield _fetch(reactor, port, client_tls("a.test"))


@pytest.mark.integration
@pytest_twisted.inlineCallbacks
def test_client_tls_without_verification_only_when_asked(reactor, listening):
    port, _ = listening
    data = yield _fetch(reactor, port, client_tls("c.test", verify=False))
    assert data == b"hello\n"


def test_client_tls_bad_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read CA file"):
        client_tls("a.test", ca_file=str(tmp_path / "missing.pem"))
    (tmp_path / "empty.pem").write_text("nothing")
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        client_tls("a.test", ca_file=str(tmp_path / "empty.pem"))
