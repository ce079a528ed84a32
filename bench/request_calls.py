#!/usr/bin/env python3
"""
Calls and objects per forwarded request: how long the path through the
package is, counted rather than timed.

    python3 bench/request_calls.py [--requests 200] [--kind forward|reverse]

A forward (or reverse) proxy, an origin and a keep-alive client run in this
process; after a warm-up, ``sys.setprofile`` counts, for ``--requests`` GETs
of a 100-byte body, every call into a function defined under
``src/multiproxy`` (the reactor thread only: the client runs in a thread of
its own), the distinct functions and modules they hit, and the objects the
package makes (``__init__`` or ``__new__`` calls on its classes, generated
ones included).  Run it
on two checkouts (``PYTHONPATH=OTHER/src``) to compare a change with the
commit before it.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import threading
from collections import Counter

from twisted.internet import protocol, reactor

PACKAGE = os.sep + "multiproxy" + os.sep


class _Origin(protocol.Protocol):
    """Answers every request head with 100 bytes, keep-alive."""

    buffered = b""

    def dataReceived(self, data: bytes) -> None:  # noqa: N802 (Twisted's name)
        self.buffered += data
        while b"\r\n\r\n" in self.buffered:
            _, self.buffered = self.buffered.split(b"\r\n\r\n", 1)
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100)


def _proxy_factory(kind: str, origin_port: int):
    if kind == "forward":
        from multiproxy.forward import ForwardProxy

        return ForwardProxy(reactor)
    from multiproxy.balancing import Backend, BackendPool, RoundRobin
    from multiproxy.reverse import ReverseProxy, Route, RouteTable

    pool = BackendPool("web", [Backend(host="127.0.0.1", port=origin_port)], RoundRobin(),
                       reactor)
    return ReverseProxy(reactor, routes=RouteTable([Route(pool="web")]), pools={"web": pool})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--kind", choices=("forward", "reverse"), default="forward")
    args = parser.parse_args()
    origin = reactor.listenTCP(0, protocol.Factory.forProtocol(_Origin), interface="127.0.0.1")
    origin_port = origin.getHost().port
    proxy = reactor.listenTCP(0, _proxy_factory(args.kind, origin_port), interface="127.0.0.1")
    proxy_port = proxy.getHost().port
    calls: Counter = Counter()
    objects: Counter = Counter()
    counting = threading.Event()

    def profile(frame, event, arg):
        if event != "call" or not counting.is_set():
            return
        code = frame.f_code
        if code.co_name == "__init__" or code.co_name == "__new__":
            # Generated __init__s (dataclasses, NamedTuples) live in "<string>".
            made = frame.f_locals.get("self", frame.f_locals.get("cls"))
            kind = made if isinstance(made, type) else type(made)
            if kind.__module__.startswith("multiproxy"):
                objects[kind.__qualname__] += 1
        if PACKAGE in code.co_filename:
            calls[(code.co_filename, code.co_name)] += 1

    target = f"http://127.0.0.1:{origin_port}/100b" if args.kind == "forward" else "/100b"

    def client() -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=10)
            for n in range(20 + args.requests):
                if n == 20:  # warmed up: connections open, caches filled
                    counting.set()
                conn.request("GET", target, headers={"Host": f"127.0.0.1:{origin_port}"})
                response = conn.getresponse()
                assert response.status == 200, response.status
                response.read()
            counting.clear()
            conn.close()
        finally:
            reactor.callFromThread(reactor.stop)

    sys.setprofile(profile)  # this thread: the reactor's
    reactor.callLater(0, lambda: threading.Thread(target=client, daemon=True).start())
    reactor.run()
    sys.setprofile(None)
    n = args.requests
    total = sum(calls.values())
    modules = {path for path, _ in calls}
    print(f"{args.kind} proxy, {n} keep-alive GETs of 100 bytes, per request:")
    print(f"  calls into multiproxy: {total / n:.1f} across {len(calls)} functions "
          f"in {len(modules)} modules")
    print(f"  objects made by multiproxy classes: {sum(objects.values()) / n:.1f}")
    for (path, name), count in calls.most_common(12):
        print(f"    {count / n:5.1f}  {os.path.basename(path)}:{name}")
    for name, count in objects.most_common(10):
        print(f"    {count / n:5.1f}  new {name}")


if __name__ == "__main__":
    main()
