"""Tests for hop-by-hop field removal (RFC 9110 7.6.1)."""

from __future__ import annotations

from multiproxy.http._headers import Headers
from multiproxy.http._rules import HOP_BY_HOP, end_to_end


def test_hop_by_hop_set_is_the_rfc_list():
    assert HOP_BY_HOP == {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
    }


def test_end_to_end_drops_every_hop_by_hop_field_whatever_its_case():
    headers = Headers(
        [
            (b"Host", b"h"),
            (b"CONNECTION", b"keep-alive"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Connection", b"keep-alive"),
            (b"TE", b"trailers"),
            (b"Trailer", b"X"),
            (b"transfer-encoding", b"chunked"),
            (b"Upgrade", b"websocket"),
            (b"Proxy-Authorization", b"Basic eA=="),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Accept", b"*/*"),
        ]
    )
    assert end_to_end(headers).pairs == [(b"Host", b"h"), (b"Accept", b"*/*")]


def test_end_to_end_drops_fields_named_by_connection_and_keeps_order_and_repeats():
    headers = Headers(
        [
            (b"A", b"1"),
            (b"X-Secret", b"s"),
            (b"Connection", b"x-secret, , X-Other"),
            (b"B", b"2"),
            (b"x-other", b"o"),
            (b"A", b"3"),
            (b"Connection", b"close"),
        ]
    )
    assert end_to_end(headers).pairs == [(b"A", b"1"), (b"B", b"2"), (b"A", b"3")]


def test_end_to_end_never_drops_content_length_or_host():
    headers = Headers(
        [(b"Host", b"h"), (b"Content-Length", b"3"), (b"Connection", b"Content-Length, host")]
    )
    assert end_to_end(headers).pairs == [(b"Host", b"h"), (b"Content-Length", b"3")]


def test_end_to_end_returns_a_new_object_and_leaves_the_input_alone():
    headers = Headers([(b"Connection", b"close"), (b"A", b"1")])
    result = end_to_end(headers)
    result.add(b"B", b"2")
    assert headers.pairs == [(b"Connection", b"close"), (b"A", b"1")]
