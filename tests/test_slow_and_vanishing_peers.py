"""
Slow and vanishing peers, on both sides of a live forward proxy over loopback.

Each test states what the peer does and checks what the proxy did about it:
the status the client saw (or how its connection ended), what the upstream
saw, how long it took, and that nothing was logged as a traceback
(`no_tracebacks`, autouse).
"""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from hardening import (  # noqa: F401
    Firehose,
    FixedChooser,
    Recorder,
    StalledUpstream,
    no_tracebacks,
    recorder,
    rss_bytes,
    sleep,
    status_of,
    to_recorder,
    wait_until,
    write_buffered,
)
from loopback import curl, listen_scripted, raw_exchange
from twisted.internet import defer, protocol, reactor, tcp

from multiproxy.forward import ForwardSettings, Origin
from multiproxy.http._server import Timeouts


def _url(port: int, path: str = "/") -> str:
    return f"http://127.0.0.1:{port}{path}"


class Client(protocol.Protocol):
    """A raw client that records what it gets and when its connection ends."""

    def __init__(self) -> None:
        self.received = bytearray()
        self.lost = None
        self.lost_at = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason=None) -> None:
        self.lost = reason
        self.lost_at = time.monotonic()


async def connect(port: int) -> Client:
    return await protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", port)


@pytest.fixture
def silent_recorder():
    rec = Recorder(answer=False)
    yield rec
    pytest_twisted.blockon(rec.stop())


# -- slow clients ----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_slowloris_trickled_head_gets_408_at_the_header_deadline(start_forward, recorder):
    port, _ = start_forward(timeouts=Timeouts(header=0.6), chooser=to_recorder(recorder))
    client = await connect(port)
    started = time.monotonic()
    head = b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nX-Padding: " + b"a" * 100
    for byte in head:
        if client.lost is not None:
            break
        client.transport.write(bytes([byte]))
        await sleep(0.02)
    assert await wait_until(lambda: client.lost is not None, timeout=3)
    elapsed = client.lost_at - started
    # Trickling bytes does not push the deadline back.
    assert 0.5 <= elapsed < 1.5, elapsed
    assert status_of(bytes(client.received)) == 408
    assert b"\r\nConnection: close" in client.received
    assert recorder.raw == b""


@pytest_twisted.ensureDeferred
async def test_silent_connection_is_closed_at_the_keepalive_timeout(start_forward):
    port, factory = start_forward(timeouts=Timeouts(keepalive=0.4))
    client = await connect(port)
    started = time.monotonic()
    assert await wait_until(lambda: client.lost is not None, timeout=3)
    assert 0.3 <= client.lost_at - started < 1.5
    assert client.received == b""  # nothing was asked, so nothing is answered
    assert not factory.connections


@pytest_twisted.ensureDeferred
async def test_stalled_request_body_gets_408_and_upstream_is_cut(
    start_forward, silent_recorder, reporter
):
    port, _ = start_forward(timeouts=Timeouts(client_idle=0.5), chooser=to_recorder(silent_recorder))
    client = await connect(port)
    client.transport.write(b"POST http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n"
                           b"Content-Length: 1000\r\n\r\n" + b"z" * 100)
    assert await wait_until(lambda: client.lost is not None, timeout=3)
    assert status_of(bytes(client.received)) == 408
    assert b"request body" in client.received
    assert await wait_until(lambda: silent_recorder.connections and silent_recorder.connections[0].lost)
    assert silent_recorder.requests == []  # never a complete request upstream
    assert reporter.records[-1].ended == "client-timeout"


@pytest_twisted.ensureDeferred
async def test_client_that_stops_reading_pauses_the_upstream(start_forward):
    """
    A client that reads nothing of a 1 GiB response: the proxy stops
    reading the upstream, its own buffer for the client stays within one
    transport buffer, and the origin is held back (it stops writing).
    """
    firehose = Firehose(size=1 << 30)
    port, factory = start_forward(chooser=FixedChooser(Origin("http", "127.0.0.1", firehose.number)))
    try:
        client = await connect(port)
        client.transport.pauseProducing()  # read nothing
        client.transport.write(b"GET http://origin.test/big HTTP/1.1\r\nHost: origin.test\r\n\r\n")
        assert await wait_until(lambda: firehose.pauses > 0, timeout=5)
        # Wait for the kernel buffers on the way to fill: the origin stops.
        last = -1
        for _ in range(100):
            await sleep(0.1)
            if firehose.written == last:
                break
            last = firehose.written
        assert firehose.written == last, "the origin never stopped writing"
        held_back = firehose.written
        assert held_back < 200 << 20, held_back
        # The proxy is not reading the upstream, and holds little itself.
        [server] = factory.connections
        assert write_buffered(server.transport) <= 256 * 1024
        upstream_readers = [
            r for r in reactor.getReaders()
            if isinstance(r, tcp.Connection) and r.getPeer().port == firehose.number
        ]
        assert upstream_readers == []
        # Once the client reads again, the stream resumes.
        client.transport.resumeProducing()
        assert await wait_until(lambda: firehose.written > held_back + (8 << 20), timeout=10)
    finally:
        client.transport.abortConnection()
        await firehose.stop()


@pytest_twisted.ensureDeferred
async def test_huge_response_to_slow_reader_keeps_memory_flat(start_forward):
    """
    96 MiB streamed to curl reading at 48 MB/s: the test process (proxy,
    origin and all) grows by far less than the body.
    """
    size = 96 << 20
    firehose = Firehose(size=size)
    port, _ = start_forward(chooser=FixedChooser(Origin("http", "127.0.0.1", firehose.number)))
    peak = [rss_bytes()]
    base = peak[0]
    sampling = True

    async def sample():
        while sampling:
            peak[0] = max(peak[0], rss_bytes())
            await sleep(0.05)

    sampler = defer.ensureDeferred(sample())
    try:
        out, err, code = await curl(
            "-x", _url(port, ""), "--limit-rate", "48M", "-o", "/dev/null",
            "-w", "%{size_download}", _url(firehose.number, "/huge"), timeout=60,
        )
    finally:
        sampling = False
        await sampler
        await firehose.stop()
    assert code == 0, err
    assert out == str(size).encode()
    growth = peak[0] - base
    assert growth < 24 << 20, f"RSS grew by {growth / 2**20:.1f} MiB for a {size >> 20} MiB body"


# -- vanishing clients ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_client_aborting_mid_upload_closes_the_upstream_connection(
    start_forward, silent_recorder, reporter
):
    port, _ = start_forward(chooser=to_recorder(silent_recorder))
    client = await connect(port)
    client.transport.write(b"POST http://origin.test/up HTTP/1.1\r\nHost: origin.test\r\n"
                           b"Content-Length: 10000000\r\n\r\n")
    for _ in range(20):
        client.transport.write(b"u" * 10000)
    assert await wait_until(lambda: len(silent_recorder.raw) > 150_000)
    client.transport.abortConnection()
    assert await wait_until(lambda: silent_recorder.connections[0].lost)
    assert silent_recorder.requests == []  # the upload never completed upstream
    assert await wait_until(lambda: reporter.records)
    assert reporter.records[-1].ended == "client-closed"


@pytest_twisted.ensureDeferred
async def test_client_aborting_while_upstream_connects_cancels_the_connect(start_forward, reporter):
    stalled = StalledUpstream()
    port, factory = start_forward(chooser=FixedChooser(stalled))
    client = await connect(port)
    client.transport.write(b"GET http://stalled.test/ HTTP/1.1\r\nHost: stalled.test\r\n\r\n")
    assert await wait_until(lambda: stalled.attempts == 1)
    client.transport.abortConnection()
    assert await wait_until(lambda: stalled.cancelled == 1)
    assert await wait_until(lambda: not factory.connections)
    assert reporter.records[-1].ended == "client-closed"


# -- dying and silent backends ----------------------------------------------------


@pytest.mark.parametrize(
    "script, curl_args",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 5000, ()),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"p" * 5000 + b"\r\n", ()),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"p" * 5000 + b"\r\n",
         ("-0",)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 5000, ("-0",)),
    ],
    ids=["length", "chunked", "chunked-to-http10-client", "length-to-http10-client"],
)
@pytest_twisted.ensureDeferred
async def test_backend_dying_mid_body_is_seen_as_truncated(forward, script, curl_args):
    port, _ = listen_scripted(script, close=True)
    try:
        out, err, code = await curl(*curl_args, "-x", _url(forward, ""), _url(port.getHost().port))
    finally:
        await port.stopListening()
    if "-0" in curl_args and b"chunked" in script:
        # Close-delimited to this client, so only a reset can say "truncated"
        # (a clean close would pass the prefix off as the whole body).
        assert code == 56, (code, err)
        assert (b"p" * 5000).startswith(out)
    else:
        # 18: partial file, the framing said more was due.
        assert code == 18, (code, err)
        assert out == b"p" * 5000


@pytest_twisted.ensureDeferred
async def test_backend_reset_mid_body_is_seen_as_truncated(forward):
    class Resetting(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 50000\r\n\r\n" + b"r" * 3000)
            reactor.callLater(0.05, self.transport.abortConnection)

    factory = protocol.Factory.forProtocol(Resetting)
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        out, err, code = await curl("-x", _url(forward, ""), _url(port.getHost().port))
    finally:
        await port.stopListening()
    assert code in (18, 56), (code, err)
    assert out == b"r" * 3000


@pytest_twisted.ensureDeferred
async def test_backend_that_never_answers_gets_504_at_the_response_timeout(
    start_forward, silent_recorder
):
    port, _ = start_forward(timeouts=Timeouts(response=0.5), chooser=to_recorder(silent_recorder))
    started = time.monotonic()
    answer = await raw_exchange(port, b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n"
                                b"Connection: close\r\n\r\n")
    elapsed = time.monotonic() - started
    assert status_of(answer) == 504
    assert b"no response within 0.5 s" in answer
    assert 0.4 <= elapsed < 2.0, elapsed
    # The request did reach the backend, and the proxy hung up on it.
    assert len(silent_recorder.requests) == 1
    assert await wait_until(lambda: silent_recorder.connections[0].lost)


@pytest_twisted.ensureDeferred
async def test_backend_stalling_mid_body_is_cut_at_the_idle_timeout(start_forward):
    port_obj, _ = listen_scripted(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"s" * 100, close=False
    )
    port, _ = start_forward(timeouts=Timeouts(upstream_idle=0.5))
    started = time.monotonic()
    try:
        out, err, code = await curl("-x", _url(port, ""), _url(port_obj.getHost().port))
    finally:
        await port_obj.stopListening()
    assert code == 18, (code, err)
    assert out == b"s" * 100
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("method", [b"GET", b"CONNECT"])
@pytest_twisted.ensureDeferred
async def test_dns_that_never_answers_gets_504_at_the_connect_timeout(start_forward, method, reporter):
    stalled = StalledUpstream()
    port, _ = start_forward(
        timeouts=Timeouts(connect=0.5), chooser=FixedChooser(stalled),
        settings=ForwardSettings(connect_ports=frozenset({443})),
    )
    target = b"http://stalled.test/" if method == b"GET" else b"stalled.test:443"
    started = time.monotonic()
    answer = await raw_exchange(port, method + b" " + target + b" HTTP/1.1\r\nHost: stalled.test\r\n"
                                b"Connection: close\r\n\r\n")
    elapsed = time.monotonic() - started
    assert status_of(answer) == 504
    assert b"timed out connecting to stalled.test:80 after 0.5 s" in answer
    assert 0.4 <= elapsed < 2.0, elapsed
    # The stuck attempt was cancelled, not left to pile up.
    assert stalled.attempts == stalled.cancelled == 1
    assert reporter.records[-1].status == 504
