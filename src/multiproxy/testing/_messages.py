"""
HTTP/1.1 messages as a test sees them: plain values and a small sans-I/O reader.

The harness parses what the proxy sends (requests reaching a fake origin,
responses reaching a fake client) with its own reader rather than the
proxy's parser, so that a framing bug in the proxy shows up as a wrong
message here instead of being agreed with.  The reader is lenient where a
test wants to see what happened (a body cut short is a message with
``complete=False``) and needs no reactor.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

HeaderPairs = list[tuple[bytes, bytes]]
"""Header fields in the order they were sent, as (name, value) byte pairs."""


def _values(headers: Sequence[tuple[bytes, bytes]], name: bytes | str) -> list[bytes]:
    wanted = (name.encode("ascii") if isinstance(name, str) else name).lower()
    return [value for key, value in headers if key.lower() == wanted]


@dataclass(frozen=True)
class Response:
    """
    A response as the fake client received it.

    ``headers`` keeps the order and spelling of the fields on the wire.
    ``complete`` is False when the connection ended before the body its
    framing announced (a proxy that relays an origin's mid-body close).
    ``interim`` holds any 1xx responses (other than 101) that came first.
    """

    status: int
    reason: bytes
    headers: HeaderPairs
    body: bytes
    version: bytes = b"HTTP/1.1"
    complete: bool = True
    interim: tuple[Response, ...] = ()

    def header(self, name: bytes | str) -> bytes | None:
        """The first value of header ``name`` (any case), or None."""
        values = _values(self.headers, name)
        return values[0] if values else None

    def header_values(self, name: bytes | str) -> list[bytes]:
        """Every value of header ``name`` (any case), in order."""
        return _values(self.headers, name)


@dataclass(frozen=True)
class ReceivedRequest:
    """A request as a fake origin received it from the proxy."""

    method: bytes
    target: bytes
    headers: HeaderPairs
    body: bytes
    version: bytes = b"HTTP/1.1"

    @property
    def path(self) -> bytes:
        """The target's path, without the query (``/a`` for ``/a?b=1``)."""
        return self.target.split(b"?", 1)[0]

    def header(self, name: bytes | str) -> bytes | None:
        """The first value of header ``name`` (any case), or None."""
        values = _values(self.headers, name)
        return values[0] if values else None

    def header_values(self, name: bytes | str) -> list[bytes]:
        """Every value of header ``name`` (any case), in order."""
        return _values(self.headers, name)


class MessageError(Exception):
    """The bytes are not an HTTP/1.x message the reader can follow."""


@dataclass
class _Head:
    start: tuple[bytes, bytes, bytes]
    headers: HeaderPairs = field(default_factory=list)


class MessageReader:
    """
    Splits a byte stream into HTTP/1.x heads and bodies.

    Feed bytes with `feed`; `next_message` returns the next whole message as
    ``(start line parts, headers, body, complete)``, or None while more
    bytes are needed.  `end` says the stream is over, after which a message
    framed by the connection's end (or cut short) is returned once.
    ``requests=True`` reads requests (no body without a length); otherwise
    responses, whose framing depends on the method they answer: give it
    to `next_message`.
    """

    max_head = 256 * 1024

    def __init__(self, requests: bool) -> None:
        self.requests = requests
        self.buffer = bytearray()
        self.ended = False

    def feed(self, data: bytes) -> None:
        """Add received bytes."""
        self.buffer += data

    def end(self) -> None:
        """The stream ended: no more bytes will come."""
        self.ended = True

    def take(self) -> bytes:
        """Remove and return every byte not yet read as part of a message."""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def next_message(self, method: bytes = b"GET"):
        """
        The next message, or None when it is not all there yet.

        @return: ``(start, headers, body, complete)`` where ``start`` is the
            start line split in three.
        """
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self.buffer) > self.max_head:
                raise MessageError(f"no end of head in {len(self.buffer)} bytes")
            return None
        head = self._parse_head(bytes(self.buffer[:head_end]))
        rest = head_end + 4
        length = self._body_length(head, method)
        if length == "chunked":
            found = self._chunked(rest)
            if found is None:
                if not self.ended:
                    return None
                body, consumed, complete = self._partial_chunked(rest), len(self.buffer), False
            else:
                body, consumed = found
                complete = True
        elif length == "close":
            if not self.ended:
                return None
            body, consumed, complete = bytes(self.buffer[rest:]), len(self.buffer), True
        else:
            assert isinstance(length, int)
            available = len(self.buffer) - rest
            if available < length:
                if not self.ended:
                    return None
                body, consumed, complete = bytes(self.buffer[rest:]), len(self.buffer), False
            else:
                body, consumed, complete = bytes(self.buffer[rest:rest + length]), rest + length, True
        del self.buffer[:consumed]
        return head.start, head.headers, body, complete

    def _parse_head(self, data: bytes) -> _Head:
        lines = data.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) == 2:
            parts.append(b"")
        if len(parts) != 3:
            raise MessageError(f"bad start line {lines[0]!r}")
        head = _Head((parts[0], parts[1], parts[2]))
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise MessageError(f"bad header line {line!r}")
            head.headers.append((name, value.strip(b" \t")))
        return head

    def _body_length(self, head: _Head, method: bytes) -> int | str:
        encodings = b",".join(_values(head.headers, b"transfer-encoding")).lower()
        if not self.requests:
            try:
                status = int(head.start[1])
            except ValueError:
                raise MessageError(f"bad status in {b' '.join(head.start)!r}") from None
            if (method == b"HEAD" or 100 <= status < 200 or status in (204, 304)
                    or (method == b"CONNECT" and 200 <= status < 300)):
                return 0
        if encodings:
            if encodings.replace(b" ", b"").split(b",")[-1] == b"chunked":
                return "chunked"
            return 0 if self.requests else "close"
        lengths = _values(head.headers, b"content-length")
        if lengths:
            try:
                return int(lengths[0])
            except ValueError:
                raise MessageError(f"bad Content-Length {lengths[0]!r}") from None
        return 0 if self.requests else "close"

    def _chunked(self, at: int) -> tuple[bytes, int] | None:
        body = bytearray()
        while True:
            line_end = self.buffer.find(b"\r\n", at)
            if line_end < 0:
                return None
            size_text = bytes(self.buffer[at:line_end]).split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise MessageError(f"bad chunk size {size_text!r}") from None
            at = line_end + 2
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n", at)
                while trailer_end > at:  # skip trailer fields
                    at = trailer_end + 2
                    trailer_end = self.buffer.find(b"\r\n", at)
                if trailer_end < 0:
                    return None
                return bytes(body), trailer_end + 2
            if len(self.buffer) < at + size + 2:
                return None
            body += self.buffer[at:at + size]
            at += size + 2

    def _partial_chunked(self, at: int) -> bytes:
        body = bytearray()
        while True:
            line_end = self.buffer.find(b"\r\n", at)
            if line_end < 0:
                return bytes(body)
            try:
                size = int(bytes(self.buffer[at:line_end]).split(b";", 1)[0], 16)
            except ValueError:
                return bytes(body)
            at = line_end + 2
            body += self.buffer[at:at + size]
            if len(self.buffer) < at + size + 2:
                return bytes(body)
            at += size + 2


def serialize_request(method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]],
                      body: bytes) -> bytes:
    """The bytes of a request with exactly these fields (no field is added)."""
    lines = [method + b" " + target + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def as_bytes(value: bytes | str) -> bytes:
    """``value`` as bytes (a str is encoded as ASCII: HTTP heads are ASCII)."""
    return value.encode("ascii") if isinstance(value, str) else value
