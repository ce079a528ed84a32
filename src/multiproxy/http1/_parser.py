"""
A strict, sans-I/O HTTP/1.x message reader.

`RequestReader` and `ResponseReader` take bytes with ``feed`` and hand out
events with ``next_event``: a head (`RequestHead` / `ResponseHead`), then
`Data` for the body, then `EndOfMessage`.  They never touch a socket, so the
Twisted protocols feed them from ``dataReceived`` and tests feed them one byte
at a time.

The grammar is RFC 9112 read strictly: anything that lets two parsers frame
the same bytes differently (request smuggling) is refused with a
`ProtocolError` carrying the status to answer, and the reader then stays
failed.  docs/parser.md lists every rule with its status and the reason.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Final, NamedTuple, Union

from multiproxy import _memo as memo
from multiproxy.http1._headers import Headers, adopt
from multiproxy.pipeline._errors import (
    BodyTooLarge,
    HeadTooLarge,
    ProtocolError,
    TargetTooLong,
    UnsupportedFraming,
)

__all__ = [
    "CLOSED",
    "NEED_DATA",
    "PAUSED",
    "Data",
    "EndOfMessage",
    "Event",
    "IncompleteMessage",
    "Limits",
    "RequestHead",
    "RequestReader",
    "ResponseHead",
    "ResponseReader",
    "UnsupportedVersion",
]


class IncompleteMessage(ProtocolError):
    """The peer closed its side in the middle of a message: the message is truncated."""

    status = 400
    reason = b"Bad Request"


class UnsupportedVersion(ProtocolError):
    """The message uses an HTTP major version other than 1 (RFC 9110 15.6.6)."""

    status = 505
    reason = b"HTTP Version Not Supported"


class _Sentinel:
    """A named singleton returned by `next_event` instead of an event."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name


NEED_DATA: Final = _Sentinel("NEED_DATA")
"""More bytes are needed before the next event."""

PAUSED: Final = _Sentinel("PAUSED")
"""The message is complete (or the connection switched protocols); call ``start_next``."""

CLOSED: Final = _Sentinel("CLOSED")
"""The peer closed its side cleanly between messages."""


def _keep_alive(version: bytes, headers: Headers) -> bool:
    # RFC 9112 9.3: "close" always wins; HTTP/1.1 persists by default,
    # HTTP/1.0 only with the "keep-alive" connection option.
    values = headers.get_all(b"connection")
    if not values:
        return version == b"HTTP/1.1"
    if len(values) == 1:  # the usual "keep-alive" or "close" alone
        option = values[0].lower()
        if option == b"keep-alive":
            return True
        if option == b"close":
            return False
    # The connection options, as Headers.tokens gives them (empty ones are
    # harmless here), without its per-element Python loop.
    tokens = [token.strip(b" \t") for token in b",".join(values).lower().split(b",")]
    if b"close" in tokens:
        return False
    if version == b"HTTP/1.1":
        return True
    return b"keep-alive" in tokens


# The events are NamedTuples rather than frozen dataclasses: as immutable,
# but a frozen dataclass's __init__ makes one object.__setattr__ call per
# field, and the reader builds several events per message.  The reader
# builds them with _new_event, skipping even the generated __new__ (1.2 %
# of a forwarded request's instructions, bench/hotpath_bench.py
# --instructions).  They compare as tuples do: tell them apart by type.

_new_event = tuple.__new__


class RequestHead(NamedTuple):
    """A parsed request line and header section."""

    method: bytes
    target: bytes
    version: bytes
    headers: Headers

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this one (RFC 9112 9.3)."""
        return _keep_alive(self.version, self.headers)


class ResponseHead(NamedTuple):
    """A parsed status line and header section."""

    version: bytes
    status: int
    reason: bytes
    headers: Headers

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another response after this one (RFC 9112 9.3)."""
        return _keep_alive(self.version, self.headers)


class Data(NamedTuple):
    """A piece of message body (transfer coding already removed)."""

    data: bytes


class EndOfMessage(NamedTuple):
    """The body is complete; ``trailers`` holds a chunked body's trailer fields, if any."""

    trailers: Headers | None = None


_END = EndOfMessage()  # the usual end, shared: events are immutable

Event = Union[RequestHead, ResponseHead, Data, EndOfMessage, _Sentinel]


@dataclass(frozen=True)
class Limits:
    """
    Bounds on what a reader buffers.

    ``max_request_line`` bounds the request (or status) line, ``max_head`` the
    whole head (start line, fields and the empty line; also the trailer
    section), ``max_fields`` the number of field lines, ``max_body`` the
    decoded body (None: unbounded, streamed), ``max_chunk_line`` one chunk
    size line with its extensions.
    """

    max_request_line: int = 8192
    max_head: int = 65536
    max_fields: int = 100
    max_body: int | None = None
    max_chunk_line: int = 4096


# -- grammar ---------------------------------------------------------------

_TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"
_TOKEN_RE = re.compile(rb"[" + _TCHAR + rb"]+")
# RFC 9112 3.2 / RFC 3986: a request target holds URI characters.  Refused
# here: '"', "<", ">" (no URI holds them raw; browsers always
# percent-encode them) and "#" (a fragment is never sent).  Kept, though
# RFC 3986 excludes them too: "\\", "^", "`", "{", "|", "}", which
# browsers send unencoded in query strings (the URL Standard's query
# percent-encode set leaves them), so refusing them would break real sites;
# a "\\" before the query is refused in _head_event.
_TARGET_CHARS = rb"A-Za-z0-9\-._~!$&'()*+,;=:@/?%\[\]\\^`{|}"
# Major version 1 only: any other fails here and _bad_request_line names it (505).
_REQUEST_LINE_RE = re.compile(
    rb"([" + _TCHAR + rb"]+) ([" + _TARGET_CHARS + rb"]+) HTTP/1\.([0-9])"
)
_STATUS_LINE_RE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
# Controls other than HTAB, CR and LF; CR and LF are checked by counting.
_HEAD_CTL_RE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Bytes that may appear anywhere in a head: HTAB, SP, VCHAR, obs-text.
_ORDINARY = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
# RFC 9110 7.2 / RFC 3986: Host = uri-host [ ":" port ]
_HOST_RE = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*(?::[0-9]*)?"
)
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CHUNK_SIZE_LINE_RE = re.compile(rb"([0-9A-Fa-f]{1,16})\r\n")  # the common case: no extension
_QUOTED = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
# RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
_CHUNK_EXT_RE = re.compile(
    rb"(?:[ \t]*;[ \t]*[" + _TCHAR + rb"]+(?:[ \t]*=[ \t]*(?:[" + _TCHAR + rb"]+|" + _QUOTED + rb"))?)*"
)

# Field lines already parsed -> (name, value), and -> lower-case name: two
# dicts filled and cleared together, so that a head whose lines all repeat
# gets both lists Headers keeps with one C-level map each.  Bounded.  Only
# lines of a section that passed the byte check (_check_section) go in, so
# a hit also proves the line free of CR, LF and control characters.
_LINE_CACHE_MAX = 4096
_LINE_CACHE_MAX_LEN = 256
_LINE_CACHE = memo.table("http1.line-pairs", _LINE_CACHE_MAX)
_LINE_NAMES = memo.table("http1.line-names", _LINE_CACHE_MAX)
_cached_pair = _LINE_CACHE.__getitem__
_cached_name = _LINE_NAMES.__getitem__
# Status lines already parsed -> (version, status, reason); bounded likewise.
# A status line matching _STATUS_LINE_RE is free of CR, LF and controls.
_STATUS_LINES = memo.table("http1.status-lines", _LINE_CACHE_MAX)
_GOOD_HOSTS = memo.table("http1.valid-hosts", _LINE_CACHE_MAX)  # Host values checked
_NAME_CACHE = memo.table("http1.field-names", _LINE_CACHE_MAX)  # valid name -> lower case

_FRAMING_LOOKALIKES = frozenset({b"content-length", b"transfer-encoding"})

_MAX_EMPTY_LINES = 8
"""Empty lines tolerated before a start line (RFC 9112 2.2 asks for at least one)."""

_MAX_CONTENT_LENGTH_DIGITS = 18  # < 2**63: no 64-bit peer overflows on what we accept

# reader states
_HEAD = 0
_BODY_NONE = 1
_BODY_LENGTH = 2
_BODY_CHUNKED = 3
_BODY_EOF = 4
_DONE = 5
_SWITCHED = 6
_CLOSED = 7
_FAILED = 8

# chunked sub-states
_CHUNK_SIZE = 0
_CHUNK_DATA = 1
_CHUNK_CRLF = 2
_CHUNK_TRAILER = 3


def _field_name(name: bytes) -> bytes:
    """The lower-case form of a field name, or a ProtocolError naming what is wrong."""
    lname = _NAME_CACHE.get(name)
    if lname is not None:
        return lname
    if _TOKEN_RE.fullmatch(name) is None:
        if not name:
            raise ProtocolError("empty field name")
        if name[:1] in b" \t":
            raise ProtocolError("obsolete line folding (obs-fold) in the header section")
        if name[-1:] in b" \t":
            raise ProtocolError(
                f"whitespace between field name and colon: {_show(name)}"
            )
        raise ProtocolError(f"invalid character in field name {_show(name)}")
    lname = name.lower()
    if b"_" in lname and lname.replace(b"_", b"-") in _FRAMING_LOOKALIKES:
        # CGI-style backends map "_" and "-" to the same variable, so this
        # field would frame the message there but not here.
        raise ProtocolError(f"field name {_show(name)} imitates a framing field")
    return _NAME_CACHE.remember(name, lname)


def _show(value: bytes, limit: int = 40) -> str:
    """A short, printable rendering of untrusted bytes for error messages."""
    text = repr(value[:limit])[2:-1]
    return text + ("..." if len(value) > limit else "")


def _diagnose_section(section: bytes, what: str = "header") -> None:
    """Raise the error for a section holding a bare CR, bare LF or control character."""
    bad = _HEAD_CTL_RE.search(section)
    if bad is not None:
        raise ProtocolError(f"control character {bad.group()!r} in the {what} section")
    crlf = section.count(b"\r\n")
    if section.count(b"\r") != crlf:
        raise ProtocolError(f"bare CR in the {what} section")
    raise ProtocolError(f"bare LF in the {what} section (lines must end with CRLF)")


def _check_section(section: bytes, lines: int, what: str = "header") -> None:
    """Refuse a section of ``lines`` CRLF-ended lines holding a bare CR or LF or a control."""
    # What is left after deleting ordinary bytes must be exactly one CRLF per line.
    if section.translate(None, _ORDINARY) != b"\r\n" * lines:
        _diagnose_section(section, what)


def _check_head(start: bytes, lines: list[bytes]) -> None:
    """`_check_section` for a head split into its start line and field lines."""
    lines = [start, *lines, b""]
    _check_section(b"\r\n".join(lines), len(lines) - 1)


def _cached_names(lines: list[bytes], limits: Limits) -> list[bytes] | None:
    """
    The lower-case names of field lines if every one was seen before (most
    repeat verbatim from one message to the next: User-Agent, Accept...),
    else None; their pairs are then ``list(map(_cached_pair, lines))``.
    """
    if len(lines) > limits.max_fields:
        return None
    try:
        return list(map(_cached_name, lines))
    except KeyError:
        return None


def _parse_fields(
    lines: list[bytes], limits: Limits
) -> tuple[list[tuple[bytes, bytes]], list[bytes]]:
    """
    The (name, value) pairs and lower-case names of the field lines of a
    section already through `_check_section`, caching each line.
    """
    if len(lines) > limits.max_fields:
        raise HeadTooLarge(f"too many header fields (more than {limits.max_fields})")
    names = _NAME_CACHE
    pairs = []
    lower = []
    for line in lines:
        pair = _LINE_CACHE.get(line)
        if pair is None:
            name, colon, value = line.partition(b":")
            if not colon:
                if line[:1] in b" \t":
                    raise ProtocolError("obsolete line folding (obs-fold) in the header section")
                raise ProtocolError(f"header field line without a colon: {_show(line)}")
            lname = names.get(name) or _field_name(name)
            pair = (name, value.strip(b" \t"))
            if len(line) <= _LINE_CACHE_MAX_LEN:
                if len(_LINE_CACHE) >= _LINE_CACHE_MAX:
                    _LINE_CACHE.clear()  # hostile lines cannot pin it full
                    _LINE_NAMES.clear()
                _LINE_CACHE[line] = pair
                _LINE_NAMES[line] = lname
        else:
            lname = _LINE_NAMES[line]
        pairs.append(pair)
        lower.append(lname)
    return pairs, lower


def _field_values(pairs: list[tuple[bytes, bytes]], lower: list[bytes], name: bytes) -> list[bytes]:
    """The values of the fields called ``name`` (lower case), in order."""
    return [pair[1] for pair, lname in zip(pairs, lower) if lname == name]


def _content_length(values: list[bytes]) -> int:
    """
    The one length named by all Content-Length fields (RFC 9110 8.6).

    Identical repeats (``5, 5``) are accepted as RFC 9110 8.6 allows;
    anything else that is not plain decimal digits is refused.
    """
    result: int | None = None
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if not item.isdigit():  # bytes.isdigit is ASCII-only: no signs, spaces, hex
                raise ProtocolError(f"invalid Content-Length {_show(value)}")
            if len(item) > _MAX_CONTENT_LENGTH_DIGITS:
                raise ProtocolError(f"Content-Length too large: {_show(value)}")
            length = int(item)
            if result is not None and length != result:
                raise ProtocolError("conflicting Content-Length values")
            result = length
    if result is None:
        raise ProtocolError("empty Content-Length")
    return result


def _length_and_headers(
    pairs: list[tuple[bytes, bytes]], lower: list[bytes], headers: Headers
) -> tuple[int, Headers]:
    """
    The body length named by the Content-Length fields of ``pairs``
    (`_content_length`), and ``headers`` (made of ``pairs`` and their
    lower-case names ``lower``) with those fields normalised to one plain
    decimal field.
    """
    if lower.count(b"content-length") == 1:
        value = pairs[lower.index(b"content-length")][1]
        # The usual field: plain digits with no leading zero, nothing to normalise.
        if (
            value.isdigit()
            and len(value) <= _MAX_CONTENT_LENGTH_DIGITS
            and (value[0] != 48 or len(value) == 1)  # 48: b"0"
        ):
            return int(value), headers
    values = _field_values(pairs, lower, b"content-length")
    length = _content_length(values)
    if len(values) > 1 or values[0] != b"%d" % length:
        headers = _normalise_content_length(headers, length)
    return length, headers


def _check_chunked(values: list[bytes], request: bool) -> None:
    """
    Check that Transfer-Encoding is exactly one final "chunked"; refuse
    anything else.  A request whose final coding is not chunked has no
    reliable length: 400 (RFC 9112 6.3).  Chunked repeated or with
    parameters: 400.  Other codings before a final chunked, or (responses)
    any coding without chunked: 501, only chunked is implemented.
    """
    if len(values) == 1 and values[0] == b"chunked":
        return
    codings = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t")
            if not item:
                raise ProtocolError(f"empty element in Transfer-Encoding {_show(value)}")
            codings.append(item)
    if not codings:
        raise ProtocolError("empty Transfer-Encoding")
    names = []
    for coding in codings:
        name, semi, params = coding.partition(b";")
        name = name.rstrip(b" \t").lower()
        if _TOKEN_RE.fullmatch(name) is None:
            raise ProtocolError(f"invalid transfer coding {_show(coding)}")
        if name == b"chunked" and semi:
            raise ProtocolError("the chunked transfer coding takes no parameters")
        names.append(name)
    shown = _show(b", ".join(names))
    if names.count(b"chunked") > 1:
        raise ProtocolError("chunked transfer coding applied more than once")
    if names[-1] != b"chunked":
        if b"chunked" in names:
            raise ProtocolError("chunked is not the final transfer coding")
        if request:
            raise ProtocolError(
                f"request body length cannot be determined: Transfer-Encoding {shown} "
                "does not end with chunked"
            )
    if len(names) > 1 or names[0] != b"chunked":
        raise UnsupportedFraming(
            f"unsupported transfer coding {shown} (only chunked is implemented)"
        )


def _version(major: bytes, minor: bytes) -> bytes:
    if major != b"1":
        raise UnsupportedVersion(f"HTTP/{major.decode()}.{minor.decode()} is not supported")
    # RFC 9110 2.5: a higher minor version is handled as the highest we implement.
    return b"HTTP/1.0" if minor == b"0" else b"HTTP/1.1"


# -- readers ---------------------------------------------------------------


class _Reader:
    """What requests and responses share: buffering, head search, body framing."""

    body_framing: str
    """How the current body is delimited: "none", "length", "chunked" or "eof"."""

    body_length: int | None
    """The declared body length when ``body_framing`` is "length"."""

    _start_line_too_long: type[ProtocolError] = HeadTooLarge

    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.body_framing = "none"
        self.body_length = None
        self._buf = bytearray()
        self._eof = False
        self._state = _HEAD
        self._error: ProtocolError | None = None
        self._scanned = 0  # head bytes known to hold no terminator and no bare LF
        self._empty_lines = 0
        self._remaining = 0  # of a length body or the current chunk
        self._body_seen = 0
        self._chunk_state = _CHUNK_SIZE

    # -- input -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append received bytes to the buffer (cheap; parsing happens in `next_event`)."""
        if self._eof:
            raise RuntimeError("feed() after feed_eof()")
        if self._state != _FAILED:
            self._buf += data

    def feed_eof(self) -> None:
        """Record that the peer closed its write side."""
        self._eof = True

    def take_buffered(self) -> bytes:
        """Remove and return the bytes not parsed yet (for a switch to a byte relay)."""
        data = bytes(self._buf)
        self._buf.clear()
        self._scanned = 0
        return data

    def start_next(self) -> None:
        """Move on to the next message after `EndOfMessage` (or a body-less head)."""
        if self._state not in (_DONE, _BODY_NONE):
            raise RuntimeError("start_next() called before the message was complete")
        self._state = _HEAD
        self._scanned = 0
        self._empty_lines = 0
        self.body_framing = "none"
        self.body_length = None

    @property
    def buffered(self) -> int:
        """How many received bytes wait past the last event (part of a head, pipelined messages, junk)."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        """True once the reader has raised a ProtocolError; it then stays failed."""
        return self._state == _FAILED

    # -- events ------------------------------------------------------------

    def next_event(self) -> Event:
        """
        The next event: a head, `Data`, `EndOfMessage`, or one of the
        sentinels `NEED_DATA`, `PAUSED`, `CLOSED`.  Raises a `ProtocolError`
        subclass on any violation, and again on every later call.
        """
        state = self._state
        try:
            # In the order a proxy meets them most: one head, one or two
            # length-body events, the end of a body-less message, a pause.
            # The head and length-body steps are written out here rather than
            # called: a Python call costs as much as the rest of a step.
            if state == _HEAD:
                buf = self._buf
                if buf and buf[0] == 13:  # 13: CR, perhaps empty lines first
                    self._skip_empty_lines()
                scanned = self._scanned
                end = buf.find(b"\r\n\r\n", scanned - 3 if scanned > 3 else 0)
                if end < 0:
                    return self._head_incomplete()
                limits = self.limits
                if end + 4 > limits.max_head:
                    self._check_start_line()
                    raise HeadTooLarge(f"header section larger than {limits.max_head} bytes")
                if end + 4 == len(buf):  # the head alone, as most requests come: no slice
                    lines = bytes(buf).split(b"\r\n")
                    del lines[-2:]
                    buf.clear()
                else:
                    lines = bytes(buf[:end]).split(b"\r\n")
                    del buf[: end + 4]
                self._scanned = 0
                self._empty_lines = 0
                if len(lines[0]) > limits.max_request_line:
                    raise self._start_line_error()
                # The subclass checks the bytes of the lines (_check_head), and only
                # when the start line or a field line is new.
                return self._head_event(lines)
            if state == _BODY_LENGTH:
                remaining = self._remaining
                buf = self._buf
                if remaining and remaining >= len(buf) and buf:
                    # The rest of the buffer is body, as when a body comes whole.
                    data = bytes(buf)
                    buf.clear()
                    self._remaining = remaining - len(data)
                    return _new_event(Data, (data,))
                return self._read_length()
            if state == _BODY_NONE:
                self._state = _DONE
                return _END
            if state == _DONE or state == _SWITCHED:
                return PAUSED
            if state == _BODY_CHUNKED:
                return self._read_chunked()
            if state == _BODY_EOF:
                return self._read_until_eof()
            if state == _CLOSED:
                return CLOSED
        except ProtocolError as error:
            self._fail(error)
            raise
        assert self._error is not None
        raise self._error.with_traceback(None)

    def _fail(self, error: ProtocolError) -> None:
        self._state = _FAILED
        self._error = error
        self._buf.clear()

    # -- head --------------------------------------------------------------

    def _skip_empty_lines(self) -> None:
        buf = self._buf
        while buf[:2] == b"\r\n":
            self._empty_lines += 1
            if self._empty_lines > _MAX_EMPTY_LINES:
                raise ProtocolError("too many empty lines before the start line")
            del buf[:2]
            self._scanned = 0

    def _check_start_line(self) -> None:
        """Refuse a buffered start line longer than ``max_request_line``."""
        if self._buf.find(b"\r\n", 0, self.limits.max_request_line + 2) < 0:
            raise self._start_line_error()

    def _start_line_error(self) -> ProtocolError:
        return self._start_line_too_long(
            f"start line longer than {self.limits.max_request_line} bytes"
        )

    def _head_incomplete(self) -> Event:
        """No complete head buffered: check what there is so far, then wait for more."""
        buf = self._buf
        size = len(buf)
        if not size:
            if self._eof:
                self._state = _CLOSED
                return CLOSED
            return NEED_DATA
        limits = self.limits
        scanned = self._scanned
        # Refuse a bare LF as soon as it arrives rather than waiting for
        # a CRLF CRLF that a bare-LF peer will never send.
        if buf.count(b"\n", scanned) != buf.count(b"\r\n", scanned - 1 if scanned else 0):
            raise ProtocolError("bare LF in the header section (lines must end with CRLF)")
        if size > limits.max_request_line + 1:
            self._check_start_line()
        if size > limits.max_head:
            raise HeadTooLarge(f"header section larger than {limits.max_head} bytes")
        if self._eof:
            raise IncompleteMessage(
                "connection closed in the middle of a message head (truncated)"
            )
        self._scanned = size
        return NEED_DATA

    def _head_event(self, lines: list[bytes]) -> Event:
        """The event for a complete head, split into lines (start line first)."""
        raise NotImplementedError

    # -- bodies ------------------------------------------------------------

    def _take(self, n: int) -> bytes:
        buf = self._buf
        if n >= len(buf):
            data = bytes(buf)
            buf.clear()
            return data
        with memoryview(buf) as view:
            data = view[:n].tobytes()
        del buf[:n]
        return data

    def _begin_body(self, framing: str, length: int | None) -> None:
        self.body_framing = framing
        self.body_length = length
        self._body_seen = 0
        max_body = self.limits.max_body
        if framing == "none":
            self._state = _BODY_NONE
        elif framing == "length":
            assert length is not None
            if max_body is not None and length > max_body:
                raise BodyTooLarge(f"body of {length} bytes is larger than the limit of {max_body}")
            self._remaining = length
            self._state = _BODY_LENGTH if length else _BODY_NONE
        elif framing == "chunked":
            self._chunk_state = _CHUNK_SIZE
            self._state = _BODY_CHUNKED
        else:
            self._state = _BODY_EOF

    def _read_length(self) -> Event:
        remaining = self._remaining
        if not remaining:
            self._state = _DONE
            return _END
        if not self._buf:
            if self._eof:
                raise IncompleteMessage(
                    f"connection closed with {remaining} bytes of the body missing (truncated)"
                )
            return NEED_DATA
        data = self._take(remaining)
        self._remaining = remaining - len(data)
        return _new_event(Data, (data,))

    def _read_until_eof(self) -> Event:
        if self._buf:
            data = self._take(len(self._buf))
            self._body_seen += len(data)
            max_body = self.limits.max_body
            if max_body is not None and self._body_seen > max_body:
                raise BodyTooLarge(f"body larger than the limit of {max_body} bytes")
            return _new_event(Data, (data,))
        if self._eof:
            self._state = _DONE
            return _END
        return NEED_DATA

    def _read_chunked(self) -> Event:
        # Walk every chunk already buffered with a local offset and hand the
        # data out as one Data event: one copy, one buffer trim.
        buf = self._buf
        pos = 0
        spans: list[tuple[int, int]] = []
        try:
            while True:
                cstate = self._chunk_state
                if cstate == _CHUNK_DATA:
                    avail = len(buf) - pos
                    if not avail:
                        break
                    n = self._remaining if self._remaining < avail else avail
                    spans.append((pos, pos + n))
                    pos += n
                    self._remaining -= n
                    if not self._remaining:
                        self._chunk_state = _CHUNK_CRLF
                elif cstate == _CHUNK_SIZE:
                    match = _CHUNK_SIZE_LINE_RE.match(buf, pos)
                    if match is not None:
                        size = int(match.group(1), 16)
                        end = match.end()
                    else:
                        parsed = self._chunk_size_line(pos)
                        if parsed is None:
                            break
                        size, end = parsed
                    max_body = self.limits.max_body
                    if max_body is not None and self._body_seen + size > max_body:
                        raise BodyTooLarge(
                            f"chunked body larger than the limit of {max_body} bytes"
                        )
                    pos = end
                    self._body_seen += size
                    if size:
                        self._remaining = size
                        self._chunk_state = _CHUNK_DATA
                    else:
                        self._chunk_state = _CHUNK_TRAILER
                        self._scanned = 0
                elif cstate == _CHUNK_CRLF:
                    if len(buf) - pos < 2:
                        if len(buf) > pos and buf[pos] != 13:
                            raise ProtocolError("chunk data not followed by CRLF")
                        break
                    if buf[pos] != 13 or buf[pos + 1] != 10:
                        raise ProtocolError("chunk data not followed by CRLF")
                    pos += 2
                    self._chunk_state = _CHUNK_SIZE
                else:
                    if spans:
                        break
                    del buf[:pos]
                    return self._read_trailers()
        except ProtocolError:
            # State only advances past steps that succeeded, so the error
            # comes back on the next call; hand out the body read so far first.
            if not spans:
                raise
        if spans:
            with memoryview(buf) as view:
                if len(spans) == 1:
                    data = view[spans[0][0] : spans[0][1]].tobytes()
                else:
                    data = b"".join([view[start:end] for start, end in spans])
            del buf[:pos]
            return _new_event(Data, (data,))
        del buf[:pos]
        if self._eof:
            raise IncompleteMessage("connection closed in the middle of a chunked body (truncated)")
        return NEED_DATA

    def _chunk_size_line(self, pos: int) -> tuple[int, int] | None:
        """Parse a chunk size line with extensions at ``pos``: (size, end) or None if incomplete."""
        buf = self._buf
        max_line = self.limits.max_chunk_line
        lf = buf.find(b"\n", pos, pos + max_line + 2)
        if lf < 0:
            if len(buf) - pos > max_line + 1:
                raise ProtocolError(f"chunk size line longer than {max_line} bytes")
            return None
        if lf == pos or buf[lf - 1] != 13:
            raise ProtocolError("bare LF in a chunk size line")
        line = bytes(buf[pos : lf - 1])
        size_text, _, ext = line.partition(b";")
        if ext or size_text != line:
            ext = line[len(size_text.rstrip(b" \t")) :]
            size_text = size_text.rstrip(b" \t")
            if _CHUNK_EXT_RE.fullmatch(ext) is None:
                raise ProtocolError(f"invalid chunk extension {_show(ext)}")
        if _HEX_RE.fullmatch(size_text) is None:
            if size_text and all(c in b"0123456789abcdefABCDEF" for c in size_text):
                raise ProtocolError("chunk size too large (more than 16 hex digits)")
            raise ProtocolError(f"invalid chunk size {_show(size_text)}")
        return int(size_text, 16), lf + 1

    def _read_trailers(self) -> Event:
        buf = self._buf
        if buf.startswith(b"\r\n"):
            del buf[:2]
            self._state = _DONE
            return _END
        if not buf or buf == b"\r":
            if self._eof:
                raise IncompleteMessage(
                    "connection closed before the end of a chunked body (truncated)"
                )
            return NEED_DATA
        scanned = self._scanned
        end = buf.find(b"\r\n\r\n", scanned - 3 if scanned > 3 else 0)
        limit = end + 4 if end >= 0 else len(buf)
        if buf.count(b"\n", scanned, limit) != buf.count(
            b"\r\n", scanned - 1 if scanned else 0, limit
        ):
            raise ProtocolError("bare LF in the trailer section")
        if end < 0:
            if len(buf) > self.limits.max_head:
                raise HeadTooLarge(f"trailer section larger than {self.limits.max_head} bytes")
            if self._eof:
                raise IncompleteMessage("connection closed in the trailer section (truncated)")
            self._scanned = len(buf)
            return NEED_DATA
        if end + 4 > self.limits.max_head:
            raise HeadTooLarge(f"trailer section larger than {self.limits.max_head} bytes")
        section = bytes(buf[: end + 2])
        lines = section.split(b"\r\n")
        lines.pop()
        _check_section(section, len(lines), "trailer")
        trailers = Headers(*_parse_fields(lines, self.limits))
        del buf[: end + 4]
        self._scanned = 0
        self._state = _DONE
        return EndOfMessage(trailers)


class RequestReader(_Reader):
    """
    Reads HTTP/1.x requests from a client, one at a time.

    After each `EndOfMessage` it answers `PAUSED` until `start_next` is
    called, so pipelined requests wait in the buffer while the proxy answers
    the current one.
    """

    _start_line_too_long = TargetTooLong

    def _head_event(self, lines: list[bytes]) -> Event:
        start = lines[0]
        del lines[0]
        match = _REQUEST_LINE_RE.fullmatch(start)
        if match is None:
            _check_head(start, lines)
            raise _bad_request_line(start)
        method, target, minor = match.groups()
        # RFC 9110 2.5: a higher minor version is handled as the highest we implement.
        version = b"HTTP/1.0" if minor == b"0" else b"HTTP/1.1"
        try:
            return self._request_head(start, method, target, version, lines)
        except ProtocolError as e:
            # The access log shows what the client asked for, and why it was refused.
            e.request_line = (method, target, version)
            raise

    def _request_head(
        self, start: bytes, method: bytes, target: bytes, version: bytes, lines: list[bytes]
    ) -> Event:
        """The head of a request whose request line matched: fields and framing checked."""
        limits = self.limits
        lower = _cached_names(lines, limits)
        if lower is None:
            # Cached field lines are clean; anything else gets its bytes checked first.
            _check_head(start, lines)
        if b"\\" in target and b"\\" in target.partition(b"?")[0]:
            # Browsers turn "\\" into "/" in a path and never send it; some
            # servers do the same, so a path with one would reach a backend
            # as another path than the one the proxy's rules saw.
            raise ProtocolError(
                f"backslash in the request path {_show(target)} (send / or %5C)"
            )
        if lower is None:
            pairs, lower = _parse_fields(lines, limits)
        else:
            pairs = list(map(_cached_pair, lines))
        headers = adopt(pairs, lower)  # both lists are new: no copies
        hosts = lower.count(b"host")
        if hosts != 1:
            if hosts:
                raise ProtocolError("more than one Host header field")
            if version == b"HTTP/1.1":
                raise ProtocolError("HTTP/1.1 request without a Host header field")
        else:
            host = pairs[lower.index(b"host")][1]
            if host not in _GOOD_HOSTS:
                if _HOST_RE.fullmatch(host) is None:
                    raise ProtocolError(f"invalid Host header field {_show(host)}")
                _GOOD_HOSTS.remember(host, True)
        if b"transfer-encoding" in lower:
            if b"content-length" in lower:
                raise ProtocolError("both Content-Length and Transfer-Encoding in a request")
            if version == b"HTTP/1.0":
                raise ProtocolError("Transfer-Encoding in an HTTP/1.0 request")
            _check_chunked(_field_values(pairs, lower, b"transfer-encoding"), True)
            self._begin_body("chunked", None)
        elif b"content-length" in lower:
            length, headers = _length_and_headers(pairs, lower, headers)
            self._begin_body("length", length)
        else:
            self._state = _BODY_NONE  # body_framing is "none" until a body begins
        return _new_event(RequestHead, (method, target, version, headers))


def _normalise_content_length(headers: Headers, length: int) -> Headers:
    """One Content-Length field with the plain decimal value, in the first one's place."""
    out = []
    seen = False
    for name, value in headers:
        if name.lower() == b"content-length":
            if seen:
                continue
            seen = True
            value = b"%d" % length
        out.append((name, value))
    return Headers(out)


def _bad_request_line(line: bytes) -> ProtocolError:
    """An error naming what is wrong with a request line."""
    parts = line.split(b" ")
    if len(parts) != 3:
        if not line:
            return ProtocolError("empty request line")
        return ProtocolError(
            f"request line must be 'method SP target SP version': {_show(line, 80)}"
        )
    method, target, version = parts
    if _TOKEN_RE.fullmatch(method) is None:
        return ProtocolError(f"invalid method {_show(method)}")
    if not target or re.fullmatch(rb"[" + _TARGET_CHARS + rb"]+", target) is None:
        return ProtocolError(
            f"invalid request target {_show(target)} (characters outside a URI "
            "must be percent-encoded)"
        )
    match = re.fullmatch(rb"HTTP/([0-9])\.([0-9])", version)
    if match is not None and match.group(1) != b"1":
        return UnsupportedVersion(f"{_show(version)} is not supported")
    return ProtocolError(f"invalid HTTP version {_show(version)}")


def _bad_status_line(line: bytes) -> ProtocolError:
    """An error naming what is wrong with a status line that does not match."""
    version = re.match(rb"HTTP/([0-9])\.([0-9]) ", line)
    if version is not None and version.group(1) != b"1":
        return UnsupportedVersion(f"response version {_show(line[:12])} is not supported")
    return ProtocolError(f"invalid status line {_show(line, 80)}")


def _status_line(line: bytes, match: re.Match[bytes]) -> tuple[bytes, int, bytes]:
    """(version, status, reason) of a status line matching _STATUS_LINE_RE; cached."""
    major, minor, status_text, reason = match.groups()
    version = _version(major, minor)
    status = int(status_text)
    if not 100 <= status <= 599:
        raise ProtocolError(f"invalid status code {status}")
    parsed = (version, status, reason or b"")
    if len(line) <= _LINE_CACHE_MAX_LEN:
        _STATUS_LINES.remember(line, parsed)
    return parsed


class ResponseReader(_Reader):
    """
    Reads HTTP/1.x responses from an upstream.

    Call `expect` with the request method before each response (HEAD and
    CONNECT change how a response is framed).  Interim 1xx responses other
    than 101 come out as heads and the reader carries on to the final
    response by itself.
    """

    def __init__(self, limits: Limits = Limits()) -> None:
        super().__init__(limits)
        self._expected: deque[bytes] = deque()

    def expect(self, method: bytes) -> None:
        """Record the method of a request sent, whose response is to be read next."""
        self._expected.append(method)

    def start_next(self) -> None:
        _Reader.start_next(self)  # not super(): this runs once per response
        if self._expected:
            self._expected.popleft()

    def _head_event(self, lines: list[bytes]) -> Event:
        limits = self.limits
        start = lines[0]
        del lines[0]
        # Status lines repeat ("HTTP/1.1 200 OK"): parse each distinct one once.
        status_line = _STATUS_LINES.get(start)
        lower = _cached_names(lines, limits)
        match = None
        if status_line is None or lower is None:
            _check_head(start, lines)
            if status_line is None:
                match = _STATUS_LINE_RE.fullmatch(start)
                if match is None:
                    raise _bad_status_line(start)
        if not self._expected:
            raise ProtocolError("response received with no request outstanding")
        if status_line is None:
            status_line = _status_line(start, match)
        version, status, reason = status_line
        if lower is None:
            pairs, lower = _parse_fields(lines, limits)
        else:
            pairs = list(map(_cached_pair, lines))
        headers = adopt(pairs, lower)  # both lists are new: no copies
        method = self._expected[0]
        te = b"transfer-encoding" in lower
        cl = lower.count(b"content-length")
        # Framing fields are checked even where they do not frame anything
        # (HEAD, 204, 304): the proxy forwards them.
        if te:
            if cl:
                raise ProtocolError("both Content-Length and Transfer-Encoding in a response")
            if version == b"HTTP/1.0":
                raise ProtocolError("Transfer-Encoding in an HTTP/1.0 response")
            _check_chunked(_field_values(pairs, lower, b"transfer-encoding"), False)
        length = None
        if cl:
            length, headers = _length_and_headers(pairs, lower, headers)
        head = _new_event(ResponseHead, (version, status, reason, headers))
        if status < 200:
            self.body_framing = "none"
            self.body_length = None
            if status == 101:
                self._state = _SWITCHED
            # other 1xx: stay in _HEAD and read the final response next
            return head
        if method == b"CONNECT" and status < 300:
            self.body_framing = "none"
            self.body_length = None
            self._state = _SWITCHED
        elif method == b"HEAD" or status == 204 or status == 304:
            self._begin_body("none", None)
        elif te:
            self._begin_body("chunked", None)
        elif length is not None:
            self._begin_body("length", length)
        else:
            self._begin_body("eof", None)
        return head
