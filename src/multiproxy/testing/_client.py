"""
`FakeClient`: a client connection to a proxy on the in-memory network.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.testing._messages import (
    MessageReader,
    Response,
    as_bytes,
    serialize_request,
)
from multiproxy.testing._reactor import FakeReactor


class ResponseIncomplete(AssertionError):
    """
    No whole response has arrived and the connection is still open: the
    proxy is waiting for something (an origin's answer, a timer).
    """


@implementer(IHalfCloseableProtocol)
class _ClientProtocol(Protocol):
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client._made(self.transport)

    def dataReceived(self, data: bytes) -> None:
        self.client._data(data)

    def readConnectionLost(self) -> None:
        self.client._eof()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.client._lost(reason)


class _ClientFactory(Factory):
    noisy = False

    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = _ClientProtocol(self.client)
        protocol.factory = self
        return protocol


class FakeClient:
    """
    One client connection, made with `Harness.connect`.

    Send raw bytes with `send` and take what came back with `read`, or
    send a request with `request` and get the parsed `Response`.  Every
    call pumps the network, so by the time it returns the proxy has done
    all it can without time passing; a response that needs time (a slow
    origin) is read with `response` after `Harness.advance`.
    """

    def __init__(self, reactor: FakeReactor) -> None:
        self.reactor = reactor
        self.transport: Any = None
        self._received = bytearray()
        self.connected = False
        """True from the connection's start until it is closed for good."""
        self.ended = False
        """True once the proxy closed its side (or the connection is gone)."""
        self.close_reason: Failure | None = None
        """Why the connection ended (``ConnectionDone`` for a clean close)."""
        self._reader = MessageReader(requests=False)
        self._methods: deque[bytes] = deque()

    def factory(self) -> Factory:
        """A Twisted client factory whose one protocol is this client's."""
        return _ClientFactory(self)

    @property
    def received(self) -> bytes:
        """Every byte received on this connection, read or not."""
        return bytes(self._received)

    # events from the protocol

    def _made(self, transport: Any) -> None:
        self.transport = transport
        self.connected = True

    def _data(self, data: bytes) -> None:
        self._received += data
        self._reader.feed(data)

    def _eof(self) -> None:
        # The proxy closed its side: close ours too, as clients do.
        self.ended = True
        self._reader.end()
        self.transport.loseConnection()

    def _lost(self, reason: Failure | None) -> None:
        self.connected = False
        self.ended = True
        self.close_reason = reason
        self._reader.end()

    # raw bytes

    def send(self, data: bytes) -> None:
        """Send ``data`` as is, then pump."""
        if not self.connected:
            raise ConnectionError("the client connection is closed")
        self.transport.write(data)
        self.reactor.pump()

    def read(self) -> bytes:
        """Every byte received and not yet read (by `read` or as a response)."""
        self.reactor.pump()
        return self._reader.take()

    @property
    def closed(self) -> bool:
        """True once the connection is closed for good."""
        return not self.connected

    def close(self) -> None:
        """Close the connection cleanly (after what was sent), then pump."""
        if self.transport is not None:
            self.transport.loseConnection()
        self.reactor.pump()

    def abort(self) -> None:
        """Reset the connection, then pump."""
        if self.transport is not None:
            self.transport.abortConnection()
        self.reactor.pump()

    def pause_reading(self) -> None:
        """
        Stop reading (a slow client): what the proxy sends waits in its
        buffers, and backpressure pauses what feeds them.
        """
        self.transport.pauseProducing()

    def resume_reading(self) -> None:
        """Read again, then pump."""
        self.transport.resumeProducing()
        self.reactor.pump()

    def half_close(self) -> None:
        """Shut down the sending side only (the proxy reads an end of stream), then pump."""
        self.transport.loseWriteConnection()
        self.reactor.pump()

    # HTTP

    def send_request(self, method: bytes | str, target: bytes | str, *,
                     headers: Iterable[tuple[bytes, bytes]] = (), body: bytes = b"") -> None:
        """
        Send a request without waiting for its response.

        ``Host`` is added from an absolute-form (``http://host/path``) or
        authority-form (``host:443``) target unless ``headers`` have one; an
        origin-form target (``/path``) needs a ``Host`` in ``headers``.
        ``Content-Length`` is added for a body unless ``headers`` frame it.
        """
        method, target = as_bytes(method), as_bytes(target)
        fields = list(headers)
        names = {name.lower() for name, _ in fields}
        if b"host" not in names:
            fields.insert(0, (b"Host", _authority(method, target)))
        if (body or method in (b"POST", b"PUT", b"PATCH")) and not (
                names & {b"content-length", b"transfer-encoding"}):
            fields.append((b"Content-Length", b"%d" % len(body)))
        self._methods.append(method)
        self.send(serialize_request(method, target, fields, body))

    def response(self) -> Response:
        """
        The next response received (1xx interim responses first skipped).

        @raise ResponseIncomplete: the proxy has not finished a response and
            the connection is still open (advance the clock?).
        """
        self.reactor.pump()
        interim = []
        while True:
            method = self._methods[0] if self._methods else b"GET"
            message = self._reader.next_message(method)
            if message is None:
                if self.ended:
                    raise ResponseIncomplete("the connection ended without a response")
                so_far = len(self._reader.buffer)
                raise ResponseIncomplete(
                    "no complete response yet"
                    + (f" ({so_far} bytes of one so far)" if so_far else "")
                    + "; the connection is open: advance the clock (harness.advance) if the "
                    "proxy is waiting for time to pass"
                )
            (version, status_text, reason), headers, body, complete = message
            response = Response(int(status_text), reason, headers, body, version, complete,
                                tuple(interim))
            if 100 <= response.status < 200 and response.status != 101:
                interim.append(response)
                continue
            if self._methods:
                self._methods.popleft()
            return response

    def request(self, method: bytes | str, target: bytes | str, *,
                headers: Iterable[tuple[bytes, bytes]] = (), body: bytes = b"") -> Response:
        """Send a request (as `send_request`) and return its `Response`."""
        self.send_request(method, target, headers=headers, body=body)
        return self.response()

    # SOCKS5

    def socks5_connect(self, host: str, port: int, *, username: str | None = None,
                       password: str | None = None) -> int:
        """
        Open a SOCKS5 CONNECT to ``host``:``port`` (a name, sent for the proxy
        to resolve), with RFC 1929 credentials if given.

        @return: the reply code (0: succeeded; then the connection relays),
            or -1 when the proxy refused the credentials.
        """
        method = b"\x02" if username is not None else b"\x00"
        self.send(b"\x05\x01" + method)
        choice = self.read()
        if choice != b"\x05" + method:
            raise AssertionError(f"the proxy chose SOCKS method {choice!r}, not {method!r}")
        if username is not None:
            user, secret = username.encode(), (password or "").encode()
            self.send(b"\x01" + bytes([len(user)]) + user + bytes([len(secret)]) + secret)
            status = self.read()
            if status != b"\x01\x00":
                return -1
        name = host.encode("idna")
        self.send(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        reply = self.read()
        if len(reply) < 5 or reply[0] != 5:
            raise AssertionError(f"not a SOCKS5 reply: {reply!r}")
        length = {1: 10, 3: 7 + reply[4], 4: 22}.get(reply[3], len(reply))
        # What the relay sent after the reply is the client's to read.
        self._reader.buffer[:0] = reply[length:]
        return reply[1]


def _authority(method: bytes, target: bytes) -> bytes:
    if target.startswith(b"/") or target == b"*":
        raise ValueError(
            f"an origin-form target ({target.decode('ascii', 'replace')}) needs a Host header: "
            "pass headers=[(b'Host', b'www.example.com')]"
        )
    if method == b"CONNECT" or b"://" not in target:
        return target
    return urlsplit(target).netloc.rsplit(b"@", 1)[-1]

