"""
Fake origin servers and backends: scripted HTTP answers on the in-memory network.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from twisted.internet.protocol import Factory, Protocol

from multiproxy.testing._messages import MessageError, MessageReader, ReceivedRequest, _values
from multiproxy.testing._reactor import FakeListeningPort, FakeReactor

_REASONS = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
    204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently", 302: b"Found",
    304: b"Not Modified", 307: b"Temporary Redirect", 308: b"Permanent Redirect",
    400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found",
    405: b"Method Not Allowed", 429: b"Too Many Requests", 500: b"Internal Server Error",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Gateway Timeout",
}


@dataclass(frozen=True)
class Reply:
    """
    What a fake origin answers to one request.

    ``headers`` are sent in order as given; ``Content-Length`` is added
    unless ``headers`` frame the body themselves (``Content-Length`` or
    ``Transfer-Encoding: chunked``, in which case the body is sent as one
    chunk), and ``Date`` (from the fake clock) unless given.

    ``delay``: seconds of fake time before the answer starts (``math.inf``:
    never answers, for response timeouts).  ``close_after``: close the
    connection after this many bytes of the body (an origin that dies
    mid-body).  ``close``: close after the response (and say so with
    ``Connection: close``).  ``raw``: send exactly these bytes instead of a
    response built from the other fields (for malformed answers).
    """

    status: int = 200
    body: bytes = b""
    headers: Sequence[tuple[bytes, bytes]] = ()
    reason: bytes | None = None
    delay: float = 0.0
    close_after: int | None = None
    close: bool = False
    raw: bytes | None = None

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 999:
            raise ValueError(f"status must be 100-999, got {self.status}")
        if self.delay < 0:
            raise ValueError(f"delay must be 0 or more, got {self.delay}")
        for name, value in self.headers:
            if not isinstance(name, bytes) or not isinstance(value, bytes):
                raise TypeError(f"header fields are (bytes, bytes) pairs, got {(name, value)!r}")

    def encode(self, method: bytes, now: float) -> tuple[bytes, bytes]:
        """The response's head and body bytes, framed for a request of ``method``."""
        if self.raw is not None:
            return self.raw, b""
        headers = list(self.headers)
        names = {name.lower() for name, _ in headers}
        chunked = any(value.lower().replace(b" ", b"").split(b",")[-1] == b"chunked"
                      for value in _values(headers, b"transfer-encoding"))
        no_body = self.status in (204, 304) or 100 <= self.status < 200
        if b"date" not in names:
            headers.append((b"Date", formatdate(now, usegmt=True).encode("ascii")))
        if not no_body and b"content-length" not in names and not chunked:
            headers.append((b"Content-Length", b"%d" % len(self.body)))
        if self.close and b"connection" not in names:
            headers.append((b"Connection", b"close"))
        reason = self.reason if self.reason is not None else _REASONS.get(self.status, b"Unknown")
        head = b"HTTP/1.1 %d %s\r\n" % (self.status, reason)
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers) + b"\r\n"
        if method == b"HEAD" or no_body:
            return head, b""
        if chunked:
            body = (b"%x\r\n%s\r\n" % (len(self.body), self.body) if self.body else b"") + b"0\r\n\r\n"
            return head, body
        return head, self.body


Answer = Reply | Callable[[ReceivedRequest], Reply]
"""A `Reply`, or a function of the `ReceivedRequest` that returns one."""


class FakeOrigin:
    """
    A scripted HTTP/1.1 server listening on the in-memory network.

    Make one with `Harness.origin`.  Requests are answered in order, one at
    a time per connection: by the `route` for their path if there is one,
    else by ``default`` (a 404 naming the origin, until set).  Every request
    received is kept in ``requests``; ``connections`` counts the
    connections accepted.  `refuse` and `hang` change what a connect to it
    does: refused (502 from a proxy) or never answered (the proxy's connect
    timeout: 504).  TLS is not spoken: a proxy's https:// connect to a fake
    origin fails with a message saying so.
    """

    def __init__(self, reactor: FakeReactor, host: str, port: int,
                 default: Answer | None = None) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.routes: dict[bytes, Answer] = {}
        self.default: Answer = default if default is not None else self._not_found
        self.requests: list[ReceivedRequest] = []
        self.connections = 0
        self.open: list[_OriginProtocol] = []
        self.listening: FakeListeningPort | None = None

    @property
    def name(self) -> str:
        """``host:port``, as in messages."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def route(self, path: bytes | str, answer: Answer) -> FakeOrigin:
        """Answer requests for ``path`` (exact, without the query) with ``answer``; returns self."""
        self.routes[path.encode("ascii") if isinstance(path, str) else path] = answer
        return self

    def answer_for(self, request: ReceivedRequest) -> Reply:
        """The `Reply` this origin gives ``request``."""
        answer = self.routes.get(request.path, self.default)
        reply = answer(request) if callable(answer) else answer
        if not isinstance(reply, Reply):
            raise TypeError(f"fake origin {self.name}: an answer must be a Reply, got {reply!r}")
        return reply

    def refuse(self) -> None:
        """Refuse connections from now on (a server that is down)."""
        self._set_mode("refuse")

    def hang(self) -> None:
        """Never complete a connect from now on (a black-holed address)."""
        self._set_mode("hang")

    def accept(self) -> None:
        """Accept connections again."""
        self._set_mode("accept")

    def close_connections(self) -> None:
        """Close every open connection to this origin (as a restarting server does)."""
        for protocol in list(self.open):
            protocol.transport.loseConnection()
        self.reactor.pump()

    def _set_mode(self, mode: str) -> None:
        if self.listening is None:
            raise RuntimeError(f"fake origin {self.name} is not listening (make it with "
                               "Harness.origin)")
        self.listening.connect_mode = mode

    def _not_found(self, request: ReceivedRequest) -> Reply:
        return Reply(404, b"fake origin %s has no route for %s\n"
                     % (self.name.encode("ascii"), request.path),
                     headers=[(b"Content-Type", b"text/plain")])

    def factory(self) -> Factory:
        """The Twisted server factory for this origin's connections."""
        factory = _OriginFactory()
        factory.origin = self
        return factory

    def __repr__(self) -> str:
        return f"<FakeOrigin {self.name} {len(self.requests)} requests>"


class _OriginFactory(Factory):
    noisy = False
    origin: FakeOrigin

    def buildProtocol(self, addr: Any) -> _OriginProtocol:
        return _OriginProtocol(self.origin)


class _OriginProtocol(Protocol):
    def __init__(self, origin: FakeOrigin) -> None:
        self.origin = origin
        self.reader = MessageReader(requests=True)
        self.busy = False
        self.timer: Any = None
        self.closing = False

    def connectionMade(self) -> None:
        self.origin.connections += 1
        self.origin.open.append(self)

    def dataReceived(self, data: bytes) -> None:
        self.reader.feed(data)
        self._next()

    def _next(self) -> None:
        while not self.busy and not self.closing:
            try:
                message = self.reader.next_message()
            except MessageError as e:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n"
                                     b"Content-Length: %d\r\n\r\n%s" % (len(str(e)), str(e).encode()))
                self.transport.loseConnection()
                self.closing = True
                return
            if message is None:
                return
            (method, target, version), headers, body, _ = message
            request = ReceivedRequest(method, target, headers, body, version)
            self.origin.requests.append(request)
            reply = self.origin.answer_for(request)
            self.busy = True
            if reply.delay == 0:
                self._send(request, reply)
            elif math.isfinite(reply.delay):
                self.timer = self.origin.reactor.callLater(reply.delay, self._send, request, reply)

    def _send(self, request: ReceivedRequest, reply: Reply) -> None:
        self.timer = None
        head, body = reply.encode(request.method, self.origin.reactor.seconds())
        if reply.close_after is not None:
            self.transport.write(head + body[:reply.close_after])
            self.transport.loseConnection()
            self.closing = True
            return
        self.transport.write(head + body)
        wants_close = any(v.lower() == b"close" for v in request.header_values(b"connection"))
        if reply.close or wants_close:
            self.transport.loseConnection()
            self.closing = True
            return
        self.busy = False
        self._next()

    def connectionLost(self, reason: Any = None) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self in self.origin.open:
            self.origin.open.remove(self)

