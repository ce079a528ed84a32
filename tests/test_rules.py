"""Tests for hop-by-hop field removal (RFC 9110 7.6.1)."""

from __future__ import annotations

from multiproxy.http1._headers import Headers
from multiproxy.http1._rules import HOP_BY_HOP, end_to_end


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


def test_set_replaces_in_place_keeping_the_spelling_and_drops_repeats():
    headers = Headers([(b"Host", b"a"), (b"Accept", b"*/*"), (b"HOST", b"b")])
    headers.set(b"host", b"origin.test")
    assert list(headers) == [(b"Host", b"origin.test"), (b"Accept", b"*/*")]
    headers.set(b"X-Forwarded-Proto", b"https")
    assert list(headers)[-1] == (b"X-Forwarded-Proto", b"https")
    assert headers.get(b"x-forwarded-proto") == b"https"


def test_lookups_answer_the_same_whether_a_field_is_absent_single_or_repeated():
    headers = Headers([(b"Via", b"1.1 a"), (b"Connection", b"close"), (b"via", b"1.0 b")])
    assert headers.get(b"referer") is None and headers.get_all(b"referer") == []
    assert headers.get_all(b"connection") == [b"close"]
    assert headers.get_all(b"via") == [b"1.1 a", b"1.0 b"]
    assert headers.has_any(frozenset({b"te", b"via"})) and not headers.has_any(frozenset({b"te"}))
    assert list(headers.without(frozenset({b"te"}))) == list(headers)
    assert list(headers.without(frozenset({b"via"}))) == [(b"Connection", b"close")]
