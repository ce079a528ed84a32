"""
Saying what the cache did: the ``Cache-Status`` field of RFC 9211 and a
one-word ``X-Cache`` value (HIT, MISS, REVALIDATED, STALE) for the
response and the access log (`AccessRecord.cache`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Why a request went forward (RFC 9211 2.2).
FwdReason = (
    str  # "bypass" | "method" | "uri-miss" | "vary-miss" | "miss" | "request" | "stale" | "partial"
)

_SF_TOKEN = re.compile(r"^[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*$")


def _sf_item(value: str) -> str:
    """A structured-field token when ``value`` is one, else an sf-string."""
    if _SF_TOKEN.match(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + "".join(c for c in escaped if " " <= c <= "~") + '"'


@dataclass(frozen=True, slots=True)
class CacheOutcome:
    """
    What the cache did for one request.

    ``hit``: answered from storage without going forward.  ``fwd``: why it
    went forward, and ``fwd_status`` what came back.  ``stored``: the
    response was stored.  ``collapsed``: served from another request's
    forward fetch.  ``ttl``: remaining freshness (negative: served stale).
    ``detail``: extra words (``stale-if-error``, ``only-if-cached`` ...).
    ``stale``: what was served was stale (max-stale, stale-while-revalidate,
    stale-if-error).
    """

    hit: bool = False
    fwd: FwdReason | None = None
    fwd_status: int | None = None
    stored: bool = False
    collapsed: bool = False
    ttl: int | None = None
    detail: str | None = None
    stale: bool = False

    def answered(self, fwd_status: int, stored: bool = False) -> CacheOutcome:
        """
        This outcome once the upstream answered ``fwd_status`` (``stored``:
        and the response is being stored); `dataclasses.replace` without its
        per-call introspection, as every forwarded request needs one.
        """
        return CacheOutcome(
            self.hit, self.fwd, fwd_status, stored, self.collapsed, self.ttl, self.detail,
            self.stale,
        )

    @property
    def x_cache(self) -> str:
        """HIT, STALE (served stale), REVALIDATED (after a 304) or MISS."""
        if self.stale:
            return "STALE"
        if self.hit or self.collapsed:
            return "HIT"
        if self.fwd in ("stale", "request") and self.fwd_status == 304:
            return "REVALIDATED"
        return "MISS"

    def cache_status(self, name: str = "multiproxy") -> bytes:
        """The member this cache adds to ``Cache-Status`` (RFC 9211)."""
        parts = [_sf_item(name)]
        if self.hit:
            parts.append("hit")
        if self.fwd is not None:
            parts.append(f"fwd={self.fwd}")
        if self.fwd_status is not None:
            parts.append(f"fwd-status={self.fwd_status}")
        if self.stored:
            parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        if self.ttl is not None:
            parts.append(f"ttl={self.ttl}")
        if self.detail is not None:
            parts.append(f"detail={_sf_item(self.detail)}")
        return "; ".join(parts).encode("ascii")
