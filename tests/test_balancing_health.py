"""
Active health checks and backend endpoints against real loopback servers:
HTTP status, TCP connect, timeouts, and verified TLS origination.
"""

from __future__ import annotations

import socket

import pytest
import pytest_twisted
import trustme
from OpenSSL import SSL
from twisted.internet import defer, task
from twisted.internet.error import ConnectionRefusedError, TimeoutError
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from zope.interface import implementer

from multiproxy.balancing import (
    Backend,
    DeadlineEndpoint,
    DirectTCPEndpoint,
    HealthChecker,
    HTTPCheck,
    TCPCheck,
    TLSOrigination,
)


@pytest.fixture
def reactor():
    from twisted.internet import reactor

    return reactor


class StatusServer(Protocol):
    """Answers any request with the factory's current status, then closes."""

    def dataReceived(self, data):
        if b"\r\n\r\n" in data:
            status = self.factory.status
            self.factory.requests.append(data)
            self.transport.write(
                f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )
            self.transport.loseConnection()


class Silent(Protocol):
    """Accepts and never answers."""


def status_factory(status):
    f = Factory.forProtocol(StatusServer)
    f.status = status
    f.requests = []
    return f


@pytest.fixture
def listen(reactor):
    ports = []

    def listen_on(factory, tls=None):
        if tls is None:
            port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        else:
            port = reactor.listenSSL(0, factory, tls, interface="127.0.0.1")
        ports.append(port)
        return port.getHost().port

    yield listen_on
    for port in ports:
        port.stopListening()


def sleep(reactor, seconds):
    return task.deferLater(reactor, seconds, lambda: None)


@pytest_twisted.inlineCallbacks
def test_http_check_takes_a_failing_backend_down_and_brings_it_back(reactor, listen):
    server = status_factory(200)
    backend = Backend(host="127.0.0.1", port=listen(server))
    checker = HealthChecker(reactor, [backend], HTTPCheck("/healthz"), interval=0.02,
                            timeout=1, rise=2, fall=2)
    checker.startService()
    try:
        yield sleep(reactor, 0.1)
        assert backend.checked_up and backend.last_check == "HTTP 200"
        assert server.requests[0].startswith(b"GET /healthz HTTP/1.1\r\n")
        server.status = 503
        yield sleep(reactor, 0.2)
        assert not backend.checked_up
        assert backend.last_check == "failed: HTTP 503"
        server.status = 200
        yield sleep(reactor, 0.2)
        assert backend.checked_up
    finally:
        checker.stopService()


@pytest_twisted.inlineCallbacks
def test_tcp_check_marks_a_refused_port_down(reactor, listen):
    port = reactor.listenTCP(0, Factory.forProtocol(Silent), interface="127.0.0.1")
    number = port.getHost().port
    yield port.stopListening()
    dead = Backend(host="127.0.0.1", port=number)
    alive = Backend(host="127.0.0.1", port=listen(Factory.forProtocol(Silent)))
    checker = HealthChecker(reactor, [dead, alive], TCPCheck(), interval=0.02, timeout=1,
                            rise=1, fall=2)
    checker.startService()
    try:
        yield sleep(reactor, 0.15)
        assert not dead.checked_up and "refused" in dead.last_check.lower()
        assert alive.checked_up and alive.last_check == "connected"
    finally:
        checker.stopService()


@pytest_twisted.inlineCallbacks
def test_http_check_that_gets_no_answer_fails_after_its_timeout(reactor, listen):
    backend = Backend(host="127.0.0.1", port=listen(Factory.forProtocol(Silent)))
    checker = HealthChecker(reactor, [backend], HTTPCheck(), timeout=0.05)
    ok, detail = yield checker.probe(backend)
    assert not ok
    assert detail == "no answer within 0.05 s"


@pytest_twisted.inlineCallbacks
def test_stopping_the_checker_stops_probes_without_judging_backends(reactor, listen):
    backend = Backend(host="127.0.0.1", port=listen(Factory.forProtocol(Silent)))
    checker = HealthChecker(reactor, [backend], HTTPCheck(), interval=10, timeout=5, fall=1)
    checker.startService()
    yield sleep(reactor, 0.02)
    checker.stopService()
    yield sleep(reactor, 0.02)
    assert backend.checked_up
    assert not reactor.getDelayedCalls() or all(
        c.func.__qualname__.split(".")[0] != "_ProbeRun" for c in reactor.getDelayedCalls()
    )


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@implementer(IOpenSSLServerConnectionCreator)
class ServerContext:
    """TLS server connections for listenSSL, with a trustme certificate for ``name``."""

    def __init__(self, ca, name):
        self.context = SSL.Context(SSL.TLS_SERVER_METHOD)
        ca.issue_cert(name).configure_cert(self.context)

    def serverConnectionForTLS(self, protocol):
        return SSL.Connection(self.context, None)


def tls_server_options(ca, name):
    return ServerContext(ca, name)


@pytest_twisted.inlineCallbacks
def test_tls_origination_is_verified_against_the_configured_ca(reactor, listen, ca, tmp_path):
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = listen(status_factory(204), tls=tls_server_options(ca, "backend.test"))
    good = Backend(host="127.0.0.1", port=port,
                   tls=TLSOrigination(server_name="backend.test", ca_file=str(ca_file)))
    wrong_name = Backend(host="127.0.0.1", port=port,
                         tls=TLSOrigination(server_name="other.test", ca_file=str(ca_file)))
    unverified = Backend(host="127.0.0.1", port=port,
                         tls=TLSOrigination(server_name="other.test", verify=False))
    checker = HealthChecker(reactor, [], HTTPCheck(expect=(204,)), timeout=2)
    assert (yield checker.probe(good)) == (True, "HTTP 204")
    ok, detail = yield checker.probe(wrong_name)
    assert not ok
    assert (yield checker.probe(unverified)) == (True, "HTTP 204")


def test_deadline_endpoint_fails_a_connect_that_takes_too_long():
    clock = task.Clock()

    class Hanging:
        def connect(self, factory):
            return defer.Deferred()

    endpoint = DeadlineEndpoint(clock, Hanging(), 0.5)
    failures = []
    endpoint.connect(Factory.forProtocol(Protocol)).addErrback(failures.append)
    clock.advance(0.49)
    assert failures == []
    clock.advance(0.01)
    assert failures[0].check(TimeoutError)
    assert "no connection after 0.5 s" in failures[0].getErrorMessage()


def test_backend_applies_its_connect_timeout_to_endpoint_strings():
    clock = task.Clock()
    b = Backend(address="tcp:host=127.0.0.1:port=9", connect_timeout=3)
    endpoint = b.endpoint(clock)
    assert isinstance(endpoint, DirectTCPEndpoint) and endpoint.timeout == 3
    assert b.endpoint(clock) is endpoint  # parsed once per reactor
    other = Backend(address="unix:path=/nonexistent.sock", connect_timeout=2).endpoint(clock)
    assert isinstance(other, DeadlineEndpoint) and other.timeout == 2


@pytest_twisted.inlineCallbacks
def test_direct_tcp_endpoint_connects_refuses_and_cancels(reactor, listen):
    port = listen(Factory.forProtocol(Silent))
    protocol = yield DirectTCPEndpoint(reactor, "127.0.0.1", port).connect(
        Factory.forProtocol(Protocol))
    assert protocol.transport.getPeer().port == port
    protocol.transport.loseConnection()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        yield DirectTCPEndpoint(reactor, "127.0.0.1", closed).connect(
            Factory.forProtocol(Protocol))
    d = DirectTCPEndpoint(reactor, "192.0.2.1", 9).connect(Factory.forProtocol(Protocol))
    d.cancel()
    with pytest.raises(defer.CancelledError):
        yield d
