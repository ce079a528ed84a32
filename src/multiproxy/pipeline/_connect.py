"""
Connecting to an upstream: one deadline and one error vocabulary for all proxies.

Whether the connection will carry HTTP requests or a byte relay, reaching
the upstream fails in the same few ways, and each becomes an
`UpstreamError` with the status an HTTP client should see: 502 for a
refused connection or an unknown host, 504 for a timeout (name resolution
that never answers included).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.pipeline._errors import UpstreamError

__all__ = [
    "DeadlineEndpoint",
    "UpstreamEndpoint",
    "connect_failure_kind",
    "upstream_connect_error",
    "with_deadline",
]


_CANCELLED = (defer.CancelledError, error.ConnectingCancelledError)
"""How a cancelled connect fails (HostnameEndpoint has its own error for it)."""


def with_deadline(reactor: Any, d: defer.Deferred, timeout: float) -> defer.Deferred:
    """
    ``d`` (a connect attempt), cancelled and failed with `TimeoutError` if it
    has not fired within ``timeout`` seconds.  A cancel from elsewhere (the
    client left) stays a `CancelledError`: it is not the upstream's fault.
    """
    timed_out = []

    def expire() -> None:
        timed_out.append(True)
        d.cancel()

    timer = reactor.callLater(timeout, expire)

    def settle(result: Any) -> Any:
        if timer.active():
            timer.cancel()
        if timed_out and isinstance(result, Failure) and result.check(*_CANCELLED):
            raise error.TimeoutError(string=f"no connection after {timeout:g} s")
        return result

    return d.addBoth(settle)


@implementer(IStreamClientEndpoint)
class DeadlineEndpoint:
    """Wraps a client endpoint so that a connect not done in ``timeout`` seconds fails."""

    def __init__(self, reactor: Any, endpoint: IStreamClientEndpoint, timeout: float) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.timeout = timeout

    def connect(self, factory: Any) -> defer.Deferred:
        return with_deadline(self.reactor, self.endpoint.connect(factory), self.timeout)


@implementer(IStreamClientEndpoint)
class UpstreamEndpoint:
    """
    The client endpoint of an `IUpstream`, with a deadline and readable errors.

    ``connect`` fires with the connected protocol, or fails with an
    `UpstreamError` (502 or 504) whose message names the upstream.  Every
    caller that connects upstream (the HTTP connection pool, CONNECT and
    SOCKS tunnels, the TCP relay, WebSocket upgrades, health checks) goes
    through this, so the failures read the same everywhere.
    """

    def __init__(self, reactor: Any, upstream: Any, timeout: float) -> None:
        self.reactor = reactor
        self.upstream = upstream
        self.timeout = timeout

    def connect(self, factory: Any) -> defer.Deferred:
        d = with_deadline(self.reactor, self.upstream.endpoint(self.reactor).connect(factory),
                          self.timeout)
        return d.addErrback(upstream_connect_error, self.upstream.name, self.timeout)


def upstream_connect_error(failure: Failure, name: str, timeout: float) -> Failure:
    """
    A failed connect to ``name`` as the `UpstreamError` an HTTP client
    should see (a `CancelledError` passes: the attempt was abandoned).
    """
    if failure.check(UpstreamError, *_CANCELLED):
        return failure
    kind = connect_failure_kind(failure)
    if kind == "connect-timeout":
        raise UpstreamError(f"timed out connecting to {name} after {timeout:g} s", 504, kind)
    if kind == "dns":
        raise UpstreamError(f"cannot resolve host {name}", 502, kind)
    if kind == "connect-refused":
        raise UpstreamError(f"connection refused by {name}", 502, kind)
    if failure.check(error.ConnectError, OSError):
        raise UpstreamError(f"cannot connect to {name}: {failure.getErrorMessage()}", 502, kind)
    return failure


def connect_failure_kind(failure: Failure) -> str:
    """The `UpstreamError` kind a failed connect counts as (``connect-refused``, ...)."""
    if failure.check(UpstreamError):
        return failure.value.kind
    if failure.check(error.TimeoutError):
        return "connect-timeout"
    if failure.check(error.DNSLookupError):
        return "dns"
    if failure.check(error.ConnectionRefusedError):
        return "connect-refused"
    return "connect"
