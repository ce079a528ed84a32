"""
One handler per signal for the process, shared by everything that listens.

Several services reload on ``SIGHUP`` (the policy's rule file, a reverse
proxy's certificates, the worker master) and the access logs reopen on
``SIGUSR1``.  If each installed its own handler, only the last would run
unless every one chained to the one before, and stopping them in another
order would put back a stale handler.  Instead they register a callback
here: one handler per signal, installed while at least one callback is
registered, hands every callback to its reactor.  A Python handler that was
in force before (twistd rotates its own log on ``SIGUSR1``) still runs.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

__all__ = ["SIGHUP", "SIGUSR1", "on_signal"]

SIGHUP: int | None = getattr(signal, "SIGHUP", None)
"""Reload: rules, certificates, the worker master's configuration (None where absent)."""
SIGUSR1: int | None = getattr(signal, "SIGUSR1", None)
"""Reopen the log files, as twistd does for its own (None where absent)."""

_callbacks: dict[int, dict[object, tuple[Any, Callable[[], object]]]] = {}
_previous: dict[int, Any] = {}  # the handler in force before ours, per signal


def on_signal(signum: int | None, reactor: Any, callback: Callable[[], object]) -> Callable[[], None]:
    """
    Call ``callback()`` in ``reactor`` whenever the process gets ``signum``.

    @param signum: e.g. ``signal.SIGHUP``; None (a signal this platform
        lacks, as ``getattr(signal, "SIGHUP", None)``) registers nothing.
    @return: a function that stops it (the handler in force before is put
        back when no callback is left for that signal).
    """
    if signum is None:
        return lambda: None
    token = object()
    callbacks = _callbacks.setdefault(signum, {})
    if not callbacks:
        _previous[signum] = signal.signal(signum, _handle)
    callbacks[token] = (reactor, callback)

    def stop() -> None:
        if callbacks.pop(token, None) is not None and not callbacks:
            signal.signal(signum, _previous.pop(signum, None) or signal.SIG_DFL)

    return stop


def _handle(signum: int, frame: Any) -> None:
    # Signal handlers run between bytecodes: do the work in the reactor.
    for reactor, callback in list(_callbacks.get(signum, {}).values()):
        reactor.callFromThread(callback)
    previous = _previous.get(signum)
    if callable(previous):
        previous(signum, frame)
