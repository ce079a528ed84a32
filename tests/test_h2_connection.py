"""H2ServerConnection on a StringTransport and a task.Clock: no sockets, no reactor running."""

from __future__ import annotations

from types import SimpleNamespace

from hyperframe.frame import PingFrame, SettingsFrame
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from multiproxy.h2 import HIGH_WATER, PREFACE, H2ServerConnection, HTTP2Settings
from multiproxy.http1._parser import Limits
from multiproxy.http._server import Timeouts


def _connection(clock: Clock) -> tuple[H2ServerConnection, StringTransport]:
    transport = StringTransport()
    factory = SimpleNamespace(name="test", reactor=clock, limits=Limits(),
                              timeouts=Timeouts(keepalive=None))
    outer = SimpleNamespace(factory=factory, transport=transport, client_host="192.0.2.7")
    conn = H2ServerConnection(outer, HTTP2Settings())
    conn.downstream_data(PREFACE + SettingsFrame(0).serialize())
    return conn, transport


def test_replies_a_client_does_not_read_stop_the_reading_past_high_water():
    clock = Clock()
    conn, transport = _connection(clock)
    conn.pauseProducing()  # the client's socket is full: it does not read
    pings = PingFrame(0, opaque_data=b"12345678").serialize() * 150  # under the rate limit
    for _ in range(60):
        if transport.producerState == "paused":
            break
        conn.downstream_data(pings)
        clock.advance(1)
    assert transport.producerState == "paused"
    assert len(transport.value()) < 2 * HIGH_WATER
    assert not transport.disconnecting  # paused, not refused: it broke no rule
    conn.resumeProducing()  # the client read it all
    assert transport.producerState == "producing"
