"""Cache keys and Vary matching (RFC 9111 2, 4.1)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from multiproxy.cache._keys import (
    cache_key,
    effective_url,
    normalise_field,
    variant_id,
    vary_matches,
    vary_names,
    vary_values,
)
from multiproxy.http1._headers import Headers


def test_cache_key_normalises_scheme_host_port_and_path():
    assert cache_key(b"HTTP://Example.COM:80") == b"http://example.com/"
    assert cache_key(b"https://example.com:443/a?b#frag") == b"https://example.com/a?b"
    assert cache_key(b"http://example.com:8080/a") == b"http://example.com:8080/a"
    assert cache_key(b"http://user:pw@example.com/") == b"http://example.com/"
    assert cache_key(b"http://[::1]:80/x") == b"http://[::1]/x"
    assert cache_key(b"http://h/%7euser/%2f%41") == b"http://h/~user/%2FA"


def test_query_is_part_of_the_key():
    assert cache_key(b"http://h/p?test=1") != cache_key(b"http://h/p?test=2")


def test_effective_url_from_origin_form():
    assert effective_url(b"http", b"h:8080", b"/a?b") == b"http://h:8080/a?b"
    assert effective_url(b"http", b"ignored", b"http://h/a") == b"http://h/a"


def test_vary_names_sorted_unique_and_star_is_none():
    h = Headers([(b"Vary", b"Foo, bar"), (b"Vary", b"FOO")])
    assert vary_names(h) == (b"bar", b"foo")
    assert vary_names(Headers([(b"Vary", b", *")])) is None
    assert vary_names(Headers([(b"Vary", b""), (b"Vary", b"*")])) is None
    assert vary_names(Headers()) == ()


def test_normalisation_whitespace_and_combined_lines():
    a = Headers([(b"Foo", b"1,2")])
    b = Headers([(b"Foo", b" 1, 2 ")])
    c = Headers([(b"Foo", b"1"), (b"Foo", b"2")])
    assert normalise_field(b"foo", a) == normalise_field(b"foo", b) == normalise_field(b"foo", c)


def test_negotiation_fields_ignore_order_case_and_default_q():
    a = Headers([(b"Accept-Language", b"en, de")])
    b = Headers([(b"Accept-Language", b"DE,en;q=1.0")])
    assert normalise_field(b"accept-language", a) == normalise_field(b"accept-language", b)
    assert normalise_field(
        b"accept-encoding", Headers([(b"Accept-Encoding", b"gzip;q=0.50, br")])
    ) == normalise_field(b"accept-encoding", Headers([(b"Accept-Encoding", b"br, GZIP; q=0.5")]))


def test_generic_field_values_stay_case_and_order_sensitive():
    assert normalise_field(b"foo", Headers([(b"Foo", b"a, b")])) != normalise_field(
        b"foo", Headers([(b"Foo", b"b, a")])
    )
    assert normalise_field(b"foo", Headers([(b"Foo", b"A")])) != normalise_field(
        b"foo", Headers([(b"Foo", b"a")])
    )


def test_absent_matches_only_absent():
    stored = vary_values((b"bar", b"foo"), Headers([(b"Foo", b"1")]))
    assert vary_matches(stored, Headers([(b"Foo", b"1")]))
    assert not vary_matches(stored, Headers([(b"Foo", b"1"), (b"Bar", b"")]))
    assert not vary_matches(stored, Headers())
    assert not vary_matches(stored, Headers([(b"Foo", b"2")]))


def test_headers_not_listed_in_vary_do_not_matter():
    stored = vary_values((b"foo",), Headers([(b"Foo", b"1"), (b"Other", b"2")]))
    assert vary_matches(stored, Headers([(b"Foo", b"1"), (b"Other", b"3")]))


def test_variant_id_is_stable_and_distinguishes_values():
    a = vary_values((b"foo",), Headers([(b"Foo", b"1")]))
    b = vary_values((b"foo",), Headers([(b"Foo", b"2")]))
    absent = vary_values((b"foo",), Headers())
    empty = vary_values((b"foo",), Headers([(b"Foo", b"")]))
    assert variant_id(()) == b""
    assert len({variant_id(a), variant_id(b), variant_id(absent), variant_id(empty)}) == 4
    assert variant_id(a) == variant_id(vary_values((b"foo",), Headers([(b"Foo", b" 1 ")])))


_values = st.lists(
    st.sampled_from([b"a", b"b", b"c;q=0.5", b"d"]), min_size=1, max_size=4, unique=True
)


@settings(deadline=None)
@given(_values, st.randoms())
def test_accept_encoding_normalisation_is_order_independent(members, rnd):
    shuffled = list(members)
    rnd.shuffle(shuffled)
    one = Headers([(b"Accept-Encoding", b", ".join(members))])
    other = Headers([(b"Accept-Encoding", m) for m in shuffled])
    assert normalise_field(b"accept-encoding", one) == normalise_field(b"accept-encoding", other)
