"""
Loopback peers for the reverse proxy's tests: named backends, a WebSocket
echo backend with a minimal RFC 6455 framing, and a running reverse proxy.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct

from loopback import origin_site
from twisted.internet import defer, protocol, reactor
from twisted.web import resource, server

from multiproxy.balancing import Backend, BackendPool, balancer_from_name
from multiproxy.reverse import ReverseProxy, Route, RouteTable

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Who(resource.Resource):
    isLeaf = True

    def __init__(self, name: str, hits: list) -> None:
        super().__init__()
        self.name = name.encode()
        self.hits = hits

    def render(self, request):
        self.hits.append(request.uri)
        request.setHeader(b"content-type", b"text/plain")
        request.setHeader(b"x-backend", self.name)
        return self.name


class _Cacheable(resource.Resource):
    """Answers its backend's name with ``Cache-Control: public, max-age=60``."""

    isLeaf = True

    def __init__(self, name: str, hits: list) -> None:
        super().__init__()
        self.name = name.encode()
        self.hits = hits

    def render_GET(self, request):
        self.hits.append(request.uri)
        request.setHeader(b"cache-control", b"public, max-age=60")
        request.setHeader(b"content-type", b"text/plain")
        return self.name


class NamedBackend:
    """A twisted.web backend answering its name on /who (and loopback's resources)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits: list[bytes] = []
        self.connections = 0
        self.channels: list = []
        site = origin_site()
        site.resource.putChild(b"who", _Who(name, self.hits))
        site.resource.putChild(b"", _Who(name, self.hits))
        site.resource.putChild(b"cached", _Cacheable(name, self.hits))
        outer = self

        class CountingSite(server.Site):
            def buildProtocol(self, addr):
                outer.connections += 1
                channel = super().buildProtocol(addr)
                outer.channels.append(channel)
                return channel

        self.site = CountingSite(site.resource)
        self.site.noisy = False
        self.site.log = lambda request: None
        self.listening = None
        self.port = 0

    def start(self, port: int = 0) -> int:
        self.listening = reactor.listenTCP(port, self.site, interface="127.0.0.1")
        self.port = self.listening.getHost().port
        return self.port

    def stop(self) -> defer.Deferred:
        """Stop listening and cut every open connection (a crash, as seen from the proxy)."""
        listening, self.listening = self.listening, None
        for channel in self.channels:
            # twisted.web wraps its HTTPChannel; the transport is the inner one's.
            transport = getattr(getattr(channel, "_channel", channel), "transport", None)
            if transport is not None and transport.connected:
                transport.abortConnection()
        self.channels = []
        return defer.maybeDeferred(listening.stopListening) if listening else defer.succeed(None)


# -- WebSocket ---------------------------------------------------------------------------------


def ws_accept(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def ws_frame(payload: bytes, opcode: int = 1, mask: bool = True) -> bytes:
    """One final WebSocket frame (masked, as a client must send)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_parse(buffer: bytes) -> tuple[tuple[int, bytes] | None, bytes]:
    """(opcode, payload) of the first complete frame and the rest, or (None, buffer)."""
    if len(buffer) < 2:
        return None, buffer
    opcode = buffer[0] & 0x0F
    masked = buffer[1] & 0x80
    n = buffer[1] & 0x7F
    i = 2
    if n == 126:
        if len(buffer) < 4:
            return None, buffer
        n = struct.unpack("!H", buffer[2:4])[0]
        i = 4
    elif n == 127:
        if len(buffer) < 10:
            return None, buffer
        n = struct.unpack("!Q", buffer[2:10])[0]
        i = 10
    key = b""
    if masked:
        key = buffer[i:i + 4]
        i += 4
    if len(buffer) < i + n:
        return None, buffer
    payload = buffer[i:i + n]
    if masked:
        payload = bytes(b ^ key[j % 4] for j, b in enumerate(payload))
    return (opcode, payload), buffer[i + n:]


class WebSocketEcho(protocol.Protocol):
    """A backend: completes the WebSocket handshake, then echoes text frames as 'NAME: text'."""

    def __init__(self, name: bytes, seen: list) -> None:
        self.name = name
        self.seen = seen
        self.buffer = b""
        self.open = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            if b"\r\n\r\n" not in self.buffer:
                return
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.seen.append(head)
            fields = {}
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                fields[k.strip().lower()] = v.strip()
            if fields.get(b"upgrade", b"").lower() != b"websocket":
                self.transport.write(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
                return
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + ws_accept(fields[b"sec-websocket-key"]) + b"\r\n\r\n"
            )
            self.open = True
        while True:
            frame, self.buffer = ws_parse(self.buffer)
            if frame is None:
                return
            opcode, payload = frame
            if opcode == 8:
                self.transport.write(ws_frame(b"", 8, mask=False))
                self.transport.loseConnection()
                return
            self.transport.write(ws_frame(self.name + b": " + payload, opcode, mask=False))


def listen_websocket_echo(name: bytes):
    """Listen with a `WebSocketEcho`; returns (port, list of handshake heads seen)."""
    seen: list = []
    factory = protocol.Factory.forProtocol(lambda: WebSocketEcho(name, seen))
    factory.noisy = False
    return reactor.listenTCP(0, factory, interface="127.0.0.1"), seen


class WebSocketClient(protocol.Protocol):
    """Sends an upgrade request through the proxy, then frames; collects what comes back."""

    def __init__(self, host: bytes, path: bytes = b"/chat") -> None:
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
            + self.key + b"\r\n\r\n"
        )
        self.head: bytes | None = None
        self.buffer = b""
        self.frames: list[tuple[int, bytes]] = []
        self.handshake: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()
        self.waiting: list[tuple[int, defer.Deferred]] = []

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if self.head is None:
            if b"\r\n\r\n" not in self.buffer:
                return
            self.head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            self.handshake.callback(self.head)
        while True:
            frame, self.buffer = ws_parse(self.buffer)
            if frame is None:
                break
            self.frames.append(frame)
        for count, d in list(self.waiting):
            if len(self.frames) >= count:
                self.waiting.remove((count, d))
                d.callback(list(self.frames))

    def send_text(self, text: bytes) -> None:
        self.transport.write(ws_frame(text))

    def wait_frames(self, count: int) -> defer.Deferred:
        if len(self.frames) >= count:
            return defer.succeed(list(self.frames))
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((count, d))
        return d

    def connectionLost(self, reason) -> None:
        if not self.handshake.called:
            self.handshake.errback(reason)
        for _, d in self.waiting:
            d.errback(reason)
        self.closed.callback(None)


# -- a running reverse proxy -------------------------------------------------------------------


def make_pool(name: str, ports: list[int], balance: str = "roundrobin", **kwargs) -> BackendPool:
    backends = [Backend(f"{name}-{i}", host="127.0.0.1", port=p, connect_timeout=2.0)
                for i, p in enumerate(ports)]
    return BackendPool(name, backends, balancer_from_name(balance), reactor, **kwargs)


class RunningProxy:
    """A `ReverseProxy` listening on 127.0.0.1, stopped by `stop`."""

    def __init__(self, pools: dict, routes: list[Route] | None = None, **kwargs) -> None:
        if routes is None:
            routes = [Route(next(iter(pools)))]
        self.factory = ReverseProxy(reactor, routes=RouteTable(routes), pools=pools, **kwargs)
        self.listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.port = self.listening.getHost().port

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> defer.Deferred:
        d = defer.maybeDeferred(self.listening.stopListening)
        for conn in list(self.factory.connections):
            conn.transport.abortConnection()
        self.factory.pool.close_idle()
        return d
