"""Passive health shared by the workers of a host: one failure count, one ejection."""

from __future__ import annotations

from tests.fake_redis import linked
from twisted.internet import task

from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.balancing._sharedpool import SYNC_INTERVAL, PoolShare

KEY = b"multiproxy:pool:site:web"


def _worker(link, clock):
    """One worker's copy of the pool: the same two backends, sharing through ``link``."""
    pool = BackendPool("web", [Backend(host="10.0.0.1", port=80), Backend(host="10.0.0.2", port=80)],
                       RoundRobin(), clock, max_failures=3, backoff=5.0)
    share = PoolShare(link, KEY, clock, keep_for=60)
    pool.share_with(share)
    share.startService()
    return pool


def _fail(pool, name="10.0.0.1:80"):
    backend = next(b for b in pool.backends if b.name == name)
    backend.started()
    backend.finished(False, 0.0)


def _succeed(pool, name="10.0.0.1:80"):
    backend = next(b for b in pool.backends if b.name == name)
    backend.started()
    backend.finished(True, 0.01)


def _states(pool):
    return {b.name: b.state(pool.clock.seconds()) for b in pool.backends}


def test_failures_seen_by_different_workers_add_up_to_one_ejection_for_all():
    clock = task.Clock()
    a_link, b_link = linked(2)
    a, b = _worker(a_link, clock), _worker(b_link, clock)
    _fail(a)
    _fail(b)
    assert _states(a)["10.0.0.1:80"] == "up"
    _fail(a)  # the third failure on the host, the second in this worker
    assert _states(a)["10.0.0.1:80"] == "ejected"
    assert _states(b)["10.0.0.1:80"] == "up"  # until its next sync
    clock.advance(SYNC_INTERVAL)
    assert _states(b)["10.0.0.1:80"] == "ejected"
    assert {b.choose(None).name for _ in range(4)} == {"10.0.0.2:80"}
    # Both end their ejection at the same moment: the one the ejecting worker chose.
    assert a.backends[0].ejected_until == b.backends[0].ejected_until == 5.0


def test_a_worker_that_fails_after_the_ejection_takes_it_without_waiting_for_a_sync():
    clock = task.Clock()
    a_link, b_link = linked(2)
    a, b = _worker(a_link, clock), _worker(b_link, clock)
    for _ in range(3):
        _fail(a)
    _fail(b)  # a connection begun before it heard: the host's count is past the limit
    assert _states(b)["10.0.0.1:80"] == "ejected"


def test_a_success_anywhere_starts_the_count_again():
    clock = task.Clock()
    a_link, b_link = linked(2)
    a, b = _worker(a_link, clock), _worker(b_link, clock)
    _fail(a)
    _fail(a)
    clock.advance(SYNC_INTERVAL)  # b hears of the two failures
    _succeed(b)
    _fail(a)
    assert _states(a)["10.0.0.1:80"] == "up"
    assert a_link.data[KEY][b"10.0.0.1:80:fails"] == b"1"


def test_a_healthy_backend_costs_no_redis_call_per_request():
    clock = task.Clock()
    [link] = linked(1)
    pool = _worker(link, clock)
    for _ in range(50):
        _succeed(pool)
    assert link.calls == []


def test_a_successful_trial_in_one_worker_brings_the_backend_back_in_all():
    clock = task.Clock()
    a_link, b_link = linked(2)
    a, b = _worker(a_link, clock), _worker(b_link, clock)
    for _ in range(3):
        _fail(a)
    clock.advance(SYNC_INTERVAL)
    assert _states(b)["10.0.0.1:80"] == "ejected"
    clock.advance(5.0)  # past the backoff: each worker may try it once
    _succeed(a)
    assert KEY in a_link.data and b"10.0.0.1:80:ejected" not in a_link.data[KEY]
    clock.advance(SYNC_INTERVAL)
    assert _states(b)["10.0.0.1:80"] == "up"
    assert b.backends[0].ejected_until is None and b.backends[0].ejections == 0


def test_without_redis_each_worker_counts_its_own_failures():
    clock = task.Clock()
    a_link, b_link = linked(2)
    a_link.up = b_link.up = False
    a, b = _worker(a_link, clock), _worker(b_link, clock)
    _fail(a)
    _fail(b)
    _fail(a)
    assert _states(a)["10.0.0.1:80"] == "up"
    _fail(a)
    assert _states(a)["10.0.0.1:80"] == "ejected"
    assert _states(b)["10.0.0.1:80"] == "up"


def test_torn_or_foreign_values_under_the_key_are_ignored():
    clock = task.Clock()
    [link] = linked(1)
    pool = _worker(link, clock)
    link.data[KEY] = {b"10.0.0.1:80:ejected": b"garbage", b"10.0.0.2:80:ejected": b"inf|1",
                      b"10.0.0.1:80:fails": b"x"}
    clock.advance(SYNC_INTERVAL)
    assert _states(pool) == {"10.0.0.1:80": "up", "10.0.0.2:80": "up"}
