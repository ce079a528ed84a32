"""
Exhaustion: many idle clients, and a process out of file descriptors.

The long runs (5,000 connections, 1 GiB responses) are bench/exhaustion.py;
these are the small, fast versions.  Processes with a lowered
RLIMIT_NOFILE run bench/_proxyproc.py, so the limit and the descriptor
count are that proxy's alone.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

import pytest
import pytest_twisted
from hardening import no_tracebacks, sleep, status_of, wait_until  # noqa: F401
from twisted.internet import reactor, task, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import globalLogPublisher

from multiproxy.forward import ForwardProxy
from multiproxy.transport._accept import AcceptGuard, GuardedEndpoint, default_max_connections

sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))
from _proxyproc import ProxyProcess

LOCAL = b"OPTIONS http://x.test/ HTTP/1.1\r\nHost: x.test\r\nMax-Forwards: 0\r\n\r\n"


class _FakePort:
    def __init__(self) -> None:
        self.reading = True
        self.connected = True
        self.disconnecting = False

    def stopReading(self) -> None:
        self.reading = False

    def startReading(self) -> None:
        self.reading = True


class _Proto:
    def connectionLost(self, reason=None) -> None:
        self.lost = True


class _Factory:
    def buildProtocol(self, addr):
        return _Proto()

    def doStart(self) -> None:
        pass

    def doStop(self) -> None:
        pass


@pytest.fixture
def guard_log():
    events = []

    def observe(event):
        if event.get("log_namespace") == "multiproxy.transport._accept":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def test_default_limit_leaves_two_descriptors_per_client_and_a_reserve():
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert default_max_connections() == (soft - min(64, soft // 4)) // 2


def test_guard_stops_accepting_at_the_limit_and_resumes_at_low_water(guard_log):
    clock = task.Clock()
    guard = AcceptGuard(clock, 10, resume_at=8)
    ports = [_FakePort(), _FakePort()]
    for port in ports:
        guard.watch(port)
    factory = guard.wrap(_Factory())
    protocols = [factory.buildProtocol(None) for _ in range(10)]
    assert guard.open == 10 and guard.paused
    assert [p.reading for p in ports] == [False, False]
    # Accepted in the same batch after the limit: closed at once, counted.
    assert factory.buildProtocol(None) is None
    assert guard.refused == 1
    protocols[0].connectionLost(None)
    assert guard.paused and guard.open == 9
    protocols[1].connectionLost(None)
    protocols[1].connectionLost(None)  # a second call is not counted twice
    assert guard.open == 8 and not guard.paused
    assert [p.reading for p in ports] == [True, True]
    assert protocols[0].lost and protocols[1].lost  # the protocols still hear of it
    assert [e["log_level"].name for e in guard_log] == ["warn"]
    clock.advance(10)
    assert [e["log_level"].name for e in guard_log] == ["warn", "info"]
    assert guard_log[1]["refused"] == 1 and guard_log[1]["episodes"] == 1


def test_guard_logs_a_busy_period_once_however_often_the_limit_is_hit(guard_log):
    clock = task.Clock()
    guard = AcceptGuard(clock, 3, resume_at=2, quiet_period=5)
    factory = guard.wrap(_Factory())
    protocols = [factory.buildProtocol(None) for _ in range(3)]
    for _ in range(50):  # flapping at the limit for 50 s
        protocols.pop().connectionLost(None)
        clock.advance(1)
        protocols.append(factory.buildProtocol(None))
    assert guard.episodes == 51
    assert [e["log_level"].name for e in guard_log] == ["warn"]
    protocols.pop().connectionLost(None)
    clock.advance(5)
    assert [e["log_level"].name for e in guard_log] == ["warn", "info"]
    assert guard_log[1]["episodes"] == 51
    assert guard_log[1]["seconds"] == 55
    # A new busy period later is logged again.
    protocols.append(factory.buildProtocol(None))
    assert [e["log_level"].name for e in guard_log] == ["warn", "info", "warn"]


@pytest_twisted.ensureDeferred
async def test_clients_over_the_limit_wait_and_are_served_when_others_leave(guard_log):
    guard = AcceptGuard(reactor, 4, resume_at=3, quiet_period=0.2)
    proxy = ForwardProxy(reactor)
    port = await GuardedEndpoint(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), guard).listen(proxy)
    number = port.getHost().port

    def scenario():
        held = [socket.create_connection(("127.0.0.1", number), timeout=5) for _ in range(4)]
        for s in held:
            s.sendall(LOCAL)
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
        waiting = socket.create_connection(("127.0.0.1", number), timeout=5)
        waiting.sendall(LOCAL)
        waiting.settimeout(0.5)
        try:
            early = waiting.recv(4096)
        except TimeoutError:
            early = None
        held[0].close()
        waiting.settimeout(5)
        started = time.monotonic()
        later = waiting.recv(4096)
        waited = time.monotonic() - started
        for s in held[1:] + [waiting]:
            s.close()
        return early, later, waited

    try:
        early, later, waited = await threads.deferToThread(scenario)
    finally:
        await port.stopListening()
        for conn in list(proxy.connections):
            conn.transport.abortConnection()
    assert early is None  # held in the backlog, not refused
    assert later.startswith(b"HTTP/1.1 200")
    assert waited < 2
    assert await wait_until(lambda: guard.open == 0)
    # Reached twice (4 held, then the waiting client made 4 again): one period.
    assert guard.episodes == 2
    assert await wait_until(lambda: len(guard_log) == 2)
    assert [e["log_level"].name for e in guard_log] == ["warn", "info"]


def _through(origin_port: int) -> bytes:
    return (f"GET http://127.0.0.1:{origin_port}/bytes/10 HTTP/1.1\r\nHost: x\r\n\r\n").encode()


def _ask(sock: socket.socket, request: bytes, timeout: float = 5) -> bytes:
    """One exchange on ``sock``: the response read up to its Content-Length."""
    sock.settimeout(timeout)
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.lower().split(b": ", 1) for line in head.split(b"\r\n")[1:])
    while len(body) < int(fields.get(b"content-length", 0)):
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@pytest_twisted.ensureDeferred
async def test_out_of_descriptors_keeps_serving_logs_once_and_recovers(origin):
    """
    A proxy process limited to 64 descriptors, listening through the guard:
    100 clients connect.  The proxy never runs out of descriptors, keeps
    serving its existing clients (through an upstream too), logs one
    warning, and once the clients leave it is back to its baseline and
    serves new clients.
    """
    proxy = await threads.deferToThread(ProxyProcess, "--nofile", "64", "--guard")
    try:
        def scenario():
            base = proxy.ask()
            first = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            assert status_of(_ask(first, _through(origin))) == 200
            crowd = []
            for _ in range(100):
                s = socket.socket()
                s.settimeout(1)
                try:
                    s.connect(("127.0.0.1", proxy.port))
                except OSError:
                    s.close()
                    break
                crowd.append(s)
            time.sleep(0.5)
            full = proxy.ask()
            local = _ask(first, LOCAL)
            upstream = _ask(first, _through(origin))
            for s in crowd:
                s.close()
            deadline = time.monotonic() + 10
            while proxy.ask()["connections"] > 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            fresh = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            fresh_answer = _ask(fresh, _through(origin))
            fresh.close()
            first.close()
            deadline = time.monotonic() + 10
            while proxy.ask("close-idle")["fds"] > base["fds"] and time.monotonic() < deadline:
                time.sleep(0.1)
            return base, full, local, upstream, fresh_answer, proxy.ask()

        base, full, local, upstream, fresh, after = await threads.deferToThread(scenario)
    finally:
        stderr = await threads.deferToThread(proxy.stop)
    limit = full["guard"]["max"]
    assert full["guard"]["paused"]
    assert full["connections"] == limit
    assert full["fds"] < 64
    assert status_of(local) == 200 and status_of(upstream) == 200
    assert status_of(fresh) == 200
    # One line about it, and none of Twisted's per-connection EMFILE lines.
    assert list(full["accept_errors"].values()) == [1]
    assert stderr.count("[warn]") == 1
    assert after["fds"] == base["fds"]
    assert after["connections"] == 0
    assert after["failure_count"] == 0


@pytest_twisted.ensureDeferred
async def test_many_idle_connections_cost_little_and_do_not_block_new_clients():
    n = 500
    proxy = await threads.deferToThread(ProxyProcess)
    try:
        def scenario():
            base = proxy.ask("gc")
            socks = [socket.create_connection(("127.0.0.1", proxy.port), timeout=5) for _ in range(n)]
            deadline = time.monotonic() + 20
            while proxy.ask()["connections"] < n and time.monotonic() < deadline:
                time.sleep(0.1)
            held = proxy.ask("gc")
            probe = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
            answer = _ask(probe, LOCAL)
            probe.close()
            for s in socks:
                s.close()
            deadline = time.monotonic() + 20
            while proxy.ask()["connections"] and time.monotonic() < deadline:
                time.sleep(0.1)
            return base, held, answer, proxy.ask("gc")

        base, held, answer, after = await threads.deferToThread(scenario)
    finally:
        await threads.deferToThread(proxy.stop)
    assert held["connections"] == n
    per_connection = (held["rss"] - base["rss"]) / n
    assert per_connection < 16 * 1024, per_connection
    assert status_of(answer) == 200
    assert after["connections"] == 0
    assert after["fds"] == base["fds"]
    assert after["timers"] == base["timers"]
    assert after["objects"].get("ForwardProxyProtocol", 0) == 0


def test_a_guarded_listener_is_logged_under_the_proxy_s_own_name():
    guard = AcceptGuard(task.Clock(), max_connections=10)
    assert guard.wrap(ForwardProxy(task.Clock())).logPrefix() == "ForwardProxy"
