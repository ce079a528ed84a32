"""Collapsed forwarding registry, with task.Clock for the wait bound."""

from __future__ import annotations

from twisted.internet.task import Clock

from multiproxy.cache import CollapsedForwarding
from multiproxy.cache._directives import parse_response_directives
from multiproxy.cache._store import describe_response
from multiproxy.http1._headers import Headers


class Recorder:
    def __init__(self, accept=True):
        self.accept = accept
        self.events: list = []

    def collapsed_head(self, shared, expected_length):
        self.events.append(("head", shared is not None, expected_length))
        return self.accept and shared is not None

    def collapsed_data(self, data):
        self.events.append(("data", data))

    def collapsed_flush(self):
        pass

    def collapsed_end(self):
        self.events.append(("end",))

    def collapsed_fail(self, error):
        self.events.append(("fail", str(error)))


def shared():
    h = Headers([(b"Cache-Control", b"max-age=60")])
    return describe_response(
        b"http://h/", 200, b"OK", h, parse_response_directives(h), Headers(), 0.0, 0.0
    )


def test_waiters_receive_the_leaders_stream():
    reg = CollapsedForwarding(Clock())
    flight = reg.lead(b"k")
    a, b = Recorder(), Recorder()
    assert reg.join(b"k", a) and reg.join(b"k", b)
    flight.head(shared(), 5)
    flight.data(b"hel")
    flight.data(b"lo")
    flight.end()
    for w in (a, b):
        assert w.events == [("head", True, 5), ("data", b"hel"), ("data", b"lo"), ("end",)]
    assert len(reg) == 0 and not reg.join(b"k", Recorder())


def test_late_joiner_is_replayed_the_chunks_so_far():
    reg = CollapsedForwarding(Clock())
    flight = reg.lead(b"k")
    flight.head(shared(), None)
    flight.data(b"ab")
    late = Recorder()
    assert reg.join(b"k", late)
    flight.data(b"cd")
    flight.end()
    assert late.events == [("head", True, None), ("data", b"ab"), ("data", b"cd"), ("end",)]


def test_no_late_join_once_the_body_outgrew_the_replay_buffer():
    reg = CollapsedForwarding(Clock(), buffer_limit=3)
    flight = reg.lead(b"k")
    flight.head(shared(), None)
    flight.data(b"abcd")
    assert not reg.join(b"k", Recorder())


def test_not_shareable_response_sends_waiters_back_to_look_up():
    reg = CollapsedForwarding(Clock())
    flight = reg.lead(b"k")
    w = Recorder()
    reg.join(b"k", w)
    flight.head(None)
    assert w.events == [("head", False, None)]
    assert len(reg) == 0


def test_waiter_that_declines_gets_nothing_more():
    reg = CollapsedForwarding(Clock())
    flight = reg.lead(b"k")
    picky, taker = Recorder(accept=False), Recorder()
    reg.join(b"k", picky)
    reg.join(b"k", taker)
    flight.head(shared(), 1)
    flight.data(b"x")
    flight.end()
    assert picky.events == [("head", True, 1)]
    assert taker.events[-1] == ("end",)


def test_waiting_is_bounded_in_time():
    clock = Clock()
    reg = CollapsedForwarding(clock, timeout=10.0)
    flight = reg.lead(b"k")
    w = Recorder()
    reg.join(b"k", w)
    clock.advance(9.9)
    assert w.events == []
    clock.advance(0.2)
    assert w.events == [("head", False, None)]
    flight.head(shared(), 1)  # too late for it
    assert w.events == [("head", False, None)]
    assert clock.getDelayedCalls() == []


def test_waiting_is_bounded_in_count():
    reg = CollapsedForwarding(Clock(), max_waiters=2)
    reg.lead(b"k")
    assert reg.join(b"k", Recorder()) and reg.join(b"k", Recorder())
    assert not reg.join(b"k", Recorder())


def test_failure_reaches_waiting_and_streaming_waiters_and_cancels_timers():
    clock = Clock()
    reg = CollapsedForwarding(clock)
    flight = reg.lead(b"k")
    w = Recorder()
    reg.join(b"k", w)
    flight.fail(RuntimeError("refused"))
    assert w.events == [("fail", "refused")]
    assert clock.getDelayedCalls() == [] and len(reg) == 0
    flight2 = reg.lead(b"k")
    s = Recorder()
    reg.join(b"k", s)
    flight2.head(shared(), None)
    flight2.data(b"x")
    flight2.fail(RuntimeError("reset"))
    assert s.events[-1] == ("fail", "reset")


def test_a_new_flight_replaces_a_finished_one():
    reg = CollapsedForwarding(Clock())
    old = reg.lead(b"k")
    old.end()
    new = reg.lead(b"k")
    assert reg.flight(b"k") is new
    old.end()
    assert reg.flight(b"k") is new


def test_unshareable_key_is_not_collapsed_for_a_while():
    clock = Clock()
    reg = CollapsedForwarding(clock, pass_ttl=60.0)
    assert reg.collapses(b"k")
    reg.not_shareable(b"k")
    assert not reg.collapses(b"k") and reg.collapses(b"other")
    clock.advance(61)
    assert reg.collapses(b"k")
    reg.not_shareable(b"k")
    reg.shareable(b"k")
    assert reg.collapses(b"k")


def test_pass_markers_are_bounded():
    reg = CollapsedForwarding(Clock(), max_passes=3)
    for i in range(5):
        reg.not_shareable(b"%d" % i)
    assert reg.collapses(b"0") and reg.collapses(b"1")
    assert not reg.collapses(b"4")
