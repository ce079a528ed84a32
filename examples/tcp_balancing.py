#!/usr/bin/env python3
"""
A TCP relay balancing over several backends, one of which is down.

    python3 examples/tcp_balancing.py [--port 9000] [--balance leastconn]
    for i in 1 2 3 4 5 6; do echo hi | nc -q1 127.0.0.1 9000; done

Three demo backends are started here on loopback ports ("alpha", "beta",
"gamma"); each answers a connection with its name.  A fourth backend is
configured on a port where nothing listens: its connections are refused,
the relay moves on to the next backend before the client notices, and the
health checks then take it out of rotation.

The same relay from a configuration file (with your own backends):
``twistd -n multiproxy --config examples/tcp_balancing.toml``.
"""

from __future__ import annotations

import argparse
import socket
import sys

from twisted.internet.protocol import Factory, Protocol

from multiproxy.balancing import HealthConfig
from multiproxy.tcp import TCPBackendConfig, TCPConfig, TCPSettings, make_tcp_service

NAMES = ("alpha", "beta", "gamma")


class NamedBackend(Protocol):
    """A demo backend: says its name, then echoes until the client leaves."""

    def connectionMade(self) -> None:
        self.transport.write(self.factory.name.encode() + b"\n")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(reactor, port: int, balance: str = "roundrobin", reporters=()):
    """
    Start the demo backends and return (the relay's service, not started
    yet; the listening ports of the backends).
    """
    listening = []
    backends = []
    for name in NAMES:
        factory = Factory.forProtocol(NamedBackend)
        factory.name = name
        p = reactor.listenTCP(0, factory, interface="127.0.0.1")
        listening.append(p)
        backends.append(TCPBackendConfig(f"tcp:host=127.0.0.1:port={p.getHost().port}",
                                         name=name))
    backends.insert(1, TCPBackendConfig(f"tcp:host=127.0.0.1:port={_unused_port()}",
                                        name="down"))
    config = TCPConfig(
        name="balanced",
        listen=(f"tcp:{port}:interface=127.0.0.1",),
        backends=tuple(backends),
        balance=balance,
        settings=TCPSettings(connect_timeout=2.0, idle_timeout=300.0),
        health=HealthConfig(check="tcp", interval=1.0, timeout=1.0, rise=2, fall=2),
    )
    return make_tcp_service(config, reactor, reporters), listening


def main() -> None:
    parser = argparse.ArgumentParser(description="TCP relay over several backends (demo)")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--balance", default="roundrobin")
    args = parser.parse_args()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from multiproxy import AccessLog

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    service, _ = build(reactor, args.port, args.balance, [AccessLog(reactor, "-")])
    service.startService()
    print(f"relay on 127.0.0.1:{args.port} over {', '.join(NAMES)} and one dead backend")
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
