#!/usr/bin/env python3
"""
``--workers 1`` against ``--workers 2``: requests/s and CPU per request,
forward and reverse, same run, rounds alternating.

    python3 bench/workers_bench.py [--seconds 3] [--connections 20] [--rounds 2]

One nginx origin (``worker_processes 1``) serves a 100-byte file; wrk (one
thread) sends ``--connections`` keep-alive connections for ``--seconds`` per
configuration and round.  The forward proxy runs with ``--no-cache``, the
reverse proxy with one backend.  CPU per request is the user + system time
of the master and its workers (``/proc``) divided by the requests wrk
completed.  Each round runs every configuration once, in the order forward
1, forward 2, reverse 1, reverse 2; the median round is reported with the
range.  On a shared 2-core machine wrk, nginx and the proxy compete for
the cores, so the figures are noisy: read the ratios, not the absolutes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    absolute_url_lua,
    cpu_seconds,
    free_port,
    nginx_origin,
    running,
    twistd_argv,
    wrk,
)


def command(kind: str, workers: int, port: int, origin: int) -> list[str]:
    listen = ["--listen", f"tcp:{port}:interface=127.0.0.1"]
    if kind == "forward":
        tail = ["forward", "--no-cache", *listen]
    else:
        tail = ["reverse", *listen, "--backend", f"http://127.0.0.1:{origin}"]
    return twistd_argv("multiproxy", "--workers", str(workers), "--access-log", "none", *tail)


def measure(kind: str, workers: int, origin: int, seconds: float, connections: int) -> dict:
    port = free_port()
    target = f"http://127.0.0.1:{origin}/100b"
    url = f"http://127.0.0.1:{port}" + ("" if kind == "forward" else "/100b")
    lua = absolute_url_lua(target) if kind == "forward" else None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    with running(command(kind, workers, port, origin), port, env=env) as process:
        time.sleep(0.5 + 0.3 * workers)  # workers start after the master has bound
        wrk(url, lua, 1, connections)  # warm-up
        before = cpu_seconds(process.pid)
        result = wrk(url, lua, seconds, connections)
        used = cpu_seconds(process.pid) - before
    requests = max(result["requests"], 1)
    return {"rps": result["rps"], "cpu_us": used / requests * 1e6,
            "errors": result["errors"], "non2xx": result["non2xx"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--connections", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rounds: list[dict] = []
    with nginx_origin({"100b": b"x" * 100}) as origin:
        for number in range(args.rounds):
            row = {}
            for kind in ("forward", "reverse"):
                for workers in (1, 2):
                    row[kind, workers] = r = measure(kind, workers, origin, args.seconds,
                                                     args.connections)
                    print(f"round {number + 1} {kind:8} --workers {workers}: "
                          f"{r['rps']:8.0f} req/s  {r['cpu_us']:6.0f} us CPU/request"
                          + (f"  errors: {r['errors']}" if r["errors"] else "")
                          + (f"  non-2xx: {r['non2xx']}" if r["non2xx"] else ""), flush=True)
            rounds.append(row)
    print(f"\n--workers 2 / --workers 1 over {args.rounds} rounds: median [lowest-highest]")
    for kind in ("forward", "reverse"):
        rps = sorted(r[kind, 2]["rps"] / max(r[kind, 1]["rps"], 1) for r in rounds)
        cpu = sorted(r[kind, 2]["cpu_us"] / max(r[kind, 1]["cpu_us"], 1) for r in rounds)
        print(f"  {kind:8} {statistics.median(rps):.2f}x req/s [{rps[0]:.2f}-{rps[-1]:.2f}], "
              f"CPU per request {statistics.median(cpu):.2f}x [{cpu[0]:.2f}-{cpu[-1]:.2f}]")


if __name__ == "__main__":
    main()
