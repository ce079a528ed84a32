"""
The SOCKS proxy's answers to bad, slow and unlucky handshakes, run in memory
on a fake clock (multiproxy.testing); tests/test_socks_proxy.py drives it
with curl over loopback.
"""

from __future__ import annotations

import socket
import struct

import pytest
from twisted.internet.protocol import Factory
from twisted.protocols.wire import Echo

from multiproxy.socks import SocksProxy, SocksSettings, socks4_reply, socks5_reply
from multiproxy.testing import Harness

GREET = b"\x05\x01\x00"


def socks(harness: Harness, **kwargs) -> SocksProxy:
    return SocksProxy(harness.reactor, reporters=[harness.reporter], **kwargs)


@pytest.mark.parametrize("request_bytes, answer", [
    (b"\x06\x01\x00", b"\x05\xff"),
    (b"GET / HTTP/1.1\r\n\r\n", b"\x05\xff"),
    (b"\x05\x01\x02", b"\x05\xff"),  # username/password offered but no user store
    (GREET + b"\x05\x02\x00\x01\x7f\x00\x00\x01\x00\x50", b"\x05\x00" + socks5_reply(7)),
    (GREET + b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00", b"\x05\x00" + socks5_reply(7)),
    (GREET + b"\x05\x01\x00\x09", b"\x05\x00" + socks5_reply(8)),
    (GREET + b"\x05\x01\x00\x03\x05a b c\x00\x50", b"\x05\x00" + socks5_reply(4)),
    (GREET + b"\x05\x01\x00\x03\x0dbad..name.com\x00\x50", b"\x05\x00" + socks5_reply(4)),
    (b"\x04\x02\x00\x50\x7f\x00\x00\x01\x00", socks4_reply(False)),
    (b"\x04\x01\x00\x50\x00\x00\x00\x01\x00" + b"h" * 300, socks4_reply(False)),
])
def test_bad_input_gets_the_protocols_reply_and_a_close(request_bytes, answer):
    harness = Harness()
    client = harness.connect(socks(harness))
    client.send(request_bytes)
    assert client.read() == answer
    assert client.closed
    assert harness.records[0].status >= 400


@pytest.mark.parametrize("partial, answer", [
    (b"", b""),
    (b"\x05\x02\x00", b"\x05\xff"),
    (GREET + b"\x05\x01\x00\x03\x0bexam", b"\x05\x00" + socks5_reply(1)),
    (b"\x04\x01\x00\x50", socks4_reply(False)),
])
def test_a_slow_client_is_answered_at_the_handshake_timeout(partial, answer):
    harness = Harness()
    client = harness.connect(socks(harness, settings=SocksSettings(handshake_timeout=0.3)))
    if partial:
        client.send(partial)
    harness.advance(0.29)
    assert not client.closed
    harness.advance(0.01)
    assert client.read() == answer
    assert client.closed
    assert harness.records[0].ended == "handshake-timeout"


def test_a_truncated_request_then_eof_is_answered():
    harness = Harness()
    client = harness.connect(socks(harness))
    client.send(GREET + b"\x05\x01\x00\x01\x7f")
    client.half_close()
    assert client.read() == b"\x05\x00" + socks5_reply(1)
    assert client.closed


def test_connection_refused_is_reply_0x05():
    harness = Harness()
    client = harness.connect(socks(harness))
    client.send(GREET + b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1")
                + struct.pack("!H", 9))
    assert client.read() == b"\x05\x00" + socks5_reply(5)
    assert harness.records[0].ended == "connect-failed"


def test_a_connect_timeout_is_reply_0x06():
    harness = Harness()
    harness.serve(Factory.forProtocol(Echo), "example.com", 80).connect_mode = "hang"
    client = harness.connect(socks(harness, settings=SocksSettings(connect_timeout=0.3)))
    client.send(GREET + b"\x05\x01\x00\x03\x0bexample.com\x00\x50")
    harness.advance(0.3)
    assert client.read() == b"\x05\x00" + socks5_reply(6)
    record = harness.records[0]
    assert (record.ended, record.status) == ("connect-timeout", 504)


def test_a_pipelined_request_gets_the_method_and_the_reply_in_one_write():
    harness = Harness()
    harness.serve(Factory.forProtocol(Echo), "example.com", 80).connect_mode = "hang"
    client = harness.connect(socks(harness, settings=SocksSettings(connect_timeout=1)))
    client.send(GREET + b"\x05\x01\x00\x03\x0bexample.com\x00\x50")
    assert client.read() == b""  # the method choice waits for the connect's outcome
    harness.advance(1)
    assert client.read() == b"\x05\x00" + socks5_reply(6)


def test_a_client_that_waits_gets_the_method_at_once():
    harness = Harness()
    client = harness.connect(socks(harness))
    client.send(GREET)
    assert client.read() == b"\x05\x00"
    client.send(b"\x05\x01\x00\x03\x0bexample.com")  # a partial request
    assert client.read() == b""
    harness.advance(10)  # the handshake timeout answers the half-sent request
    assert client.read() == socks5_reply(1)


def test_a_granted_connect_relays_both_ways_until_the_client_leaves():
    harness = Harness()
    harness.serve(Factory.forProtocol(Echo), "10.0.0.7", 7)
    client = harness.connect(socks(harness))
    client.send(GREET + b"\x05\x01\x00\x01" + socket.inet_aton("10.0.0.7") + struct.pack("!H", 7))
    assert client.read()[:4] == b"\x05\x00\x05\x00"
    client.send(b"echo")
    assert client.read() == b"echo"
    client.close()
    (record,) = harness.records
    assert (record.upstream, record.bytes_from_client, record.bytes_to_client) == (
        "10.0.0.7:7", 4, 4)
    harness.assert_quiet()
