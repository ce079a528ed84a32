"""CONNECT tunnels through the forward proxy, to a real TLS origin."""

from __future__ import annotations

import pytest
import pytest_twisted
import trustme
from loopback import curl, origin_site, raw_exchange, wait_for
from twisted.internet import reactor, ssl

from multiproxy.forward import ForwardSettings


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


@pytest_twisted.ensureDeferred
async def test_curl_https_through_connect_tunnel(start_forward, tls_origin, reporter):
    origin_port, ca_file = tls_origin
    proxy, _ = start_forward(settings=ForwardSettings(connect_ports=frozenset({origin_port})))
    out, err, code = await curl(
        "-p", "-x", f"http://127.0.0.1:{proxy}", "--cacert", ca_file,
        f"https://localhost:{origin_port}/bytes/100", f"https://localhost:{origin_port}/bytes/7",
    )
    assert code == 0, err
    assert out == b"x" * 107
    await wait_for(lambda: any(r.kind == "connect" for r in reporter.records))
    tunnel = [r for r in reporter.records if r.kind == "connect"]
    # Both requests went through one tunnel; the record shows bytes both ways.
    assert len(tunnel) == 1 or all(r.status == 200 for r in tunnel)
    assert tunnel[0].status == 200 and tunnel[0].bytes_to_client > 107
    # The relay's bytes are the upstream's too: what the origin sent, and what it was sent.
    assert 107 < tunnel[0].bytes_from_upstream <= tunnel[0].bytes_to_client
    assert 0 < tunnel[0].bytes_to_upstream <= tunnel[0].bytes_from_client


@pytest_twisted.ensureDeferred
async def test_connect_to_port_not_allowed_gets_403(forward, tls_origin):
    origin_port, ca_file = tls_origin
    out, err, code = await curl(
        "-p", "-x", f"http://127.0.0.1:{forward}", "--cacert", ca_file,
        f"https://localhost:{origin_port}/bytes/1",
    )
    assert code != 0
    assert b"403" in err


@pytest_twisted.ensureDeferred
async def test_connect_to_refused_port_gets_502_logged_as_an_upstream_error(
    start_forward, reporter
):
    proxy, _ = start_forward(settings=ForwardSettings(connect_ports=frozenset({1})))
    answer = await raw_exchange(
        proxy, b"CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 502 ")
    # Logged as an upstream error, as a GET to the same port is.
    await wait_for(lambda: reporter.records)
    [record] = reporter.records
    assert (record.kind, record.status, record.ended) == ("connect", 502, "upstream-error")
    assert record.upstream_error and record.extra["reason"]


@pytest_twisted.ensureDeferred
async def test_tunnel_half_close_still_delivers_the_answer(start_forward):
    """The client shuts its write side after its request; the answer still arrives."""
    from twisted.internet import defer, protocol

    class Upper(protocol.Protocol):
        def dataReceived(self, data):
            self.buffer = getattr(self, "buffer", b"") + data

        def readConnectionLost(self):
            self.transport.write(self.buffer.upper())
            self.transport.loseConnection()

    from twisted.internet.interfaces import IHalfCloseableProtocol
    from zope.interface import classImplements

    classImplements(Upper, IHalfCloseableProtocol)
    factory = protocol.Factory.forProtocol(Upper)
    factory.noisy = False
    backend = reactor.listenTCP(0, factory, interface="127.0.0.1")
    port = backend.getHost().port
    proxy, _ = start_forward(settings=ForwardSettings(connect_ports=frozenset({port})))
    done = defer.Deferred()

    class Client(protocol.Protocol):
        got = b""

        def connectionMade(self):
            self.transport.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

        def dataReceived(self, data):
            first = not self.got
            self.got += data
            if first and b"\r\n\r\n" in self.got:
                self.transport.write(b"hello tunnel")
                self.transport.loseWriteConnection()

        def connectionLost(self, reason):
            done.callback(self.got)

    try:
        await protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", proxy)
        got = await done
    finally:
        await backend.stopListening()
    head, _, rest = got.partition(b"\r\n\r\n")
    status, *fields = head.split(b"\r\n")
    assert status == b"HTTP/1.1 200 Connection established"
    # RFC 9110 6.6.1 (Date on a 2xx from a server with a clock); and 9.3.6:
    # no Content-Length or Transfer-Encoding on a 2xx to CONNECT.
    assert [f.split(b":")[0] for f in fields] == [b"Date"]
    assert rest.endswith(b"HELLO TUNNEL")


@pytest_twisted.ensureDeferred
async def test_bulk_tunnel_is_byte_exact_both_ways(start_forward):
    """8 MiB each way through a CONNECT tunnel to a byte-counting echo (splice path)."""
    import hashlib

    from twisted.internet import defer, protocol

    size = 8 * 1024 * 1024
    payload = hashlib.sha256(b"seed").digest() * (size // 32)

    class Echo(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(data)

    factory = protocol.Factory.forProtocol(Echo)
    factory.noisy = False
    backend = reactor.listenTCP(0, factory, interface="127.0.0.1")
    port = backend.getHost().port
    proxy, _ = start_forward(settings=ForwardSettings(connect_ports=frozenset({port})))
    done = defer.Deferred()

    class Client(protocol.Protocol):
        buffer = b""
        head_seen = False
        received = 0

        def connectionMade(self):
            self.digest = hashlib.sha256()
            self.transport.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: x\r\n\r\n".encode())

        def dataReceived(self, data):
            if not self.head_seen:
                self.buffer += data
                if b"\r\n\r\n" not in self.buffer:
                    return
                head, _, data = self.buffer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                self.head_seen = True
                self.transport.write(payload)
            self.digest.update(data)
            self.received += len(data)
            if self.received >= size:
                self.transport.loseConnection()

        def connectionLost(self, reason):
            done.callback((self.received, self.digest.hexdigest()))

    try:
        await protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", proxy)
        received, digest = await done
    finally:
        await backend.stopListening()
    assert received == size
    assert digest == hashlib.sha256(payload).hexdigest()
