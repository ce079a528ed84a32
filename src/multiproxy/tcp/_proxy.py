"""
The TCP relay proxy: a protocol factory that, per client connection, asks
the policy, chooses a backend (moving on to the next one when a connect
fails, before the client notices), optionally sends a PROXY protocol
header, relays bytes both ways with the shared `Relay`, and reports one
`AccessRecord`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.balancing._backend import note_connect_failed, note_exchanged, note_retried
from multiproxy.pipeline._attempts import Attempts
from multiproxy.pipeline._connect import connect_failure_kind, upstream_connect_error, with_deadline
from multiproxy.pipeline._contract import Pipeline
from multiproxy.pipeline._interfaces import IPolicy, IProxy, IUpstreamChooser
from multiproxy.pipeline._values import AccessRecord, Decision, Intent
from multiproxy.policy._admission import admit, connection_slot
from multiproxy.tcp._haproxy import find_proxy_header_wrapper
from multiproxy.tcp._proxyheader import proxy_header
from multiproxy.transport._relay import Relay, RelayServerProtocol

__all__ = ["TCPRelayFactory", "TCPRelayProtocol", "TCPSettings", "OUTCOMES"]

_log = Logger()

OUTCOMES = ("denied", "connection-limit", "rate-limited", "no-backend", "connect-failed",
            "no-proxy-header")
"""Endings of a connection that never reached the relay stage (besides the relay's own)."""


@dataclass(frozen=True, slots=True)
class TCPSettings:
    """
    Per-connection behaviour of a TCP relay.

    @ivar connect_timeout: seconds to connect to one backend (TLS handshake
        included).
    @ivar idle_timeout: seconds without traffic either way before the
        connection is closed; None for no limit.
    @ivar header_timeout: seconds a client on a PROXY-protocol listener has
        to send its header.
    @ivar retries: how many other backends to try after a failed connect.
    @ivar proxy_protocol: "v1" or "v2" to send a PROXY header to every
        backend (a backend's own ``proxy_protocol`` takes precedence).
    @ivar splice: on Linux, move the bytes of plain TCP connections with
        ``splice(2)`` (zero copy) instead of through Python.
    """

    connect_timeout: float = 5.0
    idle_timeout: float | None = None
    header_timeout: float = 10.0
    retries: int = 2
    proxy_protocol: str | None = None
    splice: bool = True


def _host_port(address: Any) -> tuple[str, int]:
    host = getattr(address, "host", None)
    if host is not None:
        return str(host), int(getattr(address, "port", 0))
    name = getattr(address, "name", None)  # UNIX sockets
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    return (f"unix:{name}" if name else "unix"), 0


class TCPRelayProtocol(RelayServerProtocol):
    """One client connection of a `TCPRelayFactory`."""

    def __init__(self, factory: TCPRelayFactory) -> None:
        super().__init__(
            factory.reactor, None, factory.settings.idle_timeout, factory.settings.splice
        )
        self.factory = factory
        self.intent: Intent | None = None
        self.decision: Decision | None = None
        self.backend: Any = None
        self.outcome: str | None = None
        self.attempts: Attempts | None = None
        self.connect_time = 0.0
        self.started_at = 0.0
        self._header_timer: Any = None
        self._ip_addresses: tuple[tuple[str, int], tuple[str, int]] | None = None
        self._release_slot: Any = None
        self._header_wrapper: Any = None
        self.upstream_error: str | None = None

    def connectionMade(self) -> None:
        self.started_at = self.reactor.seconds()
        self.factory.connections.add(self)
        self.factory.accepted += 1
        super().connectionMade()

    def start_relay(self, relay: Relay) -> None:
        wrapper = find_proxy_header_wrapper(self.transport)
        if wrapper is not None and wrapper.header_pending:
            self._header_wrapper = wrapper
            # Until a header arrives the connection's own addresses are all
            # there is to report; once it has closed they cannot be asked for.
            self._ip_addresses = (
                _host_port(self.transport.getPeer()), _host_port(self.transport.getHost())
            )
            self._header_timer = self.reactor.callLater(
                self.factory.settings.header_timeout, self._no_header
            )
            wrapper.when_header(self._begin)
        else:
            self._begin()

    def _no_header(self) -> None:
        self._header_timer = None
        self._give_up("no-proxy-header")

    def _give_up(self, outcome: str, failure: Failure | None = None) -> None:
        assert self.relay is not None
        self.outcome = outcome
        self.relay.end("error", failure, abort=False)

    def _begin(self) -> None:
        if self._header_timer is not None:
            if self._header_timer.active():
                self._header_timer.cancel()
            self._header_timer = None
        if self.relay is None or self.relay.ended is not None:
            return
        client = _host_port(self.transport.getPeer())
        local = _host_port(self.transport.getHost())
        self._ip_addresses = (client, local)
        self.intent = Intent(
            kind="tcp", proxy=self.factory.name, client_host=client[0],
            client_port=client[1], port=local[1],
        )
        # Per-client limits (a policy with `IAccessControl`): over either, the
        # connection is closed at once; a TCP connection counts as one request.
        policy = self.factory.policy
        self._release_slot, over_limit = connection_slot(policy, client[0])
        if over_limit:
            self._give_up("connection-limit")
            return
        verdict = admit(policy, self.intent)  # no credentials here: never deferred
        self.decision = verdict.decision
        if verdict.action != "allow":
            self._give_up(verdict.ended)
            return
        self.attempts = Attempts(self.factory.chooser, self.intent,
                                 self.factory.settings.retries + 1)
        backend = self.attempts.first()
        if backend is None:
            self._give_up("no-backend")
            return
        self._try(backend)

    def _try(self, backend: Any) -> None:
        assert self.relay is not None and self._ip_addresses is not None
        assert self.attempts is not None
        self.attempts.begin(backend)
        settings = self.factory.settings
        # One deadline for the connect and, to a TLS backend, its handshake.
        timeout = getattr(backend, "connect_timeout", None) or settings.connect_timeout
        version = getattr(backend, "proxy_protocol", None) or settings.proxy_protocol
        preamble = proxy_header(version, *self._ip_addresses) if version else b""
        started = self.reactor.seconds()
        connecting = with_deadline(
            self.reactor, self.relay.connect(backend.endpoint(self.reactor), preamble), timeout)
        connecting.addErrback(upstream_connect_error, backend.name, timeout)
        connecting.addCallbacks(
            self._connected, self._connect_failed,
            callbackArgs=(backend, started), errbackArgs=(backend, started),
        )

    def _connected(self, relay: Relay, backend: Any, started: float) -> None:
        if relay.ended is not None:
            return  # over before it began (its report is already out)
        backend.started()
        self.backend = backend
        self.connect_time = self.reactor.seconds() - started

    def _connect_failed(self, failure: Failure, backend: Any, started: float) -> None:
        assert self.relay is not None
        if failure.check(defer.CancelledError) and self.relay.ended is not None:
            return  # the client left while we were connecting: not the backend's fault
        backend.started()
        note_connect_failed(backend)
        _log.warn("{proxy}: backend unreachable: {why}", proxy=self.factory.name,
                  why=failure.getErrorMessage())
        if self.relay.ended is not None:
            return
        self.upstream_error = connect_failure_kind(failure)
        assert self.attempts is not None
        following = self.attempts.after_failure()
        if following is None:
            self._give_up("connect-failed", failure)
            return
        note_retried(backend, following)
        self._try(following)

    def relay_ended(self, relay: Relay, how: str) -> None:
        if self._header_timer is not None and self._header_timer.active():
            self._header_timer.cancel()
        self.factory.connections.discard(self)
        if self.outcome is None and self._header_wrapper is not None \
                and self._header_wrapper.header_pending:
            self.outcome = "no-proxy-header"  # closed before a valid header (or refused one)
        release, self._release_slot = self._release_slot, None
        if release is not None:
            release()
        if self.backend is not None:
            # A backend that drops the connection on error (reset, TLS alert)
            # counts against it; its latency here is the connect time.
            ok = not (how == "upstream-closed" and relay.reason is not None)
            self.backend.finished(ok, self.connect_time)
            note_exchanged(self.backend, 0, relay.bytes_from_downstream, relay.bytes_from_upstream)
        self._report(relay, self.outcome or how)

    def _report(self, relay: Relay, ended: str) -> None:
        if self._ip_addresses is not None:
            client, local = self._ip_addresses
        else:
            client = _host_port(self.transport.getPeer())
            local = _host_port(self.transport.getHost())
        record = AccessRecord(
            kind="tcp", proxy=self.factory.name, started=self.started_at,
            client_host=client[0], client_port=client[1],
            target=f"{local[0]}:{local[1]}" if local[1] else local[0],
            upstream=self.backend.name if self.backend is not None else None,
            bytes_to_client=relay.bytes_from_upstream,
            bytes_from_client=relay.bytes_from_downstream,
            bytes_to_upstream=relay.bytes_from_downstream,
            bytes_from_upstream=relay.bytes_from_upstream,
            duration=max(0.0, self.reactor.seconds() - self.started_at),
            rule=self.decision.rule if self.decision is not None else None,
            ended=ended,
            upstream_error=self.upstream_error if ended == "connect-failed" else None,
        )
        self.factory.pipeline.report(record)


@implementer(IProxy)
class TCPRelayFactory(Factory):
    """
    A layer-4 proxy: listen with it on any Twisted server endpoint.

    @param chooser: the `IUpstreamChooser` (a `BackendPool`) giving backends.
    @param policy: the `IPolicy` asked per connection (default: allow all).
    """

    noisy = False

    def __init__(
        self,
        reactor: Any,
        chooser: IUpstreamChooser,
        *,
        name: str = "tcp",
        policy: IPolicy | None = None,
        reporters: Sequence[Any] = (),
        settings: TCPSettings = TCPSettings(),
    ) -> None:
        self.reactor = reactor
        self.chooser = chooser
        self.name = name
        self.pipeline = Pipeline(name, policy=policy, choosers={"chooser": chooser},
                                 reporters=reporters)
        self.policy = self.pipeline.policy
        self.reporters = self.pipeline.reporters
        self.settings = settings
        self.connections: set[TCPRelayProtocol] = set()
        self.accepted = 0
        """Client connections accepted since start."""

    def buildProtocol(self, addr: Any) -> TCPRelayProtocol:
        protocol = TCPRelayProtocol(self)
        return protocol

    def drain(self) -> None:
        """Begin a graceful shutdown: a relay has no idle state, so each runs until it ends."""

    def close_all(self) -> None:
        """End every relay in progress (after a shutdown deadline)."""
        for protocol in list(self.connections):
            if protocol.relay is not None:
                protocol.relay.end("error")
