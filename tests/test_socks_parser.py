"""The sans-I/O SOCKS handshake parser: fed whole and byte by byte."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from multiproxy.socks._parser import (
    AUTH_NONE,
    AUTH_USERPASS,
    ConnectRequest,
    Credentials,
    Greeting,
    SocksError,
    SocksParser,
    socks4_reply,
    socks5_reply,
)


def feed_all(parser: SocksParser, data: bytes, one_at_a_time: bool = False) -> list:
    events = []
    pieces = [data[i:i + 1] for i in range(len(data))] if one_at_a_time else [data]
    for piece in pieces:
        queue = parser.feed(piece)
        while queue:
            event = queue.pop(0)
            events.append(event)
            if isinstance(event, Greeting):
                parser.choose_method(AUTH_USERPASS if AUTH_USERPASS in event.methods
                                     else AUTH_NONE)
                queue.extend(parser.feed(b""))
            elif isinstance(event, Credentials):
                parser.authenticated(True)
                queue.extend(parser.feed(b""))
    return events


def socks5(host_bytes: bytes, atyp: int, port: int, auth: bool = False) -> bytes:
    greeting = b"\x05\x02\x00\x02" if auth else b"\x05\x01\x00"
    creds = b"\x01\x05alice\x06secret" if auth else b""
    return greeting + creds + b"\x05\x01\x00" + bytes([atyp]) + host_bytes + struct.pack("!H", port)


def test_the_parser_module_needs_no_reactor():
    import multiproxy.socks._parser as module

    assert "twisted" not in open(module.__file__).read()


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_socks5_domain_request_with_credentials(one_at_a_time):
    parser = SocksParser()
    data = socks5(b"\x0bexample.com", 3, 80, auth=True) + b"GET"
    events = feed_all(parser, data, one_at_a_time)
    assert events == [Greeting(frozenset({0, 2})), Credentials(b"alice", b"secret"),
                      ConnectRequest(5, "example.com", 80, "domain")]
    assert parser.rest == b"GET"


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_socks5_ipv4_and_ipv6(one_at_a_time):
    events = feed_all(SocksParser(), socks5(socket.inet_aton("10.1.2.3"), 1, 443), one_at_a_time)
    assert events[-1] == ConnectRequest(5, "10.1.2.3", 443, "ipv4")
    six = socket.inet_pton(socket.AF_INET6, "2001:db8::1")
    events = feed_all(SocksParser(), socks5(six, 4, 8080), one_at_a_time)
    assert events[-1] == ConnectRequest(5, "2001:db8::1", 8080, "ipv6")


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_socks4_and_socks4a(one_at_a_time):
    data = b"\x04\x01" + struct.pack("!H", 80) + socket.inet_aton("127.0.0.1") + b"bob\x00"
    assert feed_all(SocksParser(), data, one_at_a_time) == [
        ConnectRequest(4, "127.0.0.1", 80, "ipv4", b"bob")]
    data = b"\x04\x01" + struct.pack("!H", 80) + b"\x00\x00\x00\x01" + b"\x00example.org\x00x"
    parser = SocksParser()
    assert feed_all(parser, data, one_at_a_time) == [
        ConnectRequest(4, "example.org", 80, "domain", b"")]
    assert parser.rest == b"x"


@pytest.mark.parametrize("data, reply", [
    (b"\x06\x01\x00", b"\x05\xff"),                                   # wrong version
    (b"\x05\x00", b"\x05\xff"),                                       # no method offered
    (b"\x05\x01\x00\x05\x02\x00\x01" + b"\x00" * 6, socks5_reply(7)),  # BIND
    (b"\x05\x01\x00\x05\x03\x00\x01" + b"\x00" * 6, socks5_reply(7)),  # UDP ASSOCIATE
    (b"\x05\x01\x00\x05\x01\x00\x05", socks5_reply(8)),               # address type 5
    (b"\x05\x01\x00\x05\x01\x00\x03\x00\x00\x50", socks5_reply(4)),   # empty name
    (b"\x05\x01\x00\x04\x01\x00\x01", socks5_reply(1)),               # request version 4
    (b"\x05\x01\x00\x05\x01\x00\x03\x02\xff\xfe\x00\x50", socks5_reply(4)),  # not ASCII
    (b"\x04\x02\x00\x50\x7f\x00\x00\x01\x00", socks4_reply(False)),   # SOCKS4 BIND
    (b"\x04\x01\x00\x50\x7f\x00\x00\x01" + b"u" * 300, socks4_reply(False)),  # long user id
    (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * 300, socks4_reply(False)),  # long name
    (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00\x00", socks4_reply(False)),  # empty name
])
@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_bad_input_raises_with_the_protocols_reply(data, reply, one_at_a_time):
    parser = SocksParser()
    with pytest.raises(SocksError) as info:
        feed_all(parser, data, one_at_a_time)
    assert info.value.reply == reply
    assert parser.feed(b"more") == []


def test_wrong_auth_subnegotiation_version_gets_an_auth_failure():
    parser = SocksParser()
    parser.feed(b"\x05\x01\x02")
    parser.choose_method(AUTH_USERPASS)
    with pytest.raises(SocksError) as info:
        parser.feed(b"\x02\x01a\x01b")
    assert info.value.reply == b"\x01\x01"


def test_truncated_input_waits_and_failure_reply_fits_the_state():
    parser = SocksParser()
    assert parser.failure_reply() == b""
    assert parser.feed(b"\x05\x02\x00") == []
    assert parser.failure_reply() == b"\x05\xff"
    parser.feed(b"\x02")
    parser.choose_method(AUTH_USERPASS)
    assert parser.feed(b"\x01\x05ali") == []
    assert parser.failure_reply() == b"\x01\x01"
    parser = SocksParser()
    parser.feed(b"\x05\x01\x00")
    parser.choose_method(AUTH_NONE)
    assert parser.feed(b"\x05\x01\x00\x03\x0bexam") == []
    assert parser.failure_reply() == socks5_reply(1)
    parser = SocksParser()
    assert parser.feed(b"\x04\x01\x00") == []
    assert parser.failure_reply() == socks4_reply(False)


def test_replies_carry_the_bound_address():
    assert socks5_reply(0, "127.0.0.1", 1080) == b"\x05\x00\x00\x01\x7f\x00\x00\x01\x04\x38"
    assert socks5_reply(0, "::1", 1)[3] == 4
    assert socks4_reply(True, "10.0.0.1", 80) == b"\x00\x5a\x00\x50\x0a\x00\x00\x01"


@given(st.binary(max_size=600), st.integers(min_value=1, max_value=50))
def test_any_bytes_in_any_pieces_give_events_or_a_socks_error(data, size):
    parser = SocksParser()
    try:
        for i in range(0, len(data), size):
            feed_all(parser, data[i:i + size])
    except SocksError as e:
        assert isinstance(e.reply, bytes)


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=255),
       st.integers(min_value=0, max_value=65535), st.integers(min_value=1, max_value=7))
def test_any_domain_request_in_any_pieces_parses_the_same(name, port, size):
    data = socks5(bytes([len(name)]) + name.encode(), 3, port)
    parser = SocksParser()
    events = []
    for i in range(0, len(data), size):
        events.extend(feed_all(parser, data[i:i + size]))
    assert events[-1] == ConnectRequest(5, name, port, "domain")
