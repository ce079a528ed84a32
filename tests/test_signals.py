"""
The process-wide signal dispatcher: every reloading service is told, and
the handler in force before is put back when the last one stops.
"""

from __future__ import annotations

import os
import signal

import pytest

from multiproxy._signals import on_signal

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="no POSIX signals here")


class RecordingReactor:
    def __init__(self) -> None:
        self.calls = []

    def callFromThread(self, f, *args):
        self.calls.append(f)
        f(*args)


def test_every_registered_callback_runs_in_its_reactor_and_the_old_handler_comes_back():
    before = signal.getsignal(signal.SIGHUP)
    seen = []
    reactor = RecordingReactor()
    stop_policy = on_signal(signal.SIGHUP, reactor, lambda: seen.append("policy"))
    stop_certs = on_signal(signal.SIGHUP, reactor, lambda: seen.append("certificates"))
    try:
        os.kill(os.getpid(), signal.SIGHUP)
        assert sorted(seen) == ["certificates", "policy"]
        assert len(reactor.calls) == 2
        stop_policy()
        seen.clear()
        os.kill(os.getpid(), signal.SIGHUP)
        assert seen == ["certificates"], "stopping one leaves the other listening"
    finally:
        stop_policy()
        stop_certs()
    assert signal.getsignal(signal.SIGHUP) == before


def test_a_python_handler_in_force_before_still_runs():
    # twistd rotates its own log on SIGUSR1; the access logs must not take that away.
    before = signal.getsignal(signal.SIGUSR1)
    seen = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: seen.append("twistd"))
    try:
        stop = on_signal(signal.SIGUSR1, RecordingReactor(), lambda: seen.append("access log"))
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == ["access log", "twistd"]
        stop()
        seen.clear()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert seen == ["twistd"], "the earlier handler is back once nobody listens"
    finally:
        signal.signal(signal.SIGUSR1, before)
