#!/usr/bin/env python3
"""
Throughput and CPU per request of the forward and reverse proxies from two
checkouts (this one and ``--other``, e.g. ``git worktree add /tmp/prev
HEAD~3``), same nginx origin, same run, rounds alternating.

    python3 bench/compare_checkouts.py --other /tmp/prev [--seconds 5] [--rounds 4] [--kinds forward]

Each round runs, for each proxy kind, this checkout's twistd and the other's
(in turn, which one goes first alternating; after an untimed round of
each), wrk sending GETs of a 100-byte
file over 20 keep-alive connections for ``--seconds``.  CPU per request is
the proxy process's user + system time over the requests answered.  The
medians and the ratios (this / other) are printed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

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

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def argv_for(kind: str, port: int, origin: int) -> list[str]:
    listen = f"tcp:{port}:interface=127.0.0.1"
    if kind == "reverse":
        return twistd_argv("multiproxy", "--access-log", "none", "reverse", "--listen", listen,
                           "--backend", f"http://127.0.0.1:{origin}")
    return twistd_argv("multiproxy", "--access-log", "none", "forward", "--listen", listen)


def run_once(tree: str, kind: str, origin: int, seconds: float) -> tuple[float, float]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tree, os.path.join(tree, "src")]))
    with running(argv_for(kind, port, origin), port, env=env, cwd=tree) as process:
        url = f"http://127.0.0.1:{port}/100b"
        lua = None
        if kind == "forward":
            target = f"http://127.0.0.1:{origin}/100b"
            lua = absolute_url_lua(target)
        wrk(url, lua, 1, 20)  # warm-up
        before = cpu_seconds(process.pid)
        result = wrk(url, lua, seconds, 20)
        used = cpu_seconds(process.pid) - before
    answered = max(result["requests"] - result["non2xx"], 1)
    return result["rps"], used / answered * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--other", required=True, help="the other checkout's top directory")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--kinds", default="forward,reverse", help="forward, reverse or both")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    trees = {"this": HERE, "other": os.path.abspath(args.other)}
    rows: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with nginx_origin({"100b": b"x" * 100}) as origin:
        for kind in kinds:  # an untimed round: the first runs after start are slow for anyone
            for name in trees:
                run_once(trees[name], kind, origin, 1)
        for number in range(args.rounds):
            for kind in kinds:
                order = ["this", "other"] if number % 2 == 0 else ["other", "this"]
                for name in order:
                    rps, cpu = run_once(trees[name], kind, origin, args.seconds)
                    rows.setdefault((kind, name), []).append((rps, cpu))
                    print(f"round {number + 1} {kind:8} {name:5} {rps:8.0f} req/s "
                          f"{cpu:6.1f} us CPU/request", flush=True)
    print(f"\nmedians over {args.rounds} rounds (20 connections, 100-byte body):")
    for kind in kinds:
        this = rows[(kind, "this")]
        other = rows[(kind, "other")]
        rps_this, rps_other = (statistics.median(r for r, _ in x) for x in (this, other))
        cpu_this, cpu_other = (statistics.median(c for _, c in x) for x in (this, other))
        print(f"  {kind:8} this {rps_this:8.0f} req/s {cpu_this:6.1f} us | other "
              f"{rps_other:8.0f} req/s {cpu_other:6.1f} us | throughput "
              f"{rps_this / rps_other:.3f}x, CPU per request {cpu_this / cpu_other:.3f}x")


if __name__ == "__main__":
    main()
