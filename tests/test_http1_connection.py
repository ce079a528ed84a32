"""
The HTTP/1.1 rules of an exchange on a client connection (`multiproxy.http1._connection`),
of the connection around them (`ServerConnection`: pipelining, timers,
what follows each exchange) and of the upstream direction (`ClientConnection`:
request framing, reuse), driven with plain values: no reactor, no transport.
"""

from __future__ import annotations

import pytest

from multiproxy.http1._connection import ExchangeRules, response_framing
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import RequestHead, ResponseHead


def request(method: bytes = b"GET", version: bytes = b"HTTP/1.1", *fields) -> RequestHead:
    return RequestHead(method, b"/", version, Headers([(b"Host", b"h"), *fields]))


def response(status: int = 200, *fields) -> ResponseHead:
    return ResponseHead(b"HTTP/1.1", status, b"OK", Headers(list(fields)))


@pytest.mark.parametrize("method, version, status, fields, framing", [
    (b"HEAD", b"HTTP/1.1", 200, [(b"Content-Length", b"5")], "none"),
    (b"GET", b"HTTP/1.1", 204, [], "none"),
    (b"GET", b"HTTP/1.1", 304, [(b"Content-Length", b"5")], "none"),
    (b"GET", b"HTTP/1.1", 200, [(b"Content-Length", b"5")], "length"),
    (b"GET", b"HTTP/1.1", 200, [], "chunked"),
    (b"GET", b"HTTP/1.0", 200, [], "close"),
])
def test_response_framing(method, version, status, fields, framing) -> None:
    assert response_framing(request(method, version), response(status, *fields)) == framing


def test_a_chunked_response_chunks_its_body_and_ends_with_forwardable_trailers() -> None:
    rules = ExchangeRules(request())
    rules.request_complete = True
    head = rules.final_head(200, b"OK", Headers([(b"X", b"1")]), "chunked", False)
    assert head == b"HTTP/1.1 200 OK\r\nX: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert rules.body_bytes(b"abc") == b"3\r\nabc\r\n"
    assert rules.end_bytes(None) == b"0\r\n\r\n"
    trailers = Headers([(b"Grpc-Status", b"0"), (b"Content-Length", b"9")])
    assert rules.end_bytes(trailers) == b"0\r\nGrpc-Status: 0\r\n\r\n"  # RFC 9110 6.5.1
    assert rules.after(draining=False) == "next"


def test_a_length_delimited_body_passes_as_it_is() -> None:
    rules = ExchangeRules(request())
    rules.request_complete = True
    rules.final_head(200, b"OK", Headers([(b"Content-Length", b"3")]), "length", False)
    assert rules.body_bytes(b"abc") == b"abc" and rules.end_bytes(None) == b""


def test_an_http10_client_gets_a_close_delimited_body_and_the_connection_closes() -> None:
    rules = ExchangeRules(request(b"GET", b"HTTP/1.0"))
    rules.request_complete = True
    head = rules.final_head(200, b"OK", Headers(), "close", False)
    assert head.endswith(b"Connection: close\r\n\r\n")
    assert rules.close_delimited and rules.after(draining=False) == "close"


def test_an_http10_keep_alive_client_is_told_keep_alive() -> None:
    rules = ExchangeRules(request(b"GET", b"HTTP/1.0", (b"Connection", b"keep-alive")))
    rules.request_complete = True
    head = rules.final_head(200, b"OK", Headers([(b"Content-Length", b"0")]), "length", False)
    assert head.endswith(b"Connection: keep-alive\r\n\r\n")
    assert rules.after(draining=False) == "next"


def test_a_204_never_carries_content_length() -> None:
    rules = ExchangeRules(request())
    rules.request_complete = True
    head = rules.final_head(204, b"No Content", Headers([(b"Content-Length", b"7")]), "none",
                            False)
    assert b"Content-Length" not in head


def test_interim_responses_reach_only_http11_clients_and_never_as_101() -> None:
    early = response(103, (b"Link", b"</s.css>; rel=preload"), (b"Content-Length", b"0"),
                     (b"Connection", b"x"), (b"X", b"dropped"))
    assert ExchangeRules(request(b"GET", b"HTTP/1.0")).interim_fields(early, None) is None
    assert ExchangeRules(request()).interim_fields(response(101), None) is None
    fields = ExchangeRules(request()).interim_fields(early, b"proxy")
    assert list(fields) == [(b"Link", b"</s.css>; rel=preload"), (b"Via", b"1.1 proxy")]


def test_a_final_status_to_a_client_waiting_for_100_continue_closes_after() -> None:
    waiting = ExchangeRules(request(b"POST", b"HTTP/1.1", (b"Expect", b"100-continue"),
                                    (b"Content-Length", b"10")))
    head = waiting.final_head(417, b"Expectation Failed", Headers([(b"Content-Length", b"0")]),
                              "length", body_started=False)
    assert head.endswith(b"Connection: close\r\n\r\n")
    # Once the body has started, it is read to its end and the connection goes on.
    sending = ExchangeRules(request(b"POST", b"HTTP/1.1", (b"Expect", b"100-continue"),
                                    (b"Content-Length", b"10")))
    sending.final_head(200, b"OK", Headers([(b"Content-Length", b"0")]), "length",
                       body_started=True)
    assert sending.after(draining=False) == "read-body"
    sending.request_complete = True
    assert sending.after(draining=False) == "next"


def test_an_own_answer_with_the_request_body_unread_closes_the_connection() -> None:
    rules = ExchangeRules(request(b"POST", b"HTTP/1.1", (b"Content-Length", b"10")))
    answer = rules.answer(413, b"Content Too Large", Headers(), b"too big\n")
    assert answer == (b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 8\r\n"
                      b"Connection: close\r\n\r\ntoo big\n")
    assert rules.after(draining=False) == "close"


def test_an_own_answer_to_head_has_no_body_but_its_length_and_a_date() -> None:
    rules = ExchangeRules(request(b"HEAD"))
    rules.request_complete = True
    answer = rules.answer(200, b"OK", Headers(), b"hello", date=b"Thu, 03 Dec 2026 12:00:00 GMT")
    assert answer == (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                      b"Date: Thu, 03 Dec 2026 12:00:00 GMT\r\n\r\n")
    dated = ExchangeRules(request())
    dated.request_complete = True
    assert b"Date: then" in dated.answer(200, b"OK", Headers([(b"Date", b"then")]), b"",
                                         date=b"now")


def test_connection_close_from_the_client_or_draining_ends_the_connection() -> None:
    asked = ExchangeRules(request(b"GET", b"HTTP/1.1", (b"Connection", b"close")))
    asked.request_complete = True
    assert asked.answer(200, b"OK", Headers(), b"").endswith(b"Connection: close\r\n\r\n")
    assert asked.after(draining=False) == "close"
    kept = ExchangeRules(request())
    kept.request_complete = True
    assert kept.after(draining=True) == "close"


def test_a_forwarded_request_is_framed_for_its_body_whatever_the_client_sent() -> None:
    from multiproxy.http1._connection import forwarded_request_head

    head = RequestHead(b"POST", b"/u", b"HTTP/1.1", Headers([
        (b"Host", b"h"), (b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")]))
    assert forwarded_request_head(head, True, None) == (
        b"POST /u HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert forwarded_request_head(head, False, 7) == (
        b"POST /u HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n\r\n")
    bare = RequestHead(b"GET", b"/", b"HTTP/1.1", Headers([(b"Host", b"h")]))
    assert forwarded_request_head(bare, None, None) == b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"


def test_the_last_chunk_carries_only_forwardable_trailers() -> None:
    from multiproxy.http1._connection import last_chunk

    assert last_chunk(None) == b"0\r\n\r\n"
    assert last_chunk(Headers([(b"Host", b"evil"), (b"X-Sum", b"1")])) == b"0\r\nX-Sum: 1\r\n\r\n"
    assert last_chunk(Headers([(b"Transfer-Encoding", b"chunked")])) == b"0\r\n\r\n"


# -- the connection around the exchanges (ServerConnection) -----------------


def drain(conn) -> list:
    """`next_event` until the connection needs the driver (more bytes, or an answer)."""
    from multiproxy.http1._parser import NEED_DATA, PAUSED

    events = []
    while True:
        event = conn.next_event()
        events.append(event)
        if event is NEED_DATA or event is PAUSED or type(event).__name__ == "_Sentinel":
            return events


def answer(conn, exchange: ExchangeRules) -> str:
    """Answer ``exchange`` with a small 200, as the proxy's own answers are."""
    exchange.answer(200, b"OK", Headers(), b"hi")
    exchange.finished = True
    return conn.exchange_over(exchange, draining=False)


def test_pipelined_requests_are_answered_one_at_a_time_in_order() -> None:
    from multiproxy.http1._connection import ServerConnection
    from multiproxy.http1._parser import NEED_DATA, PAUSED, EndOfMessage

    conn = ServerConnection()
    conn.receive_data(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    first = conn.next_event()
    assert first.target == b"/a"
    exchange = ExchangeRules(first)
    assert conn.begin(exchange, draining=False) == "none"
    assert conn.timer is None  # a body-less request: no client timeout while it is answered
    assert drain(conn) == [EndOfMessage(), PAUSED]  # /b waits until /a is answered
    assert answer(conn, exchange) == "next"
    assert conn.timer == "keepalive" and conn.exchange is None
    second = conn.next_event()
    assert second.target == b"/b"
    conn.begin(ExchangeRules(second), draining=False)
    drain(conn)
    assert answer(conn, conn.exchange) == "next"
    assert drain(conn) == [NEED_DATA]
    assert conn.idle_between_requests and conn.requests_begun == 2


def test_past_one_heads_worth_of_pipelined_bytes_reading_stops_until_the_answer() -> None:
    from multiproxy.http1._connection import STOP_READING, ServerConnection
    from multiproxy.http1._parser import Limits

    conn = ServerConnection(Limits(max_head=100))
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    head = conn.next_event()
    conn.begin(ExchangeRules(head), draining=False)
    drain(conn)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n" * 5)
    assert conn.next_event() is STOP_READING and conn.reading_stopped
    assert answer(conn, conn.exchange) == "next"
    assert conn.reading_stopped  # until the driver reads again


def test_the_timers_follow_the_request() -> None:
    from multiproxy.http1._connection import ServerConnection
    from multiproxy.http1._parser import Data, EndOfMessage

    conn = ServerConnection()
    assert conn.timer == "keepalive" and conn.timer_moved
    conn.timer_moved = False
    conn.receive_data(b"POST / HTTP/1.1\r\nHo")
    drain(conn)  # part of a head: from now on, the header timeout
    assert conn.timer == "header" and conn.timer_moved
    conn.timer_moved = False
    conn.receive_data(b"st: h\r\n")
    drain(conn)  # more of it does not restart the clock (slowloris)
    assert conn.timer == "header" and not conn.timer_moved
    conn.receive_data(b"Content-Length: 4\r\n\r\nab")
    head = conn.next_event()
    assert conn.begin(ExchangeRules(head), draining=False) == "length"
    assert conn.timer == "client_idle"
    conn.timer_moved = False
    assert conn.next_event() == Data(b"ab")
    assert conn.timer == "client_idle" and conn.timer_moved  # each piece restarts it
    conn.receive_data(b"cd")
    assert conn.next_event() == Data(b"cd")
    assert conn.next_event() == EndOfMessage()
    assert conn.timer is None


def test_what_a_timeout_means() -> None:
    from multiproxy.http1._connection import ServerConnection

    conn = ServerConnection()
    assert conn.expired("keepalive") == ("close", None)
    assert conn.expired("header") == ("answer", "the client took too long to send the request head")
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\n")
    exchange = ExchangeRules(conn.next_event())
    conn.begin(exchange, draining=False)
    assert conn.expired("client_idle") == (
        "answer", "the client took too long to send the request body")
    assert conn.broken() == "answer"
    exchange.final_head(200, b"OK", Headers(), "chunked", body_started=True)
    assert conn.expired("client_idle") == ("reset", None)
    assert conn.broken() == "reset"  # framing broke mid-response: nothing more can be said


def test_an_answer_before_the_request_body_is_read_reads_it_first_or_closes() -> None:
    from multiproxy.http1._connection import ServerConnection

    conn = ServerConnection()
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n")
    exchange = ExchangeRules(conn.next_event())
    conn.begin(exchange, draining=False)
    exchange.response_started = exchange.finished = True
    assert conn.exchange_over(exchange, draining=False) == "read-body"
    conn.receive_data(b"ok")
    drain(conn)
    exchange.request_complete = True
    assert conn.exchange_over(exchange, draining=False) == "next"
    # The proxy's own answer to a request whose body is still unread closes.
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n")
    exchange = ExchangeRules(conn.next_event())
    conn.begin(exchange, draining=False)
    assert answer(conn, exchange) == "close" and conn.closing and conn.timer is None


def test_a_client_that_shuts_its_side_gets_its_answer_then_the_close() -> None:
    from multiproxy.http1._connection import ServerConnection
    from multiproxy.http1._parser import CLOSED

    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    conn.receive_eof()
    exchange = ExchangeRules(conn.next_event())
    conn.begin(exchange, draining=False)
    assert answer(conn, exchange) == "next" and conn.eof_received
    assert conn.next_event() is CLOSED


def test_handing_over_gives_the_bytes_past_the_request_and_stops_the_timers() -> None:
    from multiproxy.http1._connection import ServerConnection

    conn = ServerConnection()
    conn.receive_data(b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n\x16\x03\x01")
    conn.begin(ExchangeRules(conn.next_event()), draining=False)
    assert conn.hand_over() == b"\x16\x03\x01"
    assert conn.exchange is None and conn.timer is None


def test_draining_closes_after_the_exchange_under_way() -> None:
    from multiproxy.http1._connection import ServerConnection

    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    exchange = ExchangeRules(conn.next_event())
    conn.begin(exchange, draining=True)
    assert exchange.close_after
    assert exchange.answer(200, b"OK", Headers(), b"").endswith(b"Connection: close\r\n\r\n")
    assert conn.exchange_over(exchange, draining=True) == "close"


# -- the upstream direction (ClientConnection) ------------------------------


def upstream_events(conn, data: bytes) -> list:
    from multiproxy.http1._parser import NEED_DATA, PAUSED

    conn.reader.feed(data)
    events = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return events
        events.append(event)


def test_an_upstream_connection_is_reused_only_after_a_whole_persistent_exchange() -> None:
    from multiproxy.http1._connection import ClientConnection
    from multiproxy.http1._parser import EndOfMessage

    conn = ClientConnection()
    head = RequestHead(b"POST", b"/", b"HTTP/1.1", Headers([(b"Host", b"h")]))
    assert conn.send(head, True, None).endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert conn.body_bytes(b"abc") == b"3\r\nabc\r\n"
    events = upstream_events(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert type(events[-1]) is EndOfMessage
    conn.response_over()
    assert not conn.reusable  # the request body is not all sent yet
    assert conn.body_end(Headers([(b"X-Sum", b"1")])) == b"0\r\nX-Sum: 1\r\n\r\n"
    assert conn.reusable
    assert conn.send(RequestHead(b"GET", b"/", b"HTTP/1.1", Headers()), None, None)
    assert upstream_events(conn, b"HTTP/1.1 204 No Content\r\n\r\n")[0].status == 204
    conn.response_over()
    assert conn.reusable


@pytest.mark.parametrize("response, why", [
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "close asked for"),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", "HTTP/1.0 without keep-alive"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n", "bytes past the response"),
])
def test_an_upstream_connection_is_not_reused(response, why) -> None:
    from multiproxy.http1._connection import ClientConnection

    conn = ClientConnection()
    conn.send(RequestHead(b"GET", b"/", b"HTTP/1.1", Headers()), None, None)
    upstream_events(conn, response)
    conn.response_over()
    assert not conn.reusable, why


def test_a_close_delimited_body_or_a_connect_tunnel_ends_the_upstream_connection() -> None:
    from multiproxy.http1._connection import ClientConnection

    conn = ClientConnection()
    conn.send(RequestHead(b"GET", b"/", b"HTTP/1.1", Headers()), None, None)
    upstream_events(conn, b"HTTP/1.1 200 OK\r\n\r\nbody until the close")
    assert conn.in_body and not conn.reusable
    tunnel = ClientConnection()
    tunnel.send(RequestHead(b"CONNECT", b"h:443", b"HTTP/1.1", Headers()), None, None)
    upstream_events(tunnel, b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert not tunnel.reusable


def test_interim_responses_pass_and_an_unasked_101_is_an_error() -> None:
    from multiproxy.http1._connection import ClientConnection
    from multiproxy.pipeline._errors import ProtocolError

    conn = ClientConnection()
    conn.send(RequestHead(b"GET", b"/", b"HTTP/1.1", Headers()), None, None)
    interim, = upstream_events(conn, b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n")
    assert interim.status == 103 and not conn.in_body
    conn = ClientConnection()
    conn.send(RequestHead(b"GET", b"/", b"HTTP/1.1", Headers()), None, None)
    with pytest.raises(ProtocolError, match="101"):
        upstream_events(conn, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n")
