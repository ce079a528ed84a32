"""
Exhaustion runs against a forward proxy in its own process (bounded in time).

    python bench/exhaustion.py idle   [--connections 5000]
    python bench/exhaustion.py fds    [--nofile 256]
    python bench/exhaustion.py big    [--size-mib 1024] [--rate 100M]
    python bench/exhaustion.py all

- ``idle``: N concurrent idle client connections (then the same N with half
  a request head sent, each holding a reader buffer and a header timer);
  RSS per connection from the proxy process's RSS delta / N, and that a new
  client is still served while they are held.
- ``fds``: the proxy process with a low RLIMIT_NOFILE, first as Twisted
  listens by default and then through ``multiproxy.transport._accept.GuardedEndpoint``.
  Opens connections until the proxy stops taking them, then checks that an
  existing connection is still served (a local answer and one through an
  upstream), how many lines were logged, that descriptors come back after
  the clients leave, and that a new client is served again.
- ``big``: a response of ``--size-mib`` MiB streamed through the proxy to
  curl reading at ``--rate``; the proxy's RSS is sampled throughout.

Prints one JSON object per run (and a short human summary on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _harness import free_port, wait_listening
from _proxyproc import ProxyProcess

MIB = 1 << 20


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(needed, soft)), hard))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _wait(predicate, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def _open(port: int, n: int, timeout: float = 2.0) -> list[socket.socket]:
    """Up to ``n`` connected sockets (stops at the first that cannot connect)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.settimeout(timeout)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            break
        socks.append(s)
    return socks


def _ask(sock: socket.socket, request: bytes, timeout: float = 5.0) -> bytes:
    """
    Send ``request`` on ``sock`` and read one response framed by its
    Content-Length (b"" if the connection closed, ``<Error>`` on an error).
    """
    sock.settimeout(timeout)
    data = b""
    try:
        if request:
            sock.sendall(request)
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body
    except OSError as e:
        return data or f"<{e.__class__.__name__}>".encode()


LOCAL = b"OPTIONS http://x.test/ HTTP/1.1\r\nHost: x.test\r\nMax-Forwards: 0\r\n\r\n"


@contextmanager
def _origin():
    """A plain HTTP origin in a child process (python -m http.server on a temp dir)."""
    root = tempfile.mkdtemp(prefix="exhaustion-origin-")
    with open(os.path.join(root, "small"), "wb") as f:
        f.write(b"s" * 100)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", root],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_listening(port, process)
        yield port, root
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


# -- idle connections ------------------------------------------------------------------


def run_idle(connections: int) -> dict:
    _raise_nofile(connections + 200)
    proxy = ProxyProcess("--keepalive", "600")
    try:
        base = proxy.ask("gc")
        started = time.monotonic()
        socks = _open(proxy.port, connections, timeout=5)
        opened = len(socks)
        _wait(lambda: proxy.ask()["connections"] >= opened, 60)
        held = proxy.ask("gc")
        elapsed = time.monotonic() - started
        # Half a head on each: a reader buffer and the header deadline per connection.
        for s in socks:
            s.sendall(b"GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nUser-Agent: bench\r\n")
        time.sleep(1)
        partial = proxy.ask("gc")
        probe = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        t0 = time.monotonic()
        answer = _ask(probe, LOCAL)
        probe_ms = (time.monotonic() - t0) * 1000
        probe.close()
        for s in socks:
            s.close()
        _wait(lambda: proxy.ask()["connections"] == 0, 60)
        after = proxy.ask("gc")
        result = {
            "run": "idle",
            "connections_requested": connections,
            "connections_held": held["connections"],
            "open_seconds": round(elapsed, 2),
            "rss_base_mib": round(base["rss"] / MIB, 1),
            "rss_idle_mib": round(held["rss"] / MIB, 1),
            "bytes_per_idle_connection": (held["rss"] - base["rss"]) // max(1, held["connections"]),
            "rss_partial_head_mib": round(partial["rss"] / MIB, 1),
            "bytes_per_partial_head_connection":
                (partial["rss"] - base["rss"]) // max(1, held["connections"]),
            "fds_held": held["fds"],
            "new_client_served_while_held": answer.startswith(b"HTTP/1.1 200"),
            "new_client_latency_ms": round(probe_ms, 1),
            "fds_after": after["fds"],
            "fds_base": base["fds"],
            "connections_after": after["connections"],
            "rss_after_mib": round(after["rss"] / MIB, 1),
            "timers_after": after["timers"],
            "objects_after": after["objects"],
            "failures_logged": after["failure_count"],
        }
    finally:
        stderr = proxy.stop()
    result["stderr_lines"] = len(stderr.splitlines())
    _say(f"idle: held {result['connections_held']} connections, "
         f"{result['bytes_per_idle_connection']} B each idle, "
         f"{result['bytes_per_partial_head_connection']} B each with half a head; "
         f"descriptors {result['fds_base']} -> {result['fds_held']} -> {result['fds_after']}")
    return result


# -- running out of descriptors ----------------------------------------------------------


def run_fds(nofile: int, guarded: bool) -> dict:
    _raise_nofile(4 * nofile + 200)
    args = ["--nofile", str(nofile), "--keepalive", "600"] + (["--guard"] if guarded else [])
    with _origin() as (origin_port, _):
        proxy = ProxyProcess(*args)
        try:
            base = proxy.ask()
            through = (f"GET http://127.0.0.1:{origin_port}/small HTTP/1.1\r\n"
                       f"Host: 127.0.0.1\r\n\r\n").encode()
            first = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            assert _ask(first, through).startswith(b"HTTP/1.1 200")
            # Keep connecting until the proxy takes no more (connections
            # waiting in the backlog or dropped do not show in its count).
            socks = _open(proxy.port, 2 * nofile, timeout=2)
            time.sleep(2)
            full = proxy.ask()
            served_local = _ask(first, LOCAL)
            served_upstream = _ask(first, through)
            # Every client asks; those the proxy took are answered at once.
            for s in socks:
                try:
                    s.sendall(LOCAL)
                except OSError:
                    pass
            answered, closed, waiting = _outcomes(socks, timeout=2)
            # The clients that were answered leave; what happens to the rest?
            for s in answered:
                s.close()
            t0 = time.monotonic()
            later_answered, later_closed, still_waiting = _outcomes(waiting, timeout=20)
            waited = time.monotonic() - t0
            for s in socks:
                s.close()
            _wait(lambda: proxy.ask()["connections"] <= 1, 30)
            recovered = proxy.ask()
            fresh = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            fresh_answer = _ask(fresh, through)
            fresh.close()
            first.close()
            _wait(lambda: proxy.ask()["connections"] == 0, 30)
            after = proxy.ask("close-idle")
            _wait(lambda: proxy.ask()["fds"] <= base["fds"], 10)
            after = proxy.ask()
        finally:
            stderr = proxy.stop()
    accept_lines = sum(full["accept_errors"].values())
    result = {
        "run": "fds-guarded" if guarded else "fds-twisted-default",
        "nofile": nofile,
        "clients_connected": len(socks),
        "proxy_connections_at_limit": full["connections"],
        "proxy_fds_at_limit": full["fds"],
        "guard": full.get("guard"),
        "existing_served_locally": served_local.startswith(b"HTTP/1.1 200"),
        "existing_served_through_upstream": served_upstream[:40].decode("latin-1"),
        "clients_answered": len(answered),
        "clients_closed_unanswered": len(closed),
        "clients_waiting": len(waiting),
        "after_answered_left": {
            "answered": len(later_answered), "closed": len(later_closed),
            "still_waiting": len(still_waiting), "seconds": round(waited, 1),
        },
        "log_lines_about_accepting": accept_lines,
        "log_lines_by_message": full["accept_errors"],
        "log_levels": recovered["log_levels"],
        "new_client_served_after_recovery": fresh_answer.startswith(b"HTTP/1.1 200"),
        "fds_base": base["fds"],
        "fds_after": after["fds"],
        "failures_logged": after["failure_count"],
        "stderr": stderr.strip().splitlines()[-5:],
    }
    _say(f"{result['run']}: limit {nofile}, proxy held {result['proxy_connections_at_limit']} "
         f"clients, {accept_lines} log lines about accepting, existing client served: "
         f"{result['existing_served_locally']}, recovered: {result['new_client_served_after_recovery']}")
    return result


def _outcomes(socks, timeout: float):
    """Split ``socks`` into those answered, closed without an answer, and still waiting."""
    import selectors

    answered, closed = [], []
    pending = {s: b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            if chunk and b"\r\n\r\n" not in pending[s] + chunk:
                pending[s] += chunk
                continue
            sel.unregister(s)
            (answered if chunk else closed).append(s)
            del pending[s]
    sel.close()
    return answered, closed, list(pending)


# -- a response much larger than memory --------------------------------------------------


def run_big(size_mib: int, rate: str) -> dict:
    size = size_mib * MIB
    with _origin() as (origin_port, root):
        with open(os.path.join(root, "big"), "wb") as f:
            f.truncate(size)  # sparse: the origin reads zeros without using memory
        proxy = ProxyProcess()
        try:
            base = proxy.ask("gc")
            samples: list[int] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    try:
                        with open(f"/proc/{proxy.pid}/status") as f:
                            for line in f:
                                if line.startswith("VmRSS:"):
                                    samples.append(int(line.split()[1]) * 1024)
                    except OSError:
                        return
                    time.sleep(0.1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            curl = subprocess.run(
                ["curl", "--silent", "--show-error", "-x", f"http://127.0.0.1:{proxy.port}",
                 "--limit-rate", rate, "-o", "/dev/null", "-w", "%{size_download}",
                 f"http://127.0.0.1:{origin_port}/big"],
                capture_output=True, text=True, timeout=3600, check=False,
            )
            elapsed = time.monotonic() - started
            done.set()
            sampler.join()
            after = proxy.ask("gc")
        finally:
            proxy.stop()
    peak = max(samples) if samples else 0
    result = {
        "run": "big",
        "size_mib": size_mib,
        "reader_rate": rate,
        "curl_exit": curl.returncode,
        "bytes_received": int(curl.stdout or 0),
        "seconds": round(elapsed, 1),
        "rss_base_mib": round(base["rss"] / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
        "rss_growth_mib": round((peak - base["rss"]) / MIB, 1),
        "rss_after_mib": round(after["rss"] / MIB, 1),
        "samples": len(samples),
    }
    _say(f"big: {size_mib} MiB to a reader at {rate}/s in {result['seconds']} s, "
         f"proxy RSS {result['rss_base_mib']} -> peak {result['rss_peak_mib']} MiB")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", choices=["idle", "fds", "big", "all"])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--nofile", type=int, default=256)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rate", default="100M", help="curl --limit-rate for the big response")
    args = parser.parse_args()
    results = []
    if args.run in ("idle", "all"):
        results.append(run_idle(args.connections))
    if args.run in ("fds", "all"):
        results.append(run_fds(args.nofile, guarded=False))
        results.append(run_fds(args.nofile, guarded=True))
    if args.run in ("big", "all"):
        results.append(run_big(args.size_mib, args.rate))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
