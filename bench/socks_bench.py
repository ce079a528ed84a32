#!/usr/bin/env python3
"""
SOCKS5 benchmark: tunnels per second through ``twistd multiproxy socks``
against the forward proxy's CONNECT (``twistd multiproxy forward``), same
origin, same run.

    python3 bench/socks_bench.py [--rounds 3] [--duration 3] [--clients 8]

Each request opens a new connection to the proxy, asks for a tunnel to the
origin (a SOCKS5 greeting and CONNECT with a host name, or ``CONNECT
host:port HTTP/1.1``), sends 100 bytes through it, reads the 100-byte answer
and the close.  Rounds alternate between the two proxies; the median of
each is reported with the ratio socks/connect (target: at least 1.0).

The origin and the load generator are separate processes using blocking
sockets in threads; each proxy runs on one thread with no access log.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import struct
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from _harness import cpu_seconds, free_port, running, twistd_argv  # noqa: E402

SMALL = 100


def run_origin(port: int) -> None:
    """Read 100 bytes, answer 100 bytes, close: one exchange per connection."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    answer = b"y" * SMALL

    def serve(conn: socket.socket) -> None:
        with conn:
            got = 0
            while got < SMALL:
                chunk = conn.recv(SMALL - got)
                if not chunk:
                    return
                got += len(chunk)
            conn.sendall(answer)

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _read_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed early")
        data += chunk
    return data


def _socks5_tunnel(s: socket.socket, origin: int) -> None:
    name = b"localhost"
    s.sendall(b"\x05\x01\x00" + b"\x05\x01\x00\x03" + bytes([len(name)]) + name
              + struct.pack("!H", origin))
    reply = _read_exactly(s, 2 + 10)
    if reply[:2] != b"\x05\x00" or reply[3] != 0:
        raise ConnectionError(f"SOCKS refused: {reply!r}")


def _connect_tunnel(s: socket.socket, origin: int) -> None:
    s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (origin, origin))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed early")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n")[0].decode())


def load(kind: str, proxy: int, origin: int, seconds: float, clients: int, out) -> None:
    """Run ``clients`` threads for ``seconds``; put the count of completed tunnels on ``out``."""
    tunnel = _socks5_tunnel if kind == "socks" else _connect_tunnel
    payload = b"x" * SMALL
    counts = [0] * clients
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        while time.monotonic() < stop:
            try:
                with socket.create_connection(("127.0.0.1", proxy), timeout=5) as s:
                    tunnel(s, origin)
                    s.sendall(payload)
                    _read_exactly(s, SMALL)
                counts[i] += 1
            except OSError:
                errors[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(counts), sum(errors)))


def measure(kind: str, proxy: int, origin: int, pid: int, args) -> tuple[float, float]:
    """Tunnels per second, and the proxy process's CPU microseconds per tunnel."""
    queue: multiprocessing.Queue = multiprocessing.Queue()
    cpu_before = cpu_seconds(pid)
    process = multiprocessing.Process(
        target=load, args=(kind, proxy, origin, args.duration, args.clients, queue))
    process.start()
    done, errors = queue.get(timeout=args.duration + 30)
    process.join()
    cpu = cpu_seconds(pid) - cpu_before
    if errors:
        print(f"  {kind}: {errors} failed tunnels", file=sys.stderr)
    return done / args.duration, cpu * 1e6 / max(done, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    args.duration = min(args.duration, 10.0)

    origin = free_port()
    origin_process = multiprocessing.Process(target=run_origin, args=(origin,), daemon=True)
    origin_process.start()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), ROOT]))
    socks_port, forward_port = free_port(), free_port()
    socks = twistd_argv("multiproxy", "--access-log", "none", "socks",
                        "--listen", f"tcp:{socks_port}:interface=127.0.0.1")
    forward = twistd_argv("multiproxy", "--access-log", "none", "forward",
                          "--listen", f"tcp:{forward_port}:interface=127.0.0.1",
                          "--connect-ports", str(origin))
    results: dict[str, list[float]] = {"socks": [], "connect": []}
    cpu: dict[str, list[float]] = {"socks": [], "connect": []}
    try:
        with running(socks, socks_port, env=env, cwd=ROOT) as socks_process, \
                running(forward, forward_port, env=env, cwd=ROOT) as forward_process:
            for round_number in range(args.rounds):
                order = [("socks", socks_port, socks_process.pid),
                         ("connect", forward_port, forward_process.pid)]
                if round_number % 2:
                    order.reverse()
                for kind, port, pid in order:
                    rate, cpu_us = measure(kind, port, origin, pid, args)
                    results[kind].append(rate)
                    cpu[kind].append(cpu_us)
                    print(f"round {round_number + 1}: {kind:8s} {rate:8.0f} tunnels/s "
                          f"{cpu_us:6.0f} CPU-us/tunnel")
    finally:
        origin_process.terminate()
    socks_rate = statistics.median(results["socks"])
    connect_rate = statistics.median(results["connect"])
    socks_cpu = statistics.median(cpu["socks"])
    connect_cpu = statistics.median(cpu["connect"])
    print(f"median: socks {socks_rate:.0f}/s, forward CONNECT {connect_rate:.0f}/s, "
          f"ratio {socks_rate / connect_rate:.2f}x (target >= 1.0x)")
    print(f"median CPU per tunnel: socks {socks_cpu:.0f} us, forward CONNECT {connect_cpu:.0f} us, "
          f"ratio {connect_cpu / socks_cpu:.2f}x (connect/socks; above 1 means SOCKS is cheaper)")


if __name__ == "__main__":
    main()
