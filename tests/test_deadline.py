"""Deadline: a movable timeout, driven by a fake clock."""

from twisted.internet.task import Clock

from multiproxy.transport._deadline import Deadline


def _deadline():
    clock = Clock()
    fired = []
    return clock, Deadline(clock, fired.append), fired


def test_expires_with_its_kind():
    clock, deadline, fired = _deadline()
    deadline.set("header", 5)
    clock.advance(4.9)
    assert fired == []
    clock.advance(0.1)
    assert fired == ["header"]


def test_moving_later_postpones_without_new_calls():
    clock, deadline, fired = _deadline()
    deadline.set("body", 5)
    for _ in range(10):
        clock.advance(3)
        deadline.set("body", 5)
    assert fired == []
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(5)
    assert fired == ["body"]


def test_moving_earlier_takes_effect():
    clock, deadline, fired = _deadline()
    deadline.set("keepalive", 60)
    deadline.set("header", 2)
    clock.advance(2)
    assert fired == ["header"]


def test_clear_and_cancel_stop_it():
    clock, deadline, fired = _deadline()
    deadline.set("a", 1)
    deadline.clear()
    clock.advance(2)
    deadline.set("b", 1)
    deadline.cancel()
    clock.advance(2)
    assert fired == []
    assert clock.getDelayedCalls() == []


def test_zero_or_none_means_no_timeout():
    clock, deadline, fired = _deadline()
    deadline.set("a", 3)
    deadline.set("b", None)
    clock.advance(10)
    assert fired == []
