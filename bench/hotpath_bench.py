#!/usr/bin/env python3
"""
CPU cost of one proxied request in multiproxy's own code, without sockets.

    python3 bench/hotpath_bench.py [--requests 20000] [--proxy forward|reverse] [--profile]
    python3 bench/hotpath_bench.py --instructions [--proxy forward|reverse]

Drives the real ForwardProxy (or ReverseProxy, one route to a pool of one
backend) protocol and a real pooled UpstreamConnection over in-memory
transports: a request goes in on the client side, the response comes back
on the upstream side, and the bytes the client would receive are checked.  Reports microseconds per request (best of 5 runs), so
changes to the hot path can be compared on a noisy machine.

``--instructions`` counts x86 instructions per request instead, under
valgrind's callgrind: two runs (300 and 1300 requests, after the same
warm-up) with a fixed hash seed, their difference divided by 1000, so
start-up cancels out.  The count is the same from one run to the next
whatever else the machine is doing; it needs valgrind (apt) and takes about
two minutes.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.forward import ForwardProxy
from multiproxy.forward._origin import Origin
from multiproxy.http._client import UpstreamConnection
from multiproxy.reverse import ReverseProxy, Route, RouteTable

REQUESTS = {
    "forward": (
        b"GET http://origin.test:8000/100b HTTP/1.1\r\nHost: origin.test:8000\r\n"
        b"User-Agent: bench/1.0\r\nAccept: */*\r\n\r\n"
    ),
    "reverse": (
        b"GET /100b HTTP/1.1\r\nHost: site.test\r\n"
        b"User-Agent: bench/1.0\r\nAccept: */*\r\n\r\n"
    ),
}
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 23:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: 100\r\n"
    b"Last-Modified: Thu, 26 Nov 2026 22:00:00 GMT\r\nConnection: keep-alive\r\n"
    b"ETag: \"6565-64\"\r\nAccept-Ranges: bytes\r\n\r\n" + b"x" * 100
)


def setup(proxy: str):
    clock = Clock()
    if proxy == "forward":
        factory = ForwardProxy(clock)
        key = Origin("http", "origin.test", 8000).key
    else:
        backend = Backend("b0", host="127.0.0.1", port=8000)
        pools = {"web": BackendPool("web", [backend], RoundRobin(), clock)}
        factory = ReverseProxy(clock, routes=RouteTable([Route("web")]), pools=pools)
        key = backend.key
    client = factory.buildProtocol(None)
    client_transport = StringTransport()
    client.makeConnection(client_transport)
    upstream = UpstreamConnection(factory.pool, key)
    upstream_transport = StringTransport()
    upstream.makeConnection(upstream_transport)
    factory.pool.release(upstream)
    return client, client_transport, upstream, upstream_transport


def run(n: int, proxy: str = "forward") -> float:
    client, client_transport, upstream, upstream_transport = setup(proxy)
    request = REQUESTS[proxy]
    started = time.process_time()
    for _ in range(n):
        client.dataReceived(request)
        upstream_transport.clear()
        upstream.dataReceived(RESPONSE)
        client_transport.clear()
    elapsed = time.process_time() - started
    client.dataReceived(request)
    upstream.dataReceived(RESPONSE)
    assert client_transport.value().endswith(b"x" * 100), client_transport.value()[:300]
    return elapsed / n * 1e6


def instructions_per_request(proxy: str) -> float:
    """x86 instructions per request, from two callgrind runs of different lengths."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind (apt-get install valgrind)")
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (300, 1300):
            out = subprocess.run(
                ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.{n}",
                 os.path.realpath(sys.executable), os.path.abspath(__file__),
                 "--once", str(n), "--proxy", proxy],
                capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"),
            )
            match = re.search(r"Collected : (\d+)", out.stderr)
            if out.returncode != 0 or match is None:
                raise SystemExit(f"callgrind run failed:\n{out.stderr[-2000:]}")
            counts.append(int(match.group(1)))
    return (counts[1] - counts[0]) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--proxy", choices=sorted(REQUESTS), default="forward")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--instructions", action="store_true",
                        help="count instructions per request under callgrind (repeatable)")
    parser.add_argument("--once", type=int, help=argparse.SUPPRESS)  # one run, for callgrind
    args = parser.parse_args()
    if args.once is not None:
        run(200, args.proxy)  # the same warm-up (memo caches) in both counted runs
        run(args.once, args.proxy)
        return
    if args.instructions:
        count = instructions_per_request(args.proxy)
        print(f"{args.proxy}: {count:,.0f} instructions per proxied request in multiproxy's code "
              "(callgrind, in memory)")
        return
    if args.profile:
        profile = cProfile.Profile()
        profile.enable()
        run(args.requests, args.proxy)
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    best = min(run(args.requests, args.proxy) for _ in range(5))
    print(f"{args.proxy}: {best:.1f} CPU-us per proxied request in multiproxy's code "
          f"(best of 5, {args.requests} requests each)")


if __name__ == "__main__":
    main()
