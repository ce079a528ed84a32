"""
Freshness and age (RFC 9111 section 4.2), and whether a stored response may
be reused for a request.

Everything here is arithmetic on values: stored metadata, parsed
directives, and ``now`` from an injected clock (seconds since the epoch).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, NamedTuple

from multiproxy.cache._directives import DELTA_MAX, RequestDirectives, ResponseDirectives
from multiproxy.http1._dates import parse_http_date

if TYPE_CHECKING:
    from multiproxy.cache._store import StoredResponse
    from multiproxy.http1._headers import Headers

#: Status codes defined as heuristically cacheable (RFC 9110 15.1).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})


def age_value(headers: Headers) -> int:
    """
    The received ``Age`` (RFC 9111 5.1): the first member of the first field
    line; a malformed value is ignored (0).
    """
    raw = headers.get(b"age")
    if raw is None:
        return 0
    first = raw.split(b",", 1)[0].strip(b" \t")
    if not first.isdigit():
        return 0
    return min(int(first), DELTA_MAX)


def date_value(headers: Headers, response_time: float) -> float:
    """The response's ``Date``, or the time it was received when absent or invalid."""
    parsed = parse_http_date(headers.get(b"date"), response_time)
    return response_time if parsed is None else parsed


def freshness_lifetime(
    status: int,
    headers: Headers,
    cc: ResponseDirectives,
    date: float,
    heuristic_fraction: float = 0.1,
    heuristic_max: float = 86400.0,
) -> float:
    """
    The freshness lifetime a shared cache gives a response (RFC 9111 4.2.1):
    ``s-maxage``, else ``max-age``, else ``Expires`` minus ``Date`` (an
    invalid Expires, or one sent as several field lines, is already
    expired: RFC 9111 5.3), else a heuristic (4.2.2): a fraction
    of the time since ``Last-Modified``, capped, and only for heuristically
    cacheable status codes or with ``public``.  When ``cc`` comes from a
    targeted field, Expires is ignored (RFC 9213 2.2).
    """
    if cc.s_maxage is not None:
        return float(cc.s_maxage)
    if cc.max_age is not None:
        return float(cc.max_age)
    expires = headers.get_all(b"expires") if cc.target is None else None
    if expires:
        # Expires is a singleton: more than one field line is as invalid as
        # a value that is not an HTTP-date, and both mean "already expired".
        when = parse_http_date(expires[0], date) if len(expires) == 1 else None
        if when is None:
            return 0.0
        return max(0.0, when - date)
    if status not in HEURISTIC_STATUSES and not cc.public:
        return 0.0
    last_modified = parse_http_date(headers.get(b"last-modified"), date)
    if last_modified is None or last_modified >= date:
        return 0.0
    return min((date - last_modified) * heuristic_fraction, heuristic_max)


def current_age(
    age: int, date: float, request_time: float, response_time: float, now: float
) -> float:
    """The current age of a stored response (RFC 9111 4.2.3)."""
    apparent_age = max(0.0, response_time - date)
    response_delay = response_time - request_time
    corrected_age_value = age + response_delay
    corrected_initial_age = max(apparent_age, corrected_age_value)
    resident_time = now - response_time
    return corrected_initial_age + resident_time


class Reuse(enum.Enum):
    """What a cache may do with a stored response for one request."""

    FRESH = "fresh"
    """Serve it without contacting the origin."""
    STALE_ALLOWED = "stale"
    """Serve it stale: the request's ``max-stale`` allows it."""
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    """Serve it stale now and revalidate it in the background (RFC 5861)."""
    VALIDATE = "validate"
    """Forward a conditional request first."""


# Looked up once: an Enum member read from its class costs about 0.1 us in
# Python 3.11, and every hit is judged.
_FRESH = Reuse.FRESH


class Judgement(NamedTuple):
    """
    The outcome of `judge`: what to do, and the age and lifetime behind it.

    A NamedTuple rather than a frozen dataclass: as immutable, and made for
    every cache hit without one object.__setattr__ call per field.
    """

    reuse: Reuse
    age: float
    lifetime: float
    reason: str = ""

    @property
    def ttl(self) -> float:
        """Remaining freshness in seconds (negative once stale)."""
        return self.lifetime - self.age


def judge(stored: StoredResponse, request: RequestDirectives, now: float) -> Judgement:
    """
    May ``stored`` be reused for a request with directives ``request`` at
    ``now``, and how (RFC 9111 4, 4.2.4, 5.2.1; RFC 5861 3)?
    """
    age = current_age(
        stored.age_value, stored.date_value, stored.request_time, stored.response_time, now
    )
    lifetime = stored.lifetime
    if stored.no_cache:
        return Judgement(Reuse.VALIDATE, age, lifetime, "no-cache")
    if request.no_cache:
        return Judgement(Reuse.VALIDATE, age, lifetime, "request")
    if request.max_age is not None and (request.max_age == 0 or age > request.max_age):
        return Judgement(Reuse.VALIDATE, age, lifetime, "request")
    left = lifetime - age
    if request.min_fresh is not None and left < request.min_fresh:
        return Judgement(Reuse.VALIDATE, age, lifetime, "request")
    if left > 0:
        return Judgement(_FRESH, age, lifetime, "fresh")
    staleness = -left
    if stored.forbids_stale:
        return Judgement(Reuse.VALIDATE, age, lifetime, "stale")
    if request.max_stale is not None and staleness <= request.max_stale:
        return Judgement(Reuse.STALE_ALLOWED, age, lifetime, "max-stale")
    if stored.stale_while_revalidate and staleness <= stored.stale_while_revalidate:
        return Judgement(Reuse.STALE_WHILE_REVALIDATE, age, lifetime, "stale-while-revalidate")
    return Judgement(Reuse.VALIDATE, age, lifetime, "stale")


def usable_on_error(
    stored: StoredResponse,
    request: RequestDirectives,
    now: float,
    disconnected: bool,
    grace: float = 0.0,
) -> bool:
    """
    May ``stored`` be served stale because the origin failed?

    Allowed within ``stale-if-error`` (the request's, else the response's;
    RFC 5861 4) after a 500/502/503/504 or a failure to connect; and, when
    the origin could not be reached at all (``disconnected``), within
    ``grace`` seconds of staleness (RFC 9111 4.2.4 lets a disconnected cache
    serve stale).  Never when the response forbids stale reuse
    (must-revalidate, proxy-revalidate, s-maxage, no-cache) or the client
    asked for no-cache.
    """
    if stored.forbids_stale or request.no_cache:
        return False
    age = current_age(
        stored.age_value, stored.date_value, stored.request_time, stored.response_time, now
    )
    staleness = age - stored.lifetime
    window = request.stale_if_error if request.stale_if_error is not None else stored.stale_if_error
    if window and staleness <= window:
        return True
    return disconnected and grace > 0 and staleness <= grace
