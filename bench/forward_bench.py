#!/usr/bin/env python3
"""
Forward proxy throughput and streaming memory, against peers in the same run.

    python3 bench/forward_bench.py [--seconds 8] [--connections 20] [--stream-mib 1024] [--gc-off]
    python3 bench/forward_bench.py --rounds 5 --seconds 5 --skip-stream

1. Requests/s for 100-byte responses from one nginx origin, 20 keep-alive
   client connections (wrk, absolute-form requests), through:
   multiproxy, twisted.web.proxy.Proxy, and proxy.py (one worker), with a
   reference row: bench/_minimal_forward.py, a Twisted forward proxy doing
   next to no HTTP work (the floor under any proxy built on Twisted).
   Prints each figure and the ratios to multiproxy.  With ``--rounds N``
   every proxy runs N times, in turn, and the summary gives each ratio's
   median and range over the rounds: on a shared machine one round's ratio
   can move by 20 % or more.  twisted.web.proxy opens an upstream connection per
   request, so its cost also depends on the kernel's connection handling;
   each round prints how many loopback connections sat in TIME_WAIT when it
   began.
2. Streams ``--stream-mib`` MiB through multiproxy to a client that reads
   slowly (rate-limited), sampling the proxy's RSS: memory must stay flat.

Installs nginx (apt) and proxy.py (PyPI) if missing; set BENCH_NO_INSTALL=1
to skip peers that are not installed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    PYTHON,
    absolute_url_lua,
    cpu_seconds,
    ensure_pip,
    free_port,
    nginx_origin,
    rss_kib,
    running,
    twistd_argv,
    wrk,
)

TWISTED_PROXY = """
import sys
from twisted.internet import reactor
from twisted.web import http, proxy
factory = http.HTTPFactory()
factory.protocol = proxy.Proxy
reactor.listenTCP(int(sys.argv[1]), factory, interface="127.0.0.1")
reactor.run()
"""


MINIMAL = "minimal Twisted forward (floor)"


def peers(port: int, reactor: str | None = None, gc_off: bool = False) -> dict[str, list[str]]:
    reactor_args = [f"--reactor={reactor}"] if reactor else []
    multiproxy_args = [
        *reactor_args, "multiproxy", "--access-log", "none", "forward", "--no-cache",
        "--listen", f"tcp:{port}:interface=127.0.0.1",
    ]
    commands = {
        # The peers do not cache, so neither does multiproxy here
        # (bench/cache_bench.py measures the cache).
        "multiproxy": twistd_argv(*multiproxy_args),
    }
    if gc_off:
        # The same proxy with the cyclic garbage collector off: what the
        # collector costs it (tests/test_garbage.py keeps requests cycle-free).
        commands["multiproxy, GC off"] = [
            PYTHON, "-c", "import gc; gc.disable(); from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", *multiproxy_args,
        ]
    commands.update({
        "twisted.web.proxy": [PYTHON, "-c", TWISTED_PROXY, str(port)],
        # A reference row: Twisted and the kernel with next to no HTTP work
        # (bench/_minimal_forward.py), the floor under any Twisted proxy.
        MINIMAL: [PYTHON, os.path.join(os.path.dirname(__file__), "_minimal_forward.py"),
                  str(port)],
    })
    if ensure_pip("proxy", "proxy.py"):
        commands["proxy.py"] = [
            PYTHON, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port),
            "--num-workers", "1", "--num-acceptors", "1", "--log-level", "WARNING",
        ]
    return commands


def throughput(args) -> dict[str, float]:
    rounds: list[tuple[dict[str, float], dict[str, float]]] = []
    with nginx_origin({"100b": b"x" * 100}) as origin:
        target = f"http://127.0.0.1:{origin}/100b"
        direct = wrk(target, None, min(args.seconds, 3), args.connections)
        print(f"origin direct (nginx): {direct['rps']:.0f} req/s (for scale)")
        for number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"\nround {number} of {args.rounds} "
                      f"({time_wait_count()} connections in TIME_WAIT)")
            rounds.append(one_round(args, target))
    results, cpu_cost = rounds[-1]
    if args.rounds == 1:
        print("\nratios (multiproxy / peer), throughput and CPU cost per request:")
        for name, rps in results.items():
            if name != "multiproxy" and rps:
                print(f"  multiproxy / {name}: {results['multiproxy'] / rps:.2f}x req/s, "
                      f"{cpu_cost[name] / cpu_cost['multiproxy']:.2f}x less CPU per request")
        return results
    print(f"\nratios (multiproxy / peer) over {args.rounds} rounds: median [lowest-highest]")
    for name in results:
        if name == "multiproxy":
            continue
        rps = sorted(r["multiproxy"] / r[name] for r, _ in rounds if r.get(name))
        cpu = sorted(c[name] / c["multiproxy"] for _, c in rounds if c.get(name))
        if rps:
            print(f"  multiproxy / {name}: {statistics.median(rps):.2f}x req/s "
                  f"[{rps[0]:.2f}-{rps[-1]:.2f}], {statistics.median(cpu):.2f}x less CPU "
                  f"per request [{cpu[0]:.2f}-{cpu[-1]:.2f}]")
    return results


def one_round(args, target: str) -> tuple[dict[str, float], dict[str, float]]:
    """Every proxy in turn: requests/s and CPU microseconds per request, by name."""
    results = {}
    cpu_cost = {}
    for name, argv in peers(0, args.reactor, args.gc_off).items():
        port = free_port()
        argv = [a.replace(":0:", f":{port}:") if "tcp:0:" in a else a for a in argv]
        argv = [str(port) if a == "0" else a for a in argv]
        with running(argv, port) as process:
            wrk(f"http://127.0.0.1:{port}", absolute_url_lua(target), 1, args.connections)
            cpu_before = cpu_seconds(process.pid)
            result = wrk(f"http://127.0.0.1:{port}", absolute_url_lua(target), args.seconds,
                         args.connections)
            cpu = cpu_seconds(process.pid) - cpu_before
        results[name] = result["rps"]
        cpu_us = cpu / max(result["requests"], 1) * 1e6
        cpu_cost[name] = cpu_us
        print(f"{name:32s} {result['rps']:10.0f} req/s  {cpu_us:7.0f} CPU-us/req  "
              f"p50 {result['p50']:>8s}  non-2xx {result['non2xx']}  {result['errors']}")
    return results, cpu_cost


def time_wait_count() -> int:
    """IPv4 TCP connections in TIME_WAIT (state 06 in /proc/net/tcp), or -1 if unknown."""
    try:
        with open("/proc/net/tcp") as table:
            next(table)
            return sum(1 for line in table if line.split()[3] == "06")
    except OSError:
        return -1


def stream_memory(args) -> None:
    size = args.stream_mib * 1024 * 1024
    with nginx_origin({"big": size}) as origin:
        port = free_port()
        argv = twistd_argv("multiproxy", "--access-log", "none", "forward", "--no-cache",
                           "--listen", f"tcp:{port}:interface=127.0.0.1")
        with running(argv, port) as process:
            time.sleep(0.5)
            baseline = rss_kib(process.pid)
            peak = baseline
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            sock.sendall(f"GET http://127.0.0.1:{origin}/big HTTP/1.1\r\nHost: x\r\n"
                         f"Connection: close\r\n\r\n".encode())
            received = 0
            started = time.monotonic()
            last_sample = 0.0
            # Read at most --read-mibps MiB/s: slower than the origin can send.
            budget = args.read_mibps * 1024 * 1024
            while True:
                chunk = sock.recv(262144)
                if not chunk:
                    break
                received += len(chunk)
                elapsed = time.monotonic() - started
                ahead = received / budget - elapsed
                if ahead > 0:
                    time.sleep(ahead)
                if elapsed - last_sample > 0.2:
                    last_sample = elapsed
                    peak = max(peak, rss_kib(process.pid))
                if elapsed > args.stream_timeout:
                    print(f"stopped after {args.stream_timeout} s")
                    break
            sock.close()
            elapsed = time.monotonic() - started
    print(f"\nstreamed {received / 1048576:.0f} MiB in {elapsed:.1f} s "
          f"({received / 1048576 / elapsed:.0f} MiB/s, client reading at most "
          f"{args.read_mibps} MiB/s)")
    print(f"proxy RSS: baseline {baseline / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
          f"growth {(peak - baseline) / 1024:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every proxy this many times, in turn; report median ratios")
    parser.add_argument("--stream-mib", type=int, default=1024)
    parser.add_argument("--read-mibps", type=int, default=150)
    parser.add_argument("--stream-timeout", type=float, default=120)
    parser.add_argument("--reactor", help="Twisted reactor for multiproxy (e.g. asyncio)")
    parser.add_argument("--gc-off", action="store_true",
                        help="also run multiproxy with the cyclic garbage collector disabled")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_stream:
        stream_memory(args)


if __name__ == "__main__":
    main()
