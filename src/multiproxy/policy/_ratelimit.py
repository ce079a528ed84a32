"""
Per-client limits: concurrent connections, requests per second and failed
proxy sign-ins per minute.

Clients are counted by address; IPv6 clients by their /64 by default (one
host usually owns a whole /64, and could otherwise dodge a limit by hopping
addresses), IPv4-mapped IPv6 addresses as the IPv4 address.  Memory stays
bounded: a connection counter forgets a client when its last connection
closes, and a rate limiter forgets a client as soon as its bucket would be
full again, and never tracks more than ``max_clients``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Hashable

from multiproxy.policy._networks import NetworkSet, client_address

__all__ = ["ConnectionLimit", "RequestRateLimit", "SignInFailures", "client_key"]


def client_key(client_host: str, ipv6_prefix: int = 64) -> Hashable:
    """The identity a client is counted under (see the module docstring)."""
    address = client_address(client_host)
    if address is None:
        return client_host
    if address.version == 4:
        return (4, int(address))
    return (6, int(address) >> (128 - ipv6_prefix))


class ConnectionLimit:
    """
    At most ``per_client`` concurrent connections per client.  Clients in
    ``exempt`` are not counted.
    """

    def __init__(
        self, per_client: int, *, ipv6_prefix: int = 64, exempt: NetworkSet | None = None,
    ) -> None:
        if per_client < 1:
            raise ValueError("per_client must be at least 1")
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be between 1 and 128")
        self.per_client = per_client
        self.ipv6_prefix = ipv6_prefix
        self.exempt = exempt
        self._counts: dict[Hashable, int] = {}

    def acquire(self, client_host: str) -> Callable[[], None] | None:
        """
        Count a new connection from ``client_host``.

        @return: None if the client already has ``per_client`` connections
            (refuse it: close a TCP connection, answer 429 over HTTP);
            otherwise a function to call once when the connection closes
            (calling it again does nothing).
        """
        if self.exempt is not None and client_address(client_host) in self.exempt:
            return _nothing
        key = client_key(client_host, self.ipv6_prefix)
        count = self._counts.get(key, 0)
        if count >= self.per_client:
            return None
        self._counts[key] = count + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._counts[key] - 1
            if left:
                self._counts[key] = left
            else:
                del self._counts[key]

        return release

    def count(self, client_host: str) -> int:
        """How many connections ``client_host`` has open."""
        return self._counts.get(client_key(client_host, self.ipv6_prefix), 0)

    def __len__(self) -> int:
        """How many clients have connections open."""
        return len(self._counts)


def _nothing() -> None:
    pass


class RequestRateLimit:
    """
    A token bucket per client: ``rate`` requests per second on average, with
    bursts of up to ``burst``.  ``clock`` returns seconds (``reactor.seconds``).

    When more than ``max_clients`` clients are tracked, the one idle longest
    is forgotten (it gets a full bucket if it comes back): memory is bounded
    at the price of leniency under a flood of distinct addresses.
    """

    def __init__(
        self, rate: float, burst: float | None = None, *, clock: Callable[[], float],
        ipv6_prefix: int = 64, max_clients: int = 100_000, exempt: NetworkSet | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be above 0 requests per second")
        burst = max(rate, 1.0) if burst is None else burst
        if burst < 1:
            raise ValueError("burst must be at least 1 request")
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError("ipv6_prefix must be between 1 and 128")
        self.rate = float(rate)
        self.burst = float(burst)
        self.ipv6_prefix = ipv6_prefix
        self.max_clients = max_clients
        self.exempt = exempt
        self._clock = clock
        self._refill = self.burst / self.rate
        # key -> (tokens, time of last update); least recently updated first.
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def allow(self, client_host: str) -> bool:
        """Take a token for one request from ``client_host``; False means answer 429."""
        if self.exempt is not None and client_address(client_host) in self.exempt:
            return True
        now = self._clock()
        self._expire(now)
        key = client_key(client_host, self.ipv6_prefix)
        tokens = self._tokens(key, now)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed

    def retry_after(self, client_host: str) -> int:
        """Whole seconds until ``client_host`` may send again (for ``Retry-After``)."""
        key = client_key(client_host, self.ipv6_prefix)
        tokens = self._tokens(key, self._clock())
        if tokens >= 1.0:
            return 0
        return max(1, math.ceil((1.0 - tokens) / self.rate))

    def __len__(self) -> int:
        """How many clients are tracked."""
        return len(self._buckets)

    def _tokens(self, key: Hashable, now: float) -> float:
        entry = self._buckets.get(key)
        if entry is None:
            return self.burst
        tokens, last = entry
        return min(self.burst, tokens + max(0.0, now - last) * self.rate)

    def _expire(self, now: float) -> None:
        # A bucket idle long enough to be full again is the same as no bucket;
        # buckets are in order of last update, so the stale ones are in front.
        buckets = self._buckets
        horizon = now - self._refill
        while buckets:
            key = next(iter(buckets))
            if buckets[key][1] > horizon:
                break
            del buckets[key]


class SignInFailures:
    """
    Failed proxy sign-ins per client address: at most ``limit`` in any
    ``window`` seconds.  A client over the limit is answered 429 with
    ``Retry-After`` and its credentials are not checked at all until the
    oldest failure leaves the window, so a password cannot be guessed faster
    than ``limit`` tries a ``window``.  Memory is bounded by ``max_clients``
    (the client whose last failure is oldest is forgotten first).
    """

    def __init__(
        self, limit: int = 10, window: float = 60.0, *, clock: Callable[[], float],
        ipv6_prefix: int = 64, max_clients: int = 100_000,
    ) -> None:
        if limit < 1:
            raise ValueError("the sign-in failure limit must be at least 1")
        self.limit = limit
        self.window = float(window)
        self.ipv6_prefix = ipv6_prefix
        self.max_clients = max_clients
        self._clock = clock
        self._failures: OrderedDict[Hashable, list[float]] = OrderedDict()

    def _recent(self, client_host: str) -> tuple[Hashable, list[float]]:
        key = client_key(client_host, self.ipv6_prefix)
        times = self._failures.get(key, [])
        cutoff = self._clock() - self.window
        while times and times[0] <= cutoff:
            times.pop(0)
        if not times:
            self._failures.pop(key, None)
        return key, times

    def record(self, client_host: str) -> None:
        """Count one failed sign-in (wrong or malformed credentials)."""
        key, times = self._recent(client_host)
        times.append(self._clock())
        self._failures[key] = times
        self._failures.move_to_end(key)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def blocked(self, client_host: str) -> int | None:
        """None if ``client_host`` may try to sign in, else the seconds to wait."""
        _, times = self._recent(client_host)
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window - self._clock()))

    def count(self, client_host: str) -> int:
        """Failures of ``client_host`` within the window."""
        return len(self._recent(client_host)[1])
