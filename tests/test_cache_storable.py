"""May a shared cache store a response (RFC 9111 3, 3.5)?"""

from __future__ import annotations

import pytest

from multiproxy.cache._directives import parse_request_directives, parse_response_directives
from multiproxy.cache._storable import refusal
from multiproxy.http1._headers import Headers


def why(status=200, method=b"GET", request=(), **fields):
    rh = Headers(list(request))
    h = Headers([(k.replace("_", "-").encode(), v) for k, v in fields.items()])
    return refusal(
        method, status, rh, parse_request_directives(rh), h, parse_response_directives(h)
    )


def test_fresh_get_response_is_storable():
    assert why(cache_control=b"max-age=60") is None


@pytest.mark.parametrize("method", [b"POST", b"PUT", b"HEAD", b"DELETE"])
def test_only_get_responses_are_stored(method):
    assert why(method=method, cache_control=b"max-age=60") == "method"


@pytest.mark.parametrize("status", [101, 103, 206, 304])
def test_interim_partial_and_not_modified_are_not_stored(status):
    assert why(status, cache_control=b"max-age=60") == "status"


def test_no_store_in_response_or_request():
    assert why(cache_control=b"max-age=60, No-StOrE") == "no-store"
    assert why(request=[(b"Cache-Control", b"no-store")], cache_control=b"max-age=60") == "no-store"


def test_must_understand_overrides_no_store_for_understood_statuses():
    assert why(cache_control=b"max-age=60, no-store, must-understand") is None
    assert why(599, cache_control=b"max-age=60, no-store, must-understand") == "must-understand"


def test_private_is_not_stored_by_a_shared_cache_but_qualified_private_is():
    assert why(cache_control=b"private, max-age=60") == "private"
    assert why(cache_control=b'private="Set-Cookie", max-age=60') is None


@pytest.mark.parametrize(
    "cc,ok",
    [
        (b"max-age=60", False),
        (b"max-age=60, public", True),
        (b"max-age=60, must-revalidate", True),
        (b"s-maxage=60", True),
    ],
)
def test_authorization_needs_an_explicit_shared_directive(cc, ok):
    result = why(request=[(b"Authorization", b"FOO")], cache_control=cc)
    assert (result is None) is ok


def test_vary_star_is_never_stored():
    assert why(cache_control=b"max-age=60", vary=b"Foo, *") == "vary"


def test_unknown_status_needs_explicit_freshness():
    assert why(599) == "no-freshness"
    assert why(599, cache_control=b"max-age=60") is None
    assert why(599, cache_control=b"public") is None
    assert why(201, expires=b"0") is None


@pytest.mark.parametrize("status", [200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501])
def test_heuristically_cacheable_statuses_are_storable_without_freshness(status):
    assert why(status) is None


@pytest.mark.parametrize("status", [302, 303, 307, 400, 500, 502, 503, 504])
def test_other_statuses_are_storable_with_explicit_freshness(status):
    assert why(status, cache_control=b"max-age=60") is None
    assert why(status) == "no-freshness"
