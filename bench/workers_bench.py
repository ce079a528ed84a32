#!/usr/bin/env python3
"""
One process against two: requests/s and CPU per request of multiproxy
``--workers 1`` and ``--workers 2`` and of the peers at the same counts,
forward and reverse, same run, rounds alternating.

    python3 bench/workers_bench.py [--seconds 3] [--connections 20] [--rounds 3] [--no-peers]

One nginx origin (``worker_processes 1``) serves a 100-byte file; wrk (one
thread) sends ``--connections`` keep-alive connections for ``--seconds`` per
configuration and round.  Forward: multiproxy ``--no-cache``, proxy.py
``--num-workers N``, Squid ``workers N`` (no cache).  Reverse: multiproxy
with one backend, HAProxy ``nbthread N``, nginx ``worker_processes N``.
CPU per request is the user + system time of the proxy's processes
(``/proc``, the process and its children) divided by the requests wrk
completed.  Each round runs every configuration once; the median round's
ratio (2 / 1) is reported with the range.  On a 2-core machine wrk, the
origin and the proxy share the cores, so a second process can at best take
what the first leaves: the peers' ratios show what this machine allows.
Peers that cannot be installed (apt, PyPI) are skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import (  # noqa: E402
    PYTHON,
    absolute_url_lua,
    cpu_seconds,
    ensure_apt,
    ensure_pip,
    free_port,
    nginx_origin,
    running,
    twistd_argv,
    wrk,
)
from reverse_bench import haproxy_argv, nginx_argv  # noqa: E402


def multiproxy_argv(kind: str, count: int, port: int, origin: int, root: str) -> list[str]:
    listen = ["--listen", f"tcp:{port}:interface=127.0.0.1"]
    if kind == "forward":
        tail = ["forward", "--no-cache", *listen]
    else:
        tail = ["reverse", *listen, "--backend", f"http://127.0.0.1:{origin}"]
    return twistd_argv("multiproxy", "--workers", str(count), "--access-log", "none", *tail)


def proxy_py_argv(kind: str, count: int, port: int, origin: int, root: str) -> list[str] | None:
    if not ensure_pip("proxy", "proxy.py"):
        return None
    return [PYTHON, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port),
            "--num-workers", str(count), "--num-acceptors", str(count),
            "--log-level", "WARNING"]


def squid_argv(kind: str, count: int, port: int, origin: int, root: str) -> list[str] | None:
    squid = ensure_apt("squid", "squid")
    if squid is None:
        return None
    home = os.path.join(root, f"squid-{port}")
    os.makedirs(home, exist_ok=True)
    os.chmod(home, 0o777)
    conf = os.path.join(home, "squid.conf")
    with open(conf, "w") as f:
        f.write(f"""
http_port 127.0.0.1:{port}
acl localnet src 127.0.0.1/32
http_access allow localnet
http_access deny all
cache deny all
cache_mem 0 MB
pid_filename {home}/squid.pid
access_log none
cache_store_log none
cache_log {home}/cache.log
coredump_dir {home}
workers {count}
shutdown_lifetime 1 seconds
""")
    # --foreground keeps the master attached (as -N does) and, unlike -N, runs SMP workers.
    return [squid, "--foreground", "-f", conf]


def reverse_peer(build):
    def argv(kind: str, count: int, port: int, origin: int, root: str) -> list[str] | None:
        return build(port, origin, root, count)
    return argv


SUBJECTS = {
    "forward": {"multiproxy": multiproxy_argv, "proxy.py": proxy_py_argv, "squid": squid_argv},
    "reverse": {"multiproxy": multiproxy_argv, "haproxy": reverse_peer(haproxy_argv),
                "nginx": reverse_peer(nginx_argv)},
}
COUNT_NAMES = {"multiproxy": "--workers", "proxy.py": "--num-workers", "squid": "workers",
               "haproxy": "nbthread", "nginx": "worker_processes"}


def measure(kind: str, argv: list[str], port: int, origin: int, seconds: float,
            connections: int, settle: float) -> dict:
    target = f"http://127.0.0.1:{origin}/100b"
    url = f"http://127.0.0.1:{port}" + ("" if kind == "forward" else "/100b")
    lua = absolute_url_lua(target) if kind == "forward" else None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    with running(argv, port, env=env) as process:
        time.sleep(settle)  # workers start after the master has bound
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-peers", action="store_true", help="multiproxy only")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-workers-")
    os.chmod(root, 0o755)
    rounds: list[dict] = []
    skipped: set[tuple[str, str]] = set()
    try:
        with nginx_origin({"100b": b"x" * 100}) as origin:
            for number in range(args.rounds):
                row = {}
                for kind, subjects in SUBJECTS.items():
                    for name, build in subjects.items():
                        if (args.no_peers and name != "multiproxy") or (kind, name) in skipped:
                            continue
                        for count in (1, 2):
                            port = free_port()
                            argv = build(kind, count, port, origin, root)
                            if argv is None:
                                print(f"{name}: not installed and could not be installed; "
                                      "skipped", flush=True)
                                skipped.add((kind, name))
                                break
                            settle = 0.5 + 0.3 * count if name == "multiproxy" else 0.5
                            try:
                                r = measure(kind, argv, port, origin, args.seconds,
                                            args.connections, settle)
                            except RuntimeError as e:
                                print(f"{name} did not start ({e}); skipped", flush=True)
                                skipped.add((kind, name))
                                break
                            row[kind, name, count] = r
                            print(f"round {number + 1} {kind:8} {name:10} "
                                  f"{COUNT_NAMES[name]} {count}: {r['rps']:8.0f} req/s  "
                                  f"{r['cpu_us']:6.0f} us CPU/request"
                                  + (f"  errors: {r['errors']}" if r["errors"] else "")
                                  + (f"  non-2xx: {r['non2xx']}" if r["non2xx"] else ""),
                                  flush=True)
                rounds.append(row)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n2 processes / 1 over {args.rounds} rounds: median [lowest-highest]")
    for kind, subjects in SUBJECTS.items():
        for name in subjects:
            pairs = [(r[kind, name, 2], r[kind, name, 1]) for r in rounds
                     if (kind, name, 2) in r and (kind, name, 1) in r]
            if not pairs:
                continue
            rps = sorted(two["rps"] / max(one["rps"], 1) for two, one in pairs)
            cpu = sorted(two["cpu_us"] / max(one["cpu_us"], 1) for two, one in pairs)
            one_rps = statistics.median(one["rps"] for _, one in pairs)
            print(f"  {kind:8} {name:10} {statistics.median(rps):.2f}x req/s "
                  f"[{rps[0]:.2f}-{rps[-1]:.2f}] (1 process: {one_rps:.0f} req/s), "
                  f"CPU per request {statistics.median(cpu):.2f}x [{cpu[0]:.2f}-{cpu[-1]:.2f}]")


if __name__ == "__main__":
    main()
