"""
The choices RFC 9110 / 9112 leave to a recipient, as a client sees them on
a raw socket through the reverse proxy and as the backend sees them
(docs/parser.md, "Choices the RFCs leave to the recipient").

The backend is a recording origin that reads with the proxy's own
`RequestReader`: it keeps every byte of every connection it accepted.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from loopback import raw_exchange, wait_for
from reverse_peers import RunningProxy, make_pool
from twisted.internet import defer, protocol, reactor

from multiproxy.http1._parser import NEED_DATA, PAUSED, EndOfMessage, RequestHead, RequestReader

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class _Recorded(protocol.Protocol):
    """One backend connection: what arrived, what was parsed, and whether it ended."""

    def __init__(self, origin: RecordingOrigin) -> None:
        self.origin = origin
        self.raw = b""
        self.heads: list[RequestHead] = []
        self.trailers: list = []
        self.lost = False
        self.reader = RequestReader()

    def connectionMade(self) -> None:
        self.origin.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        self.reader.feed(data)
        while True:
            event = self.reader.next_event()
            if event is NEED_DATA:
                return
            if event is PAUSED:
                self.reader.start_next()
                continue
            if type(event) is RequestHead:
                self.heads.append(event)
            elif type(event) is EndOfMessage:
                self.trailers.append(event.trailers)
                self.transport.write(self.origin.answer)

    def connectionLost(self, reason) -> None:
        self.lost = True


class RecordingOrigin:
    def __init__(self, answer: bytes = OK) -> None:
        self.answer = answer
        self.connections: list[_Recorded] = []
        factory = protocol.Factory.forProtocol(lambda: _Recorded(self))
        factory.noisy = False
        self.listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.port = self.listening.getHost().port

    @property
    def heads(self) -> list[RequestHead]:
        return [h for c in self.connections for h in c.heads]

    def stop(self) -> defer.Deferred:
        for c in self.connections:
            c.transport.abortConnection()
        return defer.maybeDeferred(self.listening.stopListening)


@pytest.fixture
def site():
    """A recording origin and a reverse proxy in front of it: (origin, proxy port)."""
    origin = RecordingOrigin()
    proxy = RunningProxy({"web": make_pool("web", [origin.port])})
    yield origin, proxy.port
    pytest_twisted.blockon(proxy.stop())
    pytest_twisted.blockon(origin.stop())


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# -- empty lines before the request line --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_two_empty_lines_before_a_request_line_are_ignored(site):
    origin, port = site
    response = await raw_exchange(
        port, b"\r\n\r\nGET /a HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    [head] = origin.heads
    assert head.target == b"/a"
    assert origin.connections[0].raw.startswith(b"GET /a HTTP/1.1\r\n")  # not forwarded


@pytest_twisted.ensureDeferred
async def test_more_than_eight_empty_lines_are_refused(site):
    origin, port = site
    response = await raw_exchange(port, b"\r\n" * 9 + b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(response) == 400 and b"empty lines" in response
    assert origin.heads == []


# -- Content-Length: 5, 5 ----------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_identical_content_length_list_is_sent_on_as_one_plain_field(site):
    origin, port = site
    response = await raw_exchange(
        port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\nConnection: close\r\n"
              b"\r\nhello")
    assert status_of(response) == 200
    [head] = origin.heads
    assert head.headers.get_all(b"content-length") == [b"5"]
    assert b"Content-Length: 5\r\n" in origin.connections[0].raw
    assert origin.connections[0].raw.endswith(b"\r\n\r\nhello")


@pytest_twisted.ensureDeferred
async def test_different_content_lengths_are_refused_before_anything_goes_upstream(site):
    origin, port = site
    for value in (b"5, 6", b"5\r\nContent-Length: 6"):
        response = await raw_exchange(
            port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\nhello!")
        assert status_of(response) == 400
    assert origin.connections == []


# -- a singleton field twice -------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_repeated_singleton_field_is_forwarded_unchanged_in_order(site):
    origin, port = site
    origin.answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n"
                     b"Content-Length: 2\r\n\r\nok")
    response = await raw_exchange(
        port, b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
              b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n"
              b"\r\n{}")
    assert status_of(response) == 200
    [head] = origin.heads
    assert head.headers.get_all(b"content-type") == [b"text/plain", b"application/json"]
    # The response's two Content-Type lines reach the client as they were sent.
    assert b"Content-Type: text/plain\r\nContent-Type: text/html\r\n" in response


@pytest_twisted.ensureDeferred
async def test_repeated_host_is_refused(site):
    origin, port = site
    response = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert status_of(response) == 400 and b"more than one Host" in response
    assert origin.connections == []


# -- trailers ----------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_request_trailers_pass_without_the_fields_forbidden_in_trailers(site):
    origin, port = site
    response = await raw_exchange(
        port, b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
              b"\r\n5\r\nhello\r\n0\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n"
              b"Host: evil.test\r\nAuthorization: Basic eA==\r\nX-Checksum: 1\r\n\r\n")
    assert status_of(response) == 200
    raw = origin.connections[0].raw
    # RFC 9110 6.5.1: framing, routing and authentication fields are never
    # taken from trailers; the rest is forwarded in the chunked body.
    assert raw.endswith(b"\r\n5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n")
    for name in (b"evil.test", b"Content-Length: 100", b"Authorization"):
        assert name not in raw
    assert [list(t) for t in origin.connections[0].trailers] == [[(b"X-Checksum", b"1")]]


@pytest_twisted.ensureDeferred
async def test_response_trailers_are_dropped(site):
    origin, port = site
    origin.answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n"
                     b"Content-Length: 50\r\nSet-Cookie: a=b\r\n\r\n")
    response = await raw_exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(response) == 200
    assert response.endswith(b"2\r\nok\r\n0\r\n\r\n")
    assert b"Set-Cookie" not in response and b"Content-Length: 50" not in response


@pytest_twisted.ensureDeferred
async def test_malformed_trailer_section_is_refused(site):
    _, port = site
    response = await raw_exchange(
        port, b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"0\r\nX-Bad : 1\r\n\r\n")
    assert status_of(response) == 400


# -- chunk sizes with a sign -------------------------------------------------------------------


@pytest.mark.parametrize("size", [b"+5", b"-5", b" 5", b"0x5"])
@pytest_twisted.ensureDeferred
async def test_chunk_size_with_a_sign_or_prefix_is_refused(site, size):
    origin, port = site
    response = await raw_exchange(
        port, b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              + size + b"\r\nhello\r\n0\r\n\r\n")
    assert status_of(response) == 400 and b"invalid chunk size" in response
    await wait_for(lambda: all(c.lost for c in origin.connections))
    # Whatever reached the backend has no body and no end: it cannot be served.
    assert all(b"hello" not in c.raw and c.trailers == [] for c in origin.connections)


# -- a body that turns out invalid after the head went to a pooled connection ----------------------


@pytest_twisted.ensureDeferred
async def test_pooled_upstream_sees_the_connection_close_without_a_last_chunk(site):
    origin, port = site
    assert status_of(await raw_exchange(
        port, b"GET /warm HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200
    [pooled] = origin.connections
    assert not pooled.lost  # kept alive in the proxy's pool

    done = defer.Deferred()
    got: list[bytes] = []

    class Client(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                                 b"\r\n5\r\nhello\r\n")

        def dataReceived(self, data):
            got.append(data)

        def connectionLost(self, reason):
            done.callback(b"".join(got))

    client = await protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", port)
    await wait_for(lambda: pooled.raw.endswith(b"5\r\nhello\r\n"))
    assert len(origin.connections) == 1  # the pooled connection took the request
    client.transport.write(b"zz\r\nworld\r\n0\r\n\r\n")  # not a chunk size
    timer = reactor.callLater(10, client.transport.abortConnection)
    response = await done
    timer.cancel()
    assert status_of(response) == 400 and b"invalid chunk size" in response
    await wait_for(lambda: pooled.lost)
    # The backend got the head and the valid chunk, then the connection closed:
    # no last chunk, no invalid bytes, and nothing more on that connection.
    tail = pooled.raw.split(b"POST /b HTTP/1.1\r\n", 1)[1]
    assert tail.endswith(b"\r\n\r\n5\r\nhello\r\n")
    assert b"zz" not in pooled.raw and b"world" not in pooled.raw
    assert pooled.trailers == [None]  # only the warm-up GET was complete
    # The next request gets a new connection: the cut one never went back to the pool.
    assert status_of(await raw_exchange(
        port, b"GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")) == 200
    assert len(origin.connections) == 2 and origin.connections[1].heads[0].target == b"/after"
