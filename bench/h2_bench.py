#!/usr/bin/env python3
"""
HTTP/2 through the reverse proxies: multiproxy's HTTP/2 front end against
its own HTTP/1.1 and against HAProxy's and nginx's HTTP/2 front ends, same
origin, same run, rounds alternating.

    python3 bench/h2_bench.py [--requests 20000] [--rounds 3]

One nginx origin serves a 100-byte file over HTTP/1.1 keep-alive.  h2load
sends ``--requests`` GETs over 10 connections with 10 streams each
(cleartext, prior knowledge), or 10 HTTP/1.1 keep-alive connections
(``h2load --h1``) for the HTTP/1.1 row.  Each proxy runs one process (one
thread for HAProxy, one worker for nginx).  CPU per request is the proxy's
user + system time (``/proc``) over the requests completed.  Also reported:
the h2 library's own cost per request (HEADERS in, HEADERS + DATA out,
nothing else), measured in this process: the floor under any HTTP/2 front
end built on it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import cpu_seconds, free_port, nginx_origin, running, twistd_argv  # noqa: E402
from reverse_bench import haproxy_argv, nginx_argv  # noqa: E402


def h2load(url: str, requests: int, h1: bool) -> dict:
    argv = ["h2load", "-n", str(requests), "-c", "10", "-m", "1" if h1 else "10"]
    if h1:
        argv.append("--h1")
    out = subprocess.run([*argv, url], capture_output=True, text=True, timeout=300).stdout
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    return {"rps": float(rps.group(1)) if rps else 0.0,
            "ok": int(done.group(2)) if done else 0}


def multiproxy_argv(port: int, origin: int, root: str) -> list[str]:
    return twistd_argv("multiproxy", "--access-log", "none", "reverse",
                       "--listen", f"tcp:{port}:interface=127.0.0.1",
                       "--backend", f"http://127.0.0.1:{origin}")


def haproxy_h2_argv(port: int, origin: int, root: str) -> list[str] | None:
    return haproxy_argv(port, origin, root, http2=True)


def nginx_h2_argv(port: int, origin: int, root: str) -> list[str] | None:
    return nginx_argv(port, origin, root, http2=True)


SUBJECTS = [
    ("multiproxy HTTP/2", multiproxy_argv, False),
    ("multiproxy HTTP/1.1", multiproxy_argv, True),
    ("haproxy HTTP/2", haproxy_h2_argv, False),
    ("nginx HTTP/2", nginx_h2_argv, False),
]


def library_floor(requests: int = 5000) -> float:
    """Microseconds of h2 library work per request on the server side of one connection."""
    import h2.config
    import h2.connection
    import h2.events

    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                  header_encoding=None))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                  header_encoding=None))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    request = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"127.0.0.1:8000"),
               (b":path", b"/100b"), (b"user-agent", b"h2load nghttp2/1.52.0"),
               (b"accept", b"*/*")]
    response = [(b":status", b"200"), (b"server", b"nginx/1.22.1"),
                (b"date", b"Thu, 03 Dec 2026 09:07:05 GMT"),
                (b"content-type", b"application/octet-stream"), (b"content-length", b"100")]
    spent, done, stream = 0.0, 0, 1
    while done < requests:
        for _ in range(10):
            client.send_headers(stream, request, end_stream=True)
            stream += 2
        data = client.data_to_send()
        started = time.perf_counter()
        for event in server.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                server.send_headers(event.stream_id, response)
                server.send_data(event.stream_id, b"x" * 100)
                server.end_stream(event.stream_id)
        out = server.data_to_send()
        spent += time.perf_counter() - started
        for event in client.receive_data(out):
            if isinstance(event, h2.events.DataReceived):
                client.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        server.receive_data(client.data_to_send())
        done += 10
    return spent / done * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        sys.exit("h2load is needed: apt-get install nghttp2-client")
    root = tempfile.mkdtemp(prefix="bench-h2-")
    os.chmod(root, 0o755)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in SUBJECTS}
    try:
        with nginx_origin({"100b": b"x" * 100}) as origin:
            for number in range(args.rounds):
                for name, build, h1 in SUBJECTS:
                    port = free_port()
                    argv = build(port, origin, root)
                    if argv is None:
                        print(f"{name}: not installed; skipped")
                        continue
                    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
                    with running(argv, port, env=env) as process:
                        url = f"http://127.0.0.1:{port}/100b"
                        h2load(url, 1000, h1)  # warm-up
                        before = cpu_seconds(process.pid)
                        result = h2load(url, args.requests, h1)
                        used = cpu_seconds(process.pid) - before
                    cpu_us = used / max(result["ok"], 1) * 1e6
                    results[name].append((result["rps"], cpu_us))
                    print(f"round {number + 1} {name:20} {result['rps']:8.0f} req/s "
                          f"{cpu_us:6.0f} us CPU/request ({result['ok']} ok)", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    floor = library_floor()
    print(f"\nmedians over {args.rounds} rounds (10 connections x 10 streams, 100-byte body):")
    base = statistics.median(r for r, _ in results["multiproxy HTTP/1.1"]) or 1
    for name, rows in results.items():
        if not rows:
            continue
        rps = statistics.median(r for r, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(f"  {name:20} {rps:8.0f} req/s ({rps / base:.2f}x multiproxy HTTP/1.1), "
              f"{cpu:6.0f} us CPU/request")
    print(f"  h2 library alone: {floor:.0f} us per request (server side, one process)")


if __name__ == "__main__":
    main()
