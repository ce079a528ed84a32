"""
A multiproxy process for the reliability benches (exhaustion.py, soak.py).

It runs a forward proxy on 127.0.0.1 (and, when asked, a reverse proxy and
a TCP relay, each with one backend), and
answers one JSON line on stdout per command line read from stdin (a channel
that stays open when the process has no descriptor left to accept a
connection with), so the bench measures this process alone:

- ``stats``: RSS, open descriptors, client connections, pooled upstream
  connections, pending timers, and log events seen (by level, plus the
  accept errors);
- ``gc``: run a full garbage collection, then ``stats`` with the live
  objects of the proxy's own classes counted;
- ``close-idle``: close pooled upstream connections, then ``stats``.

Run as ``python bench/_proxyproc.py --listen PORT [--nofile N]``; it prints
``ready`` once listening.  `ProxyProcess` starts and drives one.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import os
import resource
import sys


def _rss(pid: int | str = "self") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # no descriptor left to open the file with
        pass
    return -1


def _count_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no descriptor left to open the directory with
        return -1


_TRACKED = (
    "ForwardProxyProtocol", "ReverseProxyProtocol", "TCPRelayProtocol", "Exchange", "RequestBody", "UpstreamConnection", "Relay",
    "RelayUpstreamProtocol", "RelayServerProtocol", "DelayedCall", "Deferred",
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--tcp-listen", type=int, default=0, help="also run a TCP relay here")
    parser.add_argument("--tcp-backend", type=int, default=0, help="the TCP relay's backend port")
    parser.add_argument("--reverse-listen", type=int, default=0,
                        help="also run a reverse proxy here")
    parser.add_argument("--reverse-backend", type=int, default=0,
                        help="the reverse proxy's backend port")
    parser.add_argument("--nofile", type=int, default=0, help="RLIMIT_NOFILE soft limit")
    parser.add_argument("--backlog", type=int, default=128)
    parser.add_argument("--keepalive", type=float, default=600.0, help="client keep-alive (s)")
    parser.add_argument("--pool-keepalive", type=float, default=30.0)
    parser.add_argument("--connect-ports", default="443")
    parser.add_argument("--cache", action="store_true", help="a 16 MiB shared cache in front")
    parser.add_argument("--guard", action="store_true",
                        help="listen through multiproxy.transport._accept.GuardedEndpoint")
    parser.add_argument("--max-connections", type=int, default=0,
                        help="the guard's limit (default: from RLIMIT_NOFILE)")
    args = parser.parse_args(argv)

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if args.nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (args.nofile, hard))
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import protocol, reactor, stdio
    from twisted.logger import LogLevel, globalLogBeginner

    from multiproxy.forward import ForwardProxy, ForwardSettings
    from multiproxy.http._client import ConnectionPool
    from multiproxy.http._server import Timeouts
    from multiproxy.http1._parser import Limits

    levels: collections.Counter = collections.Counter()
    accept_errors: collections.Counter = collections.Counter()
    failures: list[str] = []

    def observe(event: dict) -> None:
        level = event.get("log_level")
        levels[level.name if level is not None else "legacy"] += 1
        text = event.get("log_format") or ""
        if "EMFILE" in text or "accept" in text.lower():
            accept_errors[text] += 1
        if "log_failure" in event or event.get("isError"):
            failure = event.get("log_failure")
            failures.append(failure.getTraceback() if failure is not None else text)
        if level is not None and level >= LogLevel.warn:
            from twisted.logger import formatEvent

            sys.stderr.write(f"[{level.name}] {formatEvent(event)[:300]}\n")
            if "log_failure" in event:
                sys.stderr.write(event["log_failure"].getTraceback())

    globalLogBeginner.beginLoggingTo([observe], redirectStandardIO=False)

    timeouts = Timeouts(keepalive=args.keepalive)
    limits = Limits()
    pool = ConnectionPool(
        reactor, limits, connect_timeout=timeouts.connect, response_timeout=timeouts.response,
        idle_timeout=timeouts.upstream_idle, keepalive_timeout=args.pool_keepalive,
    )
    ports = frozenset(int(p) for p in args.connect_ports.split(",") if p)
    proxy = ForwardProxy(
        reactor, pool=pool, timeouts=timeouts, limits=limits,
        settings=ForwardSettings(connect_ports=ports),
    )
    guard = None
    if args.guard:
        from twisted.internet.endpoints import TCP4ServerEndpoint

        from multiproxy.transport._accept import AcceptGuard, GuardedEndpoint

        guard = AcceptGuard(reactor, args.max_connections or None)
        endpoint = GuardedEndpoint(
            TCP4ServerEndpoint(reactor, args.listen, backlog=args.backlog, interface="127.0.0.1"),
            guard,
        )
        endpoint.listen(proxy)
    else:
        reactor.listenTCP(args.listen, proxy, backlog=args.backlog, interface="127.0.0.1")
    if args.cache:
        from multiproxy.cache import CacheConfig
        from multiproxy.cache._fetcher import caching_fetcher_factory

        proxy.fetcher = caching_fetcher_factory(CacheConfig(size=16 << 20), reactor)(proxy.fetcher)

    relay_factory = reverse = reverse_pool = None
    if args.tcp_listen or args.reverse_listen:
        from multiproxy.balancing import Backend, BackendPool, RoundRobin
    if args.tcp_listen:
        from multiproxy.tcp import TCPRelayFactory

        backends = BackendPool(
            "tcp", [Backend(host="127.0.0.1", port=args.tcp_backend)], RoundRobin(), reactor
        )
        relay_factory = TCPRelayFactory(reactor, backends, name="tcp")
        reactor.listenTCP(args.tcp_listen, relay_factory, interface="127.0.0.1")
    if args.reverse_listen:
        from multiproxy.reverse import ReverseProxy, Route, RouteTable

        backends = BackendPool(
            "web", [Backend(host="127.0.0.1", port=args.reverse_backend)], RoundRobin(), reactor
        )
        reverse_pool = ConnectionPool(
            reactor, limits, connect_timeout=timeouts.connect,
            response_timeout=timeouts.response, idle_timeout=timeouts.upstream_idle,
            keepalive_timeout=args.pool_keepalive,
        )
        reverse = ReverseProxy(
            reactor, routes=RouteTable([Route("web")]), pools={"web": backends},
            connection_pool=reverse_pool, timeouts=timeouts, limits=limits, name="reverse",
        )
        reactor.listenTCP(args.reverse_listen, reverse, interface="127.0.0.1")

    def stats(objects: bool) -> dict:
        counts: collections.Counter = collections.Counter()
        total = 0
        if objects:
            for obj in gc.get_objects():
                total += 1
                name = type(obj).__name__
                if name in _TRACKED:
                    counts[name] += 1
        return {
            "pid": os.getpid(),
            "rss": _rss(),
            "fds": _count_fds(),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
            "connections": len(proxy.connections)
            + (len(reverse.connections) if reverse is not None else 0)
            + (len(relay_factory.connections) if relay_factory is not None else 0),
            "pool_idle": pool.idle_count()
            + (reverse_pool.idle_count() if reverse_pool is not None else 0),
            "timers": len(reactor.getDelayedCalls()),
            "objects": dict(counts),
            "gc_objects": total,
            "log_levels": dict(levels),
            "accept_errors": dict(accept_errors),
            "failures": failures[-5:],
            "failure_count": len(failures),
            "guard": None if guard is None else {
                "max": guard.max_connections, "open": guard.open, "paused": guard.paused,
                "episodes": guard.episodes,
            },
        }

    class Control(protocol.Protocol):
        def connectionMade(self) -> None:
            self.transport.write(b"ready\n")

        def dataReceived(self, data: bytes) -> None:
            for line in data.decode().split():
                if line.startswith("referrers:"):
                    self.transport.write(json.dumps(_referrers(line.split(":", 1)[1])).encode()
                                         + b"\n")
                    continue
                if line == "gc":
                    gc.collect()
                elif line == "close-idle":
                    pool.close_idle()
                    if reverse_pool is not None:
                        reverse_pool.close_idle()
                self.transport.write(json.dumps(stats(line == "gc")).encode() + b"\n")

        def connectionLost(self, reason=None) -> None:
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Control())
    reactor.run()


def _referrers(type_name: str, limit: int = 20) -> dict:
    """What holds the live objects of ``type_name`` (type names, two levels up)."""
    gc.collect()
    found = [o for o in gc.get_objects() if type(o).__name__ == type_name][:limit]
    chains: collections.Counter = collections.Counter()
    for obj in found:
        for ref in gc.get_referrers(obj):
            if ref is found:
                continue
            outer = [type(r).__name__ for r in gc.get_referrers(ref) if r is not found][:3]
            label = type(ref).__name__
            if isinstance(ref, dict):
                label += "{" + ",".join(sorted(str(k) for k in ref)[:6]) + "}"
            chains[f"{label} <- {outer}"] += 1
    return {"count": len(found), "held_by": dict(chains.most_common(10))}


class ProxyProcess:
    """A `_proxyproc` child process, driven over its stdin and stdout."""

    def __init__(self, *args: str) -> None:
        import subprocess

        from _harness import free_port

        self.port = free_port()
        self.ports = {"forward": self.port}
        args = list(args)
        for kind in ("reverse", "tcp"):
            if f"--{kind}-backend" in args:
                self.ports[kind] = free_port()
                args += [f"--{kind}-listen", str(self.ports[kind])]
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--listen", str(self.port), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            bufsize=1,
        )
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"proxy process failed to start: {line}{self.process.stderr.read()}")
        self.pid = self.process.pid

    def ask(self, command: str = "stats") -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        # Counted from here too: the child may have no descriptor to spare.
        answer["fds"] = len(os.listdir(f"/proc/{self.pid}/fd"))
        answer["rss"] = _rss(self.pid)
        return answer

    def stop(self) -> str:
        """Stop the process; returns what it wrote to stderr."""
        import subprocess

        self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return self.process.stderr.read()


if __name__ == "__main__":
    main()
