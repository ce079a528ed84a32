#!/usr/bin/env python3
"""
TLS inspection benchmark: requests per second through an inspected tunnel
against plain HTTP forwarding, through one forward proxy in the same run,
and the cost of minting a certificate, measured apart.

    python3 bench/inspect_bench.py [--rounds 4] [--duration 3] [--clients 4]

The origin (a separate process) answers 100 bytes over HTTP/1.1 keep-alive
on two ports, one plain and one TLS (a trustme certificate).  Each client
thread keeps one connection open for the whole round: ``plain`` sends
absolute-form GETs for the plain port to the proxy; ``inspected`` opens a
CONNECT tunnel to the TLS port, does TLS with the proxy's minted
certificate (trusting the operator CA) and sends GETs inside, which the
proxy sends on over its own pooled TLS connection.  Rounds alternate; the
medians of requests/s and of the proxy's CPU per request are reported with
the ratio inspected/plain (target: at least 0.5).
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import multiprocessing
import os
import ssl
import statistics
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "src"))

from _harness import cpu_seconds, free_port, running, twistd_argv  # noqa: E402

BODY = b"y" * 100


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body in one write, sent at once: no delayed-ACK stall per request.
    wbufsize = 65536
    disable_nagle_algorithm = True

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args):
        pass


def run_origin(plain: int, tls: int, cert_file: str) -> None:
    plain_server = http.server.ThreadingHTTPServer(("127.0.0.1", plain), _Handler)
    threading.Thread(target=plain_server.serve_forever, daemon=True).start()
    tls_server = http.server.ThreadingHTTPServer(("127.0.0.1", tls), _Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file)
    tls_server.socket = context.wrap_socket(tls_server.socket, server_side=True)
    tls_server.serve_forever()


def load(kind: str, proxy: int, plain: int, tls: int, ca_file: str, seconds: float,
         clients: int, out) -> None:
    counts = [0] * clients
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def connection():
        if kind == "plain":
            return http.client.HTTPConnection("127.0.0.1", proxy, timeout=10), \
                f"http://127.0.0.1:{plain}/x"
        context = ssl.create_default_context(cafile=ca_file)
        conn = http.client.HTTPSConnection("127.0.0.1", proxy, timeout=10, context=context)
        conn.set_tunnel("localhost", tls)
        return conn, "/x"

    def client(i: int) -> None:
        conn, target = connection()
        while time.monotonic() < stop:
            try:
                conn.request("GET", target)
                response = conn.getresponse()
                if response.read() != BODY:
                    raise ValueError(response.status)
                counts[i] += 1
            except (OSError, ValueError, http.client.HTTPException):
                errors[i] += 1
                conn.close()
                conn, target = connection()
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((sum(counts), sum(errors)))


def measure(kind: str, proxy: int, pid: int, ports, ca_file: str, args) -> tuple[float, float]:
    queue: multiprocessing.Queue = multiprocessing.Queue()
    cpu_before = cpu_seconds(pid)
    process = multiprocessing.Process(
        target=load, args=(kind, proxy, *ports, ca_file, args.duration, args.clients, queue))
    process.start()
    done, errors = queue.get(timeout=args.duration + 60)
    process.join()
    cpu = cpu_seconds(pid) - cpu_before
    if errors:
        print(f"  {kind}: {errors} failed requests", file=sys.stderr)
    return done / args.duration, cpu * 1e6 / max(done, 1)


def minting_cost(ca_dir: str, names: int = 200) -> float:
    """Milliseconds to make a certificate and its context for a new name (median of ``names``)."""
    from multiproxy.forward._inspect import InspectConfig, Inspector

    mint = Inspector(InspectConfig(ca_dir, (".bench.test",))).mint
    times = []
    for i in range(names):
        started = time.perf_counter()
        mint.context_for(f"host{i}.bench.test")
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    args.duration = min(args.duration, 10.0)

    import trustme

    from multiproxy.forward._inspect import make_ca

    work = tempfile.mkdtemp(prefix="inspect-bench-")
    origin_ca = trustme.CA()
    cert = origin_ca.issue_cert("localhost")
    cert_file = os.path.join(work, "origin.pem")
    cert.private_key_and_cert_chain_pem.write_to_path(cert_file)
    origin_ca_file = os.path.join(work, "origin-ca.pem")
    origin_ca.cert_pem.write_to_path(origin_ca_file)
    ca_dir = os.path.join(work, "ca")
    ca_file, _ = make_ca(ca_dir)

    plain, tls = free_port(), free_port()
    origin = multiprocessing.Process(target=run_origin, args=(plain, tls, cert_file), daemon=True)
    origin.start()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "src"), ROOT]))
    port = free_port()
    proxy = twistd_argv("multiproxy", "--access-log", "none", "forward", "--no-cache",
                        "--listen", f"tcp:{port}:interface=127.0.0.1",
                        "--connect-ports", str(tls), "--inspect-ca", ca_dir,
                        "--inspect-host", "localhost", "--inspect-trust", origin_ca_file)
    results: dict[str, list[float]] = {"plain": [], "inspected": []}
    cpu: dict[str, list[float]] = {"plain": [], "inspected": []}
    try:
        with running(proxy, port, env=env, cwd=ROOT) as process:
            for round_number in range(args.rounds):
                order = ["plain", "inspected"] if round_number % 2 == 0 else \
                    ["inspected", "plain"]
                for kind in order:
                    rate, cpu_us = measure(kind, port, process.pid, (plain, tls), ca_file, args)
                    results[kind].append(rate)
                    cpu[kind].append(cpu_us)
                    print(f"round {round_number + 1}: {kind:9s} {rate:8.0f} req/s "
                          f"{cpu_us:6.0f} CPU-us/request")
    finally:
        origin.terminate()
    plain_rate, inspected_rate = (statistics.median(results[k]) for k in ("plain", "inspected"))
    plain_cpu, inspected_cpu = (statistics.median(cpu[k]) for k in ("plain", "inspected"))
    print(f"\nmedian: plain {plain_rate:.0f} req/s ({plain_cpu:.0f} CPU-us), inspected "
          f"{inspected_rate:.0f} req/s ({inspected_cpu:.0f} CPU-us)")
    print(f"inspected / plain: {inspected_rate / plain_rate:.2f}x requests/s, "
          f"{inspected_cpu / plain_cpu:.2f}x CPU per request")
    print(f"minting a certificate for a new name: {minting_cost(ca_dir):.2f} ms (median of 200)")


if __name__ == "__main__":
    main()
