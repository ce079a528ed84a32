#!/usr/bin/env python3
"""
Redis from Twisted: which client, and what cache hits from Redis cost.

    python3 bench/redis_client_bench.py [--seconds 3] [--connections 10]

1. Clients, same redis-server, same reactor (epoll): ``txredisapi`` against
   multiproxy's own RESP2 protocol (`multiproxy._redislink.RespProtocol`,
   replies parsed by ``hiredis``).  GETs of a 1 KiB and a 256 KiB value
   (the Redis store's chunk size), 50 in flight, then one at a time.
2. Cache hits through a multiproxy forward proxy (one process), one URL of
   100 bytes and one of 1 MiB, ``max-age=3600``, wrk with ``--connections``
   keep-alive connections: the in-memory store against ``--cache-redis``.
   Target: hits from Redis at least 0.5x the rate of hits from memory.

Every server listens on 127.0.0.1 (redis-server on a free port, no
persistence) and every run is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, os.path.join(ROOT, "src"), ROOT]

from _harness import absolute_url_lua, cpu_seconds, free_port, running, twistd_argv, wrk  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

ROUNDS = 2000


def clients(redis: RedisServer) -> None:
    import txredisapi
    from twisted.internet import defer, reactor
    from twisted.internet.endpoints import HostnameEndpoint
    from twisted.internet.protocol import Factory

    from multiproxy._redislink import RespProtocol

    @defer.inlineCallbacks
    def timed(get, key, n, parallel):
        start = time.perf_counter()
        if parallel:
            for i in range(0, n, 50):
                yield defer.gatherResults([get(key) for _ in range(50)])
        else:
            for _ in range(n):
                yield get(key)
        return n / (time.perf_counter() - start)

    @defer.inlineCallbacks
    def run():
        tx = yield txredisapi.Connection("127.0.0.1", redis.port, reconnect=False, charset=None)
        ours = yield HostnameEndpoint(reactor, "127.0.0.1", redis.port).connect(
            Factory.forProtocol(RespProtocol))
        yield tx.set(b"k1", b"x" * 1024)
        yield tx.set(b"k256", b"x" * 256 * 1024)
        print("Redis client GETs/s (higher is better):")
        for label, key, n in (("1 KiB", b"k1", ROUNDS), ("256 KiB", b"k256", ROUNDS // 4)):
            for parallel in (True, False):
                mode = "50 in flight" if parallel else "one at a time"
                a = yield timed(tx.get, key, n, parallel)
                b = yield timed(lambda k: ours.execute("GET", k), key, n, parallel)
                print(f"  {label:8s} {mode:14s} txredisapi {a:8.0f}   RESP+hiredis {b:8.0f}"
                      f"   ratio {b / a:.2f}x")
        yield tx.disconnect()
        ours.transport.loseConnection()
        reactor.stop()

    reactor.callWhenRunning(run)
    reactor.run()


def origin_server(port: int) -> list[str]:
    code = f"""
from twisted.internet import reactor
from twisted.web import resource, server
class R(resource.Resource):
    isLeaf = True
    def render_GET(self, request):
        request.setHeader(b"cache-control", b"max-age=3600")
        return b"x" * (1048576 if request.path.startswith(b"/big") else 100)
reactor.listenTCP({port}, server.Site(R()), interface="127.0.0.1")
reactor.run()
"""
    return [sys.executable, "-c", code]


def hits(redis: RedisServer, args) -> None:
    origin_port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT}/src:{ROOT}")
    results: dict[tuple[str, str], float] = {}
    with running(origin_server(origin_port), origin_port):
        for store, extra in (("memory", []), ("redis", ["--cache-redis", redis.url])):
            port = free_port()
            argv = twistd_argv("multiproxy", "--access-log", "none", "forward", "--listen",
                               f"tcp:{port}:interface=127.0.0.1", *extra)
            with running(argv, port, env=env) as p:
                time.sleep(1.2)  # the Redis link's first ping
                for name in ("small", "big"):
                    url = f"http://127.0.0.1:{origin_port}/{name}"
                    lua = absolute_url_lua(url)
                    wrk(f"http://127.0.0.1:{port}", lua, 1, args.connections)  # store it
                    before = cpu_seconds(p.pid)
                    r = wrk(f"http://127.0.0.1:{port}", lua, args.seconds, args.connections)
                    cpu = (cpu_seconds(p.pid) - before) / max(r["requests"], 1) * 1e6
                    results[(store, name)] = r["rps"]
                    print(f"  hits from {store:6s} {name:5s} {r['rps']:8.0f} req/s  "
                          f"p50 {r['p50']:>8s}  {cpu:5.0f} CPU-us/req  non-2xx {r['non2xx']}")
    for name, size in (("small", "100 B"), ("big", "1 MiB")):
        ratio = results[("redis", name)] / max(results[("memory", name)], 1)
        print(f"redis / memory hits, {size}: {ratio:.2f}x (target >= 0.5x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--only", choices=("clients", "hits"))
    args = parser.parse_args()
    redis = RedisServer()
    redis.start()
    try:
        if args.only != "hits":
            clients(redis)
        if args.only != "clients":
            print(f"\nCache hits through the forward proxy ({args.connections} connections, "
                  f"{args.seconds:g} s each):")
            hits(redis, args)
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
