"""Shared pytest fixtures: loopback origins and a running forward proxy."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from zope.interface import implementer

from multiproxy.pipeline._interfaces import IReporter


@implementer(IReporter)
class RecordingReporter:
    """Keeps every AccessRecord it is given, for tests to inspect."""

    def __init__(self) -> None:
        self.records = []

    def report(self, record) -> None:
        self.records.append(record)


def _stop(port) -> None:
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def origin():
    """Port of a twisted.web origin with the test resources of loopback.origin_site."""
    from loopback import origin_site

    port = reactor.listenTCP(0, origin_site(), interface="127.0.0.1")
    yield port.getHost().port
    _stop(port)


@pytest.fixture
def reporter():
    return RecordingReporter()


@pytest.fixture
def start_forward(reporter):
    """Start a ForwardProxy on 127.0.0.1 (keyword arguments go to ForwardProxy); returns its port."""
    from multiproxy.forward import ForwardProxy

    started = []

    def start(**kwargs):
        kwargs.setdefault("reporters", (reporter,))
        factory = ForwardProxy(reactor, **kwargs)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        started.append((port, factory))
        return port.getHost().port, factory

    yield start
    for port, factory in started:
        _stop(port)
        for conn in list(factory.connections):
            conn.transport.abortConnection()
        factory.pool.close_idle()


@pytest.fixture
def forward(start_forward):
    """Port of a forward proxy with default settings."""
    port, _ = start_forward()
    return port
