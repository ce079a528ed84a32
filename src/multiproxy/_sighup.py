"""
One ``SIGHUP`` handler for the process, shared by everything that reloads.

Several services reload on ``SIGHUP`` (the policy's rule file, a reverse
proxy's certificates).  If each installed its own handler, only the last
would run unless every one chained to the one before, and stopping them in
another order would put back a stale handler.  Instead they register a
callback here: one handler, installed while at least one callback is
registered, hands every callback to its reactor.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

__all__ = ["on_sighup"]

_callbacks: dict[object, tuple[Any, Callable[[], object]]] = {}
_previous: list = [None]  # the handler in force before ours


def on_sighup(reactor: Any, callback: Callable[[], object]) -> Callable[[], None]:
    """
    Call ``callback()`` in ``reactor`` whenever the process gets ``SIGHUP``.

    @return: a function that stops it (the handler in force before is put
        back when no callback is left).  Where the platform has no
        ``SIGHUP`` this registers nothing.
    """
    if not hasattr(signal, "SIGHUP"):
        return lambda: None
    token = object()
    if not _callbacks:
        _previous[0] = signal.signal(signal.SIGHUP, _handle)
    _callbacks[token] = (reactor, callback)

    def stop() -> None:
        if _callbacks.pop(token, None) is not None and not _callbacks:
            signal.signal(signal.SIGHUP, _previous[0] or signal.SIG_DFL)
            _previous[0] = None

    return stop


def _handle(signum: int, frame: Any) -> None:
    # Signal handlers run between bytecodes: do the work in the reactor.
    for reactor, callback in list(_callbacks.values()):
        reactor.callFromThread(callback)
