#!/usr/bin/env python3
"""
HTTP/2 to backends: multiproxy's reverse proxy in front of the same nginx
over HTTP/1.1 (``http://``) and over HTTP/2 (``h2://``, prior knowledge),
and HAProxy in front of it over HTTP/2 (``proto h2``), same run, rounds
alternating.

    python3 bench/h2_backend_bench.py [--seconds 5] [--rounds 3]

nginx serves a 100-byte file on two ports, HTTP/1.1 and h2c.  wrk sends
GETs for ``--seconds`` over 10 HTTP/1.1 keep-alive connections to each
proxy, which runs one process (one thread for HAProxy).  (wrk rather than
``h2load --h1``, which counts HAProxy's HTTP/1.1 status line without a
reason phrase, valid for RFC 9112, as a failure.)  CPU per request is the
proxy's user + system time (``/proc``) over the requests completed.  Also printed: how many TCP connections each proxy held to nginx
at the end (``ss``), the point of a multiplexed backend.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import cpu_seconds, ensure_apt, free_port, running, twistd_argv, wrk  # noqa: E402
from reverse_bench import haproxy_argv  # noqa: E402


@contextlib.contextmanager
def nginx_two_ports(root: str):
    """nginx serving /100b over HTTP/1.1 and h2c; yields (h1_port, h2_port)."""
    nginx = ensure_apt("nginx", "nginx")
    if nginx is None:
        raise RuntimeError("nginx is not available")
    www = os.path.join(root, "www")
    os.makedirs(www, mode=0o755)
    with open(os.path.join(www, "100b"), "wb") as f:
        f.write(b"x" * 100)
    h1, h2 = free_port(), free_port()
    conf = os.path.join(root, "origin.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
error_log {root}/origin-error.log;
pid {root}/origin.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    http2_max_concurrent_streams 128;
    server {{
        listen 127.0.0.1:{h1};
        listen 127.0.0.1:{h2} http2;
        root {www};
    }}
}}
""")
    with running([nginx, "-c", conf, "-p", root], h1):
        yield h1, h2


def multiproxy_argv(port: int, backend: str) -> list[str]:
    return twistd_argv("multiproxy", "--access-log", "none", "reverse",
                       "--listen", f"tcp:{port}:interface=127.0.0.1", "--backend", backend)


def upstream_connections(pid: int, port: int) -> int:
    """Established TCP connections of process ``pid`` to 127.0.0.1:``port``."""
    out = subprocess.run(["ss", "-tnpH", "state", "established", "dst", f"127.0.0.1:{port}"],
                         capture_output=True, text=True).stdout
    return sum(f"pid={pid}," in line for line in out.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    root = tempfile.mkdtemp(prefix="bench-h2-backend-")
    os.chmod(root, 0o755)
    names = ["multiproxy -> HTTP/1.1", "multiproxy -> HTTP/2", "HAProxy -> HTTP/2"]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    try:
        with nginx_two_ports(root) as (h1, h2):
            subjects = {
                names[0]: (lambda port: multiproxy_argv(port, f"http://127.0.0.1:{h1}"), h1),
                names[1]: (lambda port: multiproxy_argv(port, f"h2://127.0.0.1:{h2}"), h2),
                names[2]: (lambda port: haproxy_argv(port, h2, root, origin_http2=True), h2),
            }
            for number in range(args.rounds):
                for name, (build, backend_port) in subjects.items():
                    port = free_port()
                    argv = build(port)
                    if argv is None:
                        print(f"{name}: not installed; skipped")
                        continue
                    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
                    with running(argv, port, env=env) as process:
                        url = f"http://127.0.0.1:{port}/100b"
                        wrk(url, None, 1, 10)  # warm-up
                        before = cpu_seconds(process.pid)
                        result = wrk(url, None, args.seconds, 10)
                        used = cpu_seconds(process.pid) - before
                        held = upstream_connections(process.pid, backend_port)
                    ok = result["requests"] - result["non2xx"]
                    cpu_us = used / max(ok, 1) * 1e6
                    results[name].append((result["rps"], cpu_us))
                    print(f"round {number + 1} {name:24} {result['rps']:8.0f} req/s "
                          f"{cpu_us:6.0f} us CPU/request ({ok} ok, "
                          f"{held} connections to nginx)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nmedians over {args.rounds} rounds (10 HTTP/1.1 client connections, 100-byte body):")
    base = statistics.median(r for r, _ in results[names[0]]) or 1
    for name, rows in results.items():
        if not rows:
            continue
        rps = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"  {name:24} {rps:8.0f} req/s ({rps / base:.2f}x multiproxy -> HTTP/1.1), "
              f"{cpu:6.0f} us CPU/request")


if __name__ == "__main__":
    main()
