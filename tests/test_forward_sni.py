"""The ClientHello reader (SNI and ALPN): fed whole, byte by byte, and split anywhere."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multiproxy.forward._sni import NOT_TLS, ClientHello, HelloError, HelloReader


def _vector(prefix: int, data: bytes) -> bytes:
    return len(data).to_bytes(prefix, "big") + data


def hello_body(server_name: str | None = None, alpn=(), extensions: bytes | None = None) -> bytes:
    """A ClientHello body (after the handshake header) with the given extensions."""
    ext = b""
    if server_name is not None:
        entry = b"\x00" + _vector(2, server_name.encode("ascii"))
        ext += b"\x00\x00" + _vector(2, _vector(2, entry))
    if alpn:
        names = b"".join(_vector(1, p.encode("ascii")) for p in alpn)
        ext += b"\x00\x10" + _vector(2, _vector(2, names))
    ext += b"\x00\x2b" + _vector(2, b"\x02\x03\x04")  # supported_versions: TLS 1.3
    if extensions is not None:
        ext = extensions
    return (
        b"\x03\x03" + b"\x11" * 32 + _vector(1, b"\x22" * 32) + _vector(2, b"\x13\x01\x13\x02")
        + _vector(1, b"\x00") + _vector(2, ext)
    )


def records(body: bytes, fragments: list[int] | None = None) -> bytes:
    """The handshake message for ``body`` as TLS records of the given fragment sizes."""
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    out = b""
    sizes = list(fragments or [])
    while message:
        size = sizes.pop(0) if sizes else len(message)
        size = max(1, min(size, len(message), 2**14))
        out += b"\x16\x03\x01" + size.to_bytes(2, "big") + message[:size]
        message = message[size:]
    return out


def real_client_hello(server_name: str | None, alpn: list[str]) -> bytes:
    """The first flight of Python's own TLS client (OpenSSL), from a memory BIO."""
    context = ssl.create_default_context()
    context.check_hostname = False
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
_names = st.lists(_label, min_size=1, max_size=5).map(".".join)
_alpn = st.lists(st.sampled_from(["h2", "http/1.1", "spdy/3", "acme-tls/1"]), max_size=3, unique=True)


def feed_in_chunks(data: bytes, cuts: list[int]):
    reader = HelloReader()
    answers = []
    start = 0
    for cut in sorted(set(c % len(data) for c in cuts if len(data)) - {0}) + [len(data)]:
        answers.append(reader.feed(data[start:cut]))
        start = cut
    return answers


def test_real_openssl_client_hello_gives_its_sni_and_alpn():
    data = real_client_hello("www.example.org", ["h2", "http/1.1"])
    assert HelloReader().feed(data) == ClientHello("www.example.org", ("h2", "http/1.1"), len(data))


def test_real_client_hello_without_sni_has_no_server_name():
    data = real_client_hello(None, [])
    answer = HelloReader().feed(data)
    assert answer.server_name is None and answer.alpn == ()


def test_real_client_hello_fed_byte_by_byte_answers_only_at_its_last_byte():
    data = real_client_hello("a.example", ["http/1.1"])
    reader = HelloReader()
    answers = [reader.feed(data[i:i + 1]) for i in range(len(data))]
    assert answers[:-1] == [None] * (len(data) - 1)
    assert answers[-1].server_name == "a.example"


@settings(max_examples=150, deadline=None)
@given(_names, _alpn, st.lists(st.integers(1, 300), max_size=6), st.lists(st.integers(0, 10**6)))
def test_hello_split_across_records_and_reads_gives_the_same_answer(name, alpn, fragments, cuts):
    data = records(hello_body(name, alpn), fragments)
    answers = feed_in_chunks(data, cuts)
    assert all(a is None for a in answers[:-1])
    assert answers[-1] == ClientHello(name, tuple(alpn), len(data))


@settings(max_examples=60, deadline=None)
@given(_names, st.lists(st.integers(1, 200), max_size=4))
def test_hello_fed_byte_by_byte(name, fragments):
    data = records(hello_body(name.upper(), ["h2"]), fragments)
    reader = HelloReader()
    for i in range(len(data) - 1):
        assert reader.feed(data[i:i + 1]) is None
    assert reader.feed(data[-1:]) == ClientHello(name, ("h2",), len(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.lists(st.integers(0, 400), max_size=5))
def test_arbitrary_bytes_give_an_answer_or_hello_error_never_another_exception(data, cuts):
    try:
        feed_in_chunks(data, cuts)
    except HelloError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=60))
def test_a_tunnel_not_starting_with_a_handshake_record_is_not_tls(data):
    if data[0] == 22:
        data = b"G" + data
    assert HelloReader().feed(data) is NOT_TLS


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\n", b"SSH-2.0-OpenSSH\r\n", b"\x16\x01\x00"])
def test_plain_protocols_are_not_tls(first):
    assert HelloReader().feed(first) is NOT_TLS


def test_the_answer_is_known_from_the_first_byte_for_non_tls():
    assert HelloReader().feed(b"P") is NOT_TLS


def test_hello_larger_than_the_limit_is_refused():
    body = hello_body("x.example", extensions=b"\xff\x00" + _vector(2, b"\x00" * 3000))
    with pytest.raises(HelloError, match="longer than 2048"):
        HelloReader(max_size=2048).feed(records(body))


def test_oversized_hello_is_refused_before_it_is_all_read():
    body = hello_body("x.example", extensions=b"\xff\x00" + _vector(2, b"\x00" * 40000))
    data = records(body, [16000, 16000, 16000])
    with pytest.raises(HelloError):
        HelloReader().feed(data[:16 * 1024 + 10])


@pytest.mark.parametrize("data, reason", [
    (b"\x16\x03\x01\x00\x00", "handshake record of 0 bytes"),
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not ClientHello"),
    (records(hello_body(extensions=b"\xff\xff\x00\x00\xff\xff\x00\x00")), "appears twice"),
    (records(hello_body(extensions=b"\x00\x00\x00\x05\x00\x03\x00\x00\x00")), "empty"),
    (records(hello_body(extensions=b"\x00\x00\x00\x07\x00\x05\x00\x00\x02a.")), "dot"),
    (records(hello_body(extensions=b"\x00\x00\x00\x07\x00\x05\x00\x00\x02\xc3\xa9")), "ASCII"),
    (records(hello_body(extensions=b"\x00\x10\x00\x03\x00\x01\x00")), "empty ALPN"),
    (records(hello_body(extensions=b"\x00\x00\x00\x09")), "truncated"),
])
def test_malformed_hello_is_refused_with_a_reason(data, reason):
    with pytest.raises(HelloError, match=reason):
        HelloReader().feed(data)


def test_an_alert_record_before_the_hello_is_complete_is_malformed():
    data = records(hello_body("a.example"), [10])
    with pytest.raises(HelloError, match="record type 21"):
        HelloReader().feed(data[:15] + b"\x15\x03\x03\x00\x02\x02\x28")


def test_every_prefix_of_a_hello_asks_for_more():
    data = records(hello_body("prefix.example", ["h2"]), [50, 50])
    for n in range(len(data)):
        assert HelloReader().feed(data[:n]) is None
