"""Tests for head and chunk serialisation, including refusal of header injection."""

from __future__ import annotations

import pytest

from multiproxy.http1._headers import Headers
from multiproxy.http1._writer import (
    LAST_CHUNK,
    UnsafeField,
    chunk_bytes,
    request_head_bytes,
    response_head_bytes,
    trailers_bytes,
)
from multiproxy.pipeline._errors import ProtocolError


def test_request_head_bytes():
    headers = Headers([(b"Host", b"h"), (b"X", b"1"), (b"X", b"2")])
    assert request_head_bytes(b"GET", b"/a", headers) == (
        b"GET /a HTTP/1.1\r\nHost: h\r\nX: 1\r\nX: 2\r\n\r\n"
    )
    assert request_head_bytes(b"GET", b"/", [], b"HTTP/1.0") == b"GET / HTTP/1.0\r\n\r\n"


def test_response_head_bytes():
    assert response_head_bytes(404, b"Not Found", [(b"A", b"b\tc")]) == (
        b"HTTP/1.1 404 Not Found\r\nA: b\tc\r\n\r\n"
    )
    assert response_head_bytes(200, b"", []) == b"HTTP/1.1 200 \r\n\r\n"


def test_chunks():
    assert chunk_bytes(b"hello world, 17 b") == b"11\r\nhello world, 17 b\r\n"
    assert chunk_bytes(b"") == b""
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert trailers_bytes([(b"T", b"1")]) == b"0\r\nT: 1\r\n\r\n"
    assert trailers_bytes([]) == LAST_CHUNK


@pytest.mark.parametrize(
    "value",
    [b"a\r\nX-Injected: 1", b"a\nb", b"a\rb", b"a\x00b", b"\x7f", b"a\x1bb"],
)
def test_values_that_would_inject_are_refused(value):
    with pytest.raises(UnsafeField) as info:
        request_head_bytes(b"GET", b"/", [(b"Host", b"h"), (b"X", value)])
    assert isinstance(info.value, ProtocolError)
    assert isinstance(info.value, ValueError)
    assert info.value.status == 502
    with pytest.raises(UnsafeField):
        response_head_bytes(200, b"OK", [(b"X", value)])
    with pytest.raises(UnsafeField):
        trailers_bytes([(b"X", value)])


@pytest.mark.parametrize("name", [b"X\r\nY", b"X Y", b"X:", b"", b"X\x00", b"\xff"])
def test_invalid_names_are_refused(name):
    with pytest.raises(UnsafeField):
        response_head_bytes(200, b"OK", [(name, b"v")])


@pytest.mark.parametrize(
    ("method", "target"),
    [(b"GET /", b"/"), (b"GET", b"/ HTTP/1.1\r\nX:"), (b"GET", b""), (b"G\nT", b"/"), (b"GET", b"/\x00")],
)
def test_bad_request_lines_are_refused(method, target):
    with pytest.raises(UnsafeField):
        request_head_bytes(method, target, [])


def test_bad_status_lines_are_refused():
    with pytest.raises(UnsafeField):
        response_head_bytes(200, b"OK\r\nX: y", [])
    with pytest.raises(UnsafeField):
        response_head_bytes(20, b"OK", [])
    with pytest.raises(UnsafeField):
        response_head_bytes(200, b"OK", [], b"HTTP/1.1\r\n")


def test_headers_from_a_generator_are_written_and_checked():
    pairs = ((n, v) for n, v in [(b"A", b"1"), (b"B", b"2")])
    assert response_head_bytes(200, b"OK", pairs) == b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"
    bad = ((n, v) for n, v in [(b"A", b"1"), (b"B", b"\n")])
    with pytest.raises(UnsafeField, match="B"):
        response_head_bytes(200, b"OK", bad)
