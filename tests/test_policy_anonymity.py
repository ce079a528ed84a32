"""Anonymous forwarding of request fields."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiproxy.http1._headers import Headers
from multiproxy.policy import AnonymityOptions, anonymise_headers

REQUEST = Headers([
    (b"Host", b"example.com"),
    (b"User-Agent", b"curl/8.0"),
    (b"Via", b"1.1 corp-proxy"),
    (b"X-Forwarded-For", b"192.0.2.7"),
    (b"Forwarded", b"for=192.0.2.7"),
    (b"X-Real-IP", b"192.0.2.7"),
    (b"From", b"alice@example.org"),
    (b"Referer", b"https://user:pw@intranet.example:8443/secret/page?id=1"),
    (b"Cookie", b"session=abc"),
    (b"Accept", b"*/*"),
    (b"X-Client-Id", b"42"),
])


def names(headers: Headers) -> list[bytes]:
    return [n.lower() for n, _ in headers]


def test_default_anonymity_strips_via_forwarding_fields_and_from_and_keeps_the_rest() -> None:
    out = anonymise_headers(REQUEST, AnonymityOptions())
    assert names(out) == [b"host", b"user-agent", b"referer", b"cookie", b"accept",
                          b"x-client-id"]
    assert out.get(b"user-agent") == b"curl/8.0"


def test_anonymity_leaves_the_input_headers_alone() -> None:
    before = list(REQUEST)
    anonymise_headers(REQUEST, AnonymityOptions(cookies="remove"))
    assert list(REQUEST) == before


def test_everything_identifying_can_be_removed() -> None:
    options = AnonymityOptions(referer="remove", user_agent="remove", cookies="remove",
                               remove=frozenset({b"x-client-id"}))
    assert names(anonymise_headers(REQUEST, options)) == [b"host", b"accept"]


def test_user_agent_is_replaced_once_and_referer_cut_to_its_origin() -> None:
    doubled = Headers([*REQUEST, (b"user-agent", b"second")])
    out = anonymise_headers(doubled, AnonymityOptions(user_agent="Mozilla/5.0", referer="origin"))
    assert out.get_all(b"user-agent") == [b"Mozilla/5.0"]
    assert out.get(b"referer") == b"https://intranet.example:8443/"


@pytest.mark.parametrize("referer", [b"not a url", b"ftp://x/", b"\xff\xfe", b"/relative"])
def test_a_referer_without_an_http_origin_is_dropped_in_origin_mode(referer: bytes) -> None:
    out = anonymise_headers(Headers([(b"Referer", referer)]), AnonymityOptions(referer="origin"))
    assert b"referer" not in out


def test_via_and_forwarding_fields_can_be_kept() -> None:
    out = anonymise_headers(REQUEST, AnonymityOptions(strip_via=False, strip_forwarded=False,
                                                      from_="keep"))
    assert out == REQUEST


@pytest.mark.parametrize("kw, fragment", [
    ({"referer": "strip"}, "referer must be"), ({"cookies": "drop"}, "cookies must be"),
    ({"from_": "hide"}, "from must be"), ({"user_agent": "a\r\nX: y"}, "printable ASCII"),
    ({"user_agent": ""}, "printable ASCII"), ({"remove": frozenset({b"X-Up"})}, "lower-case"),
])
def test_bad_anonymity_options_are_refused(kw: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        AnonymityOptions(**kw)


@given(st.lists(st.tuples(st.sampled_from([b"Via", b"VIA", b"x-forwarded-for", b"From",
                                           b"Accept", b"Cookie", b"X-Other"]),
                          st.binary(max_size=8))))
def test_property_no_stripped_field_survives_in_any_case_and_others_keep_order(
    pairs: list[tuple[bytes, bytes]],
) -> None:
    out = anonymise_headers(Headers(pairs), AnonymityOptions())
    assert not {b"via", b"x-forwarded-for", b"from"} & set(names(out))
    kept = [(n, v) for n, v in pairs if n.lower() not in {b"via", b"x-forwarded-for", b"from"}]
    assert list(out) == kept
