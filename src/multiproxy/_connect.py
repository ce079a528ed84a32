"""
Connecting to an upstream: one deadline and one error vocabulary for all proxies.

Whether the connection will carry HTTP requests or a byte relay, reaching
the upstream fails in the same few ways, and each becomes an
`UpstreamError` with the status an HTTP client should see: 502 for a
refused connection or an unknown host, 504 for a timeout (name resolution
that never answers included).
"""

from __future__ import annotations

from twisted.internet import defer, error
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy._errors import UpstreamError


@implementer(IStreamClientEndpoint)
class UpstreamEndpoint:
    """
    The client endpoint of an `IUpstream`, with a deadline and readable errors.

    ``connect`` fires with the connected protocol, or fails with an
    `UpstreamError` (502 or 504) whose message names the upstream.  Any
    caller that connects upstream (the HTTP connection pool, a relay, a
    health check) goes through this, so the failures read the same everywhere.
    """

    def __init__(self, reactor, upstream, timeout: float) -> None:
        self.reactor = reactor
        self.upstream = upstream
        self.timeout = timeout

    def connect(self, factory) -> defer.Deferred:
        d = self.upstream.endpoint(self.reactor).connect(factory)
        timer = self.reactor.callLater(self.timeout, d.cancel)

        def stop_timer(result):
            if timer.active():
                timer.cancel()
            return result

        d.addBoth(stop_timer)
        d.addErrback(_as_upstream_error, self.upstream.name, self.timeout)
        return d


def _as_upstream_error(failure: Failure, name: str, timeout: float):
    if failure.check(UpstreamError):
        return failure
    # HostnameEndpoint fails a cancelled connect with ConnectingCancelledError,
    # not CancelledError: our deadline cancelled it, so it timed out too.
    if failure.check(defer.CancelledError, error.ConnectingCancelledError, error.TimeoutError):
        raise UpstreamError(f"timed out connecting to {name} after {timeout:g} s", 504,
                            "connect-timeout")
    if failure.check(error.DNSLookupError):
        raise UpstreamError(f"cannot resolve host {name}", 502, "dns")
    if failure.check(error.ConnectionRefusedError):
        raise UpstreamError(f"connection refused by {name}", 502, "connect-refused")
    if failure.check(error.ConnectError, OSError):
        raise UpstreamError(f"cannot connect to {name}: {failure.getErrorMessage()}", 502,
                            "connect")
    return failure


def connect_failure_kind(failure: Failure) -> str:
    """The `UpstreamError` kind a failed connect counts as (``connect-refused``, ...)."""
    if failure.check(UpstreamError):
        return failure.value.kind
    if failure.check(defer.CancelledError, error.ConnectingCancelledError, error.TimeoutError):
        return "connect-timeout"
    if failure.check(error.DNSLookupError):
        return "dns"
    if failure.check(error.ConnectionRefusedError):
        return "connect-refused"
    return "connect"
