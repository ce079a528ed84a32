"""Freshness lifetime, heuristics, Age and reuse decisions (RFC 9111 4.2), with a fake clock."""

from __future__ import annotations

import pytest

from multiproxy.cache._directives import parse_request_directives, parse_response_directives
from multiproxy.cache._freshness import (
    Reuse,
    age_value,
    current_age,
    freshness_lifetime,
    judge,
    usable_on_error,
)
from multiproxy.cache._store import describe_response
from multiproxy.http1._dates import format_http_date
from multiproxy.http1._headers import Headers

T0 = 1_700_000_000.0


def lifetime(status=200, **fields) -> float:
    h = Headers([(k.replace("_", "-").encode(), v) for k, v in fields.items()])
    return freshness_lifetime(status, h, parse_response_directives(h), T0)


def stored(*pairs, status=200, request_time=T0, response_time=T0, req=()):
    h = Headers(list(pairs))
    return describe_response(
        b"http://x/",
        status,
        b"OK",
        h,
        parse_response_directives(h),
        Headers(list(req)),
        request_time,
        response_time,
    )


def rcc(value: bytes | None = None):
    return parse_request_directives(Headers([(b"Cache-Control", value)] if value else []))


def test_s_maxage_beats_max_age_beats_expires():
    exp = format_http_date(T0 + 500)
    assert lifetime(cache_control=b"max-age=100, s-maxage=7", expires=exp) == 7
    assert lifetime(cache_control=b"max-age=100", expires=exp) == 100
    assert lifetime(expires=exp) == 500


def test_invalid_or_past_expires_means_already_expired():
    assert lifetime(expires=b"0") == 0
    assert lifetime(expires=format_http_date(T0 - 10)) == 0


def test_heuristic_is_a_fraction_of_last_modified_age_capped():
    assert lifetime(last_modified=format_http_date(T0 - 1000)) == pytest.approx(100)
    assert lifetime(last_modified=format_http_date(T0 - 10**8)) == 86400


@pytest.mark.parametrize("status", [201, 202, 403, 502, 503, 504, 599])
def test_no_heuristic_for_statuses_not_heuristically_cacheable(status):
    assert lifetime(status, last_modified=format_http_date(T0 - 1000)) == 0


@pytest.mark.parametrize("status", [200, 203, 204, 404, 405, 410, 414, 501])
def test_heuristic_for_heuristically_cacheable_statuses(status):
    assert lifetime(status, last_modified=format_http_date(T0 - 1000)) > 0


def test_public_allows_heuristic_for_any_status():
    assert lifetime(599, cache_control=b"public", last_modified=format_http_date(T0 - 1000)) > 0


def test_no_heuristic_with_explicit_expiration():
    assert lifetime(expires=b"0", last_modified=format_http_date(T0 - 1000)) == 0


def test_age_value_uses_first_member_and_ignores_garbage():
    assert age_value(Headers([(b"Age", b"7200, 0")])) == 7200
    assert age_value(Headers([(b"Age", b"0"), (b"Age", b"7200")])) == 0
    for bad in (b"abc", b"-7200", b"7200.0"):
        assert age_value(Headers([(b"Age", bad)])) == 0


def test_current_age_follows_rfc_9111_4_2_3():
    # Date 5 s before receipt, Age 2 from upstream, 3 s round trip, 10 s resident.
    age = current_age(2, date=100.0, request_time=102.0, response_time=105.0, now=115.0)
    # apparent 5; corrected age value 2 + 3 = 5; initial 5; + resident 10.
    assert age == 15.0
    # A large received Age dominates the apparent age.
    assert current_age(60, 100.0, 100.0, 101.0, 101.0) == 61.0
    # A Date in the future gives no negative apparent age.
    assert current_age(0, 200.0, 100.0, 100.0, 100.0) == 0.0


def test_judge_fresh_then_stale_as_the_clock_moves():
    s = stored((b"Cache-Control", b"max-age=10"), (b"Date", format_http_date(T0)))
    assert judge(s, rcc(), T0 + 9).reuse is Reuse.FRESH
    j = judge(s, rcc(), T0 + 10)
    assert j.reuse is Reuse.VALIDATE and j.ttl == 0


def test_received_age_counts_against_freshness():
    s = stored((b"Cache-Control", b"max-age=10"), (b"Age", b"15"), (b"Date", format_http_date(T0)))
    assert judge(s, rcc(), T0).reuse is Reuse.VALIDATE


def test_no_cache_response_always_validates():
    s = stored((b"Cache-Control", b"max-age=1000, no-cache"))
    assert judge(s, rcc(), T0).reuse is Reuse.VALIDATE


def test_request_directives_force_validation():
    s = stored((b"Cache-Control", b"max-age=3600"), (b"Age", b"1800"))
    assert judge(s, rcc(b"no-cache"), T0).reuse is Reuse.VALIDATE
    assert judge(s, rcc(b"max-age=0"), T0).reuse is Reuse.VALIDATE
    assert judge(s, rcc(b"max-age=600"), T0).reuse is Reuse.VALIDATE
    assert judge(s, rcc(b"max-age=3000"), T0).reuse is Reuse.FRESH
    assert judge(s, rcc(b"min-fresh=2000"), T0).reuse is Reuse.VALIDATE
    assert judge(s, rcc(b"min-fresh=1000"), T0).reuse is Reuse.FRESH


def test_max_stale_allows_stale_unless_the_response_forbids_it():
    s = stored((b"Cache-Control", b"max-age=1500"), (b"Age", b"2000"))
    assert judge(s, rcc(b"max-stale=1000"), T0).reuse is Reuse.STALE_ALLOWED
    assert judge(s, rcc(b"max-stale=100"), T0).reuse is Reuse.VALIDATE
    assert judge(s, rcc(b"max-stale"), T0).reuse is Reuse.STALE_ALLOWED
    strict = stored((b"Cache-Control", b"max-age=1500, must-revalidate"), (b"Age", b"2000"))
    assert judge(strict, rcc(b"max-stale"), T0).reuse is Reuse.VALIDATE


def test_stale_while_revalidate_window():
    s = stored((b"Cache-Control", b"max-age=10, stale-while-revalidate=30"))
    assert judge(s, rcc(), T0 + 35).reuse is Reuse.STALE_WHILE_REVALIDATE
    assert judge(s, rcc(), T0 + 41).reuse is Reuse.VALIDATE


def test_stale_if_error_window_from_response_or_request():
    s = stored((b"Cache-Control", b"max-age=10, stale-if-error=60"))
    assert usable_on_error(s, rcc(), T0 + 60, disconnected=False)
    assert not usable_on_error(s, rcc(), T0 + 71, disconnected=False)
    plain = stored((b"Cache-Control", b"max-age=0"))
    assert usable_on_error(plain, rcc(b"stale-if-error=3600"), T0 + 5, disconnected=False)
    assert not usable_on_error(plain, rcc(b"stale-if-error=1"), T0 + 5, disconnected=False)


def test_unreachable_origin_grace_only_when_not_forbidden():
    s = stored((b"Cache-Control", b"max-age=10"))
    assert not usable_on_error(s, rcc(), T0 + 20, disconnected=True, grace=0)
    assert usable_on_error(s, rcc(), T0 + 20, disconnected=True, grace=3600)
    assert not usable_on_error(s, rcc(), T0 + 20, disconnected=False, grace=3600)
    for cc in (
        b"max-age=10, must-revalidate",
        b"max-age=10, proxy-revalidate",
        b"s-maxage=10",
        b"max-age=10, no-cache",
        b"max-age=10, stale-if-error=99, must-revalidate",
    ):
        strict = stored((b"Cache-Control", cc))
        assert not usable_on_error(strict, rcc(), T0 + 20, disconnected=True, grace=3600), cc


def test_describe_adds_date_when_missing_and_drops_hop_by_hop_fields():
    s = stored(
        (b"Cache-Control", b"max-age=1"),
        (b"Connection", b"x-a"),
        (b"X-A", b"1"),
        (b"Keep-Alive", b"t=5"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Age", b"3"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"X-B", b"2"),
    )
    names = [n.lower() for n, _ in s.headers]
    assert names == [b"cache-control", b"x-b", b"date"]
    assert s.field(b"date") == format_http_date(T0)
    assert s.age_value == 3


@pytest.mark.parametrize(
    "expires",
    [
        b"0",
        b"-1",
        b"Sun 06 Nov 2094 08:49:37 GMT",
        b"Sun,  06 Nov 2094 08:49:37 GMT",
        b"Sun, 06-Nov-2094 08:49:37 GMT",
        b"Sun, 06 Nov 2094 8:49:37 GMT",
        b"Sun, 06 Nov 94 08:49:37 GMT",
        b"Sun, 06 Nov 2094 08:49:37 UTC",
        b"sun, 06 nov 2094 08:49:37 gmt",
    ],
)
def test_an_invalid_expires_is_already_expired(expires):
    # RFC 9111 5.3: even a far-future date in a form RFC 9110 does not define
    # is "a time in the past"; a heuristic must not apply either.
    assert lifetime(expires=expires, last_modified=format_http_date(T0 - 10**6)) == 0
    s = stored((b"Date", format_http_date(T0)), (b"Expires", expires))
    assert judge(s, rcc(), T0).reuse is Reuse.VALIDATE


def test_expires_in_each_rfc_9110_form_is_fresh():
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    for expires, seconds in (
        (b"Tue, 14 Nov 2023 22:23:20 GMT", 600),
        (b"Tuesday, 14-Nov-23 22:23:20 GMT", 600),
        (b"Tue Nov 14 22:23:20 2023", 600),
    ):
        assert lifetime(expires=expires) == seconds, expires
        s = stored((b"Date", format_http_date(now)), (b"Expires", expires))
        assert judge(s, rcc(), now + 599).reuse is Reuse.FRESH
        assert judge(s, rcc(), now + 601).reuse is Reuse.VALIDATE


def test_expires_on_more_than_one_field_line_is_invalid():
    later = format_http_date(T0 + 600)
    h = Headers([(b"Date", format_http_date(T0)), (b"Expires", later), (b"Expires", later)])
    assert freshness_lifetime(200, h, parse_response_directives(h), T0) == 0
    s = stored((b"Date", format_http_date(T0)), (b"Expires", later), (b"Expires", later))
    assert judge(s, rcc(), T0 + 1).reuse is Reuse.VALIDATE
    # ... while one line is fresh, and max-age still wins over a broken Expires.
    assert lifetime(expires=later) == 600
    h = Headers([(b"Cache-Control", b"max-age=60"), (b"Expires", later), (b"Expires", later)])
    assert freshness_lifetime(200, h, parse_response_directives(h), T0) == 60
