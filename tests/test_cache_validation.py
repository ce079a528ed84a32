"""Validation: conditional requests, 304 merging, client preconditions, ranges, invalidation."""

from __future__ import annotations

import pytest

from multiproxy.cache._directives import parse_response_directives
from multiproxy.cache._invalidation import invalidated_keys
from multiproxy.cache._store import describe_response
from multiproxy.cache._validation import (
    UNSATISFIABLE,
    byte_range,
    freshen,
    if_range_holds,
    merge_fields,
    not_modified,
    not_modified_fields,
    parse_etag,
    refresh_from_head,
    validation_headers,
)
from multiproxy.http1._dates import format_http_date
from multiproxy.http1._headers import Headers

T0 = 1_700_000_000.0
LM = format_http_date(T0 - 3000)


def stored(*pairs, length=10):
    h = Headers([(b"Date", format_http_date(T0))] + list(pairs))
    m = describe_response(
        b"http://x/", 200, b"OK", h, parse_response_directives(h), Headers(), T0, T0
    )
    return m.with_length(length)


def test_etag_parsing_weak_strong_and_unquoted():
    assert parse_etag(b'W/"a"').weak and parse_etag(b'w/"a"').weak
    assert not parse_etag(b'"a"').weak
    assert parse_etag(b"abc").opaque == b'"abc"'
    assert parse_etag(b'"a"b"') is None


def test_validation_headers_replace_client_preconditions_with_stored_validators():
    m = stored((b"ETag", b"abcdef"), (b"Last-Modified", LM))
    client = Headers(
        [
            (b"Host", b"x"),
            (b"If-None-Match", b'"old"'),
            (b"Range", b"bytes=0-1"),
            (b"If-Modified-Since", LM),
        ]
    )
    out = validation_headers(client, m)
    assert out.get_all(b"if-none-match") == [b'"abcdef"']
    assert out.get_all(b"if-modified-since") == [LM]
    assert b"range" not in out and out.get(b"host") == b"x"
    assert client.get(b"range") == b"bytes=0-1"  # the client's headers are not modified


def test_merge_304_replaces_fields_but_not_length_or_hop_by_hop():
    old = (
        (b"Content-Type", b"text/plain"),
        (b"X-A", b"1"),
        (b"Set-Cookie", b"a=b"),
        (b"X-Keep", b"k"),
    )
    new = Headers(
        [
            (b"Content-Type", b"text/plain;charset=utf-8"),
            (b"X-A", b"2"),
            (b"Content-Length", b"99"),
            (b"Connection", b"x-hop"),
            (b"X-Hop", b"h"),
            (b"Set-Cookie", b"a=c"),
            (b"Set-Cookie", b"d=e"),
        ]
    )
    merged = dict_multi(merge_fields(old, new))
    assert merged[b"content-type"] == [b"text/plain;charset=utf-8"]
    assert merged[b"x-a"] == [b"2"]
    assert merged[b"set-cookie"] == [b"a=c", b"d=e"]
    assert merged[b"x-keep"] == [b"k"]
    assert (
        b"content-length" not in merged and b"x-hop" not in merged and b"connection" not in merged
    )


def dict_multi(fields):
    out: dict[bytes, list[bytes]] = {}
    for n, v in fields:
        out.setdefault(n.lower(), []).append(v)
    return out


def test_freshen_updates_lifetime_and_times():
    m = stored((b"Cache-Control", b"max-age=1"), (b"ETag", b'"e"'), (b"X", b"a"))
    new = freshen(
        m,
        Headers(
            [
                (b"Cache-Control", b"max-age=3600"),
                (b"ETag", b'"e"'),
                (b"X", b"b"),
                (b"Date", format_http_date(T0 + 50)),
                (b"Age", b"4"),
            ]
        ),
        T0 + 49,
        T0 + 50,
    )
    assert new.lifetime == 3600 and new.response_time == T0 + 50 and new.age_value == 4
    assert new.field(b"x") == b"b" and new.body_length == 10


def test_freshen_refuses_a_304_for_another_representation():
    m = stored((b"Cache-Control", b"max-age=1"), (b"ETag", b'"e"'))
    assert freshen(m, Headers([(b"ETag", b'"other"')]), T0, T0) is None
    assert freshen(m, Headers([(b"ETag", b'W/"e"')]), T0, T0) is not None
    weak = stored((b"ETag", b'W/"e"'))
    assert freshen(weak, Headers([(b"ETag", b'"e"')]), T0, T0) is None  # strong needs strong
    lm = stored((b"Last-Modified", LM))
    assert freshen(lm, Headers([(b"Last-Modified", format_http_date(T0 - 1))]), T0, T0) is None
    assert freshen(lm, Headers([(b"Last-Modified", LM)]), T0, T0) is not None


def test_head_refresh_keeps_matching_entry_and_drops_changed_one():
    m = stored((b"Cache-Control", b"max-age=1"), (b"ETag", b'"e"'), (b"Template-A", b"1"), length=5)
    same = refresh_from_head(
        m,
        Headers(
            [
                (b"ETag", b'"e"'),
                (b"Content-Length", b"5"),
                (b"Cache-Control", b"max-age=1000"),
                (b"Template-A", b"2"),
            ]
        ),
        T0,
        T0,
    )
    assert same.lifetime == 1000 and same.field(b"template-a") == b"2"
    assert refresh_from_head(m, Headers([(b"ETag", b'"f"')]), T0, T0) is None
    assert (
        refresh_from_head(m, Headers([(b"ETag", b'"e"'), (b"Content-Length", b"6")]), T0, T0)
        is None
    )


@pytest.mark.parametrize(
    "inm,expected",
    [
        (b'"abcdef"', True),
        (b'"1234", "abcdef", "5678"', True),
        (b'W/"abcdef"', True),
        (b"*", True),
        (b'"nope"', False),
    ],
)
def test_if_none_match_uses_weak_comparison(inm, expected):
    m = stored((b"ETag", b'"abcdef"'))
    assert not_modified(b"GET", Headers([(b"If-None-Match", inm)]), m) is expected


def test_if_modified_since_against_last_modified_or_date():
    m = stored((b"Last-Modified", LM))
    assert not_modified(b"GET", Headers([(b"If-Modified-Since", LM)]), m)
    assert not_modified(b"GET", Headers([(b"If-Modified-Since", format_http_date(T0 - 2000))]), m)
    assert not not_modified(
        b"GET", Headers([(b"If-Modified-Since", format_http_date(T0 - 4000))]), m
    )
    assert not not_modified(b"GET", Headers([(b"If-Modified-Since", b"garbage")]), m)
    no_lm = stored()
    assert not_modified(b"GET", Headers([(b"If-Modified-Since", format_http_date(T0))]), no_lm)


def test_if_none_match_takes_precedence_over_if_modified_since():
    m = stored((b"ETag", b'"a"'), (b"Last-Modified", LM))
    h = Headers([(b"If-None-Match", b'"b"'), (b"If-Modified-Since", format_http_date(T0))])
    assert not not_modified(b"GET", h, m)


def test_not_modified_fields_are_the_rfc_list():
    m = stored(
        (b"ETag", b'"a"'),
        (b"Content-Type", b"text/html"),
        (b"Cache-Control", b"max-age=5"),
        (b"Last-Modified", LM),
        (b"Vary", b"Accept"),
    )
    names = {n.lower() for n, _ in not_modified_fields(m)}
    assert names == {b"date", b"etag", b"cache-control", b"vary"}
    assert b"last-modified" in {
        n.lower() for n, _ in not_modified_fields(stored((b"Last-Modified", LM)))
    }


@pytest.mark.parametrize(
    "value,expected",
    [
        (b"bytes=0-1", (0, 1)),
        (b"bytes=1-", (1, 10)),
        (b"bytes=-1", (10, 10)),
        (b"bytes=5-100", (5, 10)),
        (b"bytes=-100", (0, 10)),
        (b"bytes=11-", UNSATISFIABLE),
        (b"bytes=-0", UNSATISFIABLE),
        (b"bytes=0-1,3-4", None),
        (b"items=0-1", None),
        (b"bytes=3-1", None),
        (b"bytes=a-b", None),
    ],
)
def test_byte_range(value, expected):
    assert byte_range(value, 11) == expected


def test_if_range_requires_strong_match():
    m = stored((b"ETag", b'"a"'), (b"Last-Modified", LM))
    assert if_range_holds(b'"a"', m)
    assert not if_range_holds(b'W/"a"', m)
    assert not if_range_holds(b'"b"', m)
    assert if_range_holds(LM, m)
    assert not if_range_holds(format_http_date(T0 - 1), m)


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"M-SEARCH", b"PATCH"])
def test_unsafe_success_invalidates_target_and_same_origin_locations(method):
    h = Headers([(b"Location", b"/other"), (b"Content-Location", b"http://evil.example/x")])
    keys = invalidated_keys(method, b"http://h.example/a", 201, h)
    assert keys == [b"http://h.example/a", b"http://h.example/other"]


def test_errors_and_safe_methods_do_not_invalidate():
    assert invalidated_keys(b"POST", b"http://h/a", 500, Headers()) == []
    assert invalidated_keys(b"GET", b"http://h/a", 200, Headers()) == []
    assert invalidated_keys(
        b"POST", b"http://h/a", 302, Headers([(b"Location", b"http://h:80/b")])
    ) == [b"http://h/a", b"http://h/b"]
