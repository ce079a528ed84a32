"""The one connect path: a deadline and one error vocabulary for every upstream connect."""

from __future__ import annotations

import pytest
from twisted.internet import defer, error, task

from multiproxy.pipeline._connect import UpstreamEndpoint, connect_failure_kind
from multiproxy.pipeline._errors import UpstreamError


class _Upstream:
    """An `IUpstream` whose endpoint never connects, or fails with ``failure``."""

    name = "backend.test:80"

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure = failure
        self.cancelled = False

    def endpoint(self, reactor):
        upstream = self

        class Endpoint:
            def connect(self, factory):
                if upstream.failure is not None:
                    return defer.fail(upstream.failure)

                def cancel(d):
                    upstream.cancelled = True

                return defer.Deferred(cancel)

        return Endpoint()


def _outcome(d):
    out = []
    d.addBoth(out.append)
    return out


def test_a_connect_past_its_deadline_is_a_504_naming_the_upstream():
    clock = task.Clock()
    upstream = _Upstream()
    out = _outcome(UpstreamEndpoint(clock, upstream, 0.5).connect(None))
    clock.advance(0.5)
    [failure] = out
    assert failure.check(UpstreamError) and failure.value.status == 504
    assert str(failure.value) == "timed out connecting to backend.test:80 after 0.5 s"
    assert connect_failure_kind(failure) == "connect-timeout"
    assert upstream.cancelled


def test_a_connect_abandoned_by_its_caller_is_not_blamed_on_the_upstream():
    clock = task.Clock()
    d = UpstreamEndpoint(clock, _Upstream(), 0.5).connect(None)
    out = _outcome(d)
    d.cancel()  # the client left
    [failure] = out
    assert failure.check(defer.CancelledError)
    assert not clock.getDelayedCalls()


@pytest.mark.parametrize(("raised", "status", "kind", "message"), [
    (error.ConnectionRefusedError(), 502, "connect-refused", "connection refused by backend.test:80"),
    (error.DNSLookupError("backend.test"), 502, "dns", "cannot resolve host backend.test:80"),
    (error.TimeoutError(), 504, "connect-timeout",
     "timed out connecting to backend.test:80 after 0.5 s"),
    (error.ConnectError(string="no route"), 502, "connect",
     "cannot connect to backend.test:80: An error occurred while connecting: no route."),
])
def test_every_connect_failure_reads_the_same(raised, status, kind, message):
    clock = task.Clock()
    [failure] = _outcome(UpstreamEndpoint(clock, _Upstream(raised), 0.5).connect(None))
    assert (failure.value.status, failure.value.kind, str(failure.value)) == (status, kind, message)
    assert not clock.getDelayedCalls()


def test_a_hostname_connect_past_its_deadline_is_a_504_too():
    # HostnameEndpoint fails a cancelled connect with ConnectingCancelledError.
    clock = task.Clock()

    class Upstream(_Upstream):
        def endpoint(self, reactor):
            class Endpoint:
                def connect(self, factory):
                    return defer.Deferred(
                        lambda d: d.errback(error.ConnectingCancelledError(None)))
            return Endpoint()

    out = _outcome(UpstreamEndpoint(clock, Upstream(), 0.5).connect(None))
    clock.advance(0.5)
    [failure] = out
    assert failure.check(UpstreamError) and failure.value.status == 504
