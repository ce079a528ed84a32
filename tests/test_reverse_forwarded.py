"""Tests for the forwarding headers (X-Forwarded-*, RFC 7239 Forwarded); pure."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiproxy.http1._headers import Headers
from multiproxy.reverse._forwarded import (
    ForwardedSettings,
    apply_forwarded,
    effective_client,
    forwarded_element,
    parse_network,
)

TRUST_10 = ForwardedSettings.from_strings(["10.0.0.0/8", "fd00::/8"])


def forged() -> Headers:
    return Headers([
        (b"Host", b"shop.example"),
        (b"X-Forwarded-For", b"6.6.6.6"),
        (b"X-Forwarded-Proto", b"https"),
        (b"X-Forwarded-Host", b"bank.example"),
        (b"Forwarded", b"for=6.6.6.6;proto=https"),
        (b"Accept", b"*/*"),
    ])


def apply(headers: Headers, peer: str, settings: ForwardedSettings = TRUST_10, port: int = 50000,
          proto: str = "http") -> Headers:
    return apply_forwarded(headers, client_host=peer, client_port=port, proto=proto,
                           host=headers.get(b"host"), settings=settings)


def test_untrusted_peer_has_its_forwarding_headers_replaced() -> None:
    out = apply(forged(), "203.0.113.9")
    assert out.get_all(b"x-forwarded-for") == [b"203.0.113.9"]
    assert out.get_all(b"x-forwarded-proto") == [b"http"]
    assert out.get_all(b"x-forwarded-host") == [b"shop.example"]
    assert out.get_all(b"forwarded") == [b"for=203.0.113.9;host=shop.example;proto=http"]
    assert out.get(b"accept") == b"*/*"


def test_trusted_peer_chain_is_extended() -> None:
    out = apply(forged(), "10.1.2.3", proto="https")
    assert out.get_all(b"x-forwarded-for") == [b"6.6.6.6, 10.1.2.3"]
    assert out.get(b"x-forwarded-proto") == b"https"
    assert out.get(b"x-forwarded-host") == b"bank.example"
    assert out.get_all(b"forwarded") == [
        b"for=6.6.6.6;proto=https, for=10.1.2.3;host=shop.example;proto=https"]


def test_repeated_incoming_fields_are_joined_in_order_when_trusted() -> None:
    h = Headers([(b"X-Forwarded-For", b"1.1.1.1"), (b"X-Forwarded-For", b"2.2.2.2, 3.3.3.3")])
    out = apply(h, "10.0.0.1")
    assert out.get_all(b"x-forwarded-for") == [b"1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.1"]


def test_input_headers_are_not_modified() -> None:
    h = forged()
    before = list(h)
    apply(h, "203.0.113.9")
    assert list(h) == before


def test_ipv6_node_is_bracketed_and_quoted() -> None:
    out = apply(Headers([(b"Host", b"h")]), "2001:DB8::1")
    assert out.get(b"forwarded") == b'for="[2001:db8::1]";host=h;proto=http'
    assert out.get(b"x-forwarded-for") == b"2001:db8::1"


def test_ports_are_quoted_when_included() -> None:
    settings = ForwardedSettings(include_port=True, by="192.0.2.60:8443")
    out = apply(Headers([(b"Host", b"h.example:8080")]), "192.0.2.43", settings, port=47011)
    assert out.get(b"forwarded") == (
        b'by="192.0.2.60:8443";for="192.0.2.43:47011";host="h.example:8080";proto=http')
    out = apply(Headers([]), "::1", settings, port=1)
    assert b'for="[::1]:1"' in out.get(b"forwarded")


def test_ipv4_mapped_peer_is_shown_and_trusted_as_ipv4() -> None:
    out = apply(forged(), "::ffff:10.9.9.9")
    assert out.get(b"x-forwarded-for") == b"6.6.6.6, 10.9.9.9"
    assert b"for=10.9.9.9;" in out.get(b"forwarded")


def test_unix_socket_peer_is_unknown() -> None:
    out = apply(Headers([]), "")
    assert out.get(b"x-forwarded-for") == b"unknown"
    assert out.get(b"forwarded") == b"for=unknown;proto=http"


def test_without_host_no_forwarded_host_is_invented() -> None:
    out = apply(Headers([]), "192.0.2.1")
    assert b"x-forwarded-host" not in out
    assert b"host=" not in out.get(b"forwarded")


def test_families_can_be_switched_off_independently() -> None:
    only_rfc = ForwardedSettings(x_forwarded=False)
    out = apply(forged(), "203.0.113.9", only_rfc)
    assert b"x-forwarded-for" not in out and b"x-forwarded-host" not in out
    assert out.get(b"forwarded").startswith(b"for=203.0.113.9")
    only_x = ForwardedSettings(forwarded=False)
    out = apply(forged(), "203.0.113.9", only_x)
    assert b"forwarded" not in out
    assert out.get(b"x-forwarded-for") == b"203.0.113.9"


def test_quoted_string_escapes_quotes_and_backslashes() -> None:
    assert forwarded_element(for_=None, by=None, proto=None, host=b'a"b\\c') == (
        b'host="a\\"b\\\\c"')


def test_effective_client_skips_trusted_hops_from_the_right() -> None:
    h = Headers([(b"X-Forwarded-For", b"6.6.6.6, 198.51.100.7, 10.0.0.5")])
    assert effective_client(h, "10.0.0.1", TRUST_10) == "198.51.100.7"
    assert effective_client(h, "203.0.113.1", TRUST_10) == "203.0.113.1"
    assert effective_client(Headers([(b"X-Forwarded-For", b"junk")]), "10.0.0.1", TRUST_10) == (
        "10.0.0.1")
    assert effective_client(Headers([]), "10.0.0.1", TRUST_10) == "10.0.0.1"


def test_bad_network_names_the_value_and_the_expected_form() -> None:
    with pytest.raises(ValueError, match="'10.0.0/33' is not an IP network; write it as"):
        parse_network("10.0.0/33")
    assert parse_network("192.0.2.7") == ipaddress.ip_network("192.0.2.7/32")


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@given(peer=st.one_of(ipv4, ipv6), forged_value=st.binary(min_size=1, max_size=20).filter(
    lambda b: b"\r" not in b and b"\n" not in b))
def test_property_untrusted_peer_always_ends_up_as_the_only_hop(peer, forged_value) -> None:
    settings = ForwardedSettings.from_strings(["10.0.0.0/8"])
    h = Headers([(b"X-Forwarded-For", forged_value), (b"Forwarded", forged_value),
                 (b"X-Forwarded-Host", forged_value)])
    out = apply(h, peer, settings)
    if settings.trusts(peer):
        return
    ip = ipaddress.ip_address(peer)
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    node = f'"[{ip.compressed}]"' if ip.version == 6 else ip.compressed
    assert out.get_all(b"x-forwarded-for") == [ip.compressed.encode()]
    assert out.get_all(b"forwarded") == [f"for={node};proto=http".encode()]
    assert b"x-forwarded-host" not in out


@given(peer=ipv6.filter(lambda a: ipaddress.IPv6Address(a).ipv4_mapped is None))
def test_property_ipv6_for_value_is_a_valid_quoted_node(peer) -> None:
    out = apply(Headers([]), peer, ForwardedSettings(include_port=True), port=443)
    value = out.get(b"forwarded").split(b";")[0]
    assert value.startswith(b'for="[') and value.endswith(b']:443"')
    assert ipaddress.ip_address(value[6:-6].decode()) == ipaddress.ip_address(peer)
