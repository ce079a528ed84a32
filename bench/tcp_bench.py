#!/usr/bin/env python3
"""
TCP relay benchmark: multiproxy's relay against twisted.protocols.portforward
and (when installed) HAProxy in ``mode tcp``, same origin, same run.

    python3 bench/tcp_bench.py [--rounds 3] [--duration 2] [--bulk-size 1048576]

Two loads, each for ``--duration`` seconds per proxy and round; the rounds
alternate between the proxies and the best round of each is reported:

- bulk: ``--bulk-clients`` clients in a loop download ``--bulk-size`` bytes
  each over a new connection; MiB/s of payload delivered.
- small: ``--small-clients`` clients in a loop open a connection, send 100
  bytes, read the 100-byte answer and the close; connections per second.

The origin, each proxy and the load generator run in separate processes
(the origin and load generator use blocking sockets in threads, so their
work is in the kernel, not in Python).  Every proxy runs on one thread:
HAProxy with ``nbthread 1``.  HAProxy is looked up on PATH; if missing, the
script tries ``apt-get install -y haproxy`` once (bounded in time) and skips
it if that fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SMALL = 100


# -- origin ------------------------------------------------------------------------------


def run_origin(port: int, ready: str) -> None:
    """Answer b"B" + size with size bytes, b"S" + 99 bytes with 100 bytes; then close."""
    payload = memoryview(b"x" * (16 * 1024 * 1024))
    answer = b"y" * SMALL
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    open(ready, "w").close()

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                head = _recv_exactly(conn, 9 if conn.recv(1, socket.MSG_PEEK) == b"B" else SMALL)
                if head[:1] == b"B":
                    size = int.from_bytes(head[1:9], "big")
                    while size > 0:
                        n = min(size, len(payload))
                        conn.sendall(payload[:n])
                        size -= n
                else:
                    conn.sendall(answer)
            except OSError:
                pass

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise OSError("short read")
        data += chunk
    return data


# -- proxies -----------------------------------------------------------------------------


def run_relay(listen_port: int, origin_port: int, ready: str) -> None:
    """multiproxy's TCP relay, no access log, no health checks."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    sys.path.insert(0, os.path.join(HERE, "..", "src"))
    from multiproxy.balancing import HealthConfig
    from multiproxy.tcp import TCPBackendConfig, TCPConfig, make_tcp_service

    config = TCPConfig(
        name="bench",
        listen=(f"tcp:{listen_port}:interface=127.0.0.1:backlog=1024",),
        backends=(TCPBackendConfig(f"tcp:host=127.0.0.1:port={origin_port}"),),
        health=HealthConfig(check="none"),
    )
    service = make_tcp_service(config, reactor, ())
    service.startService()
    reactor.callWhenRunning(lambda: open(ready, "w").close())
    reactor.run()


def run_portforward(listen_port: int, origin_port: int, ready: str) -> None:
    """twisted.protocols.portforward, as shipped."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.protocols.portforward import ProxyFactory

    factory = ProxyFactory("127.0.0.1", origin_port)
    factory.noisy = False
    reactor.listenTCP(listen_port, factory, backlog=1024, interface="127.0.0.1")
    reactor.callWhenRunning(lambda: open(ready, "w").close())
    reactor.run()


def haproxy_binary() -> str | None:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
    )
    if found:
        return found
    try:
        subprocess.run(["apt-get", "install", "-y", "haproxy"], capture_output=True, timeout=180)
    except (OSError, subprocess.SubprocessError):
        return None
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
    )


def haproxy_command(binary: str, listen_port: int, origin_port: int, workdir: str) -> list[str]:
    path = os.path.join(workdir, "haproxy.cfg")
    with open(path, "w") as f:
        f.write(
            "global\n  maxconn 4096\n  nbthread 1\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n"
            "  timeout server 30s\n"
            f"frontend front\n  bind 127.0.0.1:{listen_port}\n  default_backend origin\n"
            f"backend origin\n  server o1 127.0.0.1:{origin_port}\n"
        )
    return [binary, "-db", "-f", path]


# -- load --------------------------------------------------------------------------------


def bulk_load(port: int, size: int, clients: int, duration: float) -> float:
    """MiB/s of payload delivered to ``clients`` looping downloads of ``size`` bytes."""
    request = b"B" + size.to_bytes(8, "big")
    totals = [0] * clients
    deadline = time.perf_counter() + duration

    def client(index: int) -> None:
        buffer = bytearray(1 << 20)
        view = memoryview(buffer)
        while time.perf_counter() < deadline:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(request)
                got = 0
                while True:
                    n = s.recv_into(view)
                    if not n:
                        break
                    got += n
                if got != size:
                    raise RuntimeError(f"short transfer: {got} of {size} bytes")
                totals[index] += got

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    return sum(totals) / elapsed / (1 << 20)


def small_load(port: int, clients: int, duration: float) -> float:
    """Connections per second, each sending 100 bytes and reading 100 back."""
    request = b"S" + b"q" * (SMALL - 1)
    counts = [0] * clients
    deadline = time.perf_counter() + duration

    def client(index: int) -> None:
        while time.perf_counter() < deadline:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.sendall(request)
                got = 0
                while True:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += len(chunk)
                if got != SMALL:
                    raise RuntimeError(f"short answer: {got} bytes")
                counts[index] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


# -- driver ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], ready: str | None, port: int) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 15
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command[0]} exited: {process.stderr.read().decode()[-2000:]}")
        if ready is None or os.path.exists(ready):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return process
            except OSError:
                pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command} did not start")


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="bench",
                        choices=["bench", "origin", "relay", "portforward"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--origin-port", type=int, default=0)
    parser.add_argument("--ready", default="")
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bulk-size", type=int, default=1 << 20)
    parser.add_argument("--bulk-clients", type=int, default=4)
    parser.add_argument("--small-clients", type=int, default=16)
    parser.add_argument("--no-haproxy", action="store_true")
    args = parser.parse_args()
    if args.role == "origin":
        return run_origin(args.port, args.ready)
    if args.role == "relay":
        return run_relay(args.port, args.origin_port, args.ready)
    if args.role == "portforward":
        return run_portforward(args.port, args.origin_port, args.ready)

    me = [sys.executable, os.path.abspath(__file__)]
    workdir = tempfile.mkdtemp(prefix="tcp-bench-")
    origin_port = free_port()
    processes: list[subprocess.Popen] = []
    # Every proxy runs for the whole benchmark and the loads alternate between
    # them round after round, so a burst of load from elsewhere on the machine
    # does not favour one of them; the best round of each is reported.
    targets: list[tuple[str, int]] = [("direct (no proxy)", origin_port)]
    try:
        ready = os.path.join(workdir, "origin")
        processes.append(start(me + ["origin", "--port", str(origin_port), "--ready", ready],
                               ready, origin_port))
        for label, role in (("multiproxy relay", "relay"), ("twisted portforward", "portforward")):
            port = free_port()
            ready = os.path.join(workdir, role)
            processes.append(start(me + [role, "--port", str(port), "--origin-port",
                                         str(origin_port), "--ready", ready], ready, port))
            targets.append((label, port))
        binary = None if args.no_haproxy else haproxy_binary()
        if binary:
            port = free_port()
            processes.append(start(haproxy_command(binary, port, origin_port, workdir), None,
                                   port))
            targets.append(("haproxy mode tcp", port))
        else:
            print("haproxy: not available, skipped")
        results: dict[str, list[float]] = {label: [0.0, 0.0] for label, _ in targets}
        for round_number in range(args.rounds):
            for label, port in targets:
                bulk = bulk_load(port, args.bulk_size, args.bulk_clients, args.duration)
                small = small_load(port, args.small_clients, args.duration)
                best = results[label]
                best[0], best[1] = max(best[0], bulk), max(best[1], small)
                print(f"round {round_number + 1}: {label:22s} bulk {bulk:9.1f} MiB/s   "
                      f"small {small:8.0f} conn/s", flush=True)
    finally:
        for process in reversed(processes):
            stop(process)
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"\nbest of {args.rounds} rounds of {args.duration:g} s "
          f"({args.bulk_clients} x {args.bulk_size} B downloads; "
          f"{args.small_clients} clients x 100 B exchanges per connection):")
    for label, (bulk, small) in results.items():
        print(f"  {label:22s} bulk {bulk:9.1f} MiB/s   small {small:8.0f} conn/s")
    ours = results["multiproxy relay"]
    for other in ("twisted portforward", "haproxy mode tcp"):
        if other in results:
            theirs = results[other]
            print(f"  multiproxy / {other}: bulk {ours[0] / theirs[0]:.2f}x, "
                  f"small {ours[1] / theirs[1]:.2f}x")


if __name__ == "__main__":
    main()
