"""
The process-wide SIGHUP dispatcher: every reloading service is told, and
the handler in force before is put back when the last one stops.
"""

from __future__ import annotations

import os
import signal

import pytest

from multiproxy._sighup import on_sighup

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP here")


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
    stop_policy = on_sighup(reactor, lambda: seen.append("policy"))
    stop_certs = on_sighup(reactor, lambda: seen.append("certificates"))
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
