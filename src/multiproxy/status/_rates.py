"""
Session rates as HAProxy's stats page shows them: sessions (requests,
tunnels or connections) per second over the last sampling interval, and
the most seen since start.

A `RateMeter` is fed a running total now and then (the status listener
samples once a second), so counting a session costs the proxy nothing
more than the counter it already keeps.
"""

from __future__ import annotations

__all__ = ["SAMPLE_INTERVAL", "RateMeter"]

SAMPLE_INTERVAL = 1.0
"""Seconds between two samples of every total the status listener watches."""


class RateMeter:
    """
    Events per second between the last two samples of a running total
    (`current`), and the highest such rate (`most`).
    """

    def __init__(self) -> None:
        self.current = 0.0
        self.most = 0.0
        self._last: tuple[float, int] | None = None

    def sample(self, now: float, total: int) -> None:
        """Note ``total`` (events so far) at ``now`` (seconds)."""
        last = self._last
        if last is not None and now > last[0]:
            # A total that went down (a counter reset) restarts from here.
            self.current = max(0, total - last[1]) / (now - last[0])
            self.most = max(self.most, self.current)
        self._last = (now, total)

    def __repr__(self) -> str:
        return f"<RateMeter {self.current:.1f}/s, most {self.most:.1f}/s>"
