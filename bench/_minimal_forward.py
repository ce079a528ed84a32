"""
A reference point, not a proxy to use: the least a Twisted forward proxy can
do for a keep-alive GET and its Content-Length response.

It splits heads on CRLF, drops the usual hop-by-hop fields, adds ``Via`` and
pools one upstream connection per client request, and checks nothing else:
no byte or framing checks (smuggling), no limits, no timeouts, no policy, no
access record, no chunked bodies, no error answers.  `forward_bench.py`
runs it beside the real proxies to show how much of a request's cost is
Twisted and the kernel (what this costs) and how much is the HTTP work the
real proxies do on top.

    python3 bench/_minimal_forward.py PORT
"""

import sys

from twisted.internet import protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
              b"transfer-encoding", b"upgrade", b"proxy-authorization"}
idle: dict[tuple[bytes, int], list["Upstream"]] = {}


class Upstream(protocol.Protocol):
    def __init__(self, key):
        self.key = key
        self.buffer = b""
        self.client = None

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)

    def dataReceived(self, data):
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.buffer[:end].split(b"\r\n")
        out, length = [lines[0]], 0
        for line in lines[1:]:
            name = line.partition(b":")[0].lower()
            if name == b"content-length":
                length = int(line.partition(b":")[2])
            if name not in HOP_BY_HOP:
                out.append(line)
        out.append(b"Via: 1.1 minimal")
        total = end + 4 + length
        if len(self.buffer) < total:
            return
        body, self.buffer = self.buffer[end + 4:total], self.buffer[total:]
        client, self.client = self.client, None
        idle.setdefault(self.key, []).append(self)
        client.transport.write(b"\r\n".join(out) + b"\r\n\r\n" + body)
        client.next_request()


class Client(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.buffer = b""

    def dataReceived(self, data):
        self.buffer += data
        self.next_request()

    def next_request(self):
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        lines = self.buffer[:end].split(b"\r\n")
        self.buffer = self.buffer[end + 4:]
        method, target, _ = lines[0].split(b" ")
        authority, _, path = target.split(b"://", 1)[1].partition(b"/")
        host, _, port = authority.partition(b":")
        key = (host, int(port or 80))
        out = [method + b" /" + path + b" HTTP/1.1", b"Host: " + authority, b"Via: 1.1 minimal"]
        for line in lines[1:]:
            name = line.partition(b":")[0].lower()
            if name not in HOP_BY_HOP and name != b"host":
                out.append(line)
        head = b"\r\n".join(out) + b"\r\n\r\n"
        pooled = idle.get(key)
        if pooled:
            upstream = pooled.pop()
            upstream.client = self
            upstream.transport.write(head)
        else:
            upstream = Upstream(key)
            upstream.client = self
            endpoint = TCP4ClientEndpoint(reactor, host.decode("ascii"), key[1])
            connectProtocol(endpoint, upstream).addCallback(lambda p: p.transport.write(head))


factory = protocol.Factory()
factory.protocol = Client
reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1")
reactor.run()
