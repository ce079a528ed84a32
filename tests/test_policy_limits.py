"""Per-client limits: concurrent connections and a token bucket, with bounded memory."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from multiproxy.policy import (
    ConnectionLimit,
    NetworkSet,
    RequestRateLimit,
    client_key,
    parse_network,
)


def test_connection_limit_refuses_the_connection_over_the_limit_until_one_closes() -> None:
    limit = ConnectionLimit(2)
    first, second = limit.acquire("10.0.0.1"), limit.acquire("10.0.0.1")
    assert first and second
    assert limit.acquire("10.0.0.1") is None
    assert limit.acquire("10.0.0.2") is not None
    first()
    assert limit.acquire("10.0.0.1") is not None


def test_releasing_twice_counts_once_and_idle_clients_are_forgotten() -> None:
    limit = ConnectionLimit(1)
    release = limit.acquire("10.0.0.1")
    release()
    release()
    assert limit.count("10.0.0.1") == 0 and len(limit) == 0


def test_ipv6_clients_share_a_slash_64_and_mapped_ipv4_is_ipv4() -> None:
    limit = ConnectionLimit(1)
    assert limit.acquire("2001:db8::1")
    assert limit.acquire("2001:db8::2") is None
    assert limit.acquire("2001:db8:0:1::1") is not None
    assert limit.acquire("192.0.2.1")
    assert limit.acquire("::ffff:192.0.2.1") is None
    exact = ConnectionLimit(1, ipv6_prefix=128)
    assert exact.acquire("2001:db8::1") and exact.acquire("2001:db8::2")


def test_exempt_clients_are_not_counted() -> None:
    limit = ConnectionLimit(1, exempt=NetworkSet([parse_network("127.0.0.0/8")]))
    for _ in range(5):
        assert limit.acquire("127.0.0.1") is not None
    assert len(limit) == 0


def test_client_key_groups_as_documented() -> None:
    assert client_key("::ffff:10.0.0.1") == client_key("10.0.0.1")
    assert client_key("2001:db8::1") == client_key("2001:db8::ffff")
    assert client_key("unix") == "unix"


def test_rate_limit_allows_a_burst_then_one_request_per_interval() -> None:
    clock = Clock()
    limit = RequestRateLimit(2, 4, clock=clock.seconds)
    assert [limit.allow("10.0.0.1") for _ in range(5)] == [True] * 4 + [False]
    assert limit.retry_after("10.0.0.1") == 1
    assert limit.allow("10.0.0.2")
    clock.advance(0.5)
    assert limit.allow("10.0.0.1")
    assert not limit.allow("10.0.0.1")
    clock.advance(10)
    assert [limit.allow("10.0.0.1") for _ in range(5)] == [True] * 4 + [False]


def test_retry_after_is_whole_seconds_and_zero_when_allowed() -> None:
    clock = Clock()
    limit = RequestRateLimit(0.1, 1, clock=clock.seconds)
    assert limit.retry_after("10.0.0.1") == 0
    assert limit.allow("10.0.0.1") and not limit.allow("10.0.0.1")
    assert limit.retry_after("10.0.0.1") == 10
    clock.advance(9.5)
    assert limit.retry_after("10.0.0.1") == 1


def test_idle_clients_are_forgotten_once_their_bucket_is_full_again() -> None:
    clock = Clock()
    limit = RequestRateLimit(10, 20, clock=clock.seconds)
    for i in range(100):
        limit.allow(f"10.0.{i}.1")
    assert len(limit) == 100
    clock.advance(2.0)
    limit.allow("192.0.2.1")
    assert len(limit) == 1


def test_tracked_clients_never_exceed_max_clients() -> None:
    limit = RequestRateLimit(1, 1, clock=Clock().seconds, max_clients=50)
    for i in range(1000):
        limit.allow(f"10.{i // 256}.{i % 256}.1")
    assert len(limit) == 50


def test_exempt_clients_are_never_limited() -> None:
    limit = RequestRateLimit(1, 1, clock=Clock().seconds,
                             exempt=NetworkSet([parse_network("::1")]))
    assert all(limit.allow("::1") for _ in range(10))


@pytest.mark.parametrize("kw, fragment", [
    ({"rate": 0}, "rate must be above 0"), ({"rate": 1, "burst": 0.5}, "burst must be"),
    ({"rate": 1, "ipv6_prefix": 0}, "ipv6_prefix"),
])
def test_bad_rate_limits_are_refused(kw: dict, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        RequestRateLimit(clock=Clock().seconds, **kw)


def test_bad_connection_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConnectionLimit(0)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.5, 50), st.integers(1, 20),
       st.lists(st.floats(0, 2), min_size=1, max_size=60))
def test_property_no_client_gets_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float],
) -> None:
    clock = Clock()
    limit = RequestRateLimit(rate, burst, clock=clock.seconds)
    allowed = 0
    for gap in gaps:
        clock.advance(gap)
        allowed += limit.allow("10.0.0.1")
    assert allowed <= burst + rate * clock.seconds() + 1e-9
