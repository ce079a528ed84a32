"""
The client-facing HTTP protocol on an in-memory transport, with a fake
upstream (an IFetcher we drive by hand) and a fake clock: no sockets.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from multiproxy.forward import ForwardProxy
from multiproxy.http import Headers, IFetcher, ResponseHead, Timeouts
from multiproxy.pipeline._errors import UpstreamError


@implementer(IFetcher)
class FakeFetcher:
    """Records fetches; the test answers them through their sinks."""

    def __init__(self) -> None:
        self.fetches = []
        self.abandoned = []

    def fetch(self, request, sink):
        self.fetches.append((request, sink))
        return lambda: self.abandoned.append(request)


def _connect(**kwargs):
    clock = Clock()
    fetcher = FakeFetcher()
    factory = ForwardProxy(clock, fetcher=fetcher, **kwargs)
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=None)
    protocol.makeConnection(transport)
    return clock, fetcher, protocol, transport


def _ok(body: bytes = b"hello", **fields) -> ResponseHead:
    headers = Headers([(b"Content-Length", b"%d" % len(body))])
    for name, value in fields.items():
        headers.add(name.encode(), value.encode())
    return ResponseHead(b"HTTP/1.1", 200, b"OK", headers)


GET = b"GET http://origin.test/%s HTTP/1.1\r\nHost: origin.test\r\n\r\n"


def test_request_is_forwarded_in_origin_form_with_host_from_target():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(b"GET http://Origin.Test:8080/a?b=c HTTP/1.1\r\nHost: evil\r\n\r\n")
    [(request, sink)] = fetcher.fetches
    assert request.head.target == b"/a?b=c"
    assert request.head.headers.get(b"host") == b"origin.test:8080"
    assert request.upstream.name == "origin.test:8080"


def test_pipelined_requests_wait_their_turn_and_answer_in_order():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"1" + GET % b"2")
    assert len(fetcher.fetches) == 1, "the second request waits for the first response"
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"one"), None)
    sink.data(b"one")
    sink.end()
    assert len(fetcher.fetches) == 2
    _, sink = fetcher.fetches[1]
    sink.head(_ok(b"two"), None)
    sink.data(b"two")
    sink.end()
    out = transport.value()
    assert out.index(b"one") < out.index(b"two")
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert not transport.disconnecting


def test_response_without_length_is_chunked_for_http11():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"x")
    _, sink = fetcher.fetches[0]
    sink.head(ResponseHead(b"HTTP/1.0", 200, b"OK", Headers()), None)
    sink.data(b"abc")
    sink.end()
    out = transport.value()
    assert b"Transfer-Encoding: chunked\r\n" in out
    assert out.endswith(b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")


def test_response_without_length_to_http10_client_is_close_delimited():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(b"GET http://origin.test/ HTTP/1.0\r\n\r\n")
    _, sink = fetcher.fetches[0]
    sink.head(ResponseHead(b"HTTP/1.1", 200, b"OK", Headers()), None)
    sink.data(b"abc")
    sink.end()
    out = transport.value()
    assert b"chunked" not in out
    assert b"Connection: close\r\n" in out
    assert out.endswith(b"\r\n\r\nabc")
    assert transport.disconnecting


def test_http10_keepalive_is_honoured_and_announced():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(b"GET http://origin.test/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"abc"), None)
    sink.data(b"abc")
    sink.end()
    assert b"Connection: keep-alive\r\n" in transport.value()
    assert not transport.disconnecting


def test_hop_by_hop_response_fields_are_dropped_and_via_added():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"x")
    _, sink = fetcher.fetches[0]
    headers = Headers([
        (b"Content-Length", b"2"), (b"Connection", b"X-Internal"), (b"X-Internal", b"1"),
        (b"Keep-Alive", b"timeout=5"), (b"Set-Cookie", b"a=1"), (b"Set-Cookie", b"b=2"),
    ])
    sink.head(ResponseHead(b"HTTP/1.1", 200, b"OK", headers), None)
    sink.data(b"ok")
    sink.end()
    head = transport.value().split(b"\r\n\r\n")[0]
    assert b"X-Internal" not in head and b"Keep-Alive" not in head
    assert head.count(b"Set-Cookie") == 2
    assert b"Via: 1.1 multiproxy" in head


def test_upstream_failure_before_head_answers_with_its_status():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"x")
    _, sink = fetcher.fetches[0]
    sink.fail(UpstreamError("connection refused by origin.test:80", 502))
    out = transport.value()
    assert out.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert b"connection refused by origin.test:80" in out
    assert not transport.disconnecting, "the client connection stays usable"


def test_upstream_failure_mid_body_closes_without_ending_the_body():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"x")
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"0123456789"), None)
    sink.data(b"01234")
    sink.fail(UpstreamError("upstream closed the connection mid-response", 502))
    assert transport.value().endswith(b"01234")
    assert transport.disconnecting


def test_slowloris_head_gets_408_after_header_timeout_even_if_bytes_trickle():
    clock, fetcher, protocol, transport = _connect(timeouts=Timeouts(header=10))
    protocol.dataReceived(b"GET http://origin.test/ HTTP/1.1\r\n")
    for _ in range(9):
        clock.advance(1)
        protocol.dataReceived(b"X")
    assert transport.value() == b""
    clock.advance(1.5)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert transport.disconnecting


def test_idle_keepalive_connection_is_closed_quietly():
    clock, fetcher, protocol, transport = _connect(timeouts=Timeouts(keepalive=5))
    clock.advance(5)
    assert transport.value() == b""
    assert transport.disconnecting


def test_stalled_request_body_gets_408():
    clock, fetcher, protocol, transport = _connect(timeouts=Timeouts(client_idle=3))
    protocol.dataReceived(
        b"POST http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 10\r\n\r\n12"
    )
    clock.advance(3)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert fetcher.abandoned, "the upstream side is abandoned too"


def test_client_disconnect_abandons_the_fetch_and_reports_once(reporter):
    clock, fetcher, protocol, transport = _connect(reporters=(reporter,))
    protocol.dataReceived(GET % b"x")
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"0123456789"), None)
    protocol.connectionLost(None)
    sink.data(b"late bytes are ignored")
    sink.end()
    assert len(fetcher.abandoned) == 1
    assert [r.ended for r in reporter.records] == ["client-closed"]


def test_bad_request_answers_400_and_closes():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(b"GET http://origin.test/ HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 400 ")
    assert b"Connection: close" in transport.value()
    assert transport.disconnecting
    assert fetcher.fetches == []


def test_interim_100_continue_is_relayed():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(
        b"POST http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nContent-Length: 3\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    _, sink = fetcher.fetches[0]
    sink.head(ResponseHead(b"HTTP/1.1", 100, b"Continue", Headers()), None)
    assert transport.value().startswith(b"HTTP/1.1 100 Continue\r\nVia: 1.1 multiproxy\r\n\r\n")


def test_head_response_keeps_content_length_and_sends_no_body():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(b"HEAD http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"x" * 1234), None)
    sink.end()
    out = transport.value()
    assert b"Content-Length: 1234\r\n" in out
    assert out.endswith(b"\r\n\r\n")


def test_max_forwards_zero_on_options_is_answered_by_the_proxy():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(
        b"OPTIONS http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nMax-Forwards: 0\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    assert fetcher.fetches == []


def test_max_forwards_is_decremented_when_forwarded():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(
        b"OPTIONS http://origin.test/ HTTP/1.1\r\nHost: origin.test\r\nMax-Forwards: 3\r\n\r\n"
    )
    [(request, _)] = fetcher.fetches
    assert request.head.headers.get(b"max-forwards") == b"2"


def test_a_failing_policy_plugin_gets_500_and_the_proxy_keeps_serving():
    from zope.interface import implementer

    from multiproxy import IPolicy

    @implementer(IPolicy)
    class Broken:
        def decide(self, intent):
            raise RuntimeError("bug in a plug-in")

    from twisted.logger import globalLogPublisher

    failures = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        clock, fetcher, protocol, transport = _connect(policy=Broken())
        protocol.dataReceived(GET % b"x")
    finally:
        globalLogPublisher.removeObserver(observe)
    assert transport.value().startswith(b"HTTP/1.1 500 ")
    assert [f.value.args for f in failures] == [("bug in a plug-in",)]


def test_response_without_date_gets_one():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"x")
    clock.rightNow = 1_700_000_000
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b""), None)
    sink.end()
    assert b"\r\nDate: Tue, 14 Nov 2023 22:13:20 GMT\r\n" in transport.value()


def test_no_interim_response_to_http10_client_and_expect_not_forwarded():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(
        b"POST http://origin.test/ HTTP/1.0\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"
    )
    request, sink = fetcher.fetches[0]
    assert b"expect" not in request.head.headers
    sink.head(ResponseHead(b"HTTP/1.1", 100, b"Continue", Headers()), None)
    assert transport.value() == b""


def test_options_for_an_empty_path_asks_for_star():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(b"OPTIONS http://origin.test HTTP/1.1\r\nHost: origin.test\r\n\r\n")
    [(request, _)] = fetcher.fetches
    assert request.head.target == b"*"


def test_a_client_leaving_mid_fetch_is_not_counted_against_the_upstream():
    """started()/finished() stay balanced, with ok=True, when the client goes away."""
    from twisted.internet import defer
    from zope.interface import implementer

    from multiproxy import IUpstream, IUpstreamChooser
    from multiproxy.http import ConnectionPool, Limits, UpstreamFetcher

    calls = []

    @implementer(IUpstream)
    class Never:
        name = "never:1"
        key = ("never", 1)

        def endpoint(self, reactor):
            class Pending:
                def connect(self, factory):
                    return defer.Deferred()

            return Pending()

        def started(self):
            calls.append("started")

        def finished(self, ok, elapsed):
            calls.append(("finished", ok))

    @implementer(IUpstreamChooser)
    class Chooser:
        def choose(self, intent, excluded=frozenset()):
            return Never()

    clock = Clock()
    pool = ConnectionPool(clock, Limits())
    factory = ForwardProxy(clock, chooser=Chooser(), fetcher=UpstreamFetcher(pool), pool=pool)
    protocol = factory.buildProtocol(None)
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(GET % b"x")
    protocol.connectionLost(None)
    assert calls == ["started", ("finished", True)]


class CountingTransport(StringTransport):
    """Counts write calls: each one is a send on a real socket."""

    def __init__(self) -> None:
        super().__init__(peerAddress=None)
        self.writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


def test_a_small_response_leaves_in_one_write():
    fetcher = FakeFetcher()
    protocol = ForwardProxy(Clock(), fetcher=fetcher).buildProtocol(None)
    transport = CountingTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(GET % b"x")
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"hello"), None)
    assert transport.writes == 0, "the head waits for the body"
    sink.data(b"hello")
    sink.end()
    assert transport.writes == 1
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.value().endswith(b"\r\n\r\nhello")


def test_a_flush_sends_a_held_head_before_any_body_arrives():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"x")
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"later"), None)
    sink.flush()
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n")
    assert transport.value().endswith(b"\r\n\r\n")
    sink.data(b"later")
    sink.end()
    assert transport.value().endswith(b"\r\n\r\nlater")


def test_a_head_arriving_alone_from_a_real_upstream_connection_is_not_held():
    from multiproxy.forward._origin import Origin
    from multiproxy.http._client import UpstreamConnection

    factory = ForwardProxy(Clock())
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=None)
    protocol.makeConnection(transport)
    upstream = UpstreamConnection(factory.pool, Origin("http", "origin.test", 80).key)
    upstream.makeConnection(StringTransport())
    factory.pool.release(upstream)
    protocol.dataReceived(GET % b"slow")
    upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200 OK\r\n"), "the head is flushed at once"
    upstream.dataReceived(b"body")
    assert transport.value().endswith(b"\r\n\r\nbody")


def test_idle_upstream_connections_are_capped_in_all_oldest_closed_first():
    from multiproxy.forward._origin import Origin
    from multiproxy.http import Limits
    from multiproxy.http._client import ConnectionPool, UpstreamConnection

    pool = ConnectionPool(Clock(), Limits(), max_idle_total=2)
    origins = [Origin("http", f"o{i}.test", 80) for i in range(3)]
    transports = []
    for origin in origins:
        conn = UpstreamConnection(pool, origin.key)
        transport = StringTransport()
        conn.makeConnection(transport)
        transports.append(transport)
        pool.release(conn)
    assert pool.idle_count() == 2
    assert transports[0].disconnecting, "the connection idle the longest made room"
    assert not transports[1].disconnecting and not transports[2].disconnecting
    assert pool.take_idle(origins[0]) is None
    assert pool.take_idle(origins[2]) is not None
    assert pool.idle_count() == 1


def test_client_half_close_mid_exchange_gets_its_answer_then_the_close():
    # The client sends a request and shuts its write side (readConnectionLost)
    # while the upstream has not answered: the answer still goes out whole,
    # then the connection closes instead of waiting for a next request.
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"1")
    protocol.readConnectionLost()
    assert not transport.disconnecting
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"one"), None)
    sink.data(b"one")
    sink.end()
    assert transport.value().endswith(b"\r\n\r\none")
    assert transport.disconnecting


def test_client_half_close_after_pipelined_requests_answers_each_then_closes():
    clock, fetcher, protocol, transport = _connect()
    protocol.dataReceived(GET % b"1" + GET % b"2")
    protocol.readConnectionLost()
    for expected in (b"one", b"two"):
        _, sink = fetcher.fetches[-1]
        sink.head(_ok(expected), None)
        sink.data(expected)
        sink.end()
    assert len(fetcher.fetches) == 2
    out = transport.value()
    assert out.index(b"one") < out.index(b"two")
    assert transport.disconnecting


def test_keepalive_after_an_answer_waits_without_reading_or_closing():
    clock, fetcher, protocol, transport = _connect(timeouts=Timeouts(keepalive=5.0))
    protocol.dataReceived(GET % b"1")
    for n, body in enumerate((b"one", b"two")):
        if n:
            protocol.dataReceived(GET % b"2")  # the connection is still read
        _, sink = fetcher.fetches[n]
        sink.head(_ok(body), None)
        sink.data(body)
        sink.end()
        assert not transport.disconnecting
    assert len(fetcher.fetches) == 2
    clock.advance(5.1)  # then idle past the keep-alive timeout: closed
    assert transport.disconnecting


def test_pipelined_backlog_is_paused_again_after_something_else_resumed_reading():
    # Past one head's worth of pipelined bytes the client is paused; if
    # another party (a request body's backpressure) resumes the transport,
    # the next read past the bound pauses it again.
    clock, fetcher, protocol, transport = _connect()
    junk = (GET % b"next") * 2000  # well past the 64 KiB bound
    protocol.dataReceived(GET % b"first" + junk)
    assert transport.producerState == "paused"
    transport.resumeProducing()  # e.g. RequestBody.attach resuming its client
    protocol.dataReceived(GET % b"more")
    assert transport.producerState == "paused"
    _, sink = fetcher.fetches[0]
    sink.head(_ok(b"one"), None)
    sink.data(b"one")
    sink.end()  # the first answered: reading resumes for the next request
    assert len(fetcher.fetches) == 2


def test_draining_answers_a_request_still_on_its_way_and_closes_idle_keepalive_connections():
    clock, fetcher, fresh, fresh_transport = _connect()
    factory = fresh.factory
    idle = factory.buildProtocol(None)
    idle_transport = StringTransport(peerAddress=None)
    idle.makeConnection(idle_transport)
    idle.dataReceived(GET % b"one")
    [(_, sink)] = fetcher.fetches
    sink.head(_ok(), None)
    sink.data(b"hello")
    sink.end()
    assert not idle_transport.disconnecting  # kept alive for the next request

    factory.drain()
    # Kept alive after an answer, nothing of a next request read: closed now.
    assert idle_transport.disconnecting
    # Just accepted, its request not here yet: it is answered, then closed.
    assert not fresh_transport.disconnecting
    fresh.dataReceived(GET % b"late")
    [_, (request, sink)] = fetcher.fetches
    assert request.head.target == b"/late"
    sink.head(_ok(), None)
    sink.data(b"hello")
    sink.end()
    assert fresh_transport.value().startswith(b"HTTP/1.1 200 ")
    assert b"\r\nconnection: close\r\n" in fresh_transport.value().lower()
    assert fresh_transport.disconnecting
