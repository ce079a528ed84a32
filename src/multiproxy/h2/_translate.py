"""
HTTP/2 request and response heads, translated to and from HTTP/1.1.

Every HTTP/2 stream is served by the same HTTP/1 protocol as a connection of
its own (see `multiproxy.h2`): its request head is written out as an HTTP/1.1
request and read by the proxy's strict HTTP/1 parser, and the HTTP/1.1
response the proxy writes back is read by the strict response parser and
sent as HEADERS and DATA.  The h2 library already refuses what RFC 9113
8.2 and 8.3 forbid in a header block (upper-case or invalid names, CR, LF or
NUL in values, connection-specific fields, ``te`` other than ``trailers``,
missing, repeated or unknown pseudo-header fields, ``:authority`` and
``Host`` that disagree).  What is checked here is what HTTP/1.1 needs on top
(RFC 9113 8.3.1: a ``:path`` and ``:method`` that fit a request line), so
that no message becomes something else once translated: a translation the
HTTP/1 parser would read differently is how h2-to-h1 request smuggling works.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from multiproxy.pipeline._errors import ProtocolError

__all__ = [
    "CONNECTION_SPECIFIC",
    "H2Request",
    "MalformedRequest",
    "read_request",
    "request_bytes",
    "response_fields",
    "trailer_fields",
    "upstream_request_fields",
    "upstream_response",
]

CONNECTION_SPECIFIC = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
})
"""Fields HTTP/2 does not carry (RFC 9113 8.2.2): dropped from responses, refused in requests."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_TARGET = re.compile(rb"[\x21-\x7e]+\Z")
_AUTHORITY = re.compile(rb"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]]+\Z")
_SCHEMES = frozenset({b"http", b"https"})


class MalformedRequest(ProtocolError):
    """
    A request RFC 9113 8.1.1 calls malformed: the stream is reset with
    PROTOCOL_ERROR (after a 400 when an answer can still be sent).
    """


@dataclass(frozen=True, slots=True)
class H2Request:
    """
    A request head read from one HEADERS block: the pseudo-header fields
    and the other fields in order (``cookie`` crumbs joined, RFC 9113 8.2.3).
    ``authority`` is None only when the client sent ``Host`` instead;
    ``protocol`` is the ``:protocol`` of an extended CONNECT (RFC 8441:
    ``websocket``), else None.
    """

    method: bytes
    scheme: bytes | None
    authority: bytes | None
    path: bytes | None
    fields: tuple[tuple[bytes, bytes], ...]
    content_length: int | None
    protocol: bytes | None = None

    @property
    def websocket(self) -> bool:
        """A WebSocket opened by an extended CONNECT (RFC 8441 4)."""
        return self.protocol == b"websocket"


def read_request(block: list[tuple[bytes, bytes]]) -> H2Request:
    """
    The `H2Request` in a header block the h2 library has validated;
    `MalformedRequest` for what would not survive translation to HTTP/1.1.
    """
    pseudo: dict[bytes, bytes] = {}
    fields: list[tuple[bytes, bytes]] = []
    cookies: list[bytes] = []
    lengths: list[bytes] = []
    for name, value in block:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name == b"cookie":
            cookies.append(value)
        else:
            if name in CONNECTION_SPECIFIC:
                raise MalformedRequest(f"connection-specific field {name.decode()} in HTTP/2")
            if not _TOKEN.match(name):
                raise MalformedRequest(f"field name {name!r} is not an HTTP token")
            if name == b"content-length":
                lengths.append(value)
            fields.append((name, value))
    if cookies:
        fields.append((b"cookie", b"; ".join(cookies)))
    method = pseudo.get(b":method", b"")
    if not _TOKEN.match(method):
        raise MalformedRequest("the :method pseudo-header is missing or not a token")
    authority = pseudo.get(b":authority")
    if authority is not None and not _AUTHORITY.match(authority):
        raise MalformedRequest("the :authority pseudo-header is not a host[:port]")
    scheme, path = pseudo.get(b":scheme"), pseudo.get(b":path")
    protocol = pseudo.get(b":protocol")
    if protocol is not None and protocol != b"websocket":
        raise MalformedRequest("the only :protocol spoken here is websocket")
    if method == b"CONNECT" and protocol is None:
        if authority is None or scheme is not None or path is not None:
            raise MalformedRequest("a CONNECT has :authority and no :scheme or :path")
    else:
        if scheme is None or scheme.lower() not in _SCHEMES:
            raise MalformedRequest("the :scheme pseudo-header must be http or https")
        if path is None or not _TARGET.match(path):
            raise MalformedRequest("the :path pseudo-header is missing or holds spaces or "
                                   "control characters")
        if path == b"*" and method != b"OPTIONS":
            raise MalformedRequest("a :path of * is only for OPTIONS")
        if path != b"*" and not path.startswith(b"/"):
            raise MalformedRequest("the :path pseudo-header must start with /")
    return H2Request(method, scheme, authority, path, tuple(fields), _length(lengths),
                     protocol)


def _length(values: list[bytes]) -> int | None:
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].isdigit() or len(values[0]) > 18:
        raise MalformedRequest("content-length values disagree or are not a number")
    return int(values[0])


def request_bytes(request: H2Request, *, absolute: bool, has_body: bool,
                  websocket_key: bytes = b"") -> bytes:
    """
    ``request`` as an HTTP/1.1 request head for the proxy's HTTP/1 protocol:
    origin-form with ``Host`` (a reverse proxy), or absolute-form when
    ``absolute`` (a forward proxy); a body without ``content-length`` is
    sent chunked.  ``Connection: close``: a stream carries one exchange.  A
    WebSocket's extended CONNECT becomes the HTTP/1.1 upgrade (RFC 8441 5),
    with ``websocket_key`` as its ``Sec-WebSocket-Key``.
    """
    method = request.method
    if request.websocket:
        assert request.path is not None
        lines = [b"GET " + request.path + b" HTTP/1.1"]
        if request.authority is not None:
            lines.append(b"host: " + request.authority)
        lines += [name + b": " + value for name, value in request.fields
                  if name not in (b"host", b"sec-websocket-key")]
        lines += [b"upgrade: websocket", b"connection: upgrade",
                  b"sec-websocket-key: " + websocket_key]
        return b"\r\n".join(lines) + b"\r\n\r\n"
    if method == b"CONNECT":
        target = request.authority
    elif absolute and request.path != b"*":
        assert request.scheme is not None and request.path is not None
        target = request.scheme.lower() + b"://" + (request.authority or b"") + request.path
    else:
        assert request.path is not None
        target = request.path
    lines = [method + b" " + target + b" HTTP/1.1"]
    if request.authority is not None:
        lines.append(b"host: " + request.authority)
    for name, value in request.fields:
        if name == b"host" and request.authority is not None:
            continue  # the same value, h2 checked: one Host only
        lines.append(name + b": " + value)
    if has_body and request.content_length is None:
        lines.append(b"transfer-encoding: chunked")
    lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def response_fields(status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 response head as an HTTP/2 header block (names lower case, RFC 9113 8.2.2)."""
    block = [(b":status", b"%d" % status)]
    dropped = set(CONNECTION_SPECIFIC)
    for name, value in headers:
        lower = name.lower()
        if lower == b"connection":
            dropped.update(t.strip().lower() for t in value.split(b","))
    for name, value in headers:
        lower = name.lower()
        if lower in dropped or lower == b"te":
            continue
        block.append((lower, value))
    return block


def trailer_fields(trailers) -> list[tuple[bytes, bytes]]:
    """An HTTP/1.1 trailer section as the trailing HEADERS of a stream (no pseudo-headers)."""
    return [(name.lower(), value) for name, value in trailers
            if name.lower() not in CONNECTION_SPECIFIC and name.lower() != b"te"]


# -- to and from an HTTP/2 upstream ------------------------------------------

_NOT_TO_UPSTREAM = CONNECTION_SPECIFIC | {b"host", b"te", b"content-length"}


def upstream_request_fields(method: bytes, target: bytes, headers, *, scheme: bytes,
                            length: int | None) -> list[tuple[bytes, bytes]]:
    """
    A request head the proxy forwards (end-to-end fields, ``Host`` set) as
    the header block of a stream to an HTTP/2 upstream: ``Host`` becomes
    ``:authority`` (RFC 9113 8.3.1), framing fields go (``length`` is the
    body's, when known), and ``te: trailers`` says the proxy takes trailers,
    which it does whatever its client speaks (gRPC servers ask for it).
    """
    authority = headers.get(b"host")
    block = [(b":method", method), (b":scheme", scheme)]
    if authority is not None:
        block.append((b":authority", authority))
    block.append((b":path", target))
    for name, value in headers:
        lower = name.lower()
        if lower not in _NOT_TO_UPSTREAM:
            block.append((lower, value))
    if length is not None:
        block.append((b"content-length", b"%d" % length))
    block.append((b"te", b"trailers"))
    return block


def upstream_response(block: list[tuple[bytes, bytes]]) -> tuple[int, list[tuple[bytes, bytes]]]:
    """
    The status and fields of an HTTP/2 upstream's response header block (h2
    has checked it against RFC 9113 8.3.2).

    @raise ProtocolError: the status is not three digits.
    """
    status = None
    fields = []
    for name, value in block:
        if name == b":status":
            status = value
        elif not name.startswith(b":"):
            fields.append((name, value))
    if status is None or len(status) != 3 or not status.isdigit():
        raise ProtocolError(f"bad :status {status!r} from upstream")
    return int(status), fields
