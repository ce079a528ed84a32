"""Tests for absolute-form and authority-form request target parsing."""

from __future__ import annotations

import pytest

from multiproxy.http1._target import (
    AbsoluteTarget,
    UnsupportedScheme,
    is_origin_form,
    parse_absolute_target,
    parse_authority,
)
from multiproxy.pipeline._errors import ProtocolError


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"http://example.com/a?b=c", AbsoluteTarget("http", "example.com", 80, b"/a?b=c")),
        (b"http://Example.COM", AbsoluteTarget("http", "example.com", 80, b"/")),
        (b"HTTP://example.com:8080/", AbsoluteTarget("http", "example.com", 8080, b"/")),
        (b"https://example.com/x", AbsoluteTarget("https", "example.com", 443, b"/x")),
        (b"http://example.com?q=1", AbsoluteTarget("http", "example.com", 80, b"/?q=1")),
        (b"http://example.com:/p", AbsoluteTarget("http", "example.com", 80, b"/p")),
        (b"http://127.0.0.1:1/", AbsoluteTarget("http", "127.0.0.1", 1, b"/")),
        (b"http://[::1]:8080/p", AbsoluteTarget("http", "::1", 8080, b"/p")),
        (b"http://[2001:DB8::1]/", AbsoluteTarget("http", "2001:db8::1", 80, b"/")),
        (b"http://[::ffff:1.2.3.4]/", AbsoluteTarget("http", "::ffff:1.2.3.4", 80, b"/")),
        (b"http://xn--bcher-kva.example/", AbsoluteTarget("http", "xn--bcher-kva.example", 80, b"/")),
        (b"http://h:00080/", AbsoluteTarget("http", "h", 80, b"/")),
        (b"http://h:65535/", AbsoluteTarget("http", "h", 65535, b"/")),
        (b"http://h/a%20b/@c", AbsoluteTarget("http", "h", 80, b"/a%20b/@c")),
    ],
)
def test_valid_absolute_targets(target, expected):
    assert parse_absolute_target(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (b"/path", "origin-form"),
        (b"*", "asterisk"),
        (b"example.com:80", "not an absolute URI"),
        (b"http:/example.com/", "without an authority"),
        (b"http:example.com", "without an authority"),
        (b"http://user@example.com/", "userinfo"),
        (b"http://user:pw@example.com/", "userinfo"),
        (b"http://example.com@evil.com/", "userinfo"),
        (b"http:///path", "empty host"),
        (b"http://:80/", "empty host"),
        (b"http://h:0/", "out of range"),
        (b"http://h:65536/", "out of range"),
        (b"http://h:99999999999999/", "invalid port"),
        (b"http://h:8o/", "invalid port"),
        (b"http://h:-1/", "invalid port"),
        (b"http://h:+80/", "invalid port"),
        (b"http://::1/", "brackets"),
        (b"http://[::1/", "unterminated"),
        (b"http://[::g]/", "invalid IPv6"),
        (b"http://[1.2.3.4]/", "invalid IPv6"),
        (b"http://[fe80::1%25eth0]/", "zone"),
        (b"http://[v1.x]/", "IPvFuture"),
        (b"http://[::1]x/", "after IPv6"),
        (b"http://h/#frag", "fragment"),
        (b"http://h#frag", "fragment"),
        (b"http://b\xc3\xbccher.example/", "non-ASCII"),
        (b"http://h/ a", "invalid characters"),
        (b"http://h/\x00", "invalid characters"),
        (b"http://a!b/", "invalid host"),
        (b"http://a_b;c/", "invalid host"),
        (b"", "invalid characters"),
    ],
)
def test_bad_absolute_targets_are_refused_with_400_and_a_reason(target, message):
    with pytest.raises(ProtocolError) as info:
        parse_absolute_target(target)
    assert info.value.status == 400
    assert message in str(info.value)


@pytest.mark.parametrize("target", [b"ftp://example.com/", b"gopher://h/", b"ws://h/", b"mailto:a@b"])
def test_unsupported_scheme_is_501(target):
    with pytest.raises(UnsupportedScheme) as info:
        parse_absolute_target(target)
    assert info.value.status == 501
    assert "unsupported scheme" in str(info.value)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"example.com:443", ("example.com", 443)),
        (b"EXAMPLE.com:8443", ("example.com", 8443)),
        (b"[::1]:443", ("::1", 443)),
        (b"10.0.0.1:22", ("10.0.0.1", 22)),
    ],
)
def test_valid_authority_targets(target, expected):
    assert parse_authority(target) == expected


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (b"example.com", "needs a port"),
        (b"example.com:", "needs a port"),
        (b"[::1]", "needs a port"),
        (b":443", "empty host"),
        (b"user@example.com:443", "userinfo"),
        (b"example.com:443/x", "host:port"),
        (b"http://example.com:443", "host:port"),
        (b"::1:443", "brackets"),
        (b"example.com:0", "out of range"),
        (b"example.com:70000", "out of range"),
        (b"example.com:https", "invalid port"),
        (b"exa mple.com:443", "invalid characters"),
        (b"", "invalid characters"),
    ],
)
def test_bad_authority_targets_are_refused(target, message):
    with pytest.raises(ProtocolError) as info:
        parse_authority(target)
    assert info.value.status == 400
    assert message in str(info.value)


def test_is_origin_form():
    assert is_origin_form(b"/")
    assert is_origin_form(b"/a?b")
    assert not is_origin_form(b"http://h/")
    assert not is_origin_form(b"*")
    assert not is_origin_form(b"")


def test_the_fast_path_for_known_authorities_agrees_with_the_full_parse():
    """
    A target of the usual shape whose authority was checked before is split
    by one regular expression; every target must get the same answer (or the
    same error) that way as through the full parse with nothing cached.
    """
    import random

    from multiproxy.http1 import _target

    alphabet = [b"h", b"t", b"p", b"s", b":", b"/", b"?", b"#", b"@", b"[", b"]", b"1",
                b"a", b".", b"%", b"2", b"0", b"x", b"-", b"H", b" ", b"\x80", b"8"]
    prefixes = [b"http://", b"https://", b"HTTP://", b"http:/", b"", b"ftp://"]
    rng = random.Random(1)

    def outcome(target):
        try:
            return "ok", _target.parse_absolute_target(target)
        except ProtocolError as e:
            return "error", type(e), str(e)

    for _ in range(20000):
        target = rng.choice(prefixes) + b"".join(
            rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        first = outcome(target)  # fills the authority cache
        again = outcome(target)  # may take the fast path
        _target._AUTHORITIES.clear()
        cold = outcome(target)
        assert first == again == cold, target
