"""
Loopback peers for integration tests: origins the proxy talks to, and real
clients (curl, http.client) that talk to the proxy.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil

from twisted.internet import defer, protocol, reactor, threads, utils
from twisted.web import resource, server

CURL = shutil.which("curl")
OPENSSL = shutil.which("openssl")


class _Bytes(resource.Resource):
    isLeaf = True

    def render(self, request):
        parts = request.postpath
        size = int(parts[0]) if parts and parts[0] else 100
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % size)
        return b"x" * size


class _Chunked(resource.Resource):
    """A body of N bytes sent in pieces with no Content-Length (chunked for 1.1)."""

    isLeaf = True

    def render(self, request):
        size = int(request.postpath[0]) if request.postpath else 1000
        piece = b"abcdefghij" * 100
        sent = 0
        while sent < size:
            n = min(len(piece), size - sent)
            request.write(piece[:n])
            sent += n
        request.finish()
        return server.NOT_DONE_YET


class _Echo(resource.Resource):
    """Answers with the request body, and its length and sha256 in headers."""

    isLeaf = True

    def render(self, request):
        body = request.content.read()
        request.setHeader(b"x-received-length", b"%d" % len(body))
        request.setHeader(b"x-received-sha256", hashlib.sha256(body).hexdigest().encode())
        request.setHeader(b"content-type", b"application/octet-stream")
        return body


class _Headers(resource.Resource):
    """Answers with the request line and header fields it received, as JSON."""

    isLeaf = True

    def render(self, request):
        fields = [
            [k.decode("latin-1"), v.decode("latin-1")]
            for k, vs in request.requestHeaders.getAllRawHeaders()
            for v in vs
        ]
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(
            {"method": request.method.decode(), "uri": request.uri.decode("latin-1"),
             "headers": fields}
        ).encode()


class _Status(resource.Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(int(request.postpath[0]))
        return b"status\n"


class _Slow(resource.Resource):
    """Answers after the given number of seconds."""

    isLeaf = True

    def render(self, request):
        delay = float(request.postpath[0]) if request.postpath else 1.0
        call = reactor.callLater(delay, lambda: (request.write(b"slow\n"), request.finish()))
        request.notifyFinish().addErrback(lambda _: call.active() and call.cancel())
        return server.NOT_DONE_YET


def origin_site() -> server.Site:
    """A twisted.web origin with test resources under /bytes, /chunked, /echo, ..."""
    root = resource.Resource()
    root.putChild(b"bytes", _Bytes())
    root.putChild(b"chunked", _Chunked())
    root.putChild(b"echo", _Echo())
    root.putChild(b"headers", _Headers())
    root.putChild(b"status", _Status())
    root.putChild(b"slow", _Slow())
    site = server.Site(root)
    site.noisy = False
    site.log = lambda request: None
    return site


class ScriptedOrigin(protocol.Protocol):
    """
    An origin that reads one request head and answers with ``script`` bytes
    verbatim, then closes if ``close`` is set; for responses twisted.web
    would never send (truncated, malformed, close-delimited).
    """

    def __init__(self, script: bytes, close: bool, received: list) -> None:
        self.script = script
        self.close = close
        self.received = received
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.script is not None:
            self.received.append(self.buffer)
            script, self.script = self.script, None
            if script:
                self.transport.write(script)
            if self.close:
                self.transport.loseConnection()


def listen_scripted(script: bytes, close: bool = True):
    """Listen with a `ScriptedOrigin`; returns (port, list of received request bytes)."""
    received: list = []
    factory = protocol.Factory.forProtocol(lambda: ScriptedOrigin(script, close, received))
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return port, received


def curl(*args: str, timeout: float = 20) -> defer.Deferred:
    """Run curl; fires with (stdout bytes, stderr bytes, exit code)."""
    return utils.getProcessOutputAndValue(
        CURL, ("--silent", "--show-error", "--max-time", str(timeout)) + args,
        env=dict(os.environ, no_proxy="", NO_PROXY=""),
    )


def http_client_request(proxy_port: int, method: str, url: str, body=None, headers=None,
                        timeout: float = 20):
    """One request through the proxy with http.client, in a thread; fires with (status, headers, body)."""

    def run():
        conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=timeout)
        try:
            conn.request(method, url, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    return threads.deferToThread(run)


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> defer.Deferred:
    """Send raw bytes, read until the peer closes (or timeout); fires with all bytes read."""
    done = defer.Deferred()
    chunks: list[bytes] = []

    class Client(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(data)
            self.timer = reactor.callLater(timeout, self.transport.abortConnection)

        def dataReceived(self, chunk):
            chunks.append(chunk)

        def connectionLost(self, reason):
            if self.timer.active():
                self.timer.cancel()
            done.callback(b"".join(chunks))

    protocol.ClientCreator(reactor, Client).connectTCP("127.0.0.1", port)
    return done


async def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Wait until ``predicate()`` is true (for effects that land after a peer closes)."""
    from twisted.internet import task

    waited = 0.0
    while not predicate():
        if waited >= timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await task.deferLater(reactor, interval, lambda: None)
        waited += interval
