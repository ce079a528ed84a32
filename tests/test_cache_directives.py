"""Cache-Control / Pragma parsing (RFC 9111 5.2, 5.4) and HTTP-date parsing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from multiproxy.cache._directives import (
    ANY_STALENESS,
    DELTA_MAX,
    parse_request_directives,
    parse_response_directives,
    split_list,
)
from multiproxy.http1._dates import format_http_date, parse_http_date
from multiproxy.http1._headers import Headers


def resp(*values: bytes):
    return parse_response_directives(Headers([(b"Cache-Control", v) for v in values]))


def req(*pairs: tuple[bytes, bytes]):
    return parse_request_directives(Headers(list(pairs)))


def test_max_age_is_read_case_insensitively():
    assert resp(b"MaX-AgE=3600").max_age == 3600


def test_quoted_max_age_is_accepted():
    assert resp(b'max-age="3600"').max_age == 3600


def test_max_age_inside_a_quoted_extension_is_ignored():
    assert resp(b'extension="max-age=3600", max-age=1').max_age == 1
    assert resp(b'max-age=1, extension="max-age=3600"').max_age == 1


def test_first_occurrence_of_a_repeated_directive_wins_across_lines():
    assert resp(b"max-age=1800, max-age=1").max_age == 1800
    assert resp(b"max-age=1", b"max-age=1800").max_age == 1


def test_malformed_max_age_makes_the_response_stale_not_fresh():
    for bad in (
        b"max-age=a100",
        b"max-age=100a",
        b"max-age=-100",
        b"max-age= 100",
        b"max-age='3600'",
        b"max-age=3600.5",
        b"max-age",
    ):
        assert resp(bad).max_age == 0, bad


def test_max_age_with_space_before_equals_is_not_max_age():
    assert resp(b"max-age =100").max_age is None


def test_huge_max_age_is_capped_at_2_to_the_31():
    assert resp(b"max-age=99999999999").max_age == DELTA_MAX
    assert resp(b"max-age=003600").max_age == 3600


def test_no_cache_and_private_qualified_forms_list_fields():
    cc = resp(b'no-cache="Set-Cookie, X-A", private="X-B"')
    assert not cc.no_cache and not cc.private
    assert cc.no_cache_fields == {b"set-cookie", b"x-a"}
    assert cc.private_fields == {b"x-b"}
    assert resp(b"no-cache").no_cache and resp(b"private").private


def test_forbids_stale_for_revalidation_directives_and_s_maxage():
    assert resp(b"must-revalidate").forbids_stale
    assert resp(b"proxy-revalidate").forbids_stale
    assert resp(b"s-maxage=10").forbids_stale
    assert resp(b"no-cache").forbids_stale
    assert not resp(b"max-age=10, public").forbids_stale


def test_stale_extensions_are_read():
    cc = resp(b"max-age=1, stale-while-revalidate=30, stale-if-error=60")
    assert (cc.stale_while_revalidate, cc.stale_if_error) == (30, 60)


def test_request_max_stale_without_value_accepts_any_staleness():
    assert req((b"Cache-Control", b"max-stale")).max_stale == ANY_STALENESS
    assert req((b"Cache-Control", b"max-stale=20")).max_stale == 20


def test_request_directives():
    d = req((b"Cache-Control", b"no-cache, no-store, only-if-cached, min-fresh=5, max-age=0"))
    assert d.no_cache and d.no_store and d.only_if_cached
    assert d.min_fresh == 5 and d.max_age == 0


def test_pragma_no_cache_counts_only_without_cache_control():
    assert req((b"Pragma", b"no-cache")).no_cache
    assert not req((b"Pragma", b"no-cache"), (b"Cache-Control", b"max-stale=5")).no_cache
    assert not req((b"Pragma", b"something-else")).no_cache


def test_split_list_respects_quotes_and_escapes():
    assert split_list(b'a, b="x, y", c="q\\"z,", , d') == [b"a", b'b="x, y"', b'c="q\\"z,"', b"d"]


@settings(deadline=None)
@given(st.binary(max_size=80))
def test_parsers_never_raise_on_arbitrary_bytes(value):
    resp(value)
    req((b"Cache-Control", value))
    parse_http_date(value)


@settings(deadline=None)
@given(
    st.lists(st.sampled_from([b"a", b"b c", b'"q,r"', b"x=1", b'y="2,3"']), min_size=1, max_size=6)
)
def test_split_list_round_trips_joined_members(members):
    assert split_list(b", ".join(members)) == members


def test_http_date_formats_all_parse_to_the_same_time():
    expected = 784111777.0
    for value in (
        b"Sun, 06 Nov 1994 08:49:37 GMT",
        b"Sunday, 06-Nov-94 08:49:37 GMT",
        b"Sun Nov  6 08:49:37 1994",
        b"  Sun, 06 Nov 1994 08:49:37 GMT ",  # surrounding OWS is not part of the value
    ):
        assert parse_http_date(value, now=1.7e9) == expected, value
    assert parse_http_date(b"Thu Nov 16 08:49:37 1994") == 784111777.0 + 10 * 86400


def test_only_the_three_rfc_9110_forms_are_http_dates():
    # RFC 9110 5.6.7: IMF-fixdate, rfc850-date and asctime-date, case-sensitive,
    # single SP separators, two-digit day and time fields, the zone GMT.
    for value in (
        b"SUN, 06 NOV 1994 08:49:37 gmt",  # case
        b"Sun, 06 Nov 1994 08:49:37 gmt",
        b"Sun 06 Nov 1994 08:49:37 GMT",  # missing comma
        b"Sun,  06 Nov 1994 08:49:37 GMT",  # doubled space
        b"Sun, 06 Nov  1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994  08:49:37 GMT",
        b"Sun, 06-Nov-1994 08:49:37 GMT",  # dashes in IMF-fixdate
        b"Sun, 06 Nov 1994 8:49:37 GMT",  # one-digit hour
        b"Sun, 6 Nov 1994 08:49:37 GMT",  # one-digit day
        b"Sun, 06 Nov 94 08:49:37 GMT",  # two-digit year in IMF-fixdate
        b"Sun, 06 Nov 1994 08:49:37 UTC",  # zone other than GMT
        b"Sun, 06 Nov 1994 08:49:37 +0000",
        b"Sun, 06 Nov 1994 08:49:37 UT",
        b"Sun, 06 Nov 1994 08:49:37",  # no zone
        b"Sun, 06 Nov 1994 08:49 GMT",
        b"Sunday, 06 Nov 1994 08:49:37 GMT",  # long day name in IMF-fixdate
        b"Sun, 06 November 1994 08:49:37 GMT",
        b"Sun, 06\tNov 1994 08:49:37 GMT",
        b"Sun, 06-Nov-94 08:49:37 GMT",  # short day name in RFC 850
        b"Sunday, 06-Nov-1994 08:49:37 GMT",  # four-digit year in RFC 850
        b"Sunday, 06 Nov 94 08:49:37 GMT",
        b"Sunday, 06-Nov-94 08:49:37 UTC",
        b"Sun Nov 6 08:49:37 1994",  # asctime with an unpadded day
        b"Sun Nov 06 08:49:37 1994 GMT",
        b"Sun Nov  6 08:49:37 94",
        b"Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT",
        b"\xef\xbc\x90",
    ):
        assert parse_http_date(value, now=1.7e9) is None, value


def test_invalid_dates_are_none():
    for value in (
        b"0",
        b"-1",
        b"",
        b"tomorrow",
        b"Sun, 31 Feb 1994 08:49:37 GMT",
        b"Sun, 06 Nov 1994 25:49:37 GMT",
    ):
        assert parse_http_date(value) is None, value


def test_format_http_date_round_trips():
    assert format_http_date(784111777) == b"Sun, 06 Nov 1994 08:49:37 GMT"
    assert parse_http_date(format_http_date(1.7e9)) == 1.7e9
