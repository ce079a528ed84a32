"""
The traffic of bench/soak.py: loopback origins and the client scenarios.

Every scenario checks what it got back (sizes, bytes, digests, order), so
an answer that went to the wrong client or came back corrupted is counted
as an error, not as traffic.
"""

from __future__ import annotations

import collections
import hashlib
import os
import sys

import h11
from twisted.internet import defer, protocol, ssl, task
from twisted.web import resource, server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from vectors.smuggling import load_vectors

HOSTILE = [v.data for v in load_vectors(direction="request") if v.status is not None]
TIMEOUT = 30.0
# A kept-alive connection idle at least this long may meet the proxy's
# keep-alive close in flight (bench/soak.py sets that timeout to 3 s).
KEEPALIVE_RACE_FROM = 2.0  # the client marks "used" a little after the proxy does


# -- origins -----------------------------------------------------------------------


class _Bytes(resource.Resource):
    isLeaf = True

    def render(self, request):
        size = int(request.postpath[0])
        request.setHeader(b"content-type", b"application/octet-stream")
        return b"x" * size


class _Echo(resource.Resource):
    isLeaf = True

    def render(self, request):
        body = request.content.read()
        request.setHeader(b"x-received-sha256", hashlib.sha256(body).hexdigest().encode())
        return body


class _Cached(resource.Resource):
    isLeaf = True

    def render(self, request):
        key = request.postpath[0]
        request.setHeader(b"cache-control", b"public, max-age=3600")
        return b"cached-" + key + b"." * 1000


def make_origin_site(reactor) -> server.Site:
    root = resource.Resource()
    root.putChild(b"bytes", _Bytes())
    root.putChild(b"echo", _Echo())
    root.putChild(b"cached", _Cached())
    site = server.Site(root)
    site.noisy = False
    site.log = lambda request: None
    return site


# -- a raw client -------------------------------------------------------------------


class Broken(Exception):
    """A scenario got an answer it should not have."""


class _Raw(protocol.Protocol):
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False
        self._waiter: defer.Deferred | None = None

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def connectionLost(self, reason=None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.callback(None)

    async def more(self, reactor) -> bool:
        """Wait for more bytes (False if the connection closed instead)."""
        if self.closed:
            return False
        self._waiter = defer.Deferred()
        timer = reactor.callLater(TIMEOUT, self._waiter.errback, Broken("timed out"))
        try:
            await self._waiter
        finally:
            if timer.active():
                timer.cancel()
        return bool(self.buffer) or not self.closed

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


async def _connect(reactor, port: int) -> _Raw:
    return await protocol.ClientCreator(reactor, _Raw).connectTCP("127.0.0.1", port, timeout=10)


async def _response(reactor, raw: _Raw, conn: h11.Connection, got_bytes=None
                    ) -> tuple[h11.Response, bytes]:
    """Read one response with h11 (an independent strict reader)."""
    head = None
    body = bytearray()
    while True:
        if got_bytes is not None and raw.buffer:
            got_bytes[0] = True
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            raise Broken(f"invalid or cut response: {e}") from None
        if event is h11.NEED_DATA:
            if raw.buffer:
                conn.receive_data(raw.take())
                continue
            if raw.closed:
                conn.receive_data(b"")
                continue
            await raw.more(reactor)
            continue
        if isinstance(event, h11.InformationalResponse):
            continue
        if isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return head, bytes(body)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            raise Broken(f"connection ended mid-response ({event!r})")


def _request(method: str, url: str, body: bytes | None = None, close: bool = False) -> list:
    host = url.split("/")[2]
    headers = [("Host", host)]
    if body is not None:
        headers.append(("Content-Length", str(len(body))))
    if close:
        headers.append(("Connection", "close"))
    events = [h11.Request(method=method, target=url, headers=headers)]
    if body:
        events.append(h11.Data(data=body))
    events.append(h11.EndOfMessage())
    return events


# -- the scenarios ---------------------------------------------------------------------


class Traffic:
    """Runs the scenarios from ``workers`` concurrent clients and counts the outcomes."""

    def __init__(self, reactor, proxy_ports: dict, ports: dict, ca, rng) -> None:
        self.reactor = reactor
        self.proxy_ports = proxy_ports
        self.proxy_port = proxy_ports["forward"]
        self.ports = ports
        self.rng = rng
        self.trust = ssl.Certificate.loadPEM(ca.cert_pem.bytes())
        self.reset()

    def reset(self) -> None:
        self.counts: collections.Counter = collections.Counter()
        self.errors: collections.Counter = collections.Counter()
        self.error_examples: list[str] = []
        self.cache_hits = 0
        self.keepalive_races = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.ports['plain']}{path}"

    async def run(self, workers: int, seconds: float) -> None:
        deadline = self.reactor.seconds() + seconds
        await defer.gatherResults(
            [defer.ensureDeferred(self._worker(deadline)) for _ in range(workers)]
        )

    async def _worker(self, deadline: float) -> None:
        kept = {"raw": None, "h11": None, "reverse": {"raw": None, "h11": None}}
        scenarios = [
            (self.get, 30), (self.post, 12), (self.cached, 15), (self.pipelined, 6),
            (self.connect_tls, 6), (self.connect_echo, 6), (self.abort_download, 5),
            (self.abort_upload, 4), (self.hostile, 6),
        ]
        if "reverse" in self.proxy_ports:
            scenarios += [(self.reverse_get, 15), (self.reverse_post, 6),
                          (self.reverse_abort, 3)]
        if "tcp" in self.proxy_ports:
            scenarios += [(self.tcp_echo, 8)]
        names = [s for s, _ in scenarios]
        weights = [w for _, w in scenarios]
        while self.reactor.seconds() < deadline:
            scenario = self.rng.choices(names, weights)[0]
            name = scenario.__name__
            try:
                await scenario(kept)
                self.counts[name] += 1
            except Exception as e:  # noqa: BLE001 -- every failure is a finding, counted by kind
                self.errors[name] += 1
                if self.errors[name] <= 3:
                    self.error_examples.append(f"{name}: {e!r}"[:300])
                kept["raw"] = None
                kept["reverse"]["raw"] = None
        for holder in (kept, kept["reverse"]):
            if holder["raw"] is not None:
                holder["raw"].transport.loseConnection()

    async def _kept_alive(self, kept: dict, events: list, port: int | None = None
                          ) -> tuple[h11.Response, bytes]:
        """
        One exchange over the worker's kept-alive connection (reconnecting if
        needed).  A reused connection the proxy closed at its keep-alive
        timeout just as the request went out (no byte of an answer) is the
        race RFC 9112 9.3.1 lets a client retry: counted, and retried once.
        """
        raw, conn = kept["raw"], kept["h11"]
        reused = raw is not None and not raw.closed and conn.our_state is h11.IDLE
        if not reused:
            if raw is not None:
                raw.transport.loseConnection()
            raw = await _connect(self.reactor, port or self.proxy_port)
            conn = h11.Connection(h11.CLIENT)
            kept["raw"], kept["h11"] = raw, conn
        idle = self.reactor.seconds() - kept.get("used", 0.0)
        raw.transport.write(b"".join(conn.send(e) for e in events))
        got_bytes = [False]
        try:
            head, body = await _response(self.reactor, raw, conn, got_bytes)
        except Broken as e:
            if not (reused and raw.closed and not got_bytes[0]):
                raise Broken(f"{e} (reused: {reused}, idle {idle:.2f} s)") from None
            if idle < KEEPALIVE_RACE_FROM:
                raise Broken(f"closed unanswered after only {idle:.2f} s idle") from None
            self.keepalive_races += 1
            kept["raw"] = None
            return await self._kept_alive(kept, events, port)
        finally:
            kept["used"] = self.reactor.seconds()
        if conn.our_state is h11.DONE and conn.their_state is h11.DONE:
            conn.start_next_cycle()
        else:
            kept["raw"] = None
            raw.transport.loseConnection()
        return head, body

    async def get(self, kept) -> None:
        size = self.rng.choice([0, 100, 5000, 70_000, 1_000_000])
        head, body = await self._kept_alive(kept, _request("GET", self.url(f"/bytes/{size}")))
        if head.status_code != 200 or body != b"x" * size:
            raise Broken(f"GET /bytes/{size}: {head.status_code}, {len(body)} bytes")

    async def post(self, kept) -> None:
        data = os.urandom(self.rng.choice([10, 10_000, 300_000]))
        head, body = await self._kept_alive(kept, _request("POST", self.url("/echo"), data))
        digest = dict(head.headers).get(b"x-received-sha256", b"").decode()
        if head.status_code != 200 or body != data or digest != hashlib.sha256(data).hexdigest():
            raise Broken(f"POST /echo of {len(data)} bytes: {head.status_code}, {len(body)} back")

    async def cached(self, kept) -> None:
        key = str(self.rng.randrange(20))
        head, body = await self._kept_alive(kept, _request("GET", self.url(f"/cached/{key}")))
        if head.status_code != 200 or body != b"cached-" + key.encode() + b"." * 1000:
            raise Broken(f"GET /cached/{key}: {head.status_code} {body[:40]!r}")
        fields = dict(head.headers)
        if b"hit" in fields.get(b"cache-status", b"").lower() or fields.get(b"x-cache", b"").upper().startswith(b"HIT"):
            self.cache_hits += 1

    async def pipelined(self, kept) -> None:
        sizes = self.rng.sample([1, 22, 333, 4444, 55555], 3)
        raw = await _connect(self.reactor, self.proxy_port)
        conn = h11.Connection(h11.CLIENT)
        try:
            out = b""
            for i, size in enumerate(sizes):
                events = _request("GET", self.url(f"/bytes/{size}"), close=i == len(sizes) - 1)
                out += b"".join(conn.send(e) for e in events)
                if i < len(sizes) - 1:
                    # h11 sends one request per cycle: rebuild the bytes by hand for the rest.
                    conn = h11.Connection(h11.CLIENT)
            raw.transport.write(out)
            reader = h11.Connection(h11.CLIENT)
            for i, size in enumerate(sizes):
                reader.send(_request("GET", "http://x/", close=i == len(sizes) - 1)[0])
                reader.send(h11.EndOfMessage())
                head, body = await _response(self.reactor, raw, reader)
                if head.status_code != 200 or len(body) != size:
                    raise Broken(f"pipelined answer {i}: {head.status_code}, {len(body)} != {size}")
                if i < len(sizes) - 1:
                    reader.start_next_cycle()
        finally:
            raw.transport.loseConnection()

    async def _tunnel(self, port: int) -> _Raw:
        raw = await _connect(self.reactor, self.proxy_port)
        raw.transport.write(b"CONNECT 127.0.0.1:%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (port, port))
        while b"\r\n\r\n" not in raw.buffer:
            if not await raw.more(self.reactor):
                raise Broken("tunnel closed before the 200")
        head, _, rest = bytes(raw.buffer).partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raw.transport.loseConnection()
            raise Broken(f"CONNECT answered {head[:40]!r}")
        raw.buffer[:] = rest
        return raw

    async def connect_tls(self, kept) -> None:
        raw = await self._tunnel(self.ports["tls"])
        try:
            raw.transport.startTLS(ssl.optionsForClientTLS("127.0.0.1", trustRoot=self.trust))
            size = self.rng.choice([10, 20_000])
            raw.transport.write(
                b"GET /bytes/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % size
            )
            conn = h11.Connection(h11.CLIENT)
            conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x"),
                                                                      ("Connection", "close")]))
            conn.send(h11.EndOfMessage())
            head, body = await _response(self.reactor, raw, conn)
            if head.status_code != 200 or body != b"x" * size:
                raise Broken(f"HTTPS through CONNECT: {head.status_code}, {len(body)} bytes")
        finally:
            raw.transport.loseConnection()

    async def connect_echo(self, kept) -> None:
        raw = await self._tunnel(self.ports["echo"])
        try:
            data = os.urandom(self.rng.choice([1, 1000, 100_000]))
            raw.transport.write(data)
            while len(raw.buffer) < len(data):
                if not await raw.more(self.reactor):
                    break
            if bytes(raw.buffer) != data:
                raise Broken(f"echo through CONNECT: {len(raw.buffer)} of {len(data)} bytes, "
                             f"equal prefix: {data.startswith(bytes(raw.buffer))}")
        finally:
            raw.transport.loseConnection()

    async def abort_download(self, kept) -> None:
        raw = await _connect(self.reactor, self.proxy_port)
        raw.transport.write(
            f"GET {self.url('/bytes/5000000')} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        await raw.more(self.reactor)
        raw.transport.abortConnection()

    async def abort_upload(self, kept) -> None:
        raw = await _connect(self.reactor, self.proxy_port)
        raw.transport.write(
            f"POST {self.url('/echo')} HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n".encode()
        )
        for _ in range(self.rng.randrange(1, 20)):
            raw.transport.write(b"u" * 10000)
        await task.deferLater(self.reactor, self.rng.random() * 0.1, lambda: None)
        raw.transport.abortConnection()

    async def hostile(self, kept) -> None:
        raw = await _connect(self.reactor, self.proxy_port)
        try:
            data = self.rng.choice(HOSTILE) if self.rng.random() < 0.8 else os.urandom(200)
            raw.transport.write(data + b"\r\n\r\n")
            while not raw.closed and b"\r\n\r\n" not in raw.buffer:
                await raw.more(self.reactor)
            answer = bytes(raw.buffer)
            # A refusal (4xx), or a 5xx when the head was valid and the
            # upstream failed before the bad body was even read; never a success.
            if answer and not (answer.startswith(b"HTTP/1.1 ") and answer[9:10] in b"45"):
                raise Broken(f"hostile bytes answered {answer[:40]!r}")
        finally:
            raw.transport.abortConnection()

    # -- the reverse proxy and the TCP relay

    async def reverse_get(self, kept) -> None:
        size = self.rng.choice([0, 100, 5000, 70_000, 1_000_000])
        events = [h11.Request(method="GET", target=f"/bytes/{size}", headers=[("Host", "web")]),
                  h11.EndOfMessage()]
        head, body = await self._kept_alive(kept["reverse"], events, self.proxy_ports["reverse"])
        if head.status_code != 200 or body != b"x" * size:
            raise Broken(f"reverse GET /bytes/{size}: {head.status_code}, {len(body)} bytes")

    async def reverse_post(self, kept) -> None:
        data = os.urandom(self.rng.choice([10, 10_000, 300_000]))
        events = [h11.Request(method="POST", target="/echo",
                              headers=[("Host", "web"), ("Content-Length", str(len(data)))]),
                  h11.Data(data=data), h11.EndOfMessage()]
        head, body = await self._kept_alive(kept["reverse"], events, self.proxy_ports["reverse"])
        if head.status_code != 200 or body != data:
            raise Broken(f"reverse POST of {len(data)} bytes: {head.status_code}, {len(body)} back")

    async def reverse_abort(self, kept) -> None:
        raw = await _connect(self.reactor, self.proxy_ports["reverse"])
        raw.transport.write(b"GET /bytes/5000000 HTTP/1.1\r\nHost: web\r\n\r\n")
        await raw.more(self.reactor)
        raw.transport.abortConnection()

    async def tcp_echo(self, kept) -> None:
        raw = await _connect(self.reactor, self.proxy_ports["tcp"])
        try:
            data = os.urandom(self.rng.choice([1, 1000, 200_000]))
            raw.transport.write(data)
            while len(raw.buffer) < len(data):
                if not await raw.more(self.reactor):
                    break
            if bytes(raw.buffer) != data:
                raise Broken(f"TCP echo: {len(raw.buffer)} of {len(data)} bytes")
        finally:
            raw.transport.loseConnection()
