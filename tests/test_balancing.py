"""
Tests for multiproxy.balancing's pure parts: balancers, the hash ring,
backends and pools (time from task.Clock), health counting, status lines.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import task
from zope.interface.verify import verifyObject

from multiproxy.balancing import (
    BALANCER_NAMES,
    Backend,
    BackendPool,
    ConsistentHash,
    HashRing,
    HealthState,
    HTTPCheck,
    LeastConnections,
    PowerOfTwoChoices,
    RoundRobin,
    TLSOrigination,
    WeightedRoundRobin,
    balancer_from_name,
    parse_status_line,
)
from multiproxy.http1._headers import Headers
from multiproxy.pipeline._interfaces import IBalancer, IUpstream, IUpstreamChooser
from multiproxy.pipeline._values import Intent


def backends(n, **kwargs):
    return [Backend(host="10.0.0.%d" % (i + 1), port=80, **kwargs) for i in range(n)]


def intent(client="192.0.2.1", headers=None):
    return Intent(kind="http", proxy="test", client_host=client, client_port=1234,
                  headers=headers)


# -- balancers -------------------------------------------------------------------


@pytest.mark.parametrize("name", [n.replace("NAME", "X-User") for n in BALANCER_NAMES])
def test_every_named_balancer_provides_ibalancer(name):
    verifyObject(IBalancer, balancer_from_name(name))


def test_unknown_balancer_name_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="unknown balancer 'rr'.*roundrobin.*leastconn"):
        balancer_from_name("rr")
    with pytest.raises(ValueError):
        balancer_from_name("hash:header=")


def test_round_robin_takes_each_candidate_in_turn():
    pool = backends(3)
    rr = RoundRobin()
    picks = [rr.pick(pool, intent()) for _ in range(6)]
    assert picks == pool + pool


def test_smooth_weighted_round_robin_matches_nginx_sequence():
    a, b, c = backends(3)
    a.weight, b.weight, c.weight = 5, 1, 1
    wrr = WeightedRoundRobin()
    picks = [wrr.pick([a, b, c], intent()) for _ in range(7)]
    # nginx's documented smooth sequence for weights 5, 1, 1.
    assert picks == [a, a, b, a, c, a, a]


def test_weighted_round_robin_is_proportional_and_survives_a_candidate_leaving():
    a, b, c = backends(3)
    a.weight, b.weight, c.weight = 3, 2, 1
    wrr = WeightedRoundRobin()
    counts = Counter(wrr.pick([a, b, c], intent()) for _ in range(600))
    assert counts == {a: 300, b: 200, c: 100}
    counts = Counter(wrr.pick([a, c], intent()) for _ in range(400))
    assert counts == {a: 300, c: 100}


def test_least_connections_prefers_the_least_loaded_per_weight():
    a, b, c = backends(3)
    a.active, b.active, c.active = 4, 1, 3
    assert LeastConnections().pick([a, b, c], intent()) is b
    c.weight = 4  # 3/4 active per weight beats b's 1/1
    assert LeastConnections().pick([a, b, c], intent()) is c


def test_least_connections_rotates_among_ties():
    pool = backends(3)
    lc = LeastConnections()
    assert set(lc.pick(pool, intent()) for _ in range(3)) == set(pool)


def test_power_of_two_choices_never_picks_the_most_loaded_of_three():
    a, b, c = backends(3)
    a.active, b.active, c.active = 0, 1, 100
    p2c = PowerOfTwoChoices(random.Random(7))
    counts = Counter(p2c.pick([a, b, c], intent()) for _ in range(300))
    assert counts[c] == 0
    assert counts[a] > counts[b] > 0


def test_power_of_two_choices_is_reproducible_with_an_injected_rng():
    pool = backends(5)
    one, two = PowerOfTwoChoices(random.Random(1)), PowerOfTwoChoices(random.Random(1))
    first = [one.pick(pool, None) for _ in range(20)]
    again = [two.pick(pool, None) for _ in range(20)]
    assert first == again
    assert len(set(first)) > 1


def test_consistent_hash_keeps_a_client_on_one_backend_and_spreads_clients():
    pool = backends(5)
    ch = ConsistentHash("client")
    assert len({ch.pick(pool, intent("198.51.100.7")) for _ in range(20)}) == 1
    counts = Counter(ch.pick(pool, intent(f"10.1.{i // 256}.{i % 256}")) for i in range(5000))
    assert len(counts) == 5
    assert all(600 < n < 1500 for n in counts.values()), counts


def _mapping(ch, pool, keys):
    return {k: ch.pick(pool, intent(k)) for k in keys}


def test_consistent_hash_backend_leaving_remaps_only_its_own_keys():
    pool = backends(10)
    ch = ConsistentHash("client")
    keys = [f"172.16.{i // 256}.{i % 256}" for i in range(5000)]
    before = _mapping(ch, pool, keys)
    gone = pool[3]
    after = _mapping(ch, [b for b in pool if b is not gone], keys)
    moved = [k for k in keys if before[k] is not after[k]]
    assert all(before[k] is gone for k in moved)
    assert 0.06 < len(moved) / len(keys) < 0.14  # about 1/10


def test_consistent_hash_backend_joining_takes_about_one_nth_of_the_keys():
    pool = backends(11)
    ch = ConsistentHash("client")
    keys = [f"172.17.{i // 256}.{i % 256}" for i in range(5000)]
    before = _mapping(ch, pool[:10], keys)
    after = _mapping(ch, pool, keys)
    moved = [k for k in keys if before[k] is not after[k]]
    assert all(after[k] is pool[10] for k in moved)
    assert 0.05 < len(moved) / len(keys) < 0.13  # about 1/11


def test_consistent_hash_on_a_header_and_fallback_to_client_address():
    pool = backends(4)
    ch = ConsistentHash("header", "X-User")
    users = [Headers([(b"X-User", f"user{i}".encode())]) for i in range(200)]
    picks = {ch.pick(pool, intent(f"10.0.{i}.1", h)) for i, h in enumerate(users[:1])}
    # The same user from different addresses lands on the same backend.
    same = {ch.pick(pool, intent(f"10.9.{i}.1", users[0])) for i in range(30)}
    assert same == picks
    # Without the header, the client address decides.
    no_header = intent("203.0.113.9", Headers())
    assert ch.pick(pool, no_header) is ConsistentHash("client").pick(pool, no_header)


def test_consistent_hash_on_a_cookie_value():
    pool = backends(4)
    ch = ConsistentHash("cookie", "session")
    h = Headers([(b"cookie", b"theme=dark; session=abc123"), (b"cookie", b"x=y")])
    h2 = Headers([(b"cookie", b"session=abc123")])
    assert ch.key_of(intent("1.1.1.1", h)) == b"c:abc123"
    assert ch.pick(pool, intent("1.1.1.1", h)) is ch.pick(pool, intent("2.2.2.2", h2))


def test_hash_ring_weight_scales_share():
    ring = HashRing([("a", "a", 3), ("b", "b", 1)], vnodes=100)
    counts = Counter(ring.lookup(str(i).encode()) for i in range(4000))
    assert 2.0 < counts["a"] / counts["b"] < 4.5


def test_hash_ring_without_members_refuses_lookups():
    with pytest.raises(LookupError):
        HashRing([]).lookup(b"x")


# -- backends and pools ------------------------------------------------------------


def test_backend_provides_iupstream_and_names_itself():
    b = Backend(host="::1", port=8080)
    verifyObject(IUpstream, b)
    assert b.name == "[::1]:8080"
    e = Backend(address="tcp:host=127.0.0.1:port=5432")
    assert e.name == "tcp:host=127.0.0.1:port=5432"
    assert e.key != b.key


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "either an endpoint address or a host"),
        ({"address": "tcp:x:1", "host": "x", "port": 1}, "either"),
        ({"host": "x", "port": 0}, "port must be 1-65535"),
        ({"host": "x", "port": 1, "weight": -1}, "weight"),
        ({"address": "tcp:x:1", "tls": TLSOrigination()}, "needs a server_name"),
        ({"host": "x", "port": 1, "proxy_protocol": "v3"}, "v1 or v2"),
    ],
)
def test_backend_refuses_bad_settings_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Backend(**kwargs)


def test_backend_statistics_count_and_smooth_latency():
    b = backends(1)[0]
    b.started()
    b.started()
    assert b.active == 2 and b.requests == 2
    b.finished(True, 0.100)
    b.finished(False, 0.5)
    assert b.active == 0 and b.failures == 1 and b.consecutive_failures == 1
    assert b.latency == pytest.approx(0.100)
    b.started()
    b.finished(True, 0.200)
    assert b.latency == pytest.approx(0.130)
    assert b.last_latency == pytest.approx(0.200)
    assert b.consecutive_failures == 0


def make_pool(n=3, **kwargs):
    clock = task.Clock()
    pool = BackendPool("web", backends(n), RoundRobin(), clock, **kwargs)
    return clock, pool


def test_pool_provides_iupstreamchooser_and_skips_excluded_backends():
    clock, pool = make_pool(3)
    verifyObject(IUpstreamChooser, pool)
    a, b, c = pool.backends
    assert {pool.choose(intent(), frozenset({a.key})) for _ in range(4)} == {b, c}
    assert pool.choose(intent(), frozenset({a.key, b.key, c.key})) is None


def test_pool_refuses_duplicates_and_emptiness():
    with pytest.raises(ValueError, match="no backends"):
        BackendPool("x", [], RoundRobin(), task.Clock())
    b = backends(1)
    with pytest.raises(ValueError, match="twice"):
        BackendPool("x", b + backends(1), RoundRobin(), task.Clock())


def fail(backend, times=1):
    for _ in range(times):
        backend.started()
        backend.finished(False, 0.01)


def test_consecutive_failures_eject_a_backend_then_retry_with_growing_backoff():
    clock, pool = make_pool(2, max_failures=3, backoff=10, max_backoff=25)
    a, b = pool.backends
    fail(a, 2)
    assert a in pool.healthy()
    fail(a)
    assert pool.healthy() == [b]
    assert {pool.choose(intent()) for _ in range(4)} == {b}
    assert pool.retry_after() == 10
    clock.advance(10)
    assert a in pool.healthy()  # past the backoff: a trial is allowed
    a.started()
    assert a not in pool.healthy()  # one trial at a time
    a.finished(False, 0.01)
    assert pool.snapshot()[0].state == "ejected"
    clock.advance(19.9)
    assert pool.healthy() == [b]  # the second ejection lasts twice as long
    clock.advance(0.1)
    fail(a)
    clock.advance(24.9)
    assert pool.healthy() == [b]  # capped at max_backoff (25), not 40
    clock.advance(0.1)
    a.started()
    a.finished(True, 0.02)
    assert a.ejected_until is None and a.ejections == 0
    fail(a, 2)
    assert a in pool.healthy()


def test_failures_interleaved_with_successes_do_not_eject():
    clock, pool = make_pool(1, max_failures=2)
    (a,) = pool.backends
    for _ in range(10):
        fail(a)
        a.started()
        a.finished(True, 0.01)
    assert pool.healthy() == [a]


def test_pool_with_every_backend_down_chooses_none():
    clock, pool = make_pool(2)
    for b in pool.backends:
        b.checked_up = False
    assert pool.choose(intent()) is None
    assert pool.retry_after() == 1


def test_snapshot_reports_state_and_counters_per_backend():
    clock, pool = make_pool(3, max_failures=1)
    a, b, c = pool.backends
    b.checked_up = False
    fail(c)
    a.started()
    snap = pool.snapshot()
    assert [s.state for s in snap] == ["up", "down", "ejected"]
    assert snap[0].active == 1 and snap[0].requests == 1
    assert snap[2].failures == 1
    assert snap[0].as_dict()["name"] == "10.0.0.1:80"


# -- health counting and status lines ------------------------------------------------


def test_health_state_needs_fall_failures_to_go_down_and_rise_successes_to_come_up():
    s = HealthState(rise=2, fall=3)
    assert [s.record(False) for _ in range(3)] == [False, False, True]
    assert s.up is False
    assert s.record(True) is False
    assert s.record(False) is False  # a failure resets the rise streak
    assert [s.record(True), s.record(True)] == [False, True]
    assert s.up is True


@pytest.mark.parametrize(
    "line, status",
    [(b"HTTP/1.1 200 OK", 200), (b"HTTP/1.0 503 Service Unavailable", 503),
     (b"HTTP/1.1 204", 204), (b"HTTP/1.1 404 ", 404)],
)
def test_parse_status_line_accepts_http1_status_lines(line, status):
    assert parse_status_line(line) == status


@pytest.mark.parametrize(
    "line", [b"", b"HTTP/2 200 OK", b"HTTP/1.1 20 OK", b"SSH-2.0-OpenSSH", b"HTTP/1.1  200 OK",
             b"HTTP/1.1 200 OK\r"],
)
def test_parse_status_line_refuses_anything_else(line):
    with pytest.raises(ValueError, match="not an HTTP status line"):
        parse_status_line(line)


@given(st.binary(max_size=64))
def test_parse_status_line_either_parses_or_raises_valueerror(data):
    try:
        status = parse_status_line(data)
    except ValueError:
        return
    assert 0 <= status <= 999


def test_http_check_request_is_a_minimal_get_with_host():
    b = Backend(host="app.internal", port=8080)
    request = HTTPCheck("/healthz").request(b)
    assert request.startswith(b"GET /healthz HTTP/1.1\r\nHost: app.internal:8080\r\n")
    assert request.endswith(b"Connection: close\r\n\r\n")
    assert HTTPCheck(expect=(204,)).judge(204) and not HTTPCheck(expect=(204,)).judge(200)
    assert HTTPCheck().judge(302) and not HTTPCheck().judge(500)
    with pytest.raises(ValueError, match="must start with /"):
        HTTPCheck("health")
