"""
The forward proxy's answers to requests and origins that go wrong or take
time, run in memory on a fake clock (multiproxy.testing): malformed and
smuggling requests, refused, slow, cut and malformed origins, timeouts and
the upstream pool.  tests/test_forward.py drives the proxy with real
clients over loopback.
"""

from __future__ import annotations

from multiproxy.forward import ForwardProxy
from multiproxy.http import ConnectionPool, Limits, Timeouts
from multiproxy.testing import Harness, Reply


def proxy(harness: Harness, **kwargs) -> ForwardProxy:
    return ForwardProxy(harness.reactor, reporters=[harness.reporter], **kwargs)


def test_origin_form_request_gets_400():
    harness = Harness()
    client = harness.connect(proxy(harness))
    response = client.request("GET", "/", headers=[(b"Host", b"example.com")])
    assert response.status == 400
    assert b"absolute URL" in response.body


def test_unsupported_scheme_gets_501():
    harness = Harness()
    response = harness.connect(proxy(harness)).request("GET", "ftp://127.0.0.1/file")
    assert response.status == 501


def test_refused_connection_gets_502_and_client_connection_stays_usable():
    harness = Harness()
    harness.origin("127.0.0.1", 8000, reply=Reply(200, b"xxxxx"))
    client = harness.connect(proxy(harness))
    refused = client.request("GET", "http://127.0.0.1:8001/")
    assert refused.status == 502
    assert b"connection refused" in refused.body
    assert client.request("GET", "http://127.0.0.1:8000/").body == b"xxxxx"


def test_upstream_response_timeout_gets_504():
    harness = Harness()
    harness.origin("127.0.0.1", 8000, reply=Reply(200, b"late", delay=5))
    client = harness.connect(proxy(harness, timeouts=Timeouts(response=0.5)))
    client.send_request("GET", "http://127.0.0.1:8000/slow")
    harness.advance(0.5)
    response = client.response()
    assert response.status == 504
    assert b"no response within" in response.body


def test_pipelined_requests_answered_in_order():
    harness = Harness()
    harness.origin("127.0.0.1", 8000,
                   reply=lambda request: Reply(200, b"x" * int(request.path[1:])))
    client = harness.connect(proxy(harness))
    client.send(b"".join(  # all four in one write: the proxy reads them together
        b"GET http://127.0.0.1:8000/%d HTTP/1.1\r\nHost: x\r\n\r\n" % n for n in (3, 1, 2, 4)))
    assert [len(client.response().body) for _ in range(4)] == [3, 1, 2, 4]


def test_truncated_upstream_body_is_seen_as_truncated():
    harness = Harness()
    harness.origin("127.0.0.1", 8000, reply=Reply(
        raw=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part", close=True))
    client = harness.connect(proxy(harness))
    response = client.request("GET", "http://127.0.0.1:8000/")
    # The proxy never pretends the body ended cleanly: the client's connection ends short.
    assert (response.body, response.complete) == (b"only-part", False)
    assert client.closed


def test_close_delimited_upstream_body_is_rechunked():
    harness = Harness()
    harness.origin("127.0.0.1", 8000, reply=Reply(
        raw=b"HTTP/1.0 200 OK\r\n\r\n" + b"eof-body" * 100, close=True))
    client = harness.connect(proxy(harness))
    response = client.request("GET", "http://127.0.0.1:8000/")
    assert response.header("transfer-encoding").lower() == b"chunked"
    assert (response.body, response.complete) == (b"eof-body" * 100, True)
    assert not client.closed  # chunked framing keeps the client's connection usable


def test_malformed_upstream_response_gets_502():
    harness = Harness()
    harness.origin("127.0.0.1", 8000, reply=Reply(
        raw=b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"))
    response = harness.connect(proxy(harness)).request("GET", "http://127.0.0.1:8000/")
    assert response.status == 502


def test_smuggling_request_rejected_and_connection_closed():
    harness = Harness()
    origin = harness.origin("127.0.0.1", 8000, reply=Reply(200))
    client = harness.connect(proxy(harness))
    client.send(b"POST http://127.0.0.1:8000/echo HTTP/1.1\r\nHost: x\r\n"
                b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n")
    response = client.response()
    assert response.status == 400
    assert response.header("connection") == b"close"
    assert client.closed and client.read() == b""
    assert origin.requests == []


def test_oversized_head_gets_431():
    harness = Harness()
    client = harness.connect(proxy(harness, limits=Limits(max_head=4096)))
    response = client.request("GET", "http://127.0.0.1/", headers=[(b"X-Big", b"a" * 8000)])
    assert response.status == 431


def test_slowloris_head_gets_408():
    harness = Harness()
    client = harness.connect(proxy(harness, timeouts=Timeouts(header=0.5)))
    client.send(b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n")
    harness.advance(0.49)
    assert client.read() == b""
    harness.advance(0.01)
    assert client.response().status == 408


def test_client_vanishing_mid_response_is_reported_as_client_closed():
    harness = Harness()
    harness.origin("127.0.0.1", 8000, reply=Reply(200, b"x" * 5_000_000))
    client = harness.connect(proxy(harness))
    client.pause_reading()
    client.send_request("GET", "http://127.0.0.1:8000/big")
    client.abort()
    (record,) = harness.records
    assert record.ended == "client-closed"


def test_upstream_connections_are_pooled_and_idle_ones_expire():
    """Sequential requests from separate clients share one upstream connection."""
    harness = Harness()
    origin = harness.origin("127.0.0.1", 8000, reply=Reply(200, b"x" * 10))
    pool = ConnectionPool(harness.reactor, Limits(), keepalive_timeout=0.5)
    factory = proxy(harness, pool=pool)
    for _ in range(3):
        client = harness.connect(factory)
        assert client.request("GET", "http://127.0.0.1:8000/").body == b"x" * 10
        client.close()
    assert origin.connections == 1
    assert pool.idle_count() == 1
    harness.advance(0.5)
    assert pool.idle_count() == 0
    harness.connect(factory).request("GET", "http://127.0.0.1:8000/")
    assert origin.connections == 2
