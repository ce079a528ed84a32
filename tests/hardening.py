"""
Shared pieces of the hardening suite (tests/test_hardening*.py).

- `no_tracebacks`: an autouse fixture (import it into a test module) that
  fails the test if anything logged a failure (``log.failure``, ``log.err``,
  an unhandled error in a Deferred) or a critical event while it ran.
- `Recorder`: a loopback origin that reads what a proxy forwards with h11, an
  HTTP/1.1 reader independent of ours, and records every byte, every parsed
  request and how each connection ended.  It answers complete requests with
  a small 200, or never (``answer=False``).
- `FixedChooser` routes every intent to one upstream (so hostile targets are
  all sent to the recorder); `StalledUpstream` is an upstream whose connect
  never completes (a DNS server that never answers).
- `proxy_rss` and friends: memory and descriptor figures from /proc.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass, field

import h11
import pytest
from twisted.internet import defer, protocol, reactor, task
from twisted.logger import LogLevel, globalLogPublisher
from zope.interface import implementer

from multiproxy._interfaces import IUpstream, IUpstreamChooser
from multiproxy.forward import Origin

# -- failing a test on a logged traceback ---------------------------------------


class FailureLog:
    """Collects log events that carry a failure or are critical."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def __call__(self, event: dict) -> None:
        if (
            "log_failure" in event
            or event.get("isError")
            or event.get("log_level") is LogLevel.critical
        ):
            self.events.append(event)

    def describe(self) -> str:
        lines = []
        for event in self.events:
            failure = event.get("log_failure")
            text = event.get("log_format") or event.get("format") or ""
            if failure is not None:
                text += "\n" + failure.getTraceback()
            lines.append(text)
        return "\n---\n".join(lines)


@pytest.fixture(autouse=True)
def no_tracebacks():
    """Fail the test if a failure was logged while it ran (Deferred garbage included)."""
    seen = FailureLog()
    globalLogPublisher.addObserver(seen)
    try:
        yield seen
        # Unhandled errors in Deferreds are only logged when the Deferred is
        # collected: collect now so they count against this test.
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(seen)
    assert not seen.events, "failures were logged:\n" + seen.describe()


# -- a strict recording origin ----------------------------------------------------


@dataclass
class Seen:
    """What one connection to the `Recorder` carried."""

    raw: bytearray = field(default_factory=bytearray)
    requests: list[tuple[h11.Request, bytes]] = field(default_factory=list)
    partial: h11.Request | None = None
    h11_error: str | None = None
    lost: bool = False
    lost_cleanly: bool | None = None


class _RecorderProtocol(protocol.Protocol):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.seen = Seen()
        self.conn = h11.Connection(h11.SERVER)
        self.body = bytearray()

    def connectionMade(self) -> None:
        self.recorder.connections.append(self.seen)

    def dataReceived(self, data: bytes) -> None:
        self.seen.raw += data
        if self.seen.h11_error is not None:
            return
        self.conn.receive_data(data)
        self._pump()

    def _pump(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                self.seen.h11_error = str(e)
                self.transport.loseConnection()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self.seen.partial = event
                self.body = bytearray()
            elif isinstance(event, h11.Data):
                self.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                self.seen.requests.append((self.seen.partial, bytes(self.body)))
                self.recorder.requests.append((self.seen.partial, bytes(self.body)))
                self.seen.partial = None
                if not self.recorder.answer:
                    continue
                body = self.recorder.body
                out = self.conn.send(
                    h11.Response(status_code=200, reason=b"OK", headers=[("Content-Length", str(len(body)))])
                )
                out += self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage())
                self.transport.write(out)
                try:
                    self.conn.start_next_cycle()
                except h11.LocalProtocolError:
                    self.transport.loseConnection()
                    return
            elif isinstance(event, h11.ConnectionClosed):
                return

    def connectionLost(self, reason=None) -> None:
        from twisted.internet.error import ConnectionDone

        self.seen.lost = True
        self.seen.lost_cleanly = reason is not None and reason.check(ConnectionDone) is not None


class Recorder:
    """
    A loopback origin that records what reaches it, parsed with h11.

    ``answer``: reply ``200`` with ``body`` to each complete request (else
    never reply).  Call `stop` when done.
    """

    def __init__(self, *, answer: bool = True, body: bytes = b"ok") -> None:
        self.answer = answer
        self.body = body
        self.connections: list[Seen] = []
        self.requests: list[tuple[h11.Request, bytes]] = []
        """Every complete request, in the order they arrived, over all connections."""
        factory = protocol.Factory.forProtocol(lambda: _RecorderProtocol(self))
        factory.noisy = False
        self.port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.number = self.port.getHost().port

    @property
    def raw(self) -> bytes:
        """Every byte received, over all connections."""
        return b"".join(bytes(c.raw) for c in self.connections)

    def stop(self) -> defer.Deferred:
        return self.port.stopListening()


@implementer(IUpstreamChooser)
class FixedChooser:
    """Sends every intent to one upstream, whatever host it names."""

    def __init__(self, upstream) -> None:
        self.upstream = upstream
        self.intents: list = []

    def choose(self, intent, excluded=frozenset()):
        self.intents.append(intent)
        return None if self.upstream.key in excluded else self.upstream


def to_recorder(recorder: Recorder) -> FixedChooser:
    return FixedChooser(Origin("http", "127.0.0.1", recorder.number))


class _StalledEndpoint:
    def __init__(self, upstream: StalledUpstream) -> None:
        self.upstream = upstream

    def connect(self, factory) -> defer.Deferred:
        self.upstream.attempts += 1

        def cancel(d):
            self.upstream.cancelled += 1

        return defer.Deferred(cancel)


@implementer(IUpstream)
class StalledUpstream:
    """An upstream whose connect never fires, like a name server that never answers."""

    name = "stalled.test:80"
    key = ("stalled",)

    def __init__(self) -> None:
        self.attempts = 0
        self.cancelled = 0

    def endpoint(self, reactor):
        return _StalledEndpoint(self)

    def started(self) -> None:
        pass

    def finished(self, ok: bool, elapsed: float) -> None:
        pass


# -- waiting and measuring ----------------------------------------------------------


async def wait_until(predicate, timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` on the reactor until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await task.deferLater(reactor, step, lambda: None)
    return True


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int | str = "self") -> int:
    """How many file descriptors a process has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def status_of(answer: bytes) -> int | None:
    """The status code of the first response in ``answer`` (None if there is none)."""
    if not answer.startswith(b"HTTP/1.1 "):
        return None
    return int(answer[9:12])
