"""
Tests for the sans-I/O HTTP/1.x readers: every message is fed whole and one
byte at a time, and must give the same events either way.
"""

from __future__ import annotations

import pytest

from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    IncompleteMessage,
    Limits,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    UnsupportedVersion,
)
from multiproxy.pipeline._errors import (
    BodyTooLarge,
    HeadTooLarge,
    ProtocolError,
    TargetTooLong,
    UnsupportedFraming,
)

MODES = ["whole", "bytewise"]


def _chunks(data: bytes, mode: str) -> list[bytes]:
    if mode == "whole":
        return [data]
    return [data[i : i + 1] for i in range(len(data))]


def _drain(reader, events: list) -> None:
    while True:
        event = reader.next_event()
        if event is NEED_DATA:
            return
        if event is PAUSED or event is CLOSED:
            if not events or events[-1] is not event:
                events.append(event)
            return
        if type(event) is Data and events and type(events[-1]) is Data:
            events[-1] = Data(events[-1].data + event.data)
        else:
            events.append(event)


def run(reader, data: bytes, mode: str, eof: bool = False) -> list:
    """Feed ``data`` (whole or byte by byte) and return the events, Data merged."""
    events: list = []
    for chunk in _chunks(data, mode):
        reader.feed(chunk)
        _drain(reader, events)
    if eof:
        reader.feed_eof()
        _drain(reader, events)
    return events


def error_of(reader, data: bytes, mode: str, eof: bool = False) -> ProtocolError:
    """Feed ``data`` and return the ProtocolError the reader raises."""
    with pytest.raises(ProtocolError) as info:
        run(reader, data, mode, eof)
    return info.value


def request(data: bytes, mode: str, limits: Limits = Limits(), eof: bool = False) -> list:
    return run(RequestReader(limits), data, mode, eof)


def request_error(data: bytes, mode: str, limits: Limits = Limits(), eof=False) -> ProtocolError:
    return error_of(RequestReader(limits), data, mode, eof)


def response(data: bytes, mode: str, method: bytes = b"GET", eof: bool = False) -> list:
    reader = ResponseReader()
    reader.expect(method)
    return run(reader, data, mode, eof)


def response_error(data: bytes, mode: str, method: bytes = b"GET", eof=False) -> ProtocolError:
    reader = ResponseReader()
    reader.expect(method)
    return error_of(reader, data, mode, eof)


# -- requests: heads ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_simple_get_gives_head_end_and_pause(mode):
    events = request(b"GET /a?b=c HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n", mode)
    assert events == [
        RequestHead(
            b"GET",
            b"/a?b=c",
            b"HTTP/1.1",
            Headers([(b"Host", b"example.com"), (b"Accept", b"*/*")]),
        ),
        EndOfMessage(),
        PAUSED,
    ]


@pytest.mark.parametrize("mode", MODES)
def test_field_values_lose_surrounding_whitespace_and_keep_case_order_repeats(mode):
    events = request(
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \t one two \t\r\nx-a:2\r\nSet-Thing:  \r\n\r\n", mode
    )
    assert events[0].headers.pairs == [
        (b"Host", b"h"),
        (b"X-A", b"one two"),
        (b"x-a", b"2"),
        (b"Set-Thing", b""),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_obs_text_in_field_value_is_kept(mode):
    events = request(b"GET / HTTP/1.1\r\nHost: h\r\nX: caf\xc3\xa9\r\n\r\n", mode)
    assert events[0].headers.get(b"x") == b"caf\xc3\xa9"


@pytest.mark.parametrize("mode", MODES)
def test_http10_request_without_host_is_accepted(mode):
    events = request(b"GET http://h/ HTTP/1.0\r\n\r\n", mode)
    assert events[0].version == b"HTTP/1.0"
    assert events[0].keep_alive is False


@pytest.mark.parametrize("mode", MODES)
def test_higher_minor_version_is_handled_as_http11(mode):
    events = request(b"GET / HTTP/1.7\r\nHost: h\r\n\r\n", mode)
    assert events[0].version == b"HTTP/1.1"


@pytest.mark.parametrize("mode", MODES)
def test_leading_empty_lines_are_ignored(mode):
    events = request(b"\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", mode)
    assert events[0].method == b"GET"


@pytest.mark.parametrize("mode", MODES)
def test_too_many_leading_empty_lines_are_refused(mode):
    assert request_error(b"\r\n" * 9 + b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", mode).status == 400


@pytest.mark.parametrize(
    ("version", "connection", "expected"),
    [
        (b"HTTP/1.1", None, True),
        (b"HTTP/1.1", b"close", False),
        (b"HTTP/1.1", b"Keep-Alive, CLOSE", False),
        (b"HTTP/1.0", None, False),
        (b"HTTP/1.0", b"keep-alive", True),
        (b"HTTP/1.0", b"foo, Keep-Alive", True),
    ],
)
def test_keep_alive_follows_version_and_connection(version, connection, expected):
    fields = [(b"Host", b"h")]
    if connection is not None:
        fields.append((b"Connection", connection))
    head = RequestHead(b"GET", b"/", version, Headers(fields))
    assert head.keep_alive is expected
    assert ResponseHead(version, 200, b"OK", Headers(fields)).keep_alive is expected


@pytest.mark.parametrize(
    ("version", "connections", "expected"),
    [
        (b"HTTP/1.0", [b"Keep-Alive"], True),
        (b"HTTP/1.1", [b"KEEP-ALIVE"], True),
        (b"HTTP/1.0", [b"CLOSE"], False),
        (b"HTTP/1.1", [b"Upgrade"], True),
        (b"HTTP/1.0", [b"Upgrade"], False),
        (b"HTTP/1.1", [b"keep-alive", b"Close"], False),
        (b"HTTP/1.1", [b" \tclose \t"], False),
        (b"HTTP/1.1", [b"", b"upgrade,,"], True),
        (b"HTTP/1.0", [b"foo", b"KEEP-ALIVE "], True),
        (b"HTTP/1.0", [b"keep-alive", b"foo, close"], False),
        (b"HTTP/1.0", [b"keep-alive-ish"], False),
    ],
)
def test_keep_alive_reads_every_connection_field_and_option(version, connections, expected):
    fields = [(b"Host", b"h")] + [(b"Connection", value) for value in connections]
    head = RequestHead(b"GET", b"/", version, Headers(fields))
    assert head.keep_alive is expected


def test_events_are_immutable_values():
    head = RequestHead(b"GET", b"/", b"HTTP/1.1", Headers([(b"Host", b"h")]))
    with pytest.raises(AttributeError):
        head.method = b"POST"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        head.extra = 1  # type: ignore[attr-defined]
    assert head == RequestHead(b"GET", b"/", b"HTTP/1.1", Headers([(b"Host", b"h")]))
    assert head != RequestHead(b"GET", b"/", b"HTTP/1.0", Headers([(b"Host", b"h")]))
    assert Data(b"x") == Data(b"x") and Data(b"x") != Data(b"y")
    assert EndOfMessage() == EndOfMessage(None)
    assert repr(Data(b"x")) == "Data(data=b'x')"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",  # bare CR in value
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\r\n\r\n",  # CR before CRLF
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\nY: b\r\n\r\n",  # bare LF
        b"GET / HTTP/1.1\nHost: h\r\n\r\n",  # bare LF after request line
        b"GET / HTTP/1.1\r\nHost: h\n\n",  # bare LF terminator
        b"GET / HTTP/1.1\r\nHost: h\r\n\n",  # bare LF last line
        b"GET\r / HTTP/1.1\r\nHost: h\r\n\r\n",  # CR in request line
        b"\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",  # bare LF as empty line
    ],
)
def test_bare_cr_or_lf_in_head_is_refused(mode, raw):
    error = request_error(raw, mode)
    assert error.status == 400
    assert "bare" in str(error)


def test_bare_lf_head_is_refused_before_the_head_completes():
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\nHost: h\n")
    with pytest.raises(ProtocolError, match="bare LF"):
        reader.next_event()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", "obs-fold"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX : a\r\n\r\n", "between field name and colon"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX\t: a\r\n\r\n", "between field name and colon"),
        (b"GET / HTTP/1.1\r\nHost: h\r\n: a\r\n\r\n", "empty field name"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX(y): a\r\n\r\n", "invalid character in field name"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX\xff: a\r\n\r\n", "invalid character in field name"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n", "without a colon"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", "control character"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n", "control character"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fb\r\n\r\n", "control character"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nX: \x1b[31m\r\n\r\n", "control character"),
        (b"GET / HTTP/1.1\r\nHost: h\r\nContent_Length: 0\r\n\r\n", "imitates a framing field"),
        (b"GET / HTTP/1.1\r\nHost: h\r\ntransfer_encoding: x\r\n\r\n", "imitates a framing field"),
    ],
)
def test_malformed_field_lines_are_refused(mode, raw, message):
    error = request_error(raw, mode)
    assert error.status == 400
    assert message in str(error)


def test_tab_inside_field_value_is_allowed():
    events = request(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\tb\r\n\r\n", "whole")
    assert events[0].headers.get(b"x") == b"a\tb"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"GET  / HTTP/1.1", 400),
        (b"GET / HTTP/1.1 ", 400),
        (b" GET / HTTP/1.1", 400),
        (b"GET /a b HTTP/1.1", 400),
        (b"GET /a\tb HTTP/1.1", 400),
        (b"G(T / HTTP/1.1", 400),
        (b"G\xc3\x89T / HTTP/1.1", 400),
        (b"GET /\xff HTTP/1.1", 400),
        (b"GET / HTTP/1", 400),
        (b"GET / http/1.1", 400),
        (b"GET / HTTP/1.1.1", 400),
        (b"GET / HTTP/11.1", 400),
        (b"GET / HTTP/01.1", 400),
        (b"GET / HTTP/2.0", 505),
        (b"GET / HTTP/0.9", 505),
        (b"GET /", 400),
        (b"GET", 400),
    ],
)
def test_malformed_request_lines_are_refused(mode, line, status):
    error = request_error(line + b"\r\nHost: h\r\n\r\n", mode)
    assert error.status == status


def test_unsupported_version_is_its_own_class():
    with pytest.raises(UnsupportedVersion):
        run(RequestReader(), b"GET / HTTP/2.0\r\nHost: h\r\n\r\n", "whole")


@pytest.mark.parametrize("mode", MODES)
def test_missing_host_in_http11_is_refused(mode):
    assert "without a Host" in str(request_error(b"GET / HTTP/1.1\r\nX: y\r\n\r\n", mode))


@pytest.mark.parametrize("mode", MODES)
def test_two_host_fields_are_refused(mode):
    error = request_error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", mode)
    assert "more than one Host" in str(error)


@pytest.mark.parametrize(
    "host", [b"a b", b"user@h", b"h/p", b"a,b", b"[::1"]
)
def test_invalid_host_value_is_refused(host):
    if host == b"a,b":
        # sub-delims are legal reg-name characters (RFC 3986)
        assert request(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", "whole")
        return
    error = request_error(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", "whole")
    assert "invalid Host" in str(error)


@pytest.mark.parametrize("host", [b"", b"example.com:8080", b"[::1]:80", b"1.2.3.4"])
def test_valid_host_values_are_accepted(host):
    events = request(b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n", "whole")
    assert events[0].headers.get(b"host") == host


# -- limits --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_request_line_over_limit_gives_414(mode):
    limits = Limits(max_request_line=64)
    error = request_error(b"GET /" + b"a" * 80 + b" HTTP/1.1\r\nHost: h\r\n\r\n", mode, limits)
    assert isinstance(error, TargetTooLong)
    assert error.status == 414


def test_request_line_over_limit_is_refused_before_the_line_ends():
    reader = RequestReader(Limits(max_request_line=64))
    reader.feed(b"GET /" + b"a" * 100)
    with pytest.raises(TargetTooLong):
        reader.next_event()


@pytest.mark.parametrize("mode", MODES)
def test_request_line_over_limit_in_a_head_over_limit_gives_414(mode):
    limits = Limits(max_request_line=64, max_head=100)
    raw = b"GET /" + b"a" * 80 + b" HTTP/1.1\r\nHost: h\r\nX: " + b"b" * 50 + b"\r\n\r\n"
    assert isinstance(request_error(raw, mode, limits), TargetTooLong)


@pytest.mark.parametrize("mode", MODES)
def test_status_line_over_limit_gives_431(mode):
    reader = ResponseReader(Limits(max_request_line=32))
    reader.expect(b"GET")
    error = error_of(reader, b"HTTP/1.1 200 " + b"O" * 40 + b"\r\n\r\n", mode)
    assert isinstance(error, HeadTooLarge)
    assert "start line longer than 32 bytes" in str(error)


def test_request_line_at_limit_is_accepted():
    line = b"GET /" + b"a" * 50 + b" HTTP/1.1"
    events = request(line + b"\r\nHost: h\r\n\r\n", "whole", Limits(max_request_line=len(line)))
    assert events[0].target == b"/" + b"a" * 50


@pytest.mark.parametrize("mode", MODES)
def test_head_over_limit_gives_431(mode):
    limits = Limits(max_head=200)
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: " + b"a" * 300 + b"\r\n\r\n"
    error = request_error(raw, mode, limits)
    assert isinstance(error, HeadTooLarge)
    assert error.status == 431


def test_endless_head_is_refused_once_past_the_limit():
    reader = RequestReader(Limits(max_head=1000))
    reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\n")
    assert reader.next_event() is NEED_DATA
    with pytest.raises(HeadTooLarge):
        for _ in range(100):
            reader.feed(b"X-Slow: loris\r\n")
            assert reader.next_event() is NEED_DATA


def test_head_exactly_at_limit_is_accepted():
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"
    assert request(raw, "whole", Limits(max_head=len(raw)))[0].method == b"GET"
    with pytest.raises(HeadTooLarge):
        request(raw, "whole", Limits(max_head=len(raw) - 1))


@pytest.mark.parametrize("mode", MODES)
def test_too_many_fields_gives_431(mode):
    raw = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: y\r\n" * 10 + b"\r\n"
    error = request_error(raw, mode, Limits(max_fields=10))
    assert error.status == 431
    assert request(raw, "whole", Limits(max_fields=11))[0].method == b"GET"


@pytest.mark.parametrize("mode", MODES)
def test_content_length_over_body_limit_gives_413_at_the_head(mode):
    reader = RequestReader(Limits(max_body=10))
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\n\r\n")
    with pytest.raises(BodyTooLarge) as info:
        reader.next_event()
    assert info.value.status == 413


@pytest.mark.parametrize("mode", MODES)
def test_chunked_body_over_limit_gives_413(mode):
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + b"5\r\nhello\r\n" * 3
    error = request_error(raw, mode, Limits(max_body=12))
    assert error.status == 413


def test_chunked_body_at_limit_is_accepted():
    raw = (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"5\r\nhello\r\n" * 2
        + b"0\r\n\r\n"
    )
    events = request(raw, "whole", Limits(max_body=10))
    assert events[1] == Data(b"hellohello")


def test_reader_stays_failed_after_an_error():
    reader = RequestReader()
    reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\nX : y\r\n\r\n")
    with pytest.raises(ProtocolError) as first:
        reader.next_event()
    reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    with pytest.raises(ProtocolError) as second:
        reader.next_event()
    assert str(second.value) == str(first.value)
    assert reader.failed
    assert reader.take_buffered() == b""


# -- requests: framing ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_content_length_body(mode):
    reader = RequestReader()
    events = run(reader, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", mode)
    assert events[1:] == [Data(b"hello"), EndOfMessage(), PAUSED]
    assert reader.body_framing == "length"
    assert reader.body_length == 5


def test_body_data_is_one_event_per_feed():
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10000\r\n\r\n" + b"a" * 3000)
    assert type(reader.next_event()) is RequestHead
    assert reader.next_event() == Data(b"a" * 3000)
    assert reader.next_event() is NEED_DATA
    reader.feed(b"b" * 7000 + b"GET")
    assert reader.next_event() == Data(b"b" * 7000)
    assert reader.next_event() == EndOfMessage()
    assert reader.take_buffered() == b"GET"


@pytest.mark.parametrize("mode", MODES)
def test_zero_content_length_gives_end_without_data(mode):
    events = request(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", mode)
    assert events[1:] == [EndOfMessage(), PAUSED]


@pytest.mark.parametrize("mode", MODES)
def test_no_framing_fields_means_no_body(mode):
    reader = RequestReader()
    events = run(reader, b"POST / HTTP/1.1\r\nHost: h\r\n\r\nextra", mode)
    assert events[1:] == [EndOfMessage(), PAUSED]
    assert reader.body_framing == "none"
    assert reader.take_buffered() == b"extra"


@pytest.mark.parametrize("mode", MODES)
def test_identical_content_length_repeats_are_normalised(mode):
    events = request(
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 3\r\nX: y\r\ncontent-length: 003\r\n\r\nabc",
        mode,
    )
    assert events[0].headers.pairs == [(b"Host", b"h"), (b"Content-Length", b"3"), (b"X", b"y")]
    assert events[1] == Data(b"abc")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "value",
    [b"3, 4", b"+3", b"-3", b"0x3", b"3.0", b"3 3", b"", b"three", b"1" * 19, b"\xd9\xa3", b"3,"],
)
def test_bad_content_length_is_refused(mode, value):
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: " + value + b"\r\n\r\nabc"
    assert request_error(raw, mode).status == 400


@pytest.mark.parametrize("mode", MODES)
def test_differing_content_length_fields_are_refused(mode):
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    assert "conflicting" in str(request_error(raw, mode))


@pytest.mark.parametrize("mode", MODES)
def test_content_length_and_transfer_encoding_together_are_refused(mode):
    raw = (
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    )
    assert "both Content-Length and Transfer-Encoding" in str(request_error(raw, mode))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("value", "status"),
    [
        (b"chunked, identity", 400),
        (b"chunked, gzip", 400),
        (b"chunked, chunked", 400),
        (b"chunked;foo=bar", 400),
        (b"", 400),
        (b",", 400),
        (b"chunked,", 400),
        (b"\"chunked\"", 400),
        (b"xchunked", 400),
        (b"chunkedx", 400),
        (b"identity", 400),
        (b"gzip", 400),
        (b"chunk", 400),
        (b"gzip, chunked", 501),
        (b"identity, chunked", 501),
        (b"x-custom;a=b, chunked", 501),
    ],
)
def test_transfer_encoding_other_than_final_chunked_is_refused(mode, value, status):
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + value + b"\r\n\r\n0\r\n\r\n"
    error = request_error(raw, mode)
    assert error.status == status
    assert isinstance(error, UnsupportedFraming) == (status == 501)


def test_transfer_encoding_split_over_two_fields_is_refused():
    raw = (
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    assert request_error(raw, "whole").status == 400


@pytest.mark.parametrize("value", [b"chunked", b"Chunked", b"CHUNKED", b" chunked "])
def test_chunked_is_case_insensitive(value):
    raw = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: " + value + b"\r\n\r\n0\r\n\r\n"
    assert request(raw, "whole")[1:] == [EndOfMessage(), PAUSED]


@pytest.mark.parametrize("mode", MODES)
def test_transfer_encoding_in_http10_request_is_refused(mode):
    raw = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert "HTTP/1.0" in str(request_error(raw, mode))


# -- chunked bodies ------------------------------------------------------------

CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("mode", MODES)
def test_chunked_body_with_extensions_and_trailers(mode):
    reader = RequestReader()
    body = (
        b"5;name=value\r\nhello\r\n"
        b"6 ; quoted=\"a \\\"b\\\" c\" ;flag\r\n world\r\n"
        b"A\r\n0123456789\r\n"
        b"0\r\nChecksum: abc\r\nX-Other:  1 \r\n\r\n"
    )
    events = run(reader, CHUNKED_HEAD + body, mode)
    assert reader.body_framing == "chunked"
    assert reader.body_length is None
    assert events[1:] == [
        Data(b"hello world0123456789"),
        EndOfMessage(Headers([(b"Checksum", b"abc"), (b"X-Other", b"1")])),
        PAUSED,
    ]


def test_chunks_already_buffered_come_out_as_one_data_event():
    reader = RequestReader()
    reader.feed(CHUNKED_HEAD + b"1\r\na\r\n1\r\nb\r\n1\r\nc\r\n")
    reader.next_event()
    assert reader.next_event() == Data(b"abc")
    assert reader.next_event() is NEED_DATA


def test_chunked_data_before_a_bad_chunk_is_delivered_then_the_error():
    reader = RequestReader()
    reader.feed(CHUNKED_HEAD + b"3\r\nabc\r\nzz\r\n")
    reader.next_event()
    assert reader.next_event() == Data(b"abc")
    with pytest.raises(ProtocolError, match="invalid chunk size"):
        reader.next_event()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (b"g\r\n", "invalid chunk size"),
        (b"\r\n", "invalid chunk size"),
        (b"-5\r\nhello\r\n", "invalid chunk size"),
        (b"+5\r\nhello\r\n", "invalid chunk size"),
        (b"0x5\r\nhello\r\n", "invalid chunk size"),
        (b" 5\r\nhello\r\n", "invalid chunk size"),
        (b"5 \r\nhello\r\n", "invalid chunk size"),
        (b"5\t\r\nhello\r\n", "invalid chunk size"),
        (b"1_0\r\n", "invalid chunk size"),
        (b"1" * 17 + b"\r\n", "too large"),
        (b"fffffffffffffffff\r\n", "too large"),
        (b"5\nhello\r\n", "bare LF"),
        (b"5\r\nhelloX\r\n", "not followed by CRLF"),
        (b"5\r\nhello\n", "not followed by CRLF"),
        (b"5\r\nhello\r\r\n", "not followed by CRLF"),
        (b"5;\r\nhello\r\n", "invalid chunk extension"),
        (b"5;a=\r\nhello\r\n", "invalid chunk extension"),
        (b"5;a b\r\nhello\r\n", "invalid chunk extension"),
        (b"5;a=\"x\r\nhello\r\n", "invalid chunk extension"),
        (b"5;a\x00\r\nhello\r\n", "invalid chunk extension"),
    ],
)
def test_bad_chunks_are_refused(mode, chunk, message):
    error = request_error(CHUNKED_HEAD + chunk + b"0\r\n\r\n", mode)
    assert error.status == 400
    assert message in str(error)


@pytest.mark.parametrize("mode", MODES)
def test_sixteen_hex_digit_chunk_size_is_parsed_not_overflowed(mode):
    reader = RequestReader(Limits(max_body=100))
    error = error_of(reader, CHUNKED_HEAD + b"ffffffffffffffff\r\nabc", mode)
    assert error.status == 413


@pytest.mark.parametrize("mode", MODES)
def test_long_chunk_extension_is_bounded(mode):
    raw = CHUNKED_HEAD + b"5;x=" + b"a" * 200 + b"\r\nhello\r\n0\r\n\r\n"
    error = request_error(raw, mode, Limits(max_chunk_line=100))
    assert "chunk size line longer" in str(error)
    assert request(raw, "whole", Limits(max_chunk_line=300))[1] == Data(b"hello")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "trailer",
    [
        b"X : y\r\n\r\n",
        b"X: y\r\n z\r\n\r\n",
        b"X: a\x00\r\n\r\n",
        b"X: a\rb\r\n\r\n",
        b"X: a\n\r\n",
        b"\n",
        b"bad\r\n\r\n",
    ],
)
def test_bad_trailers_are_refused(mode, trailer):
    assert request_error(CHUNKED_HEAD + b"0\r\n" + trailer, mode).status == 400


def test_trailer_section_is_bounded_by_max_head():
    raw = CHUNKED_HEAD + b"0\r\n" + b"X: " + b"a" * 500 + b"\r\n\r\n"
    reader = RequestReader(Limits(max_head=300))
    with pytest.raises(HeadTooLarge):
        run(reader, raw, "whole")


# -- pipelining, eof, take_buffered --------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_pipelined_requests_wait_for_start_next(mode):
    reader = RequestReader()
    raw = (
        b"POST /1 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nxy\r\n0\r\n\r\n"
    )
    events = run(reader, raw, mode)
    assert [type(e) for e in events] == [RequestHead, Data, EndOfMessage, type(PAUSED)]
    assert events[0].target == b"/1"
    reader.start_next()
    events = []
    _drain(reader, events)
    assert events[0].target == b"/2"
    assert events[1:] == [EndOfMessage(), PAUSED]
    reader.start_next()
    events = []
    _drain(reader, events)
    assert events[0].target == b"/3"
    assert events[1:] == [Data(b"xy"), EndOfMessage(), PAUSED]
    reader.start_next()
    assert reader.next_event() is NEED_DATA
    reader.feed_eof()
    assert reader.next_event() is CLOSED
    assert reader.next_event() is CLOSED


def test_start_next_before_end_of_message_is_a_programming_error():
    reader = RequestReader()
    reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\na")
    reader.next_event()
    with pytest.raises(RuntimeError):
        reader.start_next()


def test_start_next_is_allowed_after_a_bodyless_head():
    reader = RequestReader()
    reader.feed(b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reader.next_event().target == b"/1"
    reader.start_next()
    assert reader.next_event().target == b"/2"


@pytest.mark.parametrize("mode", MODES)
def test_eof_between_requests_is_a_clean_close(mode):
    events = request(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", mode, eof=True)
    assert events[-1] is PAUSED
    reader = RequestReader()
    reader.feed_eof()
    assert reader.next_event() is CLOSED


def test_eof_after_trailing_empty_line_is_a_clean_close():
    reader = RequestReader()
    reader.feed(b"\r\n")
    reader.feed_eof()
    assert reader.next_event() is CLOSED


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        b"G",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nabc",
        CHUNKED_HEAD + b"5\r\nabc",
        CHUNKED_HEAD + b"5\r\nhello",
        CHUNKED_HEAD + b"5\r\nhello\r\n",
        CHUNKED_HEAD + b"0\r\n",
        CHUNKED_HEAD + b"0\r\nX: y\r\n",
    ],
)
def test_eof_in_the_middle_of_a_request_is_truncation(mode, raw):
    error = request_error(raw, mode, eof=True)
    assert isinstance(error, IncompleteMessage)
    assert "truncated" in str(error)


def test_take_buffered_returns_bytes_after_connect():
    reader = RequestReader()
    reader.feed(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01")
    head = reader.next_event()
    assert head.method == b"CONNECT"
    assert reader.next_event() == EndOfMessage()
    assert reader.next_event() is PAUSED
    assert reader.take_buffered() == b"\x16\x03\x01"
    assert reader.take_buffered() == b""


def test_feed_after_eof_is_a_programming_error():
    reader = RequestReader()
    reader.feed_eof()
    with pytest.raises(RuntimeError):
        reader.feed(b"x")


def test_sentinels_have_readable_reprs():
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(PAUSED) == "PAUSED"
    assert repr(CLOSED) == "CLOSED"


# -- responses -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_response_with_content_length(mode):
    events = response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", mode)
    assert events == [
        ResponseHead(b"HTTP/1.1", 200, b"OK", Headers([(b"Content-Length", b"3")])),
        Data(b"abc"),
        EndOfMessage(),
        PAUSED,
    ]


@pytest.mark.parametrize("mode", MODES)
def test_response_reason_may_be_empty_or_missing(mode):
    assert response(b"HTTP/1.1 204 \r\n\r\n", mode)[0].reason == b""
    assert response(b"HTTP/1.1 204\r\n\r\n", mode)[0].reason == b""
    assert response(b"HTTP/1.1 404 Not  Found\t!\r\n\r\n", mode)[0].reason == b"Not  Found\t!"


@pytest.mark.parametrize("mode", MODES)
def test_chunked_response_with_trailers(mode):
    events = response(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n", mode
    )
    assert events[1:] == [Data(b"abc"), EndOfMessage(Headers([(b"T", b"1")])), PAUSED]


@pytest.mark.parametrize("mode", MODES)
def test_response_without_length_reads_until_eof(mode):
    reader = ResponseReader()
    reader.expect(b"GET")
    events = run(reader, b"HTTP/1.0 200 OK\r\n\r\nhello world", mode, eof=True)
    assert reader.body_framing == "eof"
    assert events[1:] == [Data(b"hello world"), EndOfMessage(), PAUSED]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nContent-",
    ],
)
def test_eof_in_the_middle_of_a_response_is_truncation(mode, raw):
    error = response_error(raw, mode, eof=True)
    assert isinstance(error, IncompleteMessage)


def test_truncated_response_hands_out_data_before_the_error():
    reader = ResponseReader()
    reader.expect(b"GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    reader.feed_eof()
    reader.next_event()
    assert reader.next_event() == Data(b"abc")
    with pytest.raises(IncompleteMessage):
        reader.next_event()


def test_eof_before_any_response_byte_is_closed():
    reader = ResponseReader()
    reader.expect(b"GET")
    reader.feed_eof()
    assert reader.next_event() is CLOSED


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", [204, 304])
def test_204_and_304_have_no_body_even_with_content_length(mode, status):
    reader = ResponseReader()
    reader.expect(b"GET")
    raw = b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\nHTTP/1.1" % status
    events = run(reader, raw, mode)
    assert events[1:] == [EndOfMessage(), PAUSED]
    assert reader.body_framing == "none"
    assert reader.take_buffered() == b"HTTP/1.1"


@pytest.mark.parametrize("mode", MODES)
def test_head_response_has_no_body(mode):
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nTransfer-Encoding: x\r\n\r\n"
    # framing fields are still checked: this one is refused
    assert response_error(raw, mode, method=b"HEAD").status == 400
    events = response(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", mode, method=b"HEAD")
    assert events[0].headers.get(b"content-length") == b"1000"
    assert events[1:] == [EndOfMessage(), PAUSED]


@pytest.mark.parametrize("mode", MODES)
def test_interim_responses_come_before_the_final_one_without_start_next(mode):
    raw = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    events = response(raw, mode)
    assert [getattr(e, "status", None) for e in events[:3]] == [100, 103, 200]
    assert events[3:] == [Data(b"ok"), EndOfMessage(), PAUSED]


@pytest.mark.parametrize("mode", MODES)
def test_101_switches_protocols_and_pauses(mode):
    reader = ResponseReader()
    reader.expect(b"GET")
    raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"
    events = run(reader, raw, mode)
    assert events[0].status == 101
    assert events[1:] == [PAUSED]
    assert reader.take_buffered() == b"\x81\x05hello"


@pytest.mark.parametrize("mode", MODES)
def test_2xx_to_connect_has_no_body_and_pauses(mode):
    reader = ResponseReader()
    reader.expect(b"CONNECT")
    events = run(reader, b"HTTP/1.1 200 Connection established\r\n\r\nTLS", mode)
    assert events[0].status == 200
    assert events[1:] == [PAUSED]
    assert reader.take_buffered() == b"TLS"


def test_non_2xx_to_connect_has_a_normal_body():
    events = response(b"HTTP/1.1 407 Auth\r\nContent-Length: 2\r\n\r\nno", "whole", b"CONNECT")
    assert events[1:] == [Data(b"no"), EndOfMessage(), PAUSED]


def test_responses_follow_their_expected_methods():
    reader = ResponseReader()
    reader.expect(b"HEAD")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n")
    assert reader.next_event().status == 200
    assert reader.next_event() == EndOfMessage()
    reader.start_next()
    reader.expect(b"GET")
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc")
    reader.next_event()
    assert reader.next_event() == Data(b"abc")


def test_unsolicited_response_is_refused():
    reader = ResponseReader()
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ProtocolError, match="no request outstanding"):
        reader.next_event()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"HTTP/1.1 2000 OK\r\n\r\n", 400),
        (b"HTTP/1.1 099 Low\r\n\r\n", 400),
        (b"HTTP/1.1 600 High\r\n\r\n", 400),
        (b"HTTP/1.1 20 OK\r\n\r\n", 400),
        (b"HTTP/1.1  200 OK\r\n\r\n", 400),
        (b"HTTP/1.1 200 O\x00K\r\n\r\n", 400),
        (b"HTTP/2.0 200 OK\r\n\r\n", 505),
        (b"ICY 200 OK\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", 400),
    ],
)
def test_malformed_responses_are_refused(mode, raw, status):
    assert response_error(raw, mode).status == status


def test_unknown_transfer_coding_response_is_unsupported_framing_class():
    with pytest.raises(ProtocolError) as info:
        response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: br\r\n\r\n", "whole")
    assert isinstance(info.value, UnsupportedFraming)
    assert info.value.status == 501


def test_eof_body_is_bounded_by_max_body():
    reader = ResponseReader(Limits(max_body=5))
    reader.expect(b"GET")
    reader.feed(b"HTTP/1.1 200 OK\r\n\r\n123456")
    reader.next_event()
    with pytest.raises(BodyTooLarge):
        reader.next_event()


# -- caches of parsed lines ------------------------------------------------------


def test_parsed_line_caches_stay_bounded_under_distinct_lines():
    from multiproxy.http1 import _parser

    reader = RequestReader()
    for i in range(_parser._LINE_CACHE_MAX + 500):
        reader.feed(b"GET / HTTP/1.1\r\nHost: h%d\r\nX-%d: %d\r\n\r\n" % (i, i, i))
        assert reader.next_event().headers.get(b"x-%d" % i) == b"%d" % i
        reader.next_event()
        reader.start_next()
    assert len(_parser._LINE_CACHE) <= _parser._LINE_CACHE_MAX
    assert len(_parser._NAME_CACHE) <= _parser._LINE_CACHE_MAX
    assert len(_parser._GOOD_HOSTS) <= _parser._LINE_CACHE_MAX


def test_parsed_status_lines_stay_bounded_under_distinct_reasons():
    from multiproxy.http1 import _parser

    reader = ResponseReader()
    for i in range(_parser._LINE_CACHE_MAX + 500):
        reader.expect(b"GET")
        reader.feed(b"HTTP/1.1 200 Fine %d\r\nContent-Length: 0\r\n\r\n" % i)
        assert reader.next_event().reason == b"Fine %d" % i
        reader.next_event()
        reader.start_next()
    assert len(_parser._STATUS_LINES) <= _parser._LINE_CACHE_MAX


def test_a_cached_line_does_not_excuse_a_bad_neighbour():
    good = b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"
    assert request(good, "whole")[0].headers.get(b"accept") == b"*/*"
    for bad in (
        b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\nX: \x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n Accept: */*\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nHost: h\r\nAccept: */*\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nAccept : */*\r\n\r\n",
    ):
        assert request_error(bad, "whole").status == 400


@pytest.mark.parametrize(
    ("good", "bad", "message"),
    [
        # cached field lines, request line new and holding a control character
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
            b"GET /\x01 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
            "control character b'\\x01' in the header section",
        ),
        # cached field lines, bare CR in the request line
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
            b"GET /\r HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
            "bare CR in the header section",
        ),
    ],
)
def test_a_cached_field_line_does_not_excuse_a_bad_request_line(good, bad, message):
    assert request(good, "whole")[0].method == b"GET"
    error = request_error(bad, "whole")
    assert error.status == 400
    assert str(error) == message


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: \x7f\r\n\r\nok", "control character"),
        (b"HTTP/1.1 200 OK\x00\r\nContent-Length: 2\r\n\r\nok", "control character"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n Content-Length: 2\r\n\r\nok", "obs-fold"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", "conflicting"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\rX: 1\r\n\r\nok", "bare CR"),
    ],
)
def test_a_cached_status_line_does_not_excuse_a_bad_neighbour(bad, message):
    good = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert response(good, "whole")[0].status == 200
    error = response_error(bad, "whole")
    assert error.status == 400
    assert message in str(error)


def test_a_cached_status_line_still_needs_a_request_outstanding():
    good = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert response(good, "whole")[0].status == 200
    reader = ResponseReader()
    reader.feed(good)
    with pytest.raises(ProtocolError, match="no request outstanding"):
        reader.next_event()
