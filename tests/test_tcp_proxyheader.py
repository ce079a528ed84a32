"""
PROXY protocol: the headers we send (checked against Twisted's own parsers)
and the wrapper that accepts them on a listener.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from zope.interface import implementer

from multiproxy.tcp import proxy_header, proxy_header_v1, proxy_header_v2
from multiproxy.tcp._haproxy import (
    ProxyHeaderWrapper,
    ProxyHeaderWrappingFactory,
    find_proxy_header_wrapper,
)
from multiproxy.tcp._v1parser import StrictV1Parser, parse_v1_line


def test_v1_header_for_ipv4():
    header = proxy_header_v1(("192.0.2.10", 51234), ("198.51.100.1", 443))
    assert header == b"PROXY TCP4 192.0.2.10 198.51.100.1 51234 443\r\n"


def test_v1_header_for_ipv6_is_compressed():
    header = proxy_header_v1(("2001:db8:0::1", 1), ("2001:db8::2", 2))
    assert header == b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n"


def test_v1_header_for_ipv4_mapped_client_on_an_ipv6_listener_is_tcp4():
    header = proxy_header_v1(("::ffff:192.0.2.1", 5), ("::ffff:192.0.2.2", 6))
    assert header == b"PROXY TCP4 192.0.2.1 192.0.2.2 5 6\r\n"


def test_v1_header_for_non_ip_addresses_is_unknown():
    assert proxy_header_v1(("unix:/tmp/s", 0), ("unix:/tmp/s", 0)) == b"PROXY UNKNOWN\r\n"
    assert proxy_header_v1(None, None) == b"PROXY UNKNOWN\r\n"


def test_v2_header_for_non_ip_addresses_is_local():
    header = proxy_header_v2(None, None)
    assert len(header) == 16 and header[12] == 0x20
    info = V2Parser.parse(header)
    assert info.source is None


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="v1 or v2"):
        proxy_header("v3", None, None)


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None).map(str)
ports = st.integers(0, 65535)


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports,
       st.sampled_from(["v1", "v2"]))
def test_headers_round_trip_through_twisted_parsers(hosts, sport, dport, version):
    src, dst = hosts
    header = proxy_header(version, (src, sport), (dst, dport))
    parser = V1Parser() if version == "v1" else V2Parser()
    info, remaining = parser.feed(header + b"payload")
    assert remaining == b"payload"
    assert _canon(info.source.host) == _canon(src)
    assert (info.source.port, info.destination.port) == (sport, dport)
    assert _canon(info.destination.host) == _canon(dst)


def _canon(host):
    import ipaddress

    return ipaddress.ip_address(host).compressed


# -- accepting ----------------------------------------------------------------------


@implementer(IHalfCloseableProtocol)
class Recorder(Protocol):
    def __init__(self):
        self.data = b""
        self.peer_at_header = None
        self.eof = False

    def connectionMade(self):
        wrapper = find_proxy_header_wrapper(self.transport)
        wrapper.when_header(lambda: setattr(self, "peer_at_header", self.transport.getPeer()))

    def dataReceived(self, data):
        self.data += data

    def readConnectionLost(self):
        self.eof = True

    def writeConnectionLost(self):
        pass


def accept(chunks):
    recorder = Recorder()
    factory = ProxyHeaderWrappingFactory(Factory.forProtocol(lambda: recorder))
    wrapper = factory.buildProtocol(None)
    transport = StringTransport()
    wrapper.makeConnection(transport)
    for chunk in chunks:
        wrapper.dataReceived(chunk)
    return wrapper, recorder, transport


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_wrapper_signals_a_header_that_arrives_one_byte_at_a_time(version):
    header = proxy_header(version, ("203.0.113.7", 5555), ("10.0.0.1", 9000))
    wrapper, recorder, transport = accept([header[i:i + 1] for i in range(len(header))])
    assert not transport.disconnecting
    assert recorder.peer_at_header.host == "203.0.113.7"
    assert recorder.peer_at_header.port == 5555
    assert wrapper.getHost().port == 9000
    assert recorder.data == b""
    wrapper.dataReceived(b"hello")
    assert recorder.data == b"hello"


def test_wrapper_passes_bytes_after_the_header_in_the_same_read():
    header = proxy_header_v1(("203.0.113.7", 5555), ("10.0.0.1", 9000))
    wrapper, recorder, transport = accept([header + b"GET /"])
    assert recorder.data == b"GET /"


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\n", b"\r\n\r\n\x00\r\nQUIT\n\x10\x11\x00\x0c",
                                     b"PROXY TCP4 nonsense\r\n"])
def test_wrapper_closes_connections_without_a_valid_header(garbage):
    wrapper, recorder, transport = accept([garbage])
    assert transport.disconnecting
    assert recorder.peer_at_header is None


def test_wrapper_forwards_half_close_to_the_wrapped_protocol():
    header = proxy_header_v1(("203.0.113.7", 5555), ("10.0.0.1", 9000))
    wrapper, recorder, transport = accept([header])
    assert IHalfCloseableProtocol.providedBy(wrapper)
    assert isinstance(wrapper, ProxyHeaderWrapper)
    wrapper.readConnectionLost()
    assert recorder.eof


def test_half_close_before_the_header_closes_the_connection():
    wrapper, recorder, transport = accept([b"PRO"])
    wrapper.readConnectionLost()
    assert transport.disconnecting and not recorder.eof


# -- strict v1 parsing --------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2",  # octet out of range
    b"PROXY TCP4 1.2.3.4 5.6.7.256 1 2",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2",  # leading zero (ambiguous: octal?)
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2",  # port out of range
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 x 2",  # not a number (Twisted raised a bare ValueError)
    b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1_0 2",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2",
    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2",  # IPv4 in a TCP6 line
    b"PROXY TCP4 ::1 ::1 1 2",  # IPv6 in a TCP4 line
    b"PROXY TCP6 fe80::1%eth0 ::1 1 2",  # scope ID
    b"PROXY TCP6 2001:db8::g ::1 1 2",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 extra",  # extra field
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",  # trailing space
    b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2",  # double space
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1",  # missing field
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2",
    b"PROXY",
    b"proxy TCP4 1.2.3.4 5.6.7.8 1 2",
    b"PROXY TCP4 1.2.3.\xff 5.6.7.8 1 2",
    b"PROXY UNKNOWN " + b"x" * 100,  # longer than 107 bytes with its CRLF
])
def test_strict_v1_parser_refuses_impossible_lines(line):
    with pytest.raises(InvalidProxyHeader):
        parse_v1_line(line)


def test_strict_v1_parser_reads_addresses_and_ports():
    info = parse_v1_line(b"PROXY TCP4 192.0.2.10 198.51.100.1 0 65535")
    assert (info.source.host, info.source.port) == ("192.0.2.10", 0)
    assert (info.destination.host, info.destination.port) == ("198.51.100.1", 65535)
    info = parse_v1_line(b"PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 1 2")
    assert (info.source.host, info.destination.host) == ("2001:db8::1", "::ffff:192.0.2.1")
    assert info.source.type == "TCP"


def test_strict_v1_parser_takes_unknown_as_no_addresses():
    assert parse_v1_line(b"PROXY UNKNOWN").source is None
    assert parse_v1_line(b"PROXY UNKNOWN 1.2.3.4 whatever").destination is None


def test_strict_v1_parser_keeps_the_bytes_after_the_header():
    parser = StrictV1Parser()
    assert parser.feed(b"PROXY TCP4 1.2.3.4 ") == (None, None)
    info, remaining = parser.feed(b"5.6.7.8 1 2\r\nhello")
    assert info.source.host == "1.2.3.4" and remaining == b"hello"


@settings(max_examples=80, deadline=None)
@given(st.one_of(st.tuples(ipv4, ipv4), st.tuples(ipv6, ipv6)), ports, ports)
def test_strict_v1_parser_accepts_every_header_we_send(hosts, sport, dport):
    src, dst = hosts
    info, _ = StrictV1Parser().feed(proxy_header_v1((src, sport), (dst, dport)))
    assert _canon(info.source.host) == _canon(src) and info.source.port == sport
    assert _canon(info.destination.host) == _canon(dst) and info.destination.port == dport


def test_wrapper_closes_connections_with_impossible_v1_addresses():
    _, recorder, transport = accept([b"PROXY TCP4 999.2.3.4 5.6.7.8 1 2\r\nhello"])
    assert transport.disconnecting
    assert recorder.peer_at_header is None and recorder.data == b""
