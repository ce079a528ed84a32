"""The TCP relay examples, run for real on loopback."""

from __future__ import annotations

import importlib.util
import pathlib
import socket
import ssl

import pytest
import pytest_twisted
from twisted.internet import threads

from multiproxy._config import load_configuration

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"

pytestmark = pytest.mark.integration


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def reactor():
    from twisted.internet import reactor

    return reactor


def _tls_exchange(port, cafile, line):
    context = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(line)
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = tls.recv(100)
                if not chunk:
                    break
                answer += chunk
            return answer, tls.version()


@pytest_twisted.inlineCallbacks
def test_tls_termination_example_serves_the_plain_service_over_verified_tls(
    reactor, tmp_path
):
    example = _load("tcp_tls_termination")
    cert = example.self_signed(str(tmp_path))
    port = _free_port()
    service, service_port = example.build(reactor, port, cert)
    service.startService()
    try:
        answer, version = yield threads.deferToThread(_tls_exchange, port, cert, b"hello\n")
        assert answer == b"HELLO\n"
        assert version in ("TLSv1.2", "TLSv1.3")
    finally:
        yield service.stopService()
        yield service_port.stopListening()


def _first_line(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"hi\n")
        data = b""
        while data.count(b"\n") < 2:
            chunk = s.recv(100)
            if not chunk:
                break
            data += chunk
        return data


@pytest_twisted.inlineCallbacks
def test_balancing_example_spreads_clients_and_skips_the_dead_backend(reactor):
    example = _load("tcp_balancing")
    port = _free_port()
    service, listening = example.build(reactor, port)
    service.startService()
    try:
        answers = []
        for _ in range(9):
            answers.append((yield threads.deferToThread(_first_line, port)))
        names = [a.split(b"\n", 1)[0].decode() for a in answers]
        assert all(a.endswith(b"\nhi\n") for a in answers)
        assert sorted(set(names)) == ["alpha", "beta", "gamma"]
        down = [s for s in service.pool.snapshot() if s.name == "down"][0]
        # Failed connects are counted apart from the requests the backend served.
        assert down.connect_failures >= 1 and down.requests == 0
    finally:
        yield service.stopService()
        for p in listening:
            yield p.stopListening()


def test_balancing_example_configuration_file_is_valid():
    configuration = load_configuration(str(EXAMPLES / "tcp_balancing.toml"))
    (kind, config), = configuration.proxies
    assert kind.name == "tcp" and config.balance == "leastconn"
    assert [b.weight for b in config.backends] == [1, 2, 1]
