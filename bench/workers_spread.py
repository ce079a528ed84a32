#!/usr/bin/env python3
"""
How two worker processes share a port: one inherited socket against
SO_REUSEPORT, measured.

    python3 bench/workers_spread.py [--seconds 2]

Each worker is a small Twisted HTTP responder (a 2-byte body, keep-alive),
so the figures show the socket arrangement, not multiproxy's HTTP work:

- ``inherited``: the parent binds one socket; both workers adopt it
  (``reactor.adoptStreamPort``), Twisted's adaptive accept batch (up to
  100+ accepts per wakeup);
- ``inherited, 1 accept per wakeup``: the same, as multiproxy's workers run
  (`multiproxy._workers.AdoptingReactor.accepts_per_wakeup`);
- ``SO_REUSEPORT``: each worker binds its own socket on the same port.

For each: how the connections of a ``wrk -c20`` keep-alive run and of a run
with a new connection per request spread over the two workers; then a
"reload" under the new-connection-per-request load, five times: start a
new worker, then stop an old one (it stops listening, finishes what it
holds, exits), and count the requests wrk saw fail.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import PYTHON, free_port, wrk  # noqa: E402

WORKER = r"""
import os, signal, socket, sys
from twisted.internet import reactor, protocol
mode, value, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
counts = {"accepted": 0, "requests": 0}
class Responder(protocol.Protocol):
    def connectionMade(self):
        counts["accepted"] += 1
        self.buffer = b""
    def dataReceived(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            counts["requests"] += 1
            close = b"connection: close" in head.lower()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                 + (b"Connection: close\r\n" if close else b"") + b"\r\nok")
            if close:
                self.transport.loseConnection()
factory = protocol.Factory.forProtocol(Responder)
if mode == "fd":
    port = reactor.adoptStreamPort(int(value), socket.AF_INET, factory)
else:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", int(value)))
    s.listen(50)
    s.setblocking(False)
    port = reactor.adoptStreamPort(s.fileno(), socket.AF_INET, factory)
    s.close()
if cap:
    read = port.doRead
    def doRead():
        port.numberAccepts = cap
        return read()
    port.doRead = doRead
def stop(*_):
    port.stopListening()
    reactor.callLater(0.5, reactor.stop)
signal.signal(signal.SIGTERM, lambda *_: reactor.callFromThread(stop))
print("ready", flush=True)
reactor.run(installSignalHandlers=False)
print(counts["accepted"], counts["requests"], flush=True)
"""

CLOSE_LUA = 'wrk.headers["Connection"] = "close"\n'


class Arrangement:
    """Two workers on one port, in one of the three arrangements."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.listener = None
        if kind != "reuseport":
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", self.port))
            self.listener.listen(50)
            self.listener.setblocking(False)
        self.workers = [self.spawn(), self.spawn()]

    def spawn(self) -> subprocess.Popen:
        cap = "1" if self.kind == "inherited-1" else "0"
        if self.listener is not None:
            fd = self.listener.fileno()
            argv = [PYTHON, "-c", WORKER, "fd", str(fd), cap]
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, pass_fds=(fd,))
        else:
            argv = [PYTHON, "-c", WORKER, "port", str(self.port), cap]
            process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert process.stdout.readline().strip() == "ready"
        return process

    @staticmethod
    def stop(process: subprocess.Popen) -> tuple[int, int]:
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
        accepted, requests = out.split()[-2:]
        return int(accepted), int(requests)

    def close(self) -> list[tuple[int, int]]:
        counts = [self.stop(w) for w in self.workers]
        if self.listener is not None:
            self.listener.close()
        return counts


def spread(kind: str, lua: str | None, seconds: float) -> str:
    arrangement = Arrangement(kind)
    result = wrk(f"http://127.0.0.1:{arrangement.port}/", lua, seconds, 20)
    counts = arrangement.close()
    shares = ", ".join(f"{a} conn / {r} req" for a, r in counts)
    return f"{result['rps']:8.0f} req/s; workers: {shares}" + (
        f"; errors {result['errors']}" if result["errors"] else "")


def reload_drops(kind: str, reloads: int = 5) -> str:
    arrangement = Arrangement(kind)
    url = f"http://127.0.0.1:{arrangement.port}/"
    argv = ["wrk", "-t1", "-c20", f"-d{reloads + 2}s", "-s", _lua_file(), url]
    load = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    for _ in range(reloads):
        arrangement.workers.append(arrangement.spawn())
        arrangement.stop(arrangement.workers.pop(0))
        time.sleep(0.8)
    out, _ = load.communicate(timeout=60)
    arrangement.close()
    import re

    total = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return f"{total.group(1) if total else '?'} requests, socket errors: " + (
        errors.group(1) if errors else "none")


def _lua_file() -> str:
    path = os.path.join("/tmp", f"workers-spread-{os.getpid()}.lua")
    with open(path, "w") as f:
        f.write(CLOSE_LUA)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=2)
    args = parser.parse_args()
    for kind in ("inherited", "inherited-1", "reuseport"):
        print(f"{kind}:")
        print(f"  keep-alive, 20 connections:      {spread(kind, None, args.seconds)}", flush=True)
        print(f"  new connection per request:      {spread(kind, CLOSE_LUA, args.seconds)}",
              flush=True)
        print(f"  5 reloads under that load:       {reload_drops(kind)}", flush=True)


if __name__ == "__main__":
    main()
