"""
The TCP relay end to end on loopback: real backends, real clients, and
openssl s_client for TLS termination.  Its failures, retries, timeouts,
half-close and PROXY headers are tested in memory in
tests/test_tcp_relay_failures.py.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess

import pytest
import pytest_twisted
import trustme
from OpenSSL import SSL
from twisted.internet import defer, task, threads
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IHalfCloseableProtocol, IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from zope.interface import implementer
from zope.interface.verify import verifyObject

from multiproxy.balancing import Backend, BackendPool, RoundRobin, TLSOrigination
from multiproxy.pipeline._interfaces import IPolicy, IProxy, IReporter
from multiproxy.pipeline._values import Decision
from multiproxy.tcp import (
    TCPBackendConfig,
    TCPConfig,
    TCPRelayFactory,
    TCPSettings,
    make_tcp_service,
    proxy_header_v1,
    server_endpoint,
)
from multiproxy.transport._splice import PIPE_SIZE
from multiproxy.transport._tls import CertificateFile, ServerTLS

pytestmark = pytest.mark.integration


@pytest.fixture
def reactor():
    from twisted.internet import reactor

    return reactor


@implementer(IReporter)
class Records:
    def __init__(self):
        self.records = []
        self.waiting = []

    def report(self, record):
        self.records.append(record)
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(record)

    def next(self):
        d = defer.Deferred()
        self.waiting.append(d)
        return d


@implementer(IHalfCloseableProtocol)
class Echo(Protocol):
    def dataReceived(self, data):
        self.transport.write(data)

    def readConnectionLost(self):
        self.transport.loseWriteConnection()

    def writeConnectionLost(self):
        self.transport.loseConnection()


class Banner(Protocol):
    """A server that speaks first (as SMTP or MySQL do)."""

    def connectionMade(self):
        self.transport.write(b"220 ready\r\n")


@implementer(IHalfCloseableProtocol)
class HeaderReader(Protocol):
    """Reads a PROXY header, records it, then echoes until end of input."""

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionMade(self):
        self.buffer = b""
        self.info = None

    def dataReceived(self, data):
        if self.info is not None:
            self.transport.write(data)
            return
        self.buffer += data
        if self.buffer.startswith(V2Parser.PREFIX):
            parser = V2Parser()
        else:
            parser = V1Parser()
        info, rest = parser.feed(self.buffer)
        if info is not None:
            self.info = info
            self.factory.headers.append((self.buffer[: len(self.buffer) - len(rest)], info))
            if rest:
                self.transport.write(rest)


@implementer(IHalfCloseableProtocol)
class Client(Protocol):
    def __init__(self):
        self.chunks = []
        self.received = 0
        self.hash = hashlib.sha256()
        self.done = defer.Deferred()

    def dataReceived(self, data):
        self.chunks.append(data)
        self.received += len(data)
        self.hash.update(data)

    def readConnectionLost(self):
        self.transport.loseConnection()

    def writeConnectionLost(self):
        pass

    def connectionLost(self, reason):
        self.done.callback(b"".join(self.chunks))


@pytest.fixture
def servers(reactor):
    ports = []

    def listen(factory):
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        ports.append(port)
        return port.getHost().port

    yield listen
    for port in ports:
        port.stopListening()


def free_port(reactor):
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend_at(port, **kwargs):
    return Backend(host="127.0.0.1", port=port, **kwargs)


def relay(reactor, servers, backends, records=None, policy=None, **settings):
    pool = BackendPool("test", backends, RoundRobin(), reactor)
    factory = TCPRelayFactory(
        reactor, pool, name="test", policy=policy,
        reporters=[records] if records is not None else [],
        settings=TCPSettings(**settings),
    )
    return factory, servers(factory)


@defer.inlineCallbacks
def connect(reactor, port):
    client = Client()
    yield TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(lambda: client)
    )
    return client


def test_tcp_relay_factory_provides_iproxy(reactor):
    pool = BackendPool("p", [backend_at(1)], RoundRobin(), reactor)
    verifyObject(IProxy, TCPRelayFactory(reactor, pool))


@pytest_twisted.inlineCallbacks
def test_bulk_transfer_is_relayed_byte_for_byte_and_reported(reactor, servers):
    records = Records()
    echo = servers(Factory.forProtocol(Echo))
    factory, port = relay(reactor, servers, [backend_at(echo)], records)
    payload = os.urandom(3 * 1024 * 1024)
    client = yield connect(reactor, port)
    client.transport.write(payload)
    client.transport.loseWriteConnection()
    data = yield client.done
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()
    record = records.records[-1] if records.records else (yield records.next())
    assert record.kind == "tcp" and record.proxy == "test"
    assert record.client_host == "127.0.0.1"
    assert record.upstream == f"127.0.0.1:{echo}"
    assert record.bytes_from_client == record.bytes_to_client == len(payload)
    assert record.ended == "done"
    assert record.target == f"127.0.0.1:{port}"


@pytest.mark.parametrize("splice", [False, True])
@pytest_twisted.inlineCallbacks
def test_slow_reader_keeps_relay_memory_flat(reactor, servers, splice):
    payload = os.urandom(24 * 1024 * 1024)

    class Source(Protocol):
        def connectionMade(self):
            self.transport.write(payload)
            self.transport.loseConnection()

    origin = servers(Factory.forProtocol(Source))
    factory, port = relay(reactor, servers, [backend_at(origin)], splice=splice)
    client = yield connect(reactor, port)
    client.transport.pauseProducing()
    peak = 0
    relayed = []
    for _ in range(40):
        yield task.deferLater(reactor, 0.01, lambda: None)
        for protocol in factory.connections:
            r = protocol.relay
            down = r.downstream
            held = len(down.dataBuffer) - down.offset + down._tempDataLen
            if r.spliced:
                held += r._pump.up.in_pipe
            peak = max(peak, held)
            relayed.append(r.bytes_from_upstream)
    assert factory.connections and all(p.relay.spliced == splice for p in factory.connections)
    # Reading from the backend stopped: the relay holds at most its own
    # bounded buffer (Twisted's 64 KiB mark plus one read, or one pipe).
    assert relayed[-1] == relayed[-10] < len(payload)
    assert peak <= (PIPE_SIZE if splice else 3 * 64 * 1024)
    client.transport.resumeProducing()
    data = yield client.done
    assert len(data) == len(payload)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload).digest()


@pytest_twisted.inlineCallbacks
def test_haproxy_listener_takes_the_client_address_from_the_header(reactor, servers):
    records = Records()
    seen = []

    @implementer(IPolicy)
    class Watch:
        def decide(self, intent):
            seen.append(intent)
            return Decision("allow")

    reader = Factory.forProtocol(HeaderReader)
    reader.headers = []
    backend = backend_at(servers(reader), proxy_protocol="v2")
    pool = BackendPool("test", [backend], RoundRobin(), reactor)
    factory = TCPRelayFactory(reactor, pool, name="test", policy=Watch(), reporters=[records])
    listening = yield server_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1").listen(factory)
    try:
        client = yield connect(reactor, listening.getHost().port)
        client.transport.write(proxy_header_v1(("203.0.113.7", 4242), ("198.51.100.1", 9000)))
        client.transport.write(b"echo me")
        yield task.deferLater(reactor, 0.1, lambda: None)
        client.transport.loseConnection()
        data = yield client.done
    finally:
        yield listening.stopListening()
    assert data == b"echo me"
    assert (seen[0].client_host, seen[0].client_port, seen[0].port) == ("203.0.113.7", 4242, 9000)
    raw, info = reader.headers[0]
    assert (info.source.host, info.source.port) == ("203.0.113.7", 4242)
    record = records.records[-1] if records.records else (yield records.next())
    assert record.client_host == "203.0.113.7"


@pytest_twisted.inlineCallbacks
def test_haproxy_header_alone_connects_a_backend_that_speaks_first(reactor, servers):
    backend = backend_at(servers(Factory.forProtocol(Banner)))
    pool = BackendPool("test", [backend], RoundRobin(), reactor)
    factory = TCPRelayFactory(reactor, pool, name="test")
    listening = yield server_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1").listen(factory)
    try:
        client = yield connect(reactor, listening.getHost().port)
        client.transport.write(proxy_header_v1(("203.0.113.7", 4242), ("198.51.100.1", 9000)))
        for _ in range(50):
            if client.chunks:
                break
            yield task.deferLater(reactor, 0.01, lambda: None)
        client.transport.loseConnection()
        yield client.done
    finally:
        yield listening.stopListening()
    assert b"".join(client.chunks) == b"220 ready\r\n"


@pytest_twisted.inlineCallbacks
def test_haproxy_listener_without_a_header_in_time_closes(reactor, servers):
    records = Records()
    backend = backend_at(servers(Factory.forProtocol(Banner)))
    pool = BackendPool("test", [backend], RoundRobin(), reactor)
    factory = TCPRelayFactory(reactor, pool, name="test", reporters=[records],
                              settings=TCPSettings(header_timeout=0.1))
    listening = yield server_endpoint(reactor, "haproxy:tcp:0:interface=127.0.0.1").listen(factory)
    try:
        client = yield connect(reactor, listening.getHost().port)
        assert (yield client.done) == b""
    finally:
        yield listening.stopListening()
    record = records.records[-1] if records.records else (yield records.next())
    assert record.ended == "no-proxy-header"
    assert backend.requests == 0


# -- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def pki(ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    files = {}
    for name in ("relay.test", "other.test"):
        cert = ca.issue_cert(name)
        path = tmp_path / f"{name}.pem"
        path.write_bytes(
            cert.private_key_pem.bytes() + b"".join(c.bytes() for c in cert.cert_chain_pems)
        )
        files[name] = str(path)
    return str(ca_file), files


def s_client(port, server_name, ca_file, data):
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", server_name,
         "-CAfile", ca_file, "-verify_return_error", "-verify_hostname", server_name,
         "-quiet"],
        input=data, capture_output=True, timeout=20,
    )


@pytest_twisted.inlineCallbacks
def test_tls_termination_verified_by_openssl_s_client_with_sni(reactor, servers, pki):
    ca_file, files = pki

    class EchoLineThenClose(Protocol):
        def dataReceived(self, data):
            self.transport.write(data)
            if data.endswith(b"\n"):
                self.transport.loseConnection()

    echo = backend_at(servers(Factory.forProtocol(EchoLineThenClose)))
    pool = BackendPool("test", [echo], RoundRobin(), reactor)
    factory = TCPRelayFactory(reactor, pool, name="test")
    tls = ServerTLS([CertificateFile(files["relay.test"]), CertificateFile(files["other.test"])],
                    alpn=())
    listening = yield server_endpoint(reactor, "tcp:0:interface=127.0.0.1", tls).listen(factory)
    port = listening.getHost().port
    try:
        for name in ("relay.test", "other.test"):
            result = yield threads.deferToThread(
                s_client, port, name, ca_file, b"hello over tls\n"
            )
            assert result.returncode == 0, result.stderr.decode()
            assert result.stdout == b"hello over tls\n"
            assert b"verify return:1" in result.stderr or b"depth=0" in result.stderr
        wrong = yield threads.deferToThread(s_client, port, "relay.test", files["other.test"],
                                            b"x\n")
        assert wrong.returncode != 0  # not our CA: verification fails
    finally:
        yield listening.stopListening()


@implementer(IOpenSSLServerConnectionCreator)
class ServerContext:
    def __init__(self, ca, name):
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        ca.issue_cert(name).configure_cert(self.context)

    def serverConnectionForTLS(self, protocol):
        return SSL.Connection(self.context, None)


def tls_echo_server(reactor, issuer, name):
    """An echo server on loopback presenting a certificate for ``name`` from ``issuer``."""
    return reactor.listenSSL(0, Factory.forProtocol(Echo), ServerContext(issuer, name),
                             interface="127.0.0.1")


@defer.inlineCallbacks
def round_trip(reactor, port, records, data):
    """Send ``data`` through the relay at ``port``, read its echo, close: (echo, record)."""
    client = yield connect(reactor, port)
    client.transport.write(data)
    for _ in range(200):
        if client.received >= len(data):
            break
        yield task.deferLater(reactor, 0.01, lambda: None)
    client.transport.loseConnection()
    answer = yield client.done
    record = records.records[-1] if records.records else (yield records.next())
    return answer, record


@pytest_twisted.inlineCallbacks
def test_tls_origination_verifies_the_backend(reactor, servers, ca, pki):
    ca_file, _ = pki
    records = Records()
    tls_echo = tls_echo_server(reactor, ca, "db.test")
    try:
        good = backend_at(tls_echo.getHost().port, tls=TLSOrigination("db.test", ca_file))
        _, port = relay(reactor, servers, [good], records)
        answer, record = yield round_trip(reactor, port, records, b"secret")
        assert answer == b"secret"
        assert record.upstream == good.name and good.failures == 0
    finally:
        yield tls_echo.stopListening()


@pytest.mark.parametrize("refusal", ["wrong-name", "unknown-ca"])
@pytest_twisted.inlineCallbacks
def test_tls_origination_fails_over_past_a_certificate_that_fails_verification(
    reactor, servers, ca, pki, refusal
):
    """
    A backend whose certificate is refused (names another host, or is signed
    by a CA we do not trust) counts as a failed connect: the next backend
    gets the connection and the client's bytes, and never notices.
    """
    ca_file, _ = pki
    records = Records()
    issuer = ca if refusal == "wrong-name" else trustme.CA()
    bad_tls = tls_echo_server(reactor, issuer, "bad.test")
    good_tls = tls_echo_server(reactor, ca, "db.test")
    try:
        name = "db.test" if refusal == "wrong-name" else "bad.test"
        bad = backend_at(bad_tls.getHost().port, tls=TLSOrigination(name, ca_file))
        good = backend_at(good_tls.getHost().port, tls=TLSOrigination("db.test", ca_file))
        _, port = relay(reactor, servers, [bad, good], records)
        # The bytes are held while the first handshake fails, then echoed by the second.
        answer, record = yield round_trip(reactor, port, records, b"secret")
        assert answer == b"secret"
        assert record.upstream == good.name
        assert record.bytes_from_upstream == 6
        assert (bad.failures, bad.active) == (1, 0)
        assert (good.failures, good.requests) == (0, 1)
    finally:
        yield bad_tls.stopListening()
        yield good_tls.stopListening()


@pytest_twisted.inlineCallbacks
def test_tls_origination_to_only_refused_certificates_ends_connect_failed(
    reactor, servers, ca, pki
):
    ca_file, _ = pki
    records = Records()
    tls_echo = tls_echo_server(reactor, ca, "db.test")
    try:
        wrong = backend_at(tls_echo.getHost().port, tls=TLSOrigination("wrong.test", ca_file))
        _, port = relay(reactor, servers, [wrong], records)
        client = yield connect(reactor, port)
        client.transport.write(b"secret")
        assert (yield client.done) == b""
        record = records.records[-1] if records.records else (yield records.next())
        assert record.ended == "connect-failed" and record.upstream is None
        assert record.bytes_to_upstream == 6 and record.bytes_from_upstream == 0
        assert wrong.failures == 1
    finally:
        yield tls_echo.stopListening()


@pytest_twisted.inlineCallbacks
def test_tls_handshake_that_never_completes_is_bounded_by_the_connect_timeout(
    reactor, servers, ca, pki
):
    """A backend that accepts TCP but never answers the ClientHello is given up on in time."""
    ca_file, _ = pki
    records = Records()

    class Silent(Protocol):
        pass

    echo = servers(Factory.forProtocol(Echo))
    silent = backend_at(servers(Factory.forProtocol(Silent)),
                        tls=TLSOrigination("db.test", ca_file))
    plain = backend_at(echo)
    _, port = relay(reactor, servers, [silent, plain], records, connect_timeout=0.3)
    started = reactor.seconds()
    answer, record = yield round_trip(reactor, port, records, b"late")
    assert answer == b"late"
    assert 0.25 <= reactor.seconds() - started < 3
    assert record.upstream == plain.name
    assert silent.failures == 1


@pytest_twisted.inlineCallbacks
def test_client_leaving_during_the_backend_tls_handshake_closes_the_backend_connection(
    reactor, servers, ca, pki
):
    ca_file, _ = pki
    records = Records()
    lost = defer.Deferred()

    class Silent(Protocol):
        def connectionLost(self, reason=None):
            lost.callback(None)

    silent = backend_at(servers(Factory.forProtocol(Silent)),
                        tls=TLSOrigination("db.test", ca_file))
    factory, port = relay(reactor, servers, [silent], records, connect_timeout=30)
    client = yield connect(reactor, port)
    yield task.deferLater(reactor, 0.1, lambda: None)  # the ClientHello is out
    client.transport.abortConnection()
    yield client.done
    record = records.records[-1] if records.records else (yield records.next())
    assert record.ended == "client-closed" and record.upstream is None
    yield defer.DeferredList([lost, task.deferLater(reactor, 3, lambda: None)],
                             fireOnOneCallback=True)
    assert lost.called  # the half-open TLS connection was abandoned, not left behind
    assert silent.failures == 0  # the client left: not the backend's fault
    assert not factory.connections


# -- the service ---------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_make_tcp_service_balances_over_backends_and_drains_on_stop(reactor, servers):
    records = Records()

    def named(label):
        class Named(Protocol):
            def connectionMade(self):
                self.transport.write(label)
                self.transport.loseConnection()

        return Factory.forProtocol(Named)

    backends = tuple(TCPBackendConfig(f"tcp:host=127.0.0.1:port={servers(named(n))}")
                     for n in (b"a", b"b", b"c"))
    port = free_port(reactor)
    config = TCPConfig(name="svc", listen=(f"tcp:{port}:interface=127.0.0.1",),
                       backends=backends, balance="roundrobin")
    service = make_tcp_service(config, reactor, [records])
    service.startService()
    try:
        answers = []
        for _ in range(6):
            client = yield connect(reactor, port)
            answers.append((yield client.done))
        assert sorted(answers) == [b"a", b"a", b"b", b"b", b"c", b"c"]
        assert [s.requests for s in service.pool.snapshot()] == [2, 2, 2]
    finally:
        yield service.stopService()


def _proxy_then_tls(port, ca_file, header, line):
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(header)  # the PROXY header travels in clear, before TLS
        with context.wrap_socket(raw, server_hostname="relay.test") as tls:
            tls.sendall(line)
            return tls.recv(100)


@pytest_twisted.inlineCallbacks
def test_haproxy_tls_listener_reads_the_header_then_terminates_tls(reactor, servers, pki):
    ca_file, files = pki
    records = Records()

    class EchoLine(Protocol):
        def dataReceived(self, data):
            self.transport.write(data)

    echo = backend_at(servers(Factory.forProtocol(EchoLine)))
    pool = BackendPool("test", [echo], RoundRobin(), reactor)
    factory = TCPRelayFactory(reactor, pool, name="test", reporters=[records])
    tls = ServerTLS([CertificateFile(files["relay.test"])], alpn=())
    listening = yield server_endpoint(
        reactor, "haproxy:tcp:0:interface=127.0.0.1", tls).listen(factory)
    try:
        header = proxy_header_v1(("203.0.113.9", 6000), ("198.51.100.1", 443))
        answer = yield threads.deferToThread(
            _proxy_then_tls, listening.getHost().port, ca_file, header, b"over tls\n")
    finally:
        yield listening.stopListening()
    assert answer == b"over tls\n"
    record = records.records[-1] if records.records else (yield records.next())
    assert record.client_host == "203.0.113.9" and record.client_port == 6000


@pytest_twisted.inlineCallbacks
def test_stopping_the_service_lets_connections_run_until_the_shutdown_timeout(
    reactor, servers
):
    records = Records()
    echo = servers(Factory.forProtocol(Echo))
    port = free_port(reactor)
    config = TCPConfig(name="svc", listen=(f"tcp:{port}:interface=127.0.0.1",),
                       backends=(TCPBackendConfig(f"tcp:host=127.0.0.1:port={echo}"),),
                       shutdown_timeout=0.3)
    service = make_tcp_service(config, reactor, [records])
    service.startService()
    client = yield connect(reactor, port)
    client.transport.write(b"still here")
    yield task.deferLater(reactor, 0.05, lambda: None)
    started = reactor.seconds()
    stopped = service.stopService()
    fired = []
    stopped.addCallback(fired.append)
    yield task.deferLater(reactor, 0.1, lambda: None)
    assert not fired  # the open connection is given its time
    client.transport.write(b" and talking")
    yield stopped
    assert 0.25 <= reactor.seconds() - started < 2
    data = yield client.done
    assert data == b"still here and talking"
    assert records.records[-1].ended == "error"
