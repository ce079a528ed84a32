"""UpstreamEndpoint: every way a connect fails becomes one UpstreamError (502 or 504)."""

from __future__ import annotations

import pytest
from twisted.internet import defer, error
from twisted.internet.address import HostnameAddress
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from multiproxy._connect import UpstreamEndpoint, connect_failure_kind
from multiproxy._errors import UpstreamError


class _Upstream:
    name = "slow.example:80"

    def __init__(self, endpoint) -> None:
        self._endpoint = endpoint

    def endpoint(self, reactor):
        return self._endpoint


class _CancelsLikeHostnameEndpoint:
    """Never connects; a cancelled connect fails as HostnameEndpoint's does."""

    def connect(self, factory):
        def cancel(d):
            d.errback(error.ConnectingCancelledError(HostnameAddress(b"slow.example", 80)))

        return defer.Deferred(cancel)


def test_hostname_connect_cancelled_by_the_deadline_is_a_504_timeout():
    clock = Clock()
    d = UpstreamEndpoint(clock, _Upstream(_CancelsLikeHostnameEndpoint()), 3).connect(None)
    failures = []
    d.addErrback(failures.append)
    clock.advance(3)
    (failure,) = failures
    assert failure.check(UpstreamError)
    assert (failure.value.status, failure.value.kind) == (504, "connect-timeout")
    assert "timed out connecting to slow.example:80 after 3 s" in str(failure.value)


@pytest.mark.parametrize("exception, kind", [
    (error.ConnectingCancelledError(HostnameAddress(b"h", 1)), "connect-timeout"),
    (defer.CancelledError(), "connect-timeout"),
    (error.DNSLookupError("h"), "dns"),
    (error.ConnectionRefusedError(), "connect-refused"),
])
def test_connect_failure_kind_names_each_failure(exception, kind):
    assert connect_failure_kind(Failure(exception)) == kind
