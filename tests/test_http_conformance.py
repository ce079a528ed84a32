"""
Deviations from RFC 9110 / RFC 9112 found by a black-box audit of the
forward and reverse proxies (raw bytes in, raw bytes compared), one test
each, named by what the RFC requires.

Most run the client-facing protocol on a `StringTransport` with a fetcher
driven by hand; the ones about the upstream connection itself (what it does
with bytes an upstream should not have sent) run over loopback against a
raw origin, so the exact bytes on the wire are the test's.
"""

from __future__ import annotations

import pytest_twisted
from hardening import FixedChooser, no_tracebacks  # noqa: F401  (autouse: no traceback in the log)
from loopback import raw_exchange
from twisted.internet import protocol, reactor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.forward import ForwardProxy, Origin
from multiproxy.http import Headers, IFetcher, ResponseHead, Timeouts
from multiproxy.reverse import ReverseProxy, Route, RouteTable


@implementer(IFetcher)
class FakeFetcher:
    """Records fetches; the test answers them through their sinks."""

    def __init__(self) -> None:
        self.fetches = []

    def fetch(self, request, sink):
        self.fetches.append((request, sink))
        return lambda: None


def _serve(factory, clock):
    protocol_ = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=None)
    protocol_.makeConnection(transport)
    return protocol_, transport


def forward_proxy():
    clock = Clock()
    clock.rightNow = 1_700_000_000
    fetcher = FakeFetcher()
    protocol_, transport = _serve(ForwardProxy(clock, fetcher=fetcher), clock)
    return fetcher, protocol_, transport


def reverse_proxy():
    clock = Clock()
    clock.rightNow = 1_700_000_000
    fetcher = FakeFetcher()
    pool = BackendPool("web", [Backend(host="10.0.0.7", port=8080)], RoundRobin(), clock)
    factory = ReverseProxy(clock, routes=RouteTable([Route("web")]), pools={"web": pool},
                           fetcher=fetcher)
    protocol_, transport = _serve(factory, clock)
    return fetcher, protocol_, transport


def _response(status: int, *fields: tuple[bytes, bytes], reason: bytes = b"OK") -> ResponseHead:
    return ResponseHead(b"HTTP/1.1", status, reason, Headers(list(fields)))


DATE = b"\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n"
GET = b"GET http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n"


# -- RFC 9110 8.6: no Content-Length in 1xx and 204 responses ----------------------


def test_204_is_forwarded_without_the_upstreams_content_length():
    fetcher, protocol_, transport = forward_proxy()
    protocol_.dataReceived(GET)
    [(_request, sink)] = fetcher.fetches
    sink.head(_response(204, (b"Content-Length", b"5"), reason=b"No Content"), None)
    sink.end()
    head = transport.value()
    assert head.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"content-length" not in head.lower()
    assert head.endswith(b"\r\n\r\n")


def test_interim_response_is_forwarded_without_content_length_and_with_via():
    fetcher, protocol_, transport = forward_proxy()
    protocol_.dataReceived(GET)
    [(_request, sink)] = fetcher.fetches
    sink.head(_response(103, (b"Link", b"</a.css>; rel=preload"), (b"Content-Length", b"0"),
                        reason=b"Early Hints"), None)
    # RFC 9110 7.6.3: a proxy adds Via to every message it forwards, 1xx too.
    assert transport.value() == (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nVia: 1.1 multiproxy\r\n\r\n"
    )


# -- RFC 9110 10.1.1: a final answer before an expected body says "close" ---------


def test_final_response_before_an_expected_body_closes_the_connection():
    fetcher, protocol_, transport = forward_proxy()
    protocol_.dataReceived(
        b"POST http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    [(_request, sink)] = fetcher.fetches
    sink.head(_response(417, (b"Content-Length", b"0"), reason=b"Expectation Failed"), None)
    sink.end()
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 417 ")
    assert b"\r\nConnection: close\r\n" in out
    # The client is not going to send the body: what follows would be read
    # as body if the connection stayed open.
    assert transport.disconnecting


def test_final_response_after_the_body_began_keeps_reading_it():
    fetcher, protocol_, transport = forward_proxy()
    protocol_.dataReceived(
        b"POST http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\nhe"
    )
    [(_request, sink)] = fetcher.fetches
    sink.head(_response(200, (b"Content-Length", b"0")), None)
    sink.end()
    assert b"Connection: close" not in transport.value()
    protocol_.dataReceived(b"llo" + GET)
    assert len(fetcher.fetches) == 2
    assert not transport.disconnecting


# -- RFC 9110 6.6.1: Date -------------------------------------------------------------


def test_the_forward_proxys_own_answers_carry_a_date():
    _fetcher, protocol_, transport = forward_proxy()
    protocol_.dataReceived(b"GET /not-absolute HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 400 ")
    assert DATE in out


def test_the_reverse_proxys_own_answers_carry_a_date():
    _fetcher, protocol_, transport = reverse_proxy()
    protocol_.dataReceived(b"OPTIONS * HTTP/1.1\r\nHost: site.test\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 200 ")
    assert DATE in out


def test_reverse_proxy_adds_date_to_a_backend_response_without_one():
    fetcher, protocol_, transport = reverse_proxy()
    protocol_.dataReceived(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
    [(_request, sink)] = fetcher.fetches
    sink.head(_response(200, (b"Content-Length", b"0")), None)
    sink.end()
    assert DATE in transport.value()


def test_reverse_proxy_keeps_the_backends_date():
    fetcher, protocol_, transport = reverse_proxy()
    protocol_.dataReceived(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
    [(_request, sink)] = fetcher.fetches
    sink.head(_response(200, (b"Date", b"Mon, 13 Nov 2023 00:00:00 GMT"),
                        (b"Content-Length", b"0")), None)
    sink.end()
    out = transport.value()
    assert out.count(b"Date: ") == 1
    assert b"Date: Mon, 13 Nov 2023 00:00:00 GMT\r\n" in out


# -- the reverse proxy's requests to backends ---------------------------------------


def test_reverse_proxy_sends_a_host_for_an_http10_request_without_one():
    # RFC 9112 3.2: every HTTP/1.1 request carries Host, and the proxy
    # speaks HTTP/1.1 to backends whatever the client spoke.
    fetcher, protocol_, _transport = reverse_proxy()
    protocol_.dataReceived(b"GET /a HTTP/1.0\r\n\r\n")
    [(request, _sink)] = fetcher.fetches
    assert request.head.version == b"HTTP/1.1"
    assert request.head.headers.get_all(b"host") == [b"10.0.0.7:8080"]


def test_reverse_proxy_drops_an_http10_clients_expect():
    # RFC 9110 10.1.1: a 100-continue expectation in an HTTP/1.0 request
    # MUST be ignored, so it must not reach an HTTP/1.1 backend.
    fetcher, protocol_, _transport = reverse_proxy()
    protocol_.dataReceived(
        b"POST / HTTP/1.0\r\nHost: site.test\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    )
    [(request, _sink)] = fetcher.fetches
    assert b"expect" not in request.head.headers


def test_reverse_proxy_refuses_a_fragment_in_the_request_target():
    # RFC 9112 3.2: origin-form is absolute-path [ "?" query ]; no fragment.
    fetcher, protocol_, transport = reverse_proxy()
    protocol_.dataReceived(b"GET /a#frag HTTP/1.1\r\nHost: site.test\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert fetcher.fetches == []


# -- what the upstream connection does with bytes it did not ask for -----------------


class _KeepAliveOrigin(protocol.Protocol):
    """Answers each request head on a connection with ``script``, never closing."""

    def __init__(self, script: bytes, seen: list) -> None:
        self.script = script
        self.seen = seen
        self.buffer = b""

    def connectionMade(self) -> None:
        self.seen.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.transport.write(self.script)


def _listen_keep_alive(script: bytes):
    seen: list = []
    factory = protocol.Factory.forProtocol(lambda: _KeepAliveOrigin(script, seen))
    factory.noisy = False
    return reactor.listenTCP(0, factory, interface="127.0.0.1"), seen


def _to(port: int) -> FixedChooser:
    return FixedChooser(Origin("http", "127.0.0.1", port, 2.0))


def _get(port: int) -> bytes:
    return (b"GET http://origin.test:%d/ HTTP/1.1\r\nHost: origin.test\r\n"
            b"Connection: close\r\n\r\n" % port)


@pytest_twisted.ensureDeferred
async def test_bytes_after_a_complete_response_never_answer_the_next_request(start_forward):
    # An upstream that sends more than the response it was asked for (a
    # second, unsolicited response) must not have that answer the next
    # request sent on the connection, possibly another client's: the
    # connection is not reused (response queue poisoning).
    listening, seen = _listen_keep_alive(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmuggl"
    )
    try:
        origin = listening.getHost().port
        port, _ = start_forward(chooser=_to(origin))
        first = await raw_exchange(port, _get(origin), timeout=5)
        second = await raw_exchange(port, _get(origin), timeout=5)
    finally:
        await listening.stopListening()
        for origin_protocol in seen:
            origin_protocol.transport.abortConnection()
    assert first.endswith(b"\r\n\r\nok")
    assert second.endswith(b"\r\n\r\nok")
    assert b"smuggl" not in second
    assert len(seen) == 2


@pytest_twisted.ensureDeferred
async def test_an_unsolicited_101_is_answered_502_at_once(start_forward):
    # The proxy never sends Upgrade upstream (it is hop-by-hop), so a 101 is
    # a protocol switch nobody asked for (RFC 9110 15.2.2): 502 now, not
    # after the upstream's idle timeout.
    listening, seen = _listen_keep_alive(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    )
    try:
        origin = listening.getHost().port
        port, _ = start_forward(chooser=_to(origin),
                                timeouts=Timeouts(response=30, upstream_idle=30))
        answer = await raw_exchange(port, _get(origin), timeout=5)
    finally:
        await listening.stopListening()
        for origin_protocol in seen:
            origin_protocol.transport.abortConnection()
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert b"101" in answer


# -- RFC 9110 15.5.6: a 405 lists the methods that are allowed ----------------------


def test_the_forward_proxys_405_to_trace_has_allow():
    _fetcher, protocol_, transport = forward_proxy()
    protocol_.dataReceived(
        b"TRACE http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nMax-Forwards: 0\r\n\r\n"
    )
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 405 ")
    assert b"\r\nAllow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, CONNECT\r\n" in out


def test_the_reverse_proxys_405_to_connect_has_allow():
    _fetcher, protocol_, transport = reverse_proxy()
    protocol_.dataReceived(b"CONNECT site.test:443 HTTP/1.1\r\nHost: site.test:443\r\n\r\n")
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 405 ")
    allow = out.split(b"\r\nAllow: ", 1)[1].split(b"\r\n", 1)[0]
    assert b"GET" in allow.split(b", ")
    assert b"CONNECT" not in allow


# -- abuse: what a client can make the proxy hold ------------------------------------


def test_pipelined_requests_past_one_head_of_backlog_stop_the_reading():
    # Requests pipelined behind one that waits on its upstream sit in the
    # reader's buffer; without a bound a client can fill the proxy's memory
    # (300 MB sent in 0.3 s over loopback was all kept).
    fetcher, protocol_, transport = forward_proxy()
    protocol_.dataReceived(GET)
    assert len(fetcher.fetches) == 1
    backlog = protocol_.factory.limits.max_head
    while transport.producerState == "producing" and backlog > 0:
        protocol_.dataReceived(GET * 100)
        backlog -= len(GET) * 100
    assert transport.producerState == "paused"
    assert len(fetcher.fetches) == 1
    [(_request, sink)] = fetcher.fetches
    sink.head(_response(200, (b"Content-Length", b"0")), None)
    sink.end()
    # The next request is answered from the backlog; reading resumes, and
    # pauses again while the backlog is still past the bound.
    assert len(fetcher.fetches) == 2
    while len(fetcher.fetches) < 500:
        _request, sink = fetcher.fetches[-1]
        sink.head(_response(200, (b"Content-Length", b"0")), None)
        sink.end()
        if transport.producerState == "producing":
            break
    assert transport.producerState == "producing"


def test_a_body_held_complete_before_the_upstream_connects_resumes_the_client():
    # A body read in full while the upstream was still being chosen (a slow
    # credential check) past the hold limit paused the client; nothing
    # resumed it, so the next request on the connection was never read.
    from multiproxy.http._exchange import RequestBody

    class Producer:
        paused = False

        def pauseProducing(self):
            self.paused = True

        def resumeProducing(self):
            self.paused = False

    class Consumer:
        transport = StringTransport()
        received = b""
        ended = False

        def body_data(self, data):
            self.received += data

        def body_end(self):
            self.ended = True

    producer = Producer()
    body = RequestBody(producer, False, RequestBody.high_water + 10)
    body.write(b"x" * (RequestBody.high_water + 10))
    assert producer.paused
    body.finish()
    consumer = Consumer()
    body.attach(consumer)
    assert consumer.ended and len(consumer.received) == RequestBody.high_water + 10
    assert not producer.paused
