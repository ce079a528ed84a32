"""
Reading a TLS ClientHello for its server name (SNI) and ALPN, without I/O.

A CONNECT tunnel carries whatever the client sends; when that is TLS, its
first flight is a ClientHello in the clear, and its ``server_name``
extension (RFC 6066 3) names the host the client wants, which may differ
from the CONNECT host (domain fronting).  `HelloReader` takes the client's
bytes as they come, in any split, and says, as soon as it can, whether the
tunnel starts with TLS and what the ClientHello asks for.  It keeps no
socket and changes no byte: the caller relays what it held, unchanged.

Records (RFC 8446 5.1) may split the ClientHello across several records,
and reads may split records anywhere; both are handled.  Limits live here:
past ``max_size`` bytes without a whole ClientHello the reader gives up.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClientHello", "HelloError", "HelloReader", "NotTLS", "MAX_HELLO_SIZE"]

MAX_HELLO_SIZE = 16 * 1024
"""Bytes read before a ClientHello must be complete (a large one is under 2 KiB)."""

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_MAX_RECORD = 2**14  # RFC 8446 5.1: TLSPlaintext.length MUST NOT exceed 2^14
_SERVER_NAME = 0
_ALPN = 16
_HOST_NAME = 0


class HelloError(ValueError):
    """The tunnel starts like TLS but its ClientHello is malformed or too large."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello asks for."""

    server_name: str | None
    """The SNI host name, lower case (RFC 6066: ASCII, no trailing dot), or None."""
    alpn: tuple[str, ...]
    """The protocols offered by ALPN (RFC 7301), in the client's order."""
    size: int
    """Bytes of the records that carried the ClientHello."""


@dataclass(frozen=True, slots=True)
class NotTLS:
    """The tunnel does not start with a TLS handshake record."""


NOT_TLS = NotTLS()


class HelloReader:
    """
    Incremental ClientHello reader: `feed` it the client's bytes.

    `feed` returns None while more bytes are needed, then a `ClientHello` or
    `NOT_TLS` (and the same answer ever after); a malformed or oversized
    hello raises `HelloError`.
    """

    def __init__(self, max_size: int = MAX_HELLO_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()
        self._offset = 0  # end of the last whole record parsed
        self._handshake = bytearray()
        self._result: ClientHello | NotTLS | None = None

    def feed(self, data: bytes) -> ClientHello | NotTLS | None:
        """Add ``data`` (any length, possibly empty); the answer once known."""
        if self._result is not None:
            return self._result
        buffer = self._buffer
        buffer += data
        if buffer and buffer[0] != _HANDSHAKE or len(buffer) > 1 and buffer[1] != 3:
            self._result = NOT_TLS
            return NOT_TLS
        while len(buffer) - self._offset >= 5:
            start = self._offset
            kind = buffer[start]
            length = int.from_bytes(buffer[start + 3:start + 5], "big")
            if kind != _HANDSHAKE:
                raise HelloError(f"record type {kind} before the ClientHello was complete")
            if buffer[start + 1] != 3:
                raise HelloError("record version is not TLS (3.x)")
            if length == 0 or length > _MAX_RECORD:
                raise HelloError(f"handshake record of {length} bytes (allowed 1-{_MAX_RECORD})")
            end = start + 5 + length
            if end > self.max_size:
                raise HelloError(f"ClientHello longer than {self.max_size} bytes")
            if len(buffer) < end:
                break
            self._handshake += buffer[start + 5:end]
            self._offset = end
            hello = self._hello(end)
            if hello is not None:
                self._result = hello
                return hello
        if len(buffer) >= self.max_size:
            raise HelloError(f"ClientHello longer than {self.max_size} bytes")
        return None

    def _hello(self, size: int) -> ClientHello | None:
        handshake = self._handshake
        if len(handshake) < 4:
            return None
        if handshake[0] != _CLIENT_HELLO:
            raise HelloError(f"first handshake message is type {handshake[0]}, not ClientHello")
        length = int.from_bytes(handshake[1:4], "big")
        if 4 + length > self.max_size:
            raise HelloError(f"ClientHello longer than {self.max_size} bytes")
        if len(handshake) < 4 + length:
            return None
        if len(handshake) > 4 + length:
            # RFC 8446 5.1: the record carrying the end of the ClientHello
            # must not carry anything after it (a key change follows).
            raise HelloError("bytes after the ClientHello in its last record")
        server_name, alpn = parse_client_hello(bytes(handshake[4:]))
        return ClientHello(server_name, alpn, size)


class _Cursor:
    """Reads length-prefixed fields from a byte string, raising HelloError on truncation."""

    __slots__ = ("data", "pos", "end")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise HelloError(f"ClientHello truncated in {what}")
        value = self.data[self.pos:self.pos + n]
        self.pos += n
        return value

    def number(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def vector(self, prefix: int, what: str) -> _Cursor:
        length = self.number(prefix, what)
        start = self.pos
        self.take(length, what)
        return _Cursor(self.data, start, start + length)

    @property
    def left(self) -> int:
        return self.end - self.pos


def parse_client_hello(body: bytes) -> tuple[str | None, tuple[str, ...]]:
    """
    The (server name, ALPN protocols) of a ClientHello body (RFC 8446 4.1.2,
    the handshake header removed); HelloError if it is malformed.
    """
    cursor = _Cursor(body)
    cursor.take(2 + 32, "version and random")
    if cursor.vector(1, "session id").left > 32:
        raise HelloError("session id longer than 32 bytes")
    suites = cursor.vector(2, "cipher suites")
    if suites.left < 2 or suites.left % 2:
        raise HelloError("cipher suites list is empty or of odd length")
    if cursor.vector(1, "compression methods").left < 1:
        raise HelloError("no compression methods")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    if cursor.left == 0:
        return server_name, alpn  # TLS 1.2 and earlier may omit extensions
    extensions = cursor.vector(2, "extensions")
    if cursor.left:
        raise HelloError("bytes after the extensions")
    seen = set()
    while extensions.left:
        kind = extensions.number(2, "extension type")
        data = extensions.vector(2, "extension data")
        if kind in seen:
            raise HelloError(f"extension {kind} appears twice")
        seen.add(kind)
        if kind == _SERVER_NAME:
            server_name = _server_name(data)
        elif kind == _ALPN:
            alpn = _alpn(data)
    return server_name, alpn


def _server_name(data: _Cursor) -> str | None:
    # RFC 6066 3: a ServerNameList with at most one name of each type.
    names = data.vector(2, "server name list")
    if data.left:
        raise HelloError("bytes after the server name list")
    host = None
    while names.left:
        kind = names.number(1, "server name type")
        name = names.vector(2, "server name")
        value = name.take(name.left, "server name")
        if kind != _HOST_NAME:
            continue
        if host is not None:
            raise HelloError("two host names in server_name")
        host = _host_name(value)
    return host


def _host_name(value: bytes) -> str:
    if not value or len(value) > 253 or value.endswith(b"."):
        raise HelloError("server name is empty, too long or ends with a dot")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise HelloError("server name is not ASCII (RFC 6066: A-labels only)") from None
    if not all(c.isalnum() or c in "-._" for c in text):
        raise HelloError(f"server name {text!r} has characters a host name cannot have")
    return text.lower()


def _alpn(data: _Cursor) -> tuple[str, ...]:
    names = data.vector(2, "ALPN list")
    if data.left or not names.left:
        raise HelloError("ALPN extension malformed")
    protocols = []
    while names.left:
        name = names.vector(1, "ALPN protocol")
        if not name.left:
            raise HelloError("empty ALPN protocol name")
        protocols.append(name.take(name.left, "ALPN protocol").decode("latin-1"))
    return tuple(protocols)
