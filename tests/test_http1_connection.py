"""
The HTTP/1.1 rules of an exchange on a client connection (`multiproxy.http1._connection`),
driven with plain values: no reactor, no transport.
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
