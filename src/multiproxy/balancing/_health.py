"""
Active health checks: a Twisted service that probes each backend on an
interval and takes it down after ``fall`` failed probes in a row, up again
after ``rise`` good ones.

Two probes: `TCPCheck` (the connection opens) and `HTTPCheck` (a minimal
``GET`` over the backend's own endpoint, TLS included, judged on the status
line alone).  The counting (`HealthState`) and the status-line parsing
(`parse_status_line`) are pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from multiproxy.balancing._backend import Backend
from multiproxy.pipeline._connect import UpstreamEndpoint

if TYPE_CHECKING:
    from multiproxy.balancing._sharedhealth import HealthShare

__all__ = ["HTTPCheck", "HealthChecker", "HealthState", "TCPCheck", "parse_status_line"]

_log = Logger()

MAX_STATUS_LINE = 8192
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [\t !-~\x80-\xff]*)?")


def parse_status_line(line: bytes) -> int:
    """
    The status code of an HTTP/1.x status line (without its CRLF).

    @raise ValueError: when ``line`` is not a status line (RFC 9112, 4).
    """
    match = _STATUS_LINE.fullmatch(line)
    if match is None:
        raise ValueError(f"not an HTTP status line: {line[:80]!r}")
    return int(match.group(1))


class HealthState:
    """Consecutive-result counting with hysteresis (pure)."""

    def __init__(self, rise: int = 2, fall: int = 3, up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must be at least 1")
        self.rise = rise
        self.fall = fall
        self.up = up
        self._streak = 0

    def record(self, ok: bool) -> bool:
        """Count one probe result; return True when it changed the state."""
        if ok == self.up:
            self._streak = 0
            return False
        self._streak += 1
        if self._streak >= (self.rise if ok else self.fall):
            self.up = ok
            self._streak = 0
            return True
        return False


@dataclass(frozen=True, slots=True)
class TCPCheck:
    """Healthy when a connection to the backend opens."""

    def request(self, backend: Backend) -> bytes | None:
        return None

    def judge(self, status: int) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class HTTPCheck:
    """
    Healthy when ``GET path`` answers with a status in ``expect``.

    @ivar host: the Host header; default the backend's TLS server name or host.
    @ivar expect: accepted status codes; default any 2xx or 3xx.
    """

    path: str = "/"
    host: str | None = None
    expect: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n\t"):
            raise ValueError(f"health check path must start with / and hold no spaces: {self.path!r}")

    def _host(self, backend: Backend) -> str:
        host = self.host or (backend.tls and backend.tls.server_name) or backend.host or "localhost"
        if backend.host and backend.port and not self.host:
            host = f"{host}:{backend.port}"
        return host

    def request(self, backend: Backend) -> bytes:
        return (
            f"GET {self.path} HTTP/1.1\r\nHost: {self._host(backend)}\r\n"
            "User-Agent: multiproxy-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        ).encode("ascii", "strict")

    def h2_request(self, backend: Backend) -> list[tuple[bytes, bytes]]:
        """The same request as an HTTP/2 header block, for an ``http2`` backend."""
        return [
            (b":method", b"GET"),
            (b":scheme", b"https" if backend.tls is not None else b"http"),
            (b":authority", self._host(backend).encode("ascii", "strict")),
            (b":path", self.path.encode("ascii", "strict")),
            (b"user-agent", b"multiproxy-health-check"),
            (b"accept", b"*/*"),
        ]

    def judge(self, status: int) -> bool:
        if self.expect:
            return status in self.expect
        return 200 <= status < 400


class _Probe(Protocol):
    """Sends the check's request (if any) and reads just the status line."""

    def __init__(self, request: bytes | None, result: defer.Deferred) -> None:
        self.request = request
        self.result = result
        self.buffer = b""

    def connectionMade(self) -> None:
        if self.request is None:
            self._finish(None)
        else:
            self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        line, crlf, _ = self.buffer.partition(b"\r\n")
        if crlf:
            try:
                status = parse_status_line(line)
            except ValueError as e:
                self._fail(str(e))
            else:
                self._finish(status)
        elif len(self.buffer) > MAX_STATUS_LINE:
            self._fail("status line too long")

    def connectionLost(self, reason: Failure) -> None:
        if not self.result.called:
            self.result.errback(Failure(ValueError("connection closed before a status line")))

    def _finish(self, status: int | None) -> None:
        if not self.result.called:
            self.result.callback(status)
        if self.request is None:
            self.transport.loseConnection()
        else:
            # Nothing more is wanted from the backend: do not wait for its body.
            self.transport.abortConnection()

    def _fail(self, why: str) -> None:
        if not self.result.called:
            self.result.errback(Failure(ValueError(why)))
        self.transport.abortConnection()


class _H2Probe(_Probe):
    """The check's GET as the one stream of an HTTP/2 connection; reads just its ``:status``."""

    def __init__(self, fields: list[tuple[bytes, bytes]], result: defer.Deferred) -> None:
        import h2.config
        import h2.connection

        super().__init__(None, result)
        self.fields = fields
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))

    def connectionMade(self) -> None:
        self.conn.initiate_connection()
        self.conn.send_headers(1, self.fields, end_stream=True)
        self.transport.write(self.conn.data_to_send())

    def dataReceived(self, data: bytes) -> None:
        import h2.events
        import h2.exceptions

        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self._fail(f"invalid HTTP/2: {e}")
            return
        for event in events:
            if isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status", b"")
                if len(status) == 3 and status.isdigit():
                    self._finish(int(status))
                else:
                    self._fail(f"bad :status {status!r}")
                return
            if isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                self._fail("the backend reset the check's stream")
                return
        pending = self.conn.data_to_send()
        if pending:
            self.transport.write(pending)


class _ProbeRun:
    """One probe of one backend: connection, deadline and outcome."""

    def __init__(self, reactor: Any, backend: Backend, check: Any, timeout: float) -> None:
        self.timeout = timeout
        self.check = check
        self.result: defer.Deferred = defer.Deferred()
        self.protocol: _Probe | None = None
        request = check.request(backend)

        def build() -> _Probe:
            if request is not None and getattr(backend, "http2", False):
                self.protocol = _H2Probe(check.h2_request(backend), self.result)
            else:
                self.protocol = _Probe(request, self.result)
            return self.protocol

        endpoint = UpstreamEndpoint(reactor, backend, timeout)
        self.connecting = endpoint.connect(Factory.forProtocol(build))
        self.connecting.addErrback(self._connect_failed)
        self.timer = reactor.callLater(timeout, self.stop, f"no answer within {timeout:g} s")

    def _connect_failed(self, failure: Failure) -> None:
        if not self.result.called:
            self.result.errback(failure)

    def stop(self, why: str) -> None:
        """Give up: close whatever is open and fail with ``why``."""
        if self.timer.active():
            self.timer.cancel()
        if not self.result.called:
            self.result.errback(Failure(TimeoutError(why)))
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abortConnection()
        elif not self.connecting.called:
            self.connecting.cancel()

    def outcome(self) -> defer.Deferred:
        """Fires with (ok, detail); never fails."""

        def judged(status: int | None) -> tuple[bool, str]:
            if status is None:
                return True, "connected"
            return self.check.judge(status), f"HTTP {status}"

        def failed(failure: Failure) -> tuple[bool, str]:
            return False, failure.getErrorMessage() or failure.type.__name__

        def done(value: tuple[bool, str]) -> tuple[bool, str]:
            if self.timer.active():
                self.timer.cancel()
            return value

        return self.result.addCallbacks(judged, failed).addCallback(done)


class HealthChecker(Service):
    """
    Probes each backend every ``interval`` seconds (a probe still running is
    not started again), with a ``timeout`` per probe, and sets each
    backend's ``checked_up`` through `HealthState` with ``rise``/``fall``.
    """

    def __init__(
        self,
        reactor: Any,
        backends: Sequence[Backend],
        check: TCPCheck | HTTPCheck | None = None,
        *,
        interval: float = 5.0,
        timeout: float = 2.0,
        rise: int = 2,
        fall: int = 3,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("health check interval and timeout must be positive")
        self.reactor = reactor
        self.backends = list(backends)
        self.check = check if check is not None else TCPCheck()
        self.interval = interval
        self.timeout = timeout
        self.states = {b.key: HealthState(rise, fall, up=b.checked_up) for b in self.backends}
        self._running: dict[Any, _ProbeRun] = {}
        self._loop: task.LoopingCall | None = None
        self.share: HealthShare | None = None
        """Set when the workers of a host share one prober (see `HealthShare`)."""

    def startService(self) -> None:
        super().startService()
        self._loop = task.LoopingCall(self.run_checks)
        self._loop.clock = self.reactor
        self._loop.start(self.interval, now=True)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        runs, self._running = list(self._running.values()), {}
        for run in runs:
            run.stop("health checks stopped")

    def run_checks(self) -> defer.Deferred:
        """
        One round: probe each backend not already being probed (fires when
        all end) or, when another worker's turn it is, take its verdicts.
        """
        if self.share is None:
            return self._probe_all()
        d = self.share.my_turn()
        d.addCallback(lambda mine: self._probe_all() if mine else self._follow())
        return d

    def _probe_all(self) -> defer.Deferred:
        started = []
        for backend in self.backends:
            if backend.key in self._running:
                continue
            run = _ProbeRun(self.reactor, backend, self.check, self.timeout)
            self._running[backend.key] = run
            started.append(run.outcome().addCallback(self._probed, backend, run))
        return defer.DeferredList(started, consumeErrors=True)

    def probe(self, backend: Backend) -> defer.Deferred:
        """One probe of ``backend``, not counted: fires with (ok, detail)."""
        return _ProbeRun(self.reactor, backend, self.check, self.timeout).outcome()

    def _follow(self) -> defer.Deferred:
        return self.share.read().addCallback(self._adopt)

    def _adopt(self, verdicts: dict) -> None:
        """Take the prober's verdicts (it logs the changes; followers stay quiet)."""
        now = self.reactor.seconds()
        for backend in self.backends:
            verdict = verdicts.get(backend.name)
            if verdict is None:
                continue
            up, backend.last_check = verdict
            state = self.states[backend.key]
            if state.up != up:
                state.up = backend.checked_up = up
                backend.observe_state(now)
                if up:
                    backend.ejected_until = None
                    backend.ejections = 0

    def _probed(self, outcome: tuple[bool, str], backend: Backend, run: _ProbeRun) -> None:
        if self._running.get(backend.key) is not run:
            return  # stopped meanwhile: not a verdict on the backend
        del self._running[backend.key]
        ok, detail = outcome
        backend.last_check = detail if ok else f"failed: {detail}"
        state = self.states[backend.key]
        changed = state.record(ok)
        if self.share is not None:
            self.share.publish({backend.name: (state.up, backend.last_check)})
        if changed:
            backend.checked_up = state.up
            backend.observe_state(self.reactor.seconds())
            if state.up:
                backend.ejected_until = None
                backend.ejections = 0
                _log.info("backend {name} is up ({detail})", name=backend.name, detail=detail)
            else:
                _log.warn("backend {name} is down ({detail})", name=backend.name, detail=detail)
