"""multiproxy.testing's own HTTP message reader, fed one byte at a time (no reactor)."""

from __future__ import annotations

import pytest

from multiproxy.testing._messages import MessageError, MessageReader


def read_all(data: bytes, requests: bool = False, method: bytes = b"GET", end: bool = False):
    reader = MessageReader(requests=requests)
    messages = []
    for i in range(len(data)):
        reader.feed(data[i:i + 1])
        while (message := reader.next_message(method)) is not None:
            messages.append(message)
    if end:
        reader.end()
        while reader.buffer and (message := reader.next_message(method)) is not None:
            messages.append(message)
    return messages


def test_content_length_and_chunked_responses_byte_by_byte():
    data = (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2;ext=1\r\nde\r\n1\r\nf\r\n0\r\nTrailer: x\r\n\r\n")
    (first, second) = read_all(data)
    assert first == ((b"HTTP/1.1", b"200", b"OK"), [(b"Content-Length", b"3")], b"abc", True)
    assert second[0][1] == b"201" and second[2:] == (b"def", True)


def test_header_order_spelling_and_repeats_are_kept():
    data = b"HTTP/1.1 200 OK\r\nX-B: 1\r\nx-a: 2\r\nX-B: 3\r\nContent-Length: 0\r\n\r\n"
    ((_, headers, _, _),) = read_all(data)
    assert headers == [(b"X-B", b"1"), (b"x-a", b"2"), (b"X-B", b"3"), (b"Content-Length", b"0")]


@pytest.mark.parametrize("method, status", [(b"HEAD", b"200"), (b"GET", b"204"),
                                             (b"GET", b"304"), (b"CONNECT", b"200")])
def test_responses_without_a_body_whatever_their_length_says(method, status):
    data = b"HTTP/1.1 " + status + b" X\r\nContent-Length: 10\r\n\r\n"
    ((start, _, body, complete),) = read_all(data, method=method)
    assert (start[1], body, complete) == (status, b"", True)


def test_a_body_cut_short_is_returned_incomplete_at_the_end():
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123"
    assert read_all(data) == []
    ((_, _, body, complete),) = read_all(data, end=True)
    assert (body, complete) == (b"0123", False)


def test_a_close_delimited_body_ends_with_the_stream():
    data = b"HTTP/1.0 200 OK\r\n\r\nuntil the end"
    ((_, _, body, complete),) = read_all(data, end=True)
    assert (body, complete) == (b"until the end", True)


def test_a_cut_chunked_body_keeps_what_arrived():
    data = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r\nwo"
    ((_, _, body, complete),) = read_all(data, end=True)
    assert (body, complete) == (b"hellowo", False)


def test_requests_without_a_length_have_no_body():
    data = (b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    (get, post) = read_all(data, requests=True)
    assert (get[0], get[2]) == ((b"GET", b"/a", b"HTTP/1.1"), b"")
    assert (post[0][1], post[2]) == (b"/b", b"hi")


@pytest.mark.parametrize("data", [
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
])
def test_what_cannot_be_followed_is_a_message_error(data):
    with pytest.raises(MessageError):
        read_all(data)
