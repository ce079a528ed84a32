"""
The forward proxy driven through real clients (curl, http.client) over loopback.
"""

from __future__ import annotations

import hashlib
import json

import pytest_twisted
from twisted.internet import reactor

from loopback import curl, http_client_request, listen_scripted, raw_exchange, wait_for
from multiproxy.forward import ForwardSettings


def _url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


@pytest_twisted.ensureDeferred
async def test_curl_get_through_proxy(forward, origin, reporter):
    out, err, code = await curl("-x", _url(forward, ""), _url(origin, "/bytes/100"))
    assert code == 0, err
    assert out == b"x" * 100
    assert reporter.records[-1].status == 200
    assert reporter.records[-1].bytes_to_client == 100


@pytest_twisted.ensureDeferred
async def test_keepalive_reuses_client_and_upstream_connections(forward, origin):
    url = _url(origin, "/bytes/10")
    out, err, code = await curl(
        "-x", _url(forward, ""), url, url, url, "-w", "[%{num_connects}]"
    )
    assert code == 0, err
    # Three answers over one client connection: curl connected once, then reused it.
    assert out.count(b"x" * 10) == 3
    assert out.count(b"[0]") == 2


@pytest_twisted.ensureDeferred
async def test_post_body_streams_to_origin(forward, origin):
    body = bytes(range(256)) * 4096  # 1 MiB
    status, headers, answer = await http_client_request(
        forward, "POST", _url(origin, "/echo"), body=body
    )
    assert status == 200
    assert dict((k.lower(), v) for k, v in headers)["x-received-length"] == str(len(body))
    assert answer == body


@pytest_twisted.ensureDeferred
async def test_chunked_upload_with_curl(forward, origin, tmp_path):
    payload = tmp_path / "payload"
    payload.write_bytes(b"chunk-me " * 50_000)
    out, err, code = await curl(
        "-x", _url(forward, ""), "-H", "Transfer-Encoding: chunked",
        "--data-binary", f"@{payload}", "-D", "-", _url(origin, "/echo"),
    )
    assert code == 0, err
    digest = hashlib.sha256(payload.read_bytes()).hexdigest().encode()
    assert digest in out


@pytest_twisted.ensureDeferred
async def test_chunked_response_to_http11_and_http10_clients(forward, origin):
    out, err, code = await curl("-x", _url(forward, ""), "-D", "-", _url(origin, "/chunked/5000"))
    assert code == 0, err
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == ((b"abcdefghij" * 100) * 5)[:5000]
    out10, err, code = await curl("-0", "-x", _url(forward, ""), "-D", "-",
                                  _url(origin, "/chunked/5000"))
    assert code == 0, err
    head, _, body = out10.partition(b"\r\n\r\n")
    assert b"chunked" not in head.lower()
    assert len(body) == 5000


@pytest_twisted.ensureDeferred
async def test_origin_form_request_gets_400(forward):
    answer = await raw_exchange(forward, b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"absolute URL" in answer


@pytest_twisted.ensureDeferred
async def test_refused_connection_gets_502_and_client_connection_stays_usable(forward, origin):
    port, _ = listen_scripted(b"")
    dead = port.getHost().port
    await port.stopListening()
    request = (
        f"GET http://127.0.0.1:{dead}/ HTTP/1.1\r\nHost: x\r\n\r\n"
        f"GET http://127.0.0.1:{origin}/bytes/5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).encode()
    answer = await raw_exchange(forward, request)
    first, _, rest = answer.partition(b"HTTP/1.1 200 OK")
    assert first.startswith(b"HTTP/1.1 502 ")
    assert b"connection refused" in first
    assert rest.endswith(b"xxxxx")


@pytest_twisted.ensureDeferred
async def test_unresolvable_host_gets_502(forward):
    out, err, code = await curl("-x", _url(forward, ""), "-w", "%{http_code}",
                                "http://no-such-host.invalid/")
    assert out.endswith(b"502")
    assert b"cannot resolve" in out


@pytest_twisted.ensureDeferred
async def test_upstream_response_timeout_gets_504(start_forward, origin):
    from multiproxy.http._server import Timeouts

    port, _ = start_forward(timeouts=Timeouts(response=0.5))
    out, err, code = await curl("-x", _url(port, ""), "-w", "%{http_code}", _url(origin, "/slow/5"))
    assert out.endswith(b"504")
    assert b"no response within" in out


@pytest_twisted.ensureDeferred
async def test_unsupported_scheme_gets_501(forward):
    answer = await raw_exchange(
        forward, b"GET ftp://127.0.0.1/file HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    assert answer.startswith(b"HTTP/1.1 501 ")


@pytest_twisted.ensureDeferred
async def test_hop_by_hop_headers_removed_and_via_xff_added(forward, origin):
    request = (
        f"GET http://127.0.0.1:{origin}/headers HTTP/1.1\r\n"
        "Host: ignored.example\r\n"
        "Connection: close, X-Secret\r\n"
        "X-Secret: do-not-forward\r\n"
        "Keep-Alive: timeout=5\r\n"
        "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n"
        "TE: trailers\r\n"
        "X-Repeat: one\r\n"
        "X-Repeat: two\r\n"
        "\r\n"
    ).encode()
    answer = await raw_exchange(forward, request)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nVia: 1.0 multiproxy" in head or b"\r\nVia: 1.1 multiproxy" in head
    seen = json.loads(body)
    names = [name.lower() for name, _ in seen["headers"]]
    for hop in ("connection", "x-secret", "keep-alive", "proxy-authorization", "te"):
        assert hop not in names
    values = dict((n.lower(), v) for n, v in seen["headers"])
    assert values["host"] == f"127.0.0.1:{origin}"
    assert values["via"] == "1.1 multiproxy"
    assert values["x-forwarded-for"] == "127.0.0.1"
    assert [v for n, v in seen["headers"] if n.lower() == "x-repeat"] == ["one", "two"]


@pytest_twisted.ensureDeferred
async def test_via_and_xff_can_be_switched_off(start_forward, origin):
    port, _ = start_forward(settings=ForwardSettings(via=None, x_forwarded_for="delete"))
    status, headers, body = await http_client_request(
        port, "GET", _url(origin, "/headers"), headers={"X-Forwarded-For": "10.9.9.9"}
    )
    names = [n.lower() for n, _ in json.loads(body)["headers"]]
    assert "via" not in names and "x-forwarded-for" not in names
    assert "via" not in [n.lower() for n, _ in headers]


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_answered_in_order(forward, origin):
    request = b"".join(
        f"GET http://127.0.0.1:{origin}/bytes/{n} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        for n in (3, 1, 2)
    ) + f"GET http://127.0.0.1:{origin}/bytes/4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    answer = await raw_exchange(forward, request)
    bodies = [part.split(b"\r\n\r\n", 1)[1][:4] for part in answer.split(b"HTTP/1.1 200 OK")[1:]]
    assert [b.count(b"x") for b in bodies] == [3, 1, 2, 4]


@pytest_twisted.ensureDeferred
async def test_truncated_upstream_body_is_seen_as_truncated(forward):
    port, _ = listen_scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
    try:
        out, err, code = await curl("-x", _url(forward, ""), _url(port.getHost().port, "/"))
    finally:
        await port.stopListening()
    # curl: 18 = partial file; the proxy never pretends the body ended cleanly.
    assert code == 18
    assert out == b"only-part"


@pytest_twisted.ensureDeferred
async def test_close_delimited_upstream_body_is_rechunked(forward):
    port, _ = listen_scripted(b"HTTP/1.0 200 OK\r\n\r\n" + b"eof-body" * 100)
    try:
        out, err, code = await curl("-x", _url(forward, ""), "-D", "-", _url(port.getHost().port, "/"))
    finally:
        await port.stopListening()
    assert code == 0, err
    head, _, body = out.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body == b"eof-body" * 100


@pytest_twisted.ensureDeferred
async def test_malformed_upstream_response_gets_502(forward):
    port, _ = listen_scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
    try:
        out, err, code = await curl("-x", _url(forward, ""), "-w", "%{http_code}",
                                    _url(port.getHost().port, "/"))
    finally:
        await port.stopListening()
    assert out.endswith(b"502")


@pytest_twisted.ensureDeferred
async def test_smuggling_request_rejected_and_connection_closed(forward, origin):
    request = (
        f"POST http://127.0.0.1:{origin}/echo HTTP/1.1\r\nHost: x\r\n"
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        "0\r\n\r\nGET http://127.0.0.1:1/ HTTP/1.1\r\nHost: x\r\n\r\n"
    ).encode()
    answer = await raw_exchange(forward, request)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.count(b"HTTP/1.1") == 1
    assert b"Connection: close" in answer


@pytest_twisted.ensureDeferred
async def test_oversized_head_gets_431(start_forward):
    from multiproxy.http._parser import Limits

    port, _ = start_forward(limits=Limits(max_head=4096))
    request = b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8000 + b"\r\n\r\n"
    answer = await raw_exchange(port, request)
    assert answer.startswith(b"HTTP/1.1 431 ")


@pytest_twisted.ensureDeferred
async def test_body_over_limit_gets_413(start_forward, origin):
    from multiproxy.http._parser import Limits

    port, _ = start_forward(limits=Limits(max_body=1000))
    status, headers, body = await http_client_request(
        port, "POST", _url(origin, "/echo"), body=b"z" * 5000
    )
    assert status == 413


@pytest_twisted.ensureDeferred
async def test_slowloris_head_gets_408(start_forward):
    from multiproxy.http._server import Timeouts

    port, _ = start_forward(timeouts=Timeouts(header=0.5))
    answer = await raw_exchange(port, b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")


@pytest_twisted.ensureDeferred
async def test_client_vanishing_mid_response_is_logged_without_traceback(
    forward, origin, reporter
):
    from twisted.internet import protocol

    class Impatient(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(
                f"GET http://127.0.0.1:{origin}/bytes/5000000 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            )

        def dataReceived(self, data):
            self.transport.abortConnection()

    await protocol.ClientCreator(reactor, Impatient).connectTCP("127.0.0.1", forward)
    await wait_for(lambda: reporter.records)
    assert reporter.records[-1].ended == "client-closed"


@pytest_twisted.ensureDeferred
async def test_upstream_connections_are_pooled_and_idle_ones_expire(start_forward):
    """Sequential requests from separate clients share one upstream connection."""
    from twisted.internet.protocol import Factory

    from loopback import origin_site
    from multiproxy.http._client import ConnectionPool
    from multiproxy.http._parser import Limits

    site = origin_site()
    accepted = []

    class Counting(Factory):
        def buildProtocol(self, addr):
            accepted.append(addr)
            return site.buildProtocol(addr)

    listener = reactor.listenTCP(0, Counting(), interface="127.0.0.1")
    origin = listener.getHost().port
    pool = ConnectionPool(reactor, Limits(), keepalive_timeout=0.5)
    port, factory = start_forward(pool=pool)
    try:
        for _ in range(3):
            out, err, code = await curl("-x", _url(port, ""), _url(origin, "/bytes/10"))
            assert out == b"x" * 10
        assert len(accepted) == 1
        assert pool.idle_count() == 1
        await wait_for(lambda: pool.idle_count() == 0, timeout=5)
        out, err, code = await curl("-x", _url(port, ""), _url(origin, "/bytes/10"))
        assert len(accepted) == 2
    finally:
        await listener.stopListening()


def test_an_ip_literal_origin_is_connected_directly_and_a_name_is_resolved():
    from twisted.internet.endpoints import HostnameEndpoint

    from multiproxy.balancing import DirectTCPEndpoint
    from multiproxy.forward._origin import Origin

    # No resolver thread and no Happy Eyeballs round for an address: a
    # refused connection is answered at once, not at the next 0.3 s attempt.
    assert isinstance(Origin("http", "127.0.0.1", 80).endpoint(reactor), DirectTCPEndpoint)
    assert isinstance(Origin("http", "::1", 80).endpoint(reactor), DirectTCPEndpoint)
    assert isinstance(Origin("http", "origin.test", 80).endpoint(reactor), HostnameEndpoint)
