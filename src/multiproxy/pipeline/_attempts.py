"""
Which upstream comes next: the one attempt machinery of every proxy.

A request, tunnel or relayed connection that cannot reach its upstream tries
another: the chooser's pick among the upstreams not tried yet, while
attempts are left.  A request that was sent and then lost before any answer
may go once more, if replaying it is safe.  `Attempts` decides both; the
HTTP fetch, the CONNECT tunnel, the WebSocket upgrade and the TCP relay do
the connecting and ask it what next.  It is pure: no I/O, no clock.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Attempts"]


class Attempts:
    """
    The attempts of one request or connection at the upstreams ``chooser``
    (an `IUpstreamChooser`, or None when the first upstream is the only one)
    offers for ``intent``.

    @param limit: attempts in all (None: as many as the chooser offers).
    @param replayable: the request may be sent again after it was lost
        unanswered (an idempotent method and no body, RFC 9110 9.2.2).
    """

    def __init__(self, chooser: Any, intent: Any, limit: int | None = None,
                 replayable: bool = False) -> None:
        if limit is not None and limit < 1:
            raise ValueError("an upstream needs at least one attempt")
        self.chooser = chooser
        self.intent = intent
        self.limit = limit
        self.replayable = replayable
        self.tried: set[Any] = set()
        self.made = 0
        self.replayed = False

    def first(self) -> Any:
        """The upstream to try first, or None when the chooser has none."""
        return self._choose(self.tried)

    def begin(self, upstream: Any) -> None:
        """An attempt at ``upstream`` starts."""
        self.tried.add(upstream.key)
        self.made += 1

    def uncount(self) -> None:
        """The last attempt does not count (a kept-alive connection the upstream had closed)."""
        self.made -= 1

    def after_failure(self) -> Any:
        """The upstream to try after a failed connect, or None: give up."""
        if self.limit is not None and self.made >= self.limit:
            return None
        return self._choose(self.tried)

    def replay(self, lost: Any, status: int) -> Any:
        """
        Where a request lost before its answer (the connection to ``lost``
        failed with ``status``) goes once more, or None.  Never after a
        timeout (504: the upstream may still be working on it), never twice;
        another upstream if there is one, else ``lost`` itself if the
        chooser would still pick it.
        """
        if self.replayed or not self.replayable or status == 504:
            return None
        self.replayed = True
        following = self._choose(self.tried)
        if following is not None:
            return following
        again = self._choose(self.tried - {lost.key})
        return again if again is not None and again.key == lost.key else None

    def _choose(self, excluded: set[Any]) -> Any:
        if self.chooser is None:
            return None
        return self.chooser.choose(self.intent, frozenset(excluded))
