"""
Collapsed forwarding (RFC 9111 section 4): concurrent misses for one URL
share a single upstream fetch.

The first request becomes the leader and fetches; later ones join its
`Flight` as waiters (at most ``max_waiters``, each for at most ``timeout``
seconds until the response head).  When the head arrives the leader says
whether the response is shareable (it hands over the `StoredResponse` it is
storing); each waiter then decides for itself (Vary, Authorization, its own
Cache-Control) and either takes the stream or falls back to its own lookup.
A waiter that joins while the body is streaming is first replayed the
chunks so far.

Waiters provide four methods (a structural protocol, see `Waiter`):
``collapsed_head(shared, expected_length) -> bool`` (``shared`` None means
"not for you: look up again without collapsing"; return True to take the
stream), ``collapsed_data(bytes)``, ``collapsed_end()`` and
``collapsed_fail(error)``.

The only time source is an injected ``clock`` with ``callLater`` (a reactor,
or ``twisted.internet.task.Clock`` in tests).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from multiproxy.cache._store import StoredResponse


class Waiter(Protocol):
    """A request waiting for another request's response."""

    def collapsed_head(
        self, shared: StoredResponse | None, expected_length: int | None
    ) -> bool: ...

    def collapsed_data(self, data: bytes) -> None: ...

    def collapsed_flush(self) -> None: ...

    def collapsed_end(self) -> None: ...

    def collapsed_fail(self, error: Exception) -> None: ...


class Flight:
    """One upstream fetch that other requests for the same key may share."""

    def __init__(self, registry: CollapsedForwarding, key: bytes) -> None:
        self.key = key
        self._registry = registry
        self._waiting: dict[Waiter, Any] = {}  # waiter -> timeout call
        self._streaming: list[Waiter] = []
        self._shared: StoredResponse | None = None
        self._expected: int | None = None
        self._chunks: list[bytes] | None = []
        self._buffered = 0
        self.state = "waiting"  # then "streaming", then "done"

    @property
    def waiters(self) -> int:
        """How many requests are waiting or being served from this flight."""
        return len(self._waiting) + len(self._streaming)

    def join(self, waiter: Waiter) -> bool:
        """
        Wait for this flight's response.  False when the flight is full,
        finished, or too far into a body it could not keep.
        """
        reg = self._registry
        if self.state == "done" or self.waiters >= reg.max_waiters:
            return False
        if self.state == "waiting":
            self._waiting[waiter] = reg.clock.callLater(reg.timeout, self._expire, waiter)
            return True
        if self._chunks is None:
            return False
        if not waiter.collapsed_head(self._shared, self._expected):
            return True
        for chunk in self._chunks:
            waiter.collapsed_data(chunk)
        self._streaming.append(waiter)
        return True

    def leave(self, waiter: Waiter) -> None:
        """``waiter`` no longer wants the response (its client went away)."""
        call = self._waiting.pop(waiter, None)
        if call is not None and call.active():
            call.cancel()
        if waiter in self._streaming:
            self._streaming.remove(waiter)

    def _expire(self, waiter: Waiter) -> None:
        if self._waiting.pop(waiter, None) is not None:
            waiter.collapsed_head(None, None)

    def _take_waiting(self) -> list[Waiter]:
        waiting = list(self._waiting.items())
        self._waiting.clear()
        for _, call in waiting:
            if call.active():
                call.cancel()
        return [w for w, _ in waiting]

    # -- called by the leader ----------------------------------------------

    def head(self, shared: StoredResponse | None, expected_length: int | None = None) -> None:
        """
        The leader's response head has arrived.  ``shared`` is the response
        being stored (None when it is not shareable, or when the leader was
        revalidating and waiters should simply look up again).
        """
        if self.state != "waiting":
            return
        waiting = self._take_waiting()
        if shared is None:
            self._finish()
            for w in waiting:
                w.collapsed_head(None, None)
            return
        self.state = "streaming"
        self._shared = shared
        self._expected = expected_length
        for w in waiting:
            if w.collapsed_head(shared, expected_length):
                self._streaming.append(w)

    def data(self, data: bytes) -> None:
        """A body chunk of the shared response."""
        if self.state != "streaming":
            return
        if self._chunks is not None:
            self._buffered += len(data)
            if self._buffered > self._registry.buffer_limit:
                self._chunks = None
            else:
                self._chunks.append(data)
        for w in list(self._streaming):
            w.collapsed_data(data)

    def flush(self) -> None:
        """The leader has delivered all it has for now: waiters send what they hold."""
        for w in self._streaming:
            w.collapsed_flush()

    def stop_sharing(self) -> None:
        """No new waiters may join (the body outgrew what can be replayed)."""
        self._chunks = None

    def end(self) -> None:
        """The shared response is complete."""
        streaming = self._streaming
        self._finish()
        for w in streaming:
            w.collapsed_end()

    def fail(self, error: Exception) -> None:
        """The leader's fetch failed (before the head, or mid-body)."""
        streaming = self._streaming
        waiting = self._take_waiting()
        self._finish()
        for w in waiting + streaming:
            w.collapsed_fail(error)

    def _finish(self) -> None:
        self.state = "done"
        self._streaming = []
        self._chunks = None
        self._registry._forget(self)


class CollapsedForwarding:
    """
    The flights in progress, by cache key.

    A key whose response turned out not to be shareable is remembered for
    ``pass_ttl`` seconds (at most ``max_passes`` keys, oldest forgotten
    first): requests for it are not collapsed meanwhile, since making them
    queue behind each other would only add latency ("hit-for-pass").
    """

    def __init__(
        self,
        clock,
        max_waiters: int = 100,
        timeout: float = 10.0,
        buffer_limit: int = 8 * 1024 * 1024,
        pass_ttl: float = 60.0,
        max_passes: int = 10000,
    ) -> None:
        self.clock = clock
        self.max_waiters = max_waiters
        self.timeout = timeout
        self.buffer_limit = buffer_limit
        self.pass_ttl = pass_ttl
        self.max_passes = max_passes
        self._flights: dict[bytes, Flight] = {}
        self._passes: OrderedDict[bytes, float] = OrderedDict()

    def not_shareable(self, key: bytes) -> None:
        """The response for ``key`` could not be shared: stop collapsing it for a while."""
        if self.pass_ttl <= 0:
            return
        self._passes.pop(key, None)
        self._passes[key] = self.clock.seconds() + self.pass_ttl
        while len(self._passes) > self.max_passes:
            self._passes.popitem(last=False)

    def shareable(self, key: bytes) -> None:
        """A response for ``key`` was stored: collapse its misses again."""
        self._passes.pop(key, None)

    def collapses(self, key: bytes) -> bool:
        """Should a miss for ``key`` lead or join a flight?"""
        until = self._passes.get(key)
        if until is None:
            return True
        if until <= self.clock.seconds():
            del self._passes[key]
            return True
        return False

    def __len__(self) -> int:
        return len(self._flights)

    def flight(self, key: bytes) -> Flight | None:
        """The flight in progress for ``key``, if any."""
        return self._flights.get(key)

    def lead(self, key: bytes) -> Flight:
        """Start a flight for ``key`` (the caller fetches and feeds it)."""
        flight = Flight(self, key)
        self._flights[key] = flight
        return flight

    def join(self, key: bytes, waiter: Waiter) -> bool:
        """Wait on the flight for ``key``; False when there is none to join."""
        flight = self._flights.get(key)
        return flight is not None and flight.join(waiter)

    def _forget(self, flight: Flight) -> None:
        if self._flights.get(flight.key) is flight:
            del self._flights[flight.key]
