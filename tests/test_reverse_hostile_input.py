"""
The hardening checks, repeated against the reverse proxy over loopback.

The reverse proxy shares the forward proxy's reader, client-side protocol
and upstream connections, so these replay the parser-stage corpus (in
origin-form, as a reverse proxy's clients send it, and as sent) and the
peer faults that go through its own code paths: the balancing fetcher, the
route table and the WebSocket relay.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from hardening import (  # noqa: F401
    Firehose,
    Recorder,
    no_tracebacks,
    recorder,
    sleep,
    status_of,
    wait_until,
    write_buffered,
)
from loopback import curl, listen_scripted, raw_exchange
from reverse_peers import RunningProxy, make_pool
from twisted.internet import protocol, reactor

from multiproxy.http._server import Timeouts
from multiproxy.reverse import Route

sys.path.insert(0, str(Path(__file__).parent))
from test_smuggling_vectors import _replay, split_responses
from vectors.smuggling import load_vectors

PARSER_REJECTED = [v for v in load_vectors("request", "parser") if v.status is not None]
PARSER_ACCEPTED = [v for v in load_vectors("request", "parser") if v.status is None]


def origin_form(data: bytes) -> bytes:
    return data.replace(b"http://origin.test", b"", 1)


@pytest.fixture
def reverse(recorder):
    """Start a reverse proxy whose one pool is the recorder (keyword arguments go to ReverseProxy)."""
    running = []

    def start(backend_port=None, **kwargs):
        pool = make_pool("p", [backend_port or recorder.number])
        # origin.test is served (absolute-form targets name it), and so is any other Host.
        routes = [Route("p", hosts=("origin.test",)), Route("p")]
        proxy = RunningProxy({"p": pool}, routes, **kwargs)
        running.append(proxy)
        return proxy

    yield start
    for proxy in running:
        pytest_twisted.blockon(proxy.stop())


@pytest.mark.parametrize("form", ["origin-form", "absolute-form"])
@pytest_twisted.ensureDeferred
async def test_parser_vectors_are_rejected_and_never_reach_the_backend(reverse, recorder, form):
    proxy = reverse()
    convert = origin_form if form == "origin-form" else (lambda data: data)

    async def run_one(port, vector):
        answer = await raw_exchange(port, convert(vector.data), timeout=5)
        if answer == b"":
            return
        responses = split_responses(answer)
        assert [r[0] for r in responses] == [vector.status], responses[0][1][:80]
        assert b"\r\nConnection: close" in responses[0][1]

    complaints = await _replay(proxy.port, PARSER_REJECTED, run_one)
    assert not complaints, "\n".join(complaints)
    await sleep(0.05)
    assert recorder.raw == b""
    assert not proxy.factory.connections


@pytest_twisted.ensureDeferred
async def test_accepted_parser_vectors_reach_the_backend_with_their_body(reverse, recorder):
    proxy = reverse()
    complaints = []
    for vector in PARSER_ACCEPTED:
        before = len(recorder.requests)
        answer = await raw_exchange(
            proxy.port, origin_form(vector.data) + b"GET /next HTTP/1.1\r\nHost: origin.test\r\n"
            b"Connection: close\r\n\r\n", timeout=5,
        )
        got = recorder.requests[before:]
        try:
            assert [r[0] for r in split_responses(answer)] == [200, 200]
            assert [r.target for r, _ in got] == [b"/", b"/next"]
            assert got[0][1] == (vector.body or b"")
        except AssertionError as e:
            complaints.append(f"{vector.name}: {e}")
    assert not complaints, "\n".join(complaints)
    assert all(c.h11_error is None for c in recorder.connections)


@pytest_twisted.ensureDeferred
async def test_slowloris_head_gets_408(reverse, recorder):
    proxy = reverse(timeouts=Timeouts(header=0.5))
    started = time.monotonic()
    answer = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: origin.test\r\nX-Slow: a")
    assert status_of(answer) == 408
    assert time.monotonic() - started < 2.0
    assert recorder.raw == b""


@pytest.mark.parametrize(
    "script",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"p" * 5000,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1388\r\n" + b"p" * 5000 + b"\r\n",
    ],
    ids=["length", "chunked"],
)
@pytest_twisted.ensureDeferred
async def test_backend_dying_mid_body_is_seen_as_truncated(reverse, script):
    backend, _ = listen_scripted(script, close=True)
    proxy = reverse(backend.getHost().port)
    try:
        out, err, code = await curl(proxy.url("/"))
    finally:
        await backend.stopListening()
    assert code == 18, (code, err)
    assert out == b"p" * 5000


@pytest_twisted.ensureDeferred
async def test_backend_that_never_answers_gets_504(reverse):
    silent = Recorder(answer=False)
    proxy = reverse(silent.number, timeouts=Timeouts(response=0.5))
    started = time.monotonic()
    try:
        answer = await raw_exchange(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    finally:
        await silent.stop()
    assert status_of(answer) == 504
    assert time.monotonic() - started < 3.0
    assert await wait_until(lambda: silent.connections and silent.connections[0].lost)


@pytest_twisted.ensureDeferred
async def test_client_that_stops_reading_holds_the_backend_back(reverse):
    firehose = Firehose(size=1 << 30)
    proxy = reverse(firehose.number)

    class Idle(protocol.Protocol):
        def connectionMade(self):
            self.transport.pauseProducing()
            self.transport.write(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")

    client = await protocol.ClientCreator(reactor, Idle).connectTCP("127.0.0.1", proxy.port)
    try:
        assert await wait_until(lambda: firehose.pauses > 0, timeout=5)
        last = -1
        for _ in range(100):
            await sleep(0.1)
            if firehose.written == last:
                break
            last = firehose.written
        assert firehose.written == last, "the backend never stopped writing"
        [server] = proxy.factory.connections
        assert write_buffered(server.transport) <= 256 * 1024
    finally:
        client.transport.abortConnection()
        await firehose.stop()


@pytest_twisted.ensureDeferred
async def test_client_aborting_mid_upload_closes_the_backend_connection(reverse):
    silent = Recorder(answer=False)
    proxy = reverse(silent.number)
    client = await protocol.ClientCreator(reactor, protocol.Protocol).connectTCP(
        "127.0.0.1", proxy.port)
    client.transport.write(b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n"
                           + b"u" * 200_000)
    try:
        assert await wait_until(lambda: len(silent.raw) > 150_000)
        client.transport.abortConnection()
        assert await wait_until(lambda: silent.connections[0].lost)
        assert silent.requests == []
    finally:
        await silent.stop()
