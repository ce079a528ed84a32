"""
SharedCache end to end without a reactor: a fake clock and a scripted origin,
driven the way the HTTP layer drives it (plan, fetch, on_response, writer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from multiproxy.cache import Action, CacheConfig, MemoryStore, SharedCache
from multiproxy.http1._dates import format_http_date
from multiproxy.http1._headers import Headers

T0 = 1_700_000_000.0
URL = b"http://origin.example/r"


@dataclass
class Result:
    status: int
    headers: Headers
    body: bytes
    forwarded: bool
    upstream: Headers | None = None
    upstream_method: bytes | None = None

    @property
    def x_cache(self) -> str:
        return (self.headers.get(b"x-cache") or b"").decode()

    def __getitem__(self, name: str) -> bytes | None:
        return self.headers.get(name.lower().encode())


class Unreachable(Exception):
    pass


@dataclass
class Harness:
    config: CacheConfig = field(default_factory=CacheConfig)
    now: float = T0
    served: int = 0
    upstream_log: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = MemoryStore(self.config.size, self.config.max_object_size)
        self.cache = SharedCache(self.store, self.config, clock=lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def date(self, offset: float = 0) -> bytes:
        return format_http_date(self.now + offset)

    def request(self, method=b"GET", url=URL, headers=(), respond=None, chunks=None) -> Result:
        """``respond(method, upstream_headers)`` -> (status, fields, body) or raises Unreachable."""
        plan = self.cache.plan(method, url, Headers(list(headers)))
        if plan.action is Action.ANSWER:
            result = self._serve(plan.answer, forwarded=False)
            if plan.revalidate:
                self._fetch(self.cache.background_plan(plan), respond, chunks)
            return result
        return self._fetch(plan, respond, chunks)

    def _fetch(self, plan, respond, chunks) -> Result:
        method = plan.method
        self.upstream_log.append((method, plan.upstream_headers))
        try:
            status, fields, body = (respond or self.default)(method, plan.upstream_headers)
        except Unreachable:
            answer = self.cache.on_error(plan)
            if answer is not None:
                return self._serve(answer, forwarded=True)
            return Result(self.cache.unreachable_status(plan, 502), Headers(), b"", True)
        reply = self.cache.on_response(
            plan, status, b"R", Headers(list(fields)), self.now, self.now
        )
        if reply.refetch:
            return self._fetch(self.cache.refetch_plan(plan), respond, chunks)
        if method == b"HEAD" or status in (204, 304):
            body = b""
        if reply.writer is not None:
            for chunk in chunks or ([body] if body else []):
                reply.writer.write(chunk)
            if chunks is None or b"".join(chunks) == body:
                reply.writer.commit()
            else:
                reply.writer.abandon()
        if reply.answer is not None:
            r = self._serve(reply.answer, forwarded=True)
        else:
            r = Result(status, reply.headers, body, True)
        r.upstream, r.upstream_method = plan.upstream_headers, method
        return r

    def _serve(self, answer, forwarded) -> Result:
        reader = answer.open_body()
        body = b""
        if reader is not None:
            while chunk := reader.read(4):
                body += chunk
        return Result(answer.status, answer.headers, body, forwarded)

    def default(self, method, upstream):
        self.served += 1
        return 200, [(b"Date", self.date())], b"body-%d" % self.served

    def origin(self, *fields, status=200, body=None):
        """A responder that answers with ``fields`` (Date added) and a numbered body."""

        def respond(method, upstream):
            self.served += 1
            pairs = [(b"Date", self.date())] + list(fields)
            return status, pairs, body if body is not None else b"body-%d" % self.served

        return respond


def cc(value: bytes):
    return (b"Cache-Control", value)


@pytest.fixture
def h():
    return Harness()


# -- freshness ---------------------------------------------------------------


def test_fresh_response_is_served_from_cache_with_age(h):
    first = h.request(respond=h.origin(cc(b"max-age=3600")))
    assert first.forwarded and first.x_cache == "MISS"
    assert first["Cache-Status"] == b"multiproxy; fwd=uri-miss; fwd-status=200; stored"
    h.advance(3)
    second = h.request()
    assert not second.forwarded and second.body == first.body
    assert second.x_cache == "HIT" and second["Age"] == b"3"
    assert second["Cache-Status"] == b"multiproxy; hit; ttl=3597"
    assert second["Date"] == first["Date"]  # the stored Date is never rewritten
    assert second["Content-Length"] == b"%d" % len(first.body)


def test_hit_fields_are_the_stored_ones_then_length_age_and_cache_status_in_that_order(h):
    first = h.request(
        respond=h.origin(cc(b"max-age=60"), (b"ETag", b'"v1"'), (b"X-Cache", b"MISS from origin"))
    )
    h.advance(1)
    hit = h.request()
    names = [n for n, _ in hit.headers]
    assert names == [
        b"Date",
        b"Cache-Control",
        b"ETag",
        b"Content-Length",
        b"Age",
        b"Cache-Status",
        b"X-Cache",
    ]
    # Lookups are case-insensitive on the answer as on any Headers.
    assert hit["etag"] == b'"v1"' and hit["CONTENT-LENGTH"] == b"%d" % len(first.body)
    assert hit.headers.get_all(b"x-cache") == [b"HIT"]  # the origin's X-Cache is replaced


def test_origin_x_cache_is_kept_when_this_cache_adds_none():
    h = Harness(CacheConfig(x_cache=False))
    h.request(respond=h.origin(cc(b"max-age=60"), (b"X-Cache", b"HIT from edge")))
    hit = h.request()
    assert not hit.forwarded and hit.headers.get_all(b"x-cache") == [b"HIT from edge"]
    assert hit["Cache-Status"] == b"multiproxy; hit; ttl=60"


def test_each_hit_gets_its_own_fields_and_a_current_cache_status(h):
    h.request(respond=h.origin(cc(b"max-age=60")))
    one = h.request()
    one.headers.add(b"X-Added", b"by a sink")
    one.headers.remove(b"date")
    h.advance(5)
    two = h.request()
    assert two["X-Added"] is None and two["Date"] is not None
    assert two["Age"] == b"5" and two["Cache-Status"] == b"multiproxy; hit; ttl=55"
    h.advance(100)
    stale = h.request(headers=[cc(b"max-stale=200")])
    assert not stale.forwarded and stale.x_cache == "STALE"
    assert stale["Cache-Status"] == b"multiproxy; hit; ttl=-45"


def test_age_includes_received_age(h):
    h.request(respond=h.origin(cc(b"max-age=600"), (b"Age", b"30")))
    h.advance(3)
    assert int(h.request()["Age"]) >= 33


def test_expires_gives_freshness_and_max_age_overrides_past_expires(h):
    h.request(respond=h.origin((b"Expires", h.date(100))))
    h.advance(50)
    assert not h.request().forwarded
    h2 = Harness()
    h2.request(respond=h2.origin(cc(b"max-age=3600"), (b"Expires", h2.date(-10000))))
    assert not h2.request().forwarded


@pytest.mark.parametrize(
    "value",
    [b"max-age=0", b"max-age=a100", b"max-age=-100", b"max-age =100", b"s-maxage=1, max-age=3600"],
)
def test_stale_or_malformed_lifetime_is_not_reused(h, value):
    h.request(respond=h.origin(cc(value)))
    h.advance(2)
    assert h.request().forwarded


def test_s_maxage_wins_over_shorter_max_age(h):
    h.request(respond=h.origin(cc(b"max-age=1, s-maxage=3600")))
    h.advance(10)
    assert not h.request().forwarded


def test_heuristic_freshness_from_last_modified(h):
    h.request(respond=h.origin((b"Last-Modified", h.date(-86400))))
    h.advance(3600)  # 10% of a day is 2.4 hours
    assert not h.request().forwarded
    h.advance(3 * 3600)
    assert h.request().forwarded


def test_no_heuristic_for_201(h):
    h.request(respond=h.origin((b"Last-Modified", h.date(-86400)), status=201))
    assert h.request().forwarded


def test_response_without_freshness_or_validator_is_not_stored(h):
    r = h.request()
    assert r["Cache-Status"] == b"multiproxy; fwd=uri-miss; fwd-status=200"
    assert h.store.count == 0


def test_query_strings_are_different_keys(h):
    h.request(url=URL + b"?a=1", respond=h.origin(cc(b"max-age=60")))
    assert h.request(url=URL + b"?a=2").forwarded
    assert not h.request(url=URL + b"?a=1").forwarded


# -- what is stored -------------------------------------------------------------


def test_no_store_is_not_stored_and_does_not_evict_older_response(h):
    h.request(respond=h.origin(cc(b"max-age=10000"), (b"A", b"1")))
    h.advance(1)
    # A request that must go forward (no-cache) gets a no-store response ...
    h.request(headers=[cc(b"no-cache")], respond=h.origin(cc(b"no-store"), (b"A", b"2")))
    # ... and the older stored response is still used.
    again = h.request()
    assert not again.forwarded and again["A"] == b"1"


def test_private_and_authorization(h):
    h.request(respond=h.origin(cc(b"private, max-age=3600")))
    assert h.request().forwarded
    h2 = Harness()
    h2.request(headers=[(b"Authorization", b"FOO")], respond=h2.origin(cc(b"max-age=3600")))
    assert h2.request().forwarded
    h3 = Harness()
    h3.request(headers=[(b"Authorization", b"FOO")], respond=h3.origin(cc(b"max-age=3600, public")))
    assert not h3.request().forwarded


def test_hop_by_hop_and_qualified_no_cache_fields_are_not_served_from_cache(h):
    h.request(
        respond=h.origin(
            cc(b'max-age=3600, no-cache="a"'),
            (b"Connection", b"b"),
            (b"A", b"1"),
            (b"B", b"2"),
            (b"C", b"3"),
            (b"Proxy-Authenticate", b"Basic"),
        )
    )
    r = h.request()
    assert not r.forwarded
    assert r["C"] == b"3" and r["A"] is None and r["B"] is None
    assert r["Connection"] is None and r["Proxy-Authenticate"] is None


def test_object_over_max_object_size_is_relayed_not_stored():
    h = Harness(config=CacheConfig(max_object_size=10))
    r = h.request(respond=h.origin(cc(b"max-age=60"), body=b"x" * 11))
    assert r.body == b"x" * 11
    assert h.store.count == 0 and h.request(respond=h.origin(cc(b"max-age=60"))).forwarded


def test_truncated_body_is_not_stored(h):
    h.request(respond=h.origin(cc(b"max-age=60"), body=b"abcdef"), chunks=[b"abc"])
    assert h.store.count == 0


# -- Vary ------------------------------------------------------------------------


def vary_origin(h, vary):
    return h.origin((b"Expires", h.date(5000)), (b"Last-Modified", h.date(-3000)), (b"Vary", vary))


def test_vary_match_and_mismatch(h):
    h.request(headers=[(b"Foo", b"1")], respond=vary_origin(h, b"Foo"))
    assert not h.request(headers=[(b"Foo", b"1"), (b"Other", b"x")]).forwarded
    assert h.request(headers=[(b"Foo", b"2")], respond=vary_origin(h, b"Foo")).forwarded
    assert h.request(headers=[]).forwarded


def test_vary_variants_coexist(h):
    one = h.request(headers=[(b"Foo", b"1")], respond=vary_origin(h, b"Foo"))
    two = h.request(headers=[(b"Foo", b"2")], respond=vary_origin(h, b"Foo"))
    assert h.request(headers=[(b"Foo", b"1")]).body == one.body
    assert h.request(headers=[(b"Foo", b"2")]).body == two.body


def test_vary_three_fields_in_any_header_order_and_omitted_field(h):
    h.request(headers=[(b"Foo", b"1"), (b"Baz", b"789")], respond=vary_origin(h, b"Foo, Bar, Baz"))
    assert not h.request(headers=[(b"Baz", b"789"), (b"Foo", b"1")]).forwarded
    assert h.request(
        headers=[(b"Foo", b"1"), (b"Bar", b"abc"), (b"Baz", b"789")],
        respond=vary_origin(h, b"Foo, Bar, Baz"),
    ).forwarded


def test_vary_star_never_matches(h):
    h.request(headers=[(b"Foo", b"1")], respond=vary_origin(h, b"*"))
    assert h.request(headers=[(b"Foo", b"1")]).forwarded


def test_vary_normalises_whitespace_lines_and_language_order(h):
    h.request(
        headers=[(b"Foo", b"1,2"), (b"Accept-Language", b"en, de")],
        respond=vary_origin(h, b"Foo, Accept-Language"),
    )
    r = h.request(headers=[(b"Foo", b"1"), (b"Foo", b" 2 "), (b"Accept-Language", b"de,en")])
    assert not r.forwarded


# -- validation ------------------------------------------------------------------


def etag_origin(h, etag=b'"abc"', *extra, status=200):
    return h.origin((b"ETag", etag), *extra, status=status)


def not_modified(h, *fields):
    def respond(method, upstream):
        return 304, [(b"Date", h.date())] + list(fields), b""

    return respond


def test_stale_entry_is_revalidated_with_its_validators(h):
    lm = h.date(-3000)
    first = h.request(
        respond=h.origin(
            cc(b"max-age=1"), (b"ETag", b"abcdef"), (b"Last-Modified", lm), (b"Test-Header", b"A")
        )
    )
    h.advance(2)
    r = h.request(
        respond=not_modified(h, cc(b"max-age=3600"), (b"ETag", b'"abcdef"'), (b"Test-Header", b"B"))
    )
    assert r.upstream.get(b"if-none-match") == b'"abcdef"'
    assert r.upstream.get(b"if-modified-since") == lm
    assert r.status == 200 and r.body == first.body
    assert r.x_cache == "REVALIDATED" and r["Test-Header"] == b"B"
    assert r["Cache-Status"].startswith(b"multiproxy; fwd=stale; fwd-status=304")
    h.advance(10)
    later = h.request()
    assert not later.forwarded and later["Test-Header"] == b"B"


def test_304_keeps_fields_it_omits(h):
    h.request(
        respond=h.origin(
            cc(b"max-age=1"), (b"Last-Modified", h.date(-86400)), (b"Test-Header", b"A")
        )
    )
    h.advance(2)
    r = h.request(respond=not_modified(h, cc(b"max-age=3600"), (b"Last-Modified", h.date(-86402))))
    assert r["Test-Header"] == b"A"


def test_304_for_another_entity_tag_leads_to_a_full_refetch(h):
    h.request(respond=etag_origin(h, b'"one"', cc(b"max-age=1")))
    h.advance(2)
    calls = []

    def respond(method, upstream):
        calls.append(upstream)
        if upstream.get(b"if-none-match"):
            return 304, [(b"ETag", b'"two"')], b""
        return 200, [(b"ETag", b'"two"'), cc(b"max-age=60")], b"fresh"

    r = h.request(respond=respond)
    assert r.status == 200 and r.body == b"fresh" and len(calls) == 2


def test_no_cache_response_is_stored_but_always_revalidated(h):
    h.request(respond=etag_origin(h, b'"abcd"', cc(b"max-age=10000, no-cache")))
    r = h.request(respond=not_modified(h, (b"ETag", b'"abcd"')))
    assert r.forwarded and r.upstream.get(b"if-none-match") == b'"abcd"' and r.status == 200


def test_must_revalidate_is_fresh_then_validated(h):
    h.request(respond=etag_origin(h, b'"abcd"', cc(b"max-age=2, must-revalidate")))
    assert not h.request().forwarded
    h.advance(3)
    assert h.request(respond=not_modified(h, (b"ETag", b'"abcd"'))).upstream.get(b"if-none-match")


def test_full_response_to_validation_replaces_the_entry(h):
    h.request(respond=etag_origin(h, b'"one"', cc(b"max-age=1")))
    h.advance(2)
    r = h.request(respond=etag_origin(h, b'"two"', cc(b"max-age=60")))
    assert r.status == 200 and r["Cache-Status"].endswith(b"fwd-status=200; stored")
    assert h.request().body == r.body


# -- the client's own conditional requests ----------------------------------------


def test_fresh_entry_answers_if_none_match_with_304(h):
    h.request(respond=h.origin((b"Expires", h.date(100000)), (b"ETag", b'"abcdef"')))
    for inm in (b'"abcdef"', b'"1234", "abcdef"', b'W/"abcdef"'):
        r = h.request(headers=[(b"If-None-Match", inm)])
        assert (r.status, r.forwarded, r.body) == (304, False, b"")
        assert r["ETag"] == b'"abcdef"' and r["Content-Length"] is None
    assert h.request(headers=[(b"If-None-Match", b'"nope"')]).status == 200


def test_fresh_entry_answers_if_modified_since_with_304(h):
    lm = h.date(-3000)
    h.request(respond=h.origin((b"Expires", h.date(100000)), (b"Last-Modified", lm)))
    assert h.request(headers=[(b"If-Modified-Since", lm)]).status == 304
    assert h.request(headers=[(b"If-Modified-Since", h.date(-2000))]).status == 304
    assert h.request(headers=[(b"If-Modified-Since", h.date(-4000))]).status == 200


def test_stale_entry_is_validated_then_the_client_gets_304(h):
    lm = h.date(-3000)
    h.request(respond=h.origin((b"Expires", h.date(2)), (b"Last-Modified", lm)))
    h.advance(3)
    r = h.request(
        headers=[(b"If-Modified-Since", lm)], respond=not_modified(h, (b"Last-Modified", lm))
    )
    assert r.forwarded and r.status == 304


def test_if_match_goes_to_the_origin(h):
    h.request(respond=etag_origin(h, b'"a"', cc(b"max-age=60")))
    assert h.request(headers=[(b"If-Match", b'"a"')]).forwarded


# -- HEAD and Range -------------------------------------------------------------


def test_head_is_answered_from_a_stored_get(h):
    first = h.request(respond=h.origin(cc(b"max-age=60")))
    r = h.request(method=b"HEAD")
    assert not r.forwarded and r.body == b"" and r["Content-Length"] == b"%d" % len(first.body)


def test_head_on_stale_entry_is_forwarded_and_its_200_refreshes_the_get(h):
    h.request(
        respond=h.origin((b"ETag", b'"e"'), cc(b"max-age=1"), (b"Template-A", b"1"), body=b"12345")
    )
    h.advance(2)
    r = h.request(
        method=b"HEAD",
        respond=h.origin(
            (b"ETag", b'"e"'), cc(b"max-age=1000"), (b"Template-A", b"2"), (b"Content-Length", b"5")
        ),
    )
    assert r.forwarded and r.upstream_method == b"HEAD"
    later = h.request()
    assert not later.forwarded and later["Template-A"] == b"2" and later.body == b"12345"


def test_range_is_served_from_a_stored_full_response(h):
    h.request(respond=h.origin(cc(b"max-age=3600"), body=b"01234567890"))
    r = h.request(headers=[(b"Range", b"bytes=0-1")])
    assert (r.status, r.body, r["Content-Range"]) == (206, b"01", b"bytes 0-1/11")
    assert h.request(headers=[(b"Range", b"bytes=1-")]).body == b"1234567890"
    assert h.request(headers=[(b"Range", b"bytes=-1")]).body == b"0"
    unsat = h.request(headers=[(b"Range", b"bytes=50-")])
    assert unsat.status == 416 and unsat["Content-Range"] == b"bytes */11"
    multi = h.request(headers=[(b"Range", b"bytes=0-1,3-4")])
    assert multi.status == 200 and multi.body == b"01234567890"


def test_if_range_mismatch_gets_the_full_response(h):
    h.request(respond=etag_origin(h, b'"v1"', cc(b"max-age=3600")))
    assert h.request(headers=[(b"Range", b"bytes=0-1"), (b"If-Range", b'"v1"')]).status == 206
    assert h.request(headers=[(b"Range", b"bytes=0-1"), (b"If-Range", b'"v0"')]).status == 200


def test_range_miss_is_forwarded_and_206_not_stored(h):
    def respond(method, upstream):
        assert upstream.get(b"range") == b"bytes=-5"
        return 206, [(b"Content-Range", b"bytes 4-9/10"), cc(b"max-age=3600")], b"01234"

    r = h.request(headers=[(b"Range", b"bytes=-5")], respond=respond)
    assert r.status == 206 and h.store.count == 0


# -- invalidation ------------------------------------------------------------------


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"DELETE", b"M-SEARCH"])
def test_successful_unsafe_request_invalidates(h, method):
    h.request(respond=h.origin(cc(b"max-age=3600")))
    r = h.request(method=method, respond=h.origin())
    assert r["Cache-Status"] == b"multiproxy; fwd=method; fwd-status=200"
    assert h.request().forwarded


def test_failed_unsafe_request_does_not_invalidate(h):
    h.request(respond=h.origin(cc(b"max-age=3600")))
    h.request(method=b"POST", respond=h.origin(status=500))
    assert not h.request().forwarded


def test_location_and_content_location_on_the_same_origin_are_invalidated(h):
    other = b"http://origin.example/other"
    foreign = b"http://elsewhere.example/x"
    for url in (other, foreign):
        h.request(url=url, respond=h.origin(cc(b"max-age=3600")))
    h.request(
        method=b"POST", respond=h.origin((b"Location", b"/other"), (b"Content-Location", foreign))
    )
    assert h.request(url=other).forwarded
    assert not h.request(url=foreign).forwarded


# -- request directives ---------------------------------------------------------------


def test_only_if_cached(h):
    r = h.request(headers=[cc(b"only-if-cached")])
    assert r.status == 504 and not r.forwarded and h.upstream_log == []
    h.request(respond=h.origin(cc(b"max-age=60")))
    assert h.request(headers=[cc(b"only-if-cached")]).status == 200


def test_request_no_cache_and_pragma_force_validation(h):
    h.request(respond=etag_origin(h, b'"x"', cc(b"max-age=3600")))
    assert h.request(
        headers=[cc(b"no-cache")], respond=not_modified(h, (b"ETag", b'"x"'))
    ).forwarded
    r = h.request(headers=[(b"Pragma", b"no-cache")], respond=not_modified(h, (b"ETag", b'"x"')))
    assert r.forwarded and r.x_cache == "REVALIDATED"
    assert r["Cache-Status"].startswith(b"multiproxy; fwd=request; fwd-status=304")


def test_request_max_stale_serves_stale(h):
    h.request(respond=h.origin(cc(b"max-age=1")))
    h.advance(5)
    r = h.request(headers=[cc(b"max-stale=1000")])
    assert (
        not r.forwarded and r.x_cache == "STALE" and r["Cache-Status"] == b"multiproxy; hit; ttl=-4"
    )


def test_request_no_store_is_answered_but_not_stored(h):
    h.request(headers=[cc(b"no-store")], respond=h.origin(cc(b"max-age=60")))
    assert h.store.count == 0


# -- stale extensions and errors -------------------------------------------------------


def test_stale_while_revalidate_serves_stale_and_refreshes_in_background(h):
    h.request(respond=etag_origin(h, b'"abc"', cc(b"max-age=1, stale-while-revalidate=3600")))
    h.advance(5)
    r = h.request(respond=h.origin((b"ETag", b'"def"'), cc(b"max-age=3600")))
    assert not r.forwarded and r.x_cache == "STALE" and r["ETag"] == b'"abc"'
    assert len(h.upstream_log) == 2  # the background revalidation went out
    after = h.request()
    assert not after.forwarded and after["ETag"] == b'"def"'


def test_stale_if_error_on_5xx_within_window_only(h):
    first = h.request(respond=h.origin(cc(b"max-age=1, stale-if-error=60")))
    h.advance(5)
    r = h.request(respond=h.origin(status=500))
    assert r.status == 200 and r.body == first.body and r.x_cache == "STALE"
    assert b"detail=stale-if-error" in r["Cache-Status"]
    h.advance(100)
    assert h.request(respond=h.origin(status=500)).status == 500


def test_request_stale_if_error(h):
    h.request(respond=h.origin(cc(b"max-age=1")))
    h.advance(5)
    r = h.request(headers=[cc(b"stale-if-error=3600")], respond=h.origin(status=503))
    assert r.status == 200


def raise_unreachable(method, upstream):
    raise Unreachable()


def test_unreachable_origin_serves_stale_only_within_configured_grace():
    h = Harness(config=CacheConfig(stale_if_unreachable=600))
    h.request(respond=h.origin(cc(b"max-age=1")))
    h.advance(5)
    r = h.request(respond=raise_unreachable)
    assert r.status == 200 and r.x_cache == "STALE"
    h.advance(1000)
    assert h.request(respond=raise_unreachable).status == 502
    plain = Harness()
    plain.request(respond=plain.origin(cc(b"max-age=1")))
    plain.advance(5)
    assert plain.request(respond=raise_unreachable).status == 502


@pytest.mark.parametrize(
    "value", [b"must-revalidate", b"proxy-revalidate", b"no-cache", b"s-maxage=2"]
)
def test_unreachable_origin_never_gets_stale_when_forbidden(value):
    h = Harness(config=CacheConfig(stale_if_unreachable=3600))
    h.request(respond=h.origin(cc(b"max-age=2, " + value)))
    h.advance(5)
    r = h.request(respond=raise_unreachable)
    assert r.status in (502, 504) and r.body == b""
    if value == b"must-revalidate":
        assert r.status == 504


# -- collapsed waiters ------------------------------------------------------------------


def test_waiter_gets_a_head_for_a_shareable_fresh_response(h):
    leader = h.cache.plan(b"GET", URL, Headers([(b"Accept-Language", b"en")]))
    assert leader.action is Action.FORWARD and leader.collapsible
    reply = h.cache.on_response(
        leader,
        200,
        b"OK",
        Headers([(b"Date", h.date()), cc(b"max-age=60"), (b"Vary", b"Accept-Language")]),
        h.now,
        h.now,
    )
    assert reply.shared is not None
    same = h.cache.plan(b"GET", URL, Headers([(b"Accept-Language", b"en")]))
    answer = h.cache.answer_waiter(same, reply.shared, 5)
    assert answer.status == 200 and answer.from_flight and answer.body_length == 5
    assert answer.headers.get(b"content-length") == b"5" and answer.outcome.collapsed
    assert answer.headers.get(b"x-cache") == b"HIT"
    other = h.cache.plan(b"GET", URL, Headers([(b"Accept-Language", b"de")]))
    assert h.cache.answer_waiter(other, reply.shared, 5) is None
    auth = h.cache.plan(
        b"GET", URL, Headers([(b"Accept-Language", b"en"), (b"Authorization", b"x")])
    )
    assert h.cache.answer_waiter(auth, reply.shared, 5) is None
    cond = h.cache.plan(
        b"GET", URL, Headers([(b"Accept-Language", b"en"), (b"If-None-Match", b"*")])
    )
    assert h.cache.answer_waiter(cond, reply.shared, 5).status == 304


def test_conditional_requests_do_not_lead_collapsed_fetches(h):
    assert not h.cache.plan(b"GET", URL, Headers([(b"If-None-Match", b'"x"')])).collapsible
    assert not h.cache.plan(b"GET", URL, Headers([(b"Range", b"bytes=0-1")])).collapsible
    assert not h.cache.plan(b"HEAD", URL, Headers()).collapsible
