"""Host normalisation and host patterns: a rule cannot be dodged by spelling."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multiproxy.pipeline._values import Intent
from multiproxy.policy import HostMatcher, Rule, RuleSet, normalise_host, parse_host_pattern
from multiproxy.policy._hosts import host_suffixes, is_ip_literal


@pytest.mark.parametrize("spelling", [
    "127.0.0.1", "0x7f.1", "0x7F.0.0.1", "2130706433", "0177.0.0.1", "127.1", "127.0.1",
    "0x7f000001", "017700000001", "127.0.0.1.", "[::ffff:127.0.0.1]", "::ffff:7f00:1",
    "１２７.０.０.１", "0x7f.0x0.0x0.0x1",
])
def test_every_ipv4_spelling_of_loopback_is_127_0_0_1(spelling: str) -> None:
    assert normalise_host(spelling) == "127.0.0.1"


@pytest.mark.parametrize("spelling, canonical", [
    ("[::1]", "::1"), ("0:0:0:0:0:0:0:1", "::1"), ("[2001:DB8:0:0:0:0:0:1]", "2001:db8::1"),
    ("2001:0db8::0001", "2001:db8::1"), ("[::]", "::"), ("::127.0.0.1", "::7f00:1"),
])
def test_ipv6_literals_take_the_compressed_form_without_brackets(
    spelling: str, canonical: str,
) -> None:
    assert normalise_host(spelling) == canonical


@pytest.mark.parametrize("spelling, canonical", [
    ("Example.COM", "example.com"), ("example.com.", "example.com"),
    ("bücher.de", "xn--bcher-kva.de"), ("BÜCHER.de", "xn--bcher-kva.de"),
    ("xn--bcher-kva.de", "xn--bcher-kva.de"), ("XN--BCHER-KVA.DE", "xn--bcher-kva.de"),
    ("ｅｘａｍｐｌｅ。com", "example.com"), ("faß.de", "xn--fa-hia.de"),
    ("_dmarc.example.org", "_dmarc.example.org"), ("a-b.c_d.example", "a-b.c_d.example"),
    ("1.2.3.example", "1.2.3.example"), ("0x1.example", "0x1.example"), ("localhost", "localhost"),
])
def test_names_are_lower_cased_idna_encoded_and_lose_one_trailing_dot(
    spelling: str, canonical: str,
) -> None:
    assert normalise_host(spelling) == canonical


@pytest.mark.parametrize("host, fragment", [
    ("", "empty"), ("a..b", "empty label"), ("example.com..", "empty label"),
    ("exa mple.com", "forbidden"), ("exam%70le.com", "forbidden"), ("a/b", "forbidden"),
    ("user@host", "forbidden"), ("1.2.3.256", "out of range"), ("256.1.1.1", "above 255"),
    ("1.2.3.4.5", "more than 4"), ("foo.0x", "not a number"), ("foo.123", "not a number"),
    ("08.0.0.1", "not a number"), ("0x100000000", "out of range"), ("[::1", "closing"),
    ("fe80::1%eth0", "zone"), ("::g", "IPv6"), ("xn--zz.de", "IDNA"), ("a" * 64 + ".com", "63"),
    (("a" * 60 + ".") * 5 + "com", "253"), ("xn--Bcher-kva.de.x!", "may only hold"),
])
def test_invalid_hosts_are_refused_with_a_message_saying_why(host: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        normalise_host(host)


def test_non_string_host_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        normalise_host(b"example.com")  # type: ignore[arg-type]


def _ipv4_spellings() -> st.SearchStrategy[tuple[int, str]]:
    def number(value: int, style: str) -> str:
        if style == "dec":
            return str(value)
        if style == "oct":
            return "0" + format(value, "o")
        if style == "HEX":
            return "0X" + format(value, "X")
        return "0x" + format(value, "x")

    @st.composite
    def spelling(draw) -> tuple[int, str]:
        address = draw(st.integers(0, 2**32 - 1))
        parts_count = draw(st.integers(1, 4))
        octets = list(address.to_bytes(4, "big"))
        parts = octets[:parts_count - 1]
        rest = int.from_bytes(bytes(octets[parts_count - 1:]), "big")
        parts.append(rest)
        styles = st.sampled_from(["dec", "oct", "hex", "HEX"])
        text = ".".join(number(p, draw(styles)) for p in parts)
        if draw(st.booleans()):
            text += "."
        return address, text

    return spelling()


@given(_ipv4_spellings())
def test_property_every_spelling_of_an_ipv4_address_maps_to_one_value(
    case: tuple[int, str],
) -> None:
    address, text = case
    assert normalise_host(text) == str(ipaddress.IPv4Address(address))


@given(st.integers(0, 2**32 - 1))
def test_property_ipv4_mapped_ipv6_is_the_ipv4_address(address: int) -> None:
    v4 = ipaddress.IPv4Address(address)
    assert normalise_host(f"[::ffff:{v4}]") == str(v4)
    assert normalise_host(f"::ffff:{address >> 16:x}:{address & 0xffff:x}") == str(v4)


@given(st.integers(0, 2**128 - 1))
def test_property_ipv6_normalisation_matches_the_compressed_form(address: int) -> None:
    v6 = ipaddress.IPv6Address(address)
    expected = str(v6.ipv4_mapped) if v6.ipv4_mapped else v6.compressed
    assert normalise_host(v6.exploded.upper()) == expected
    assert normalise_host(f"[{v6.exploded}]") == expected


_label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12).filter(
    lambda s: not s.isdigit() and not s.startswith("xn--")
)
_tld = st.text("abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=6)
_domains = st.builds(lambda labels, tld: ".".join([*labels, tld]),
                     st.lists(_label, min_size=1, max_size=4), _tld)
_any_host = st.one_of(
    _domains,
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(0, 2**128 - 1).map(lambda n: f"[{ipaddress.IPv6Address(n)}]"),
    _ipv4_spellings().map(lambda case: case[1]),
    st.sampled_from(["bücher.de", "ｅｘａｍｐｌｅ.com", "faß.de", "παράδειγμα.δοκιμή"]),
)


@given(_any_host)
def test_property_normalisation_is_idempotent(host: str) -> None:
    once = normalise_host(host)
    assert normalise_host(once) == once


def _respell(host: str, flips: list[bool], trailing_dot: bool) -> str:
    chars = [c.upper() if flip else c for c, flip in zip(host, flips + [False] * len(host))]
    return "".join(chars) + ("." if trailing_dot else "")


@given(_domains, st.lists(st.booleans(), max_size=40), st.booleans(), st.booleans())
def test_property_a_host_rule_cannot_be_dodged_by_case_or_trailing_dot(
    domain: str, flips: list[bool], trailing_dot: bool, use_suffix: bool,
) -> None:
    pattern = ("." + domain) if use_suffix else domain
    rules = RuleSet([Rule.build("block", "deny", hosts=[pattern])], clock=lambda: 0.0)
    spelling = _respell(domain, flips, trailing_dot)
    intent = Intent("http", "fwd", "10.0.0.1", 1234, host=normalise_host(spelling), port=80)
    assert rules.decide(intent).action == "deny"
    sub = Intent("http", "fwd", "10.0.0.1", 1234, host=normalise_host("www." + spelling), port=80)
    assert rules.decide(sub).action == ("deny" if use_suffix else "allow")


@given(_ipv4_spellings())
def test_property_an_ip_rule_cannot_be_dodged_by_ip_spelling(case: tuple[int, str]) -> None:
    address, text = case
    canonical = str(ipaddress.IPv4Address(address))
    rules = RuleSet([Rule.build("block", "deny", hosts=[canonical])], clock=lambda: 0.0)
    intent = Intent("http", "fwd", "10.0.0.1", 1, host=normalise_host(text))
    assert rules.decide(intent).rule == "block"


@pytest.mark.parametrize("rule_host, request_host", [
    ("bücher.de", "xn--bcher-kva.de"), ("xn--bcher-kva.de", "BÜCHER.DE."),
    (".bücher.de", "www.xn--bcher-kva.de"), ("127.0.0.1", "0x7f.1"), ("::1", "[0::1]"),
    ("127.0.0.1", "[::ffff:7f00:1]"), ("0x7f.1", "127.0.0.1"),
])
def test_a_host_rule_cannot_be_dodged_by_idna_or_ip_spelling(
    rule_host: str, request_host: str,
) -> None:
    rules = RuleSet([Rule.build("block", "deny", hosts=[rule_host])], clock=lambda: 0.0)
    intent = Intent("http", "fwd", "10.0.0.1", 1, host=normalise_host(request_host))
    assert rules.decide(intent).rule == "block"


@settings(max_examples=200)
@given(st.text(max_size=30))
def test_property_normalise_host_either_returns_a_fixed_point_or_raises_value_error(
    text: str,
) -> None:
    try:
        result = normalise_host(text)
    except ValueError:
        return
    assert normalise_host(result) == result
    assert result == result.lower()
    assert result.isascii()


# Patterns -------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, value", [
    ("Example.com", "exact", "example.com"), (".Twitter.COM", "suffix", "twitter.com"),
    ("*.example.com", "glob", "*.example.com"), ("ads?.EXAMPLE.*", "glob", "ads?.example.*"),
    ("10.0.0.0/8", "network", "10.0.0.0/8"), ("FD00::/8", "network", "fd00::/8"),
    ("0x7f.1", "exact", "127.0.0.1"), ("[::1]", "exact", "::1"), ("*.bücher.de", "glob",
                                                                   "*.xn--bcher-kva.de"),
])
def test_host_patterns_are_classified_and_normalised(text: str, kind: str, value: str) -> None:
    pattern = parse_host_pattern(text)
    assert (pattern.kind, pattern.value, pattern.text) == (kind, value, text)


@pytest.mark.parametrize("text, fragment", [
    ("", "non-empty"), ("..example.com", "two dots"), (".127.0.0.1", "IP address"),
    ("10.0.0.1/8", "host bits"), ("a b*", "may only hold"), ("*..com", "empty label"),
])
def test_bad_host_patterns_are_refused(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_host_pattern(text)


def _matcher(*patterns: str) -> HostMatcher:
    return HostMatcher(parse_host_pattern(p) for p in patterns)


def test_suffix_pattern_matches_the_domain_and_subdomains_only_at_label_boundaries() -> None:
    matcher = _matcher(".twitter.com")
    assert matcher.matches("twitter.com")
    assert matcher.matches("www.twitter.com")
    assert matcher.matches("a.b.twitter.com")
    assert not matcher.matches("nottwitter.com")
    assert not matcher.matches("twitter.com.evil.example")
    assert not matcher.matches("")


def test_exact_pattern_does_not_match_subdomains() -> None:
    matcher = _matcher("twitter.com")
    assert matcher.matches("twitter.com")
    assert not matcher.matches("www.twitter.com")


def test_glob_star_spans_dots_and_question_mark_is_one_character() -> None:
    matcher = _matcher("*.example.com", "ads?.net")
    assert matcher.matches("a.b.example.com")
    assert not matcher.matches("example.com")
    assert matcher.matches("ads1.net")
    assert not matcher.matches("ads12.net")


def test_network_pattern_matches_ip_literals_not_names() -> None:
    matcher = _matcher("10.0.0.0/8", "fd00::/8")
    assert matcher.matches("10.20.30.40")
    assert matcher.matches("fd12::1")
    assert not matcher.matches("11.0.0.1")
    assert not matcher.matches("10.example.com")


def test_suffix_patterns_never_match_ip_literals() -> None:
    matcher = _matcher(".example.com", ".localhost")
    assert not matcher.matches("127.0.0.1")
    assert not matcher.matches("::1")


def test_host_suffixes_walks_parent_domains_longest_first() -> None:
    assert list(host_suffixes("a.b.c")) == ["a.b.c", "b.c", "c"]
    assert list(host_suffixes("localhost")) == ["localhost"]


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("::1", True), ("example.com", False), ("a1", False), ("", False),
])
def test_is_ip_literal_tells_addresses_from_names(host: str, expected: bool) -> None:
    assert is_ip_literal(host) is expected
