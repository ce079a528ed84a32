"""
A timeout that is cheap to move.

Proxies re-arm timeouts on every request and often on every chunk.  With a
plain ``callLater``/``cancel`` pair each move costs a heap insertion and a
removal.  A `Deadline` instead remembers the time it should expire and keeps
one delayed call: moving the deadline later costs a clock read, and when the
delayed call fires early it just re-schedules itself for the remainder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Deadline:
    """
    One pending timeout of a connection, identified by a ``kind`` label.

    ``on_expire(kind)`` is called when the time set by the last `set` has
    passed without a newer `set` or a `clear`.
    """

    __slots__ = ("_reactor", "_on_expire", "_call", "at", "kind")

    def __init__(self, reactor: Any, on_expire: Callable[[str], None]) -> None:
        self._reactor = reactor
        self._on_expire = on_expire
        self._call: Any = None
        self.at: float | None = None
        self.kind = ""

    def set(self, kind: str, seconds: float | None) -> None:
        """Expire ``seconds`` from now as ``kind`` (None or 0: no timeout)."""
        if not seconds:
            self.clear()
            return
        at = self._reactor.seconds() + seconds
        self.at = at
        self.kind = kind
        call = self._call
        if call is None:
            self._call = self._reactor.callLater(seconds, self._fire)
        elif call.time + call.delayed_time > at:  # getTime(), without the call
            call.reset(seconds)

    def clear(self) -> None:
        """No timeout until the next `set`."""
        self.at = None
        self.kind = ""

    def cancel(self) -> None:
        """No timeout, and release the delayed call (at connection end)."""
        self.at = None
        self.kind = ""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _fire(self) -> None:
        self._call = None
        if self.at is None:
            return
        remaining = self.at - self._reactor.seconds()
        if remaining > 0:
            self._call = self._reactor.callLater(remaining, self._fire)
            return
        kind = self.kind
        self.at = None
        self.kind = ""
        self._on_expire(kind)
