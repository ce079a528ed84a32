#!/usr/bin/env python3
"""
Reverse proxy throughput: multiproxy against twisted.web.proxy's
ReverseProxyResource and (when installed) HAProxy and nginx, same origin,
same run.

    python3 bench/reverse_bench.py [--seconds 5] [--connections 20] [--rounds 2]

Each proxy sits in front of one nginx origin serving a 100-byte file; wrk
sends origin-form GETs over ``--connections`` keep-alive connections for
``--seconds`` seconds per proxy and round, rounds alternating between the
proxies; the best round of each is reported, with the CPU time the proxy
process used per request.  Every proxy runs on one core: multiproxy and
Twisted are single-threaded, HAProxy runs with ``nbthread 1`` and nginx with
``worker_processes 1``, all with keep-alive to the origin.

A reference row, "twisted byte relay", is the floor of any proxy on Twisted:
a client connection per origin connection, bytes relayed as they arrive, no
HTTP work at all.  What it costs per request is what Twisted and the system
calls take before a proxy parses or decides anything.

nginx and HAProxy are looked up on PATH; if missing, the script tries
``apt-get install -y`` once (bounded in time) and skips the ones it cannot
get.  Set BENCH_NO_INSTALL=1 to never install.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    PYTHON,
    cpu_seconds,
    ensure_apt,
    free_port,
    nginx_origin,
    running,
    twistd_argv,
    wrk,
)

TWISTED_REVERSE = """
import sys
from twisted.internet import reactor
from twisted.web import proxy, server
site = server.Site(proxy.ReverseProxyResource("127.0.0.1", int(sys.argv[2]), b""))
site.log = lambda request: None
reactor.listenTCP(int(sys.argv[1]), site, interface="127.0.0.1")
reactor.run()
"""


# The floor of any proxy built on Twisted: each client connection gets its
# own connection to the origin and bytes are relayed as they come, with
# multiproxy's immediate sends, and no HTTP work at all (no parsing, no
# rewriting, no pooling, no timers).  Not a usable proxy: a reference row.
TWISTED_FLOOR = """
import sys
from twisted.internet import protocol, reactor
from multiproxy.transport._directwrite import no_delay, write_direct

class Upstream(protocol.Protocol):
    def __init__(self, client):
        self.client = client
    def connectionMade(self):
        no_delay(self.transport)
        self.client.upstream = self
        for data in self.client.pending:
            write_direct(self.transport, data)
    def dataReceived(self, data):
        write_direct(self.client.transport, data)
    def connectionLost(self, reason):
        self.client.transport.loseConnection()

class Client(protocol.Protocol):
    def connectionMade(self):
        no_delay(self.transport)
        self.upstream, self.pending = None, []
        protocol.ClientCreator(reactor, Upstream, self).connectTCP("127.0.0.1", int(sys.argv[2]))
    def dataReceived(self, data):
        if self.upstream is None:
            self.pending.append(data)
        else:
            write_direct(self.upstream.transport, data)
    def connectionLost(self, reason):
        if self.upstream is not None:
            self.upstream.transport.loseConnection()

factory = protocol.Factory.forProtocol(Client)
reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1")
reactor.run()
"""


def haproxy_argv(port: int, origin: int, root: str, threads: int = 1,
                 http2: bool = False, origin_http2: bool = False) -> list[str] | None:
    """
    HAProxy in front of ``origin`` with ``threads`` threads, its front end
    HTTP/1.1 or (``http2``) HTTP/2 with prior knowledge, speaking HTTP/1.1 or
    (``origin_http2``) HTTP/2 to the origin; None if it cannot be installed.
    """
    haproxy = ensure_apt("haproxy", "haproxy")
    if haproxy is None:
        return None
    conf = os.path.join(root, f"haproxy-{port}.cfg")
    with open(conf, "w") as f:
        f.write(f"""
global
    nbthread {threads}
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-keep-alive
frontend front
    bind 127.0.0.1:{port}{" proto h2" if http2 else ""}
    default_backend origin
backend origin
    http-reuse always
    server o1 127.0.0.1:{origin}{" proto h2" if origin_http2 else ""}
""")
    return [haproxy, "-f", conf, "-db"]


def nginx_argv(port: int, origin: int, root: str, workers: int = 1,
               http2: bool = False) -> list[str] | None:
    """
    nginx proxying to ``origin`` with ``workers`` worker processes, its front
    end HTTP/1.1 or (``http2``) HTTP/2 with prior knowledge; None if not installable.
    """
    nginx = ensure_apt("nginx", "nginx")
    if nginx is None:
        return None
    conf = os.path.join(root, f"nginx-proxy-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes {workers};
daemon off;
error_log {root}/proxy-error-{port}.log;
pid {root}/proxy-{port}.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port}{" http2" if http2 else ""};
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
""")
    return [nginx, "-c", conf, "-p", root]


def peers(origin: int, root: str) -> dict[str, tuple[int, list[str]]]:
    """Each peer's listening port and command line."""
    out = {}
    port = free_port()
    out["multiproxy"] = (port, twistd_argv(
        "multiproxy", "--access-log", "none", "reverse",
        "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--backend", f"http://127.0.0.1:{origin}",
    ))
    port = free_port()
    out["twisted ReverseProxyResource"] = (
        port, [PYTHON, "-c", TWISTED_REVERSE, str(port), str(origin)])
    port = free_port()
    out["twisted byte relay (floor, no HTTP)"] = (
        port, [PYTHON, "-c", TWISTED_FLOOR, str(port), str(origin)])
    port = free_port()
    argv = haproxy_argv(port, origin, root)
    if argv is not None:
        out["haproxy (1 thread)"] = (port, argv)
    port = free_port()
    argv = nginx_argv(port, origin, root)
    if argv is not None:
        out["nginx (1 worker)"] = (port, argv)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-reverse-")
    os.chmod(root, 0o755)
    best: dict[str, dict] = {}
    cost: dict[str, float] = {}
    try:
        with nginx_origin({"100b": b"x" * 100}) as origin:
            direct = wrk(f"http://127.0.0.1:{origin}/100b", None, min(args.seconds, 3),
                         args.connections)
            print(f"origin direct (nginx): {direct['rps']:.0f} req/s (for scale)")
            commands = peers(origin, root)
            for round_number in range(args.rounds):
                for name, (port, argv) in commands.items():
                    url = f"http://127.0.0.1:{port}/100b"
                    with running(argv, port) as process:
                        wrk(url, None, 1, args.connections)  # warm-up
                        cpu_before = cpu_seconds(process.pid)
                        result = wrk(url, None, args.seconds, args.connections)
                        cpu = cpu_seconds(process.pid) - cpu_before
                    if result["non2xx"] or result["errors"]:
                        print(f"  {name}: non-2xx {result['non2xx']} errors {result['errors']}")
                    print(f"round {round_number + 1}: {name:30s} {result['rps']:9.0f} req/s")
                    if name not in best or result["rps"] > best[name]["rps"]:
                        best[name] = result
                        cost[name] = cpu / max(result["requests"], 1) * 1e6
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nbest of {args.rounds} rounds, {args.connections} connections, 100-byte responses:")
    for name, result in best.items():
        print(f"  {name:30s} {result['rps']:9.0f} req/s  {cost[name]:6.0f} CPU-us/req  "
              f"p50 {result['p50']:>8s}")
    mine = best.get("multiproxy", {}).get("rps", 0.0)
    print("\nmultiproxy relative to each peer:")
    for name, result in best.items():
        if name != "multiproxy" and result["rps"]:
            print(f"  multiproxy / {name}: {mine / result['rps']:.2f}x")


if __name__ == "__main__":
    main()
