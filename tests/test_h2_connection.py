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


class _SlowUpstream:
    """A stream's protocol whose upstream never takes the request body (it pauses its reading)."""

    def makeConnection(self, transport):  # noqa: N802 (Twisted's name)
        self.transport = transport

    def dataReceived(self, data):  # noqa: N802
        self.transport.pauseProducing()

    def connectionLost(self, reason):  # noqa: N802
        pass


def test_a_reset_stream_gives_its_held_data_back_to_the_connection_window():
    import h2.config
    import h2.connection
    import h2.events

    clock = Clock()
    transport = StringTransport()
    factory = SimpleNamespace(name="test", reactor=clock, limits=Limits(), absolute_targets=False,
                              timeouts=Timeouts(keepalive=None), protocol=_SlowUpstream)
    outer = SimpleNamespace(factory=factory, transport=transport, client_host="192.0.2.7")
    conn = H2ServerConnection(outer, HTTP2Settings())
    client = h2.connection.H2Connection(h2.config.H2Configuration(header_encoding=None))
    client.initiate_connection()
    conn.downstream_data(client.data_to_send())
    client.receive_data(transport.value())
    transport.clear()
    client.send_headers(1, [(b":method", b"POST"), (b":scheme", b"http"),
                            (b":authority", b"site.test"), (b":path", b"/up")])
    for _ in range(3):  # past half the window, where h2 gives window back at all
        client.send_data(1, b"x" * 15000)
    conn.downstream_data(client.data_to_send())
    held = [e for e in client.receive_data(transport.value())
            if isinstance(e, h2.events.WindowUpdated)]
    assert held == []  # the upstream has not taken it: no window given back
    transport.clear()
    client.reset_stream(1)
    conn.downstream_data(client.data_to_send())
    updates = [e for e in client.receive_data(transport.value())
               if isinstance(e, h2.events.WindowUpdated)]
    # Without this the connection's window would shrink by every cancelled upload.
    assert [(u.stream_id, u.delta) for u in updates] == [(0, 45000)]
