"""
CONNECT tunnels per second with SNI peeking against plain CONNECT.

Two ``twistd multiproxy forward`` processes, one with ``--no-sni-peek``,
the same origin (a plain TCP server that answers any first flight with a
few bytes and closes), and a client that opens tunnels one after another
on a few threads: CONNECT, read the 200, send a real ClientHello (made by
Python's own OpenSSL client), read the answer, close.  The crypto of a real
handshake is left out on purpose: it costs the same either way and would
hide the proxy's share.  Rounds alternate between the two proxies.

    PYTHONPATH=$PWD/src:$PWD python3 bench/tunnel_bench.py --seconds 3 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import PYTHON, free_port, running, twistd_argv  # noqa: E402

ORIGIN = """
import asyncio, sys
async def serve(reader, writer):
    await reader.read(65536)
    writer.write(b"x" * 64)
    await writer.drain()
    writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=512)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def client_hello(name: str) -> bytes:
    context = ssl.create_default_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    tls = context.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def one_tunnel(proxy: int, origin: int, hello: bytes) -> None:
    with socket.create_connection(("127.0.0.1", proxy), timeout=5) as s:
        s.sendall(b"CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n\r\n" % (origin, origin))
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("closed before the 200")
            head += chunk
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head[:40])
        s.sendall(hello)
        got = len(head.split(b"\r\n\r\n", 1)[1])
        while got < 64:
            chunk = s.recv(4096)
            if not chunk:
                raise RuntimeError("tunnel closed early")
            got += len(chunk)


def tunnels_per_second(proxy: int, origin: int, hello: bytes, seconds: float, threads: int) -> float:
    counts = [0] * threads
    deadline = time.monotonic() + seconds

    def loop(i: int) -> None:
        while time.monotonic() < deadline:
            one_tunnel(proxy, origin, hello)
            counts[i] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    start = time.monotonic()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    env = dict(os.environ)
    origin = free_port()
    plain, peek = free_port(), free_port()
    hello = client_hello("localhost")
    common = ["multiproxy", "forward", "--connect-ports", str(origin)]
    with running([PYTHON, "-c", ORIGIN, str(origin)], origin), \
         running(twistd_argv("--logfile=/dev/null", *common,
                             "--listen", f"tcp:{plain}:interface=127.0.0.1", "--no-sni-peek"),
                 plain, env=env), \
         running(twistd_argv("--logfile=/dev/null", *common,
                             "--listen", f"tcp:{peek}:interface=127.0.0.1"), peek, env=env):
        for port in (plain, peek):  # warm up
            tunnels_per_second(port, origin, hello, 0.5, args.threads)
        ratios = []
        for n in range(args.rounds):
            a = tunnels_per_second(plain, origin, hello, args.seconds, args.threads)
            b = tunnels_per_second(peek, origin, hello, args.seconds, args.threads)
            ratios.append(b / a)
            print(f"round {n + 1}: plain CONNECT {a:.0f}/s, SNI peeking {b:.0f}/s, ratio {b / a:.2f}")
        print(f"median ratio {statistics.median(ratios):.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f}; target >= 0.9)")


if __name__ == "__main__":
    main()
