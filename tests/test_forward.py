"""
The forward proxy driven through real clients (curl, http.client) over loopback.
Its answers to bad requests, bad origins and timeouts are tested in memory
in tests/test_forward_exchanges.py.
"""

from __future__ import annotations

import hashlib
import json

import pytest_twisted
from loopback import curl, http_client_request, raw_exchange
from twisted.internet import reactor

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
async def test_unresolvable_host_gets_502(forward):
    out, err, code = await curl("-x", _url(forward, ""), "-w", "%{http_code}",
                                "http://no-such-host.invalid/")
    assert out.endswith(b"502")
    assert b"cannot resolve" in out


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
async def test_body_over_limit_gets_413(start_forward, origin):
    from multiproxy.http1._parser import Limits

    port, _ = start_forward(limits=Limits(max_body=1000))
    status, headers, body = await http_client_request(
        port, "POST", _url(origin, "/echo"), body=b"z" * 5000
    )
    assert status == 413


def test_an_ip_literal_origin_is_connected_directly_and_a_name_is_resolved():
    from twisted.internet.endpoints import HostnameEndpoint

    from multiproxy.balancing import DirectTCPEndpoint
    from multiproxy.forward._origin import Origin

    # No resolver thread and no Happy Eyeballs round for an address: a
    # refused connection is answered at once, not at the next 0.3 s attempt.
    assert isinstance(Origin("http", "127.0.0.1", 80).endpoint(reactor), DirectTCPEndpoint)
    assert isinstance(Origin("http", "::1", 80).endpoint(reactor), DirectTCPEndpoint)
    assert isinstance(Origin("http", "origin.test", 80).endpoint(reactor), HostnameEndpoint)
