"""
Validation (RFC 9111 section 4.3, RFC 9110 section 13 and 14).

- `validation_headers`: the conditional request a cache sends to revalidate
  a stored response (4.3.1).
- `freshen`: a stored response updated by a 304, or None when the 304 does
  not identify it (4.3.4, 3.2).
- `refresh_from_head`: a stored GET response updated (or not) by a 200 to
  a HEAD (4.3.5).
- `not_modified`: whether a client's own conditional request can be
  answered 304 from a stored response (4.3.2), and `not_modified_fields`,
  the fields such a 304 carries (RFC 9110 15.4.5).
- `byte_range` / `if_range_holds`: a single byte range of a stored 200
  (RFC 9110 14).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from multiproxy.cache._directives import parse_response_directives, split_list
from multiproxy.cache._freshness import age_value, date_value, freshness_lifetime
from multiproxy.cache._keys import vary_names
from multiproxy.cache._storable import is_dropped_on_update
from multiproxy.cache._store import pack_fields
from multiproxy.http1._dates import format_http_date, parse_http_date
from multiproxy.http1._headers import Headers

if TYPE_CHECKING:
    from multiproxy.cache._store import Fields, StoredResponse

#: Request fields that make a request conditional or partial.
CONDITIONAL_FIELDS = frozenset(
    {
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)

# RFC 9110 15.4.5: what a 304 carries (Last-Modified only without ETag).
_NOT_MODIFIED_FIELDS = frozenset(
    {
        b"cache-control",
        b"content-location",
        b"date",
        b"etag",
        b"expires",
        b"vary",
    }
)


@dataclass(frozen=True, slots=True)
class EntityTag:
    """A parsed entity-tag: weakness flag and the quoted opaque tag."""

    weak: bool
    opaque: bytes

    def __bytes__(self) -> bytes:
        return (b"W/" if self.weak else b"") + self.opaque

    def strong_match(self, other: EntityTag) -> bool:
        return not self.weak and not other.weak and self.opaque == other.opaque

    def weak_match(self, other: EntityTag) -> bool:
        return self.opaque == other.opaque


def parse_etag(value: bytes | None) -> EntityTag | None:
    """
    An entity-tag (RFC 9110 8.8.3), or None.  An unquoted tag without
    spaces, commas or quotes is accepted as if it were quoted.
    """
    if value is None:
        return None
    v = value.strip(b" \t")
    weak = False
    if v[:2] in (b"W/", b"w/"):
        weak = True
        v = v[2:]
    if len(v) >= 2 and v[:1] == b'"' and v[-1:] == b'"' and b'"' not in v[1:-1]:
        return EntityTag(weak, v)
    if v and not any(c in v for c in (b'"', b",", b" ", b"\t")):
        return EntityTag(weak, b'"' + v + b'"')
    return None


def parse_etag_list(value: bytes) -> list[EntityTag]:
    """The entity-tags of an If-None-Match / If-Match list (malformed members dropped)."""
    out = []
    for member in split_list(value):
        tag = parse_etag(member)
        if tag is not None:
            out.append(tag)
    return out


def stored_etag(meta: StoredResponse) -> EntityTag | None:
    return parse_etag(meta.field(b"etag"))


def validation_headers(request_headers: Headers, meta: StoredResponse) -> Headers:
    """
    The request fields for revalidating ``meta``: the client's own fields
    without its preconditions and Range (the cache evaluates those itself,
    and a full response is what it can store), plus If-None-Match with the
    stored entity-tag and If-Modified-Since with the stored Last-Modified.
    """
    headers = request_headers.copy()
    headers.remove_all(CONDITIONAL_FIELDS)
    tag = stored_etag(meta)
    if tag is not None:
        headers.add(b"If-None-Match", bytes(tag))
    last_modified = meta.field(b"last-modified")
    if last_modified is not None and parse_http_date(last_modified) is not None:
        headers.add(b"If-Modified-Since", last_modified)
    return headers


def has_validator(meta: StoredResponse) -> bool:
    """True when ``meta`` can be revalidated with a conditional request."""
    return (
        stored_etag(meta) is not None or parse_http_date(meta.field(b"last-modified")) is not None
    )


def merge_fields(stored: Fields, new: Headers, targets: tuple[bytes, ...] = ()) -> Fields:
    """
    The stored fields updated with those of a newer response (RFC 9111 3.2):
    each field the new response has replaces the stored one, except
    connection-specific fields, framing, Content-Range and the fields a
    qualified no-cache / private of the new response names (read as a
    cache with target list ``targets`` reads them).
    """
    drop = set(new.tokens(b"connection"))
    cc = parse_response_directives(new, targets)
    drop.update(cc.no_cache_fields)
    drop.update(cc.private_fields)
    incoming = [
        (n, v) for n, v in new if not is_dropped_on_update(n.lower()) and n.lower() not in drop
    ]
    replaced = {n.lower() for n, _ in incoming}
    kept = [(n, v) for n, v in stored if n.lower() not in replaced]
    return tuple(kept + incoming)


def _identifies(meta: StoredResponse, new: Headers) -> bool:
    """Does a 304 (or HEAD response) with fields ``new`` select ``meta`` for update (4.3.4)?"""
    tag = parse_etag(new.get(b"etag"))
    mine = stored_etag(meta)
    if tag is not None:
        if mine is None:
            return False
        return tag.strong_match(mine) if not tag.weak else tag.weak_match(mine)
    new_lm = new.get(b"last-modified")
    if new_lm is not None:
        mine_lm = meta.field(b"last-modified")
        if mine_lm is None:
            return False
        return parse_http_date(new_lm) == parse_http_date(mine_lm)
    # No validator at all: it answers the precondition sent for this one
    # stored response, so that is the response it refers to.
    return True


def freshen(
    meta: StoredResponse,
    new: Headers,
    request_time: float,
    response_time: float,
    heuristic_fraction: float = 0.1,
    heuristic_max: float = 86400.0,
    targets: tuple[bytes, ...] = (),
) -> StoredResponse | None:
    """
    ``meta`` updated with a 304's fields ``new`` and the times of the
    validation exchange, or None when the 304 does not identify it (or
    changes what the response varies on).  ``targets``: the cache's
    target list (RFC 9213), for reading the merged directives.
    """
    if not _identifies(meta, new):
        return None
    if b"date" not in new:
        # RFC 9110 6.6.1: a response without Date is dated when received, so
        # the 304's Date (not the stored one) is what the update carries.
        new = new.copy()
        new.add(b"Date", format_http_date(response_time))
    fields = merge_fields(meta.headers, new, targets)
    merged = Headers(fields)
    if vary_names(merged) != meta.vary_names:
        return None
    cc = parse_response_directives(merged, targets)
    date = date_value(new, response_time)
    return replace(
        meta,
        head=pack_fields(fields),
        request_time=request_time,
        response_time=response_time,
        date_value=date,
        age_value=age_value(new),
        lifetime=freshness_lifetime(
            meta.status, merged, cc, date, heuristic_fraction, heuristic_max
        ),
        no_cache=cc.no_cache,
        forbids_stale=cc.forbids_stale,
        stale_while_revalidate=cc.stale_while_revalidate or 0,
        stale_if_error=cc.stale_if_error or 0,
    )


def refresh_from_head(
    meta: StoredResponse,
    new: Headers,
    request_time: float,
    response_time: float,
    heuristic_fraction: float = 0.1,
    heuristic_max: float = 86400.0,
    targets: tuple[bytes, ...] = (),
) -> StoredResponse | None:
    """
    A stored GET response updated by a 200 response to HEAD (RFC 9111
    4.3.5), or None when the HEAD response shows it has changed (its
    validators or Content-Length differ): then it must be considered stale.
    """
    tag, mine = parse_etag(new.get(b"etag")), stored_etag(meta)
    if (tag is None) != (mine is None) or (
        tag is not None and mine is not None and tag.opaque != mine.opaque
    ):
        return None
    lm, mine_lm = new.get(b"last-modified"), meta.field(b"last-modified")
    if (lm is None) != (mine_lm is None) or (
        lm is not None and parse_http_date(lm) != parse_http_date(mine_lm)
    ):
        return None
    length = new.get(b"content-length")
    if length is not None and (not length.strip().isdigit() or int(length) != meta.body_length):
        return None
    return freshen(
        meta, new, request_time, response_time, heuristic_fraction, heuristic_max, targets
    )


def not_modified(method: bytes, request_headers: Headers, meta: StoredResponse) -> bool:
    """
    True when a client's GET/HEAD preconditions say it already has
    ``meta`` (If-None-Match by weak comparison; else If-Modified-Since
    against Last-Modified, or Date when there is none: RFC 9111 4.3.2).
    """
    if method not in (b"GET", b"HEAD"):
        return False
    inm = request_headers.combined(b"if-none-match")
    if inm is not None:
        if inm.strip(b" \t") == b"*":
            return True
        mine = stored_etag(meta)
        if mine is None:
            return False
        return any(tag.weak_match(mine) for tag in parse_etag_list(inm))
    ims = parse_http_date(request_headers.get(b"if-modified-since"))
    if ims is None:
        return False
    last_modified = parse_http_date(meta.field(b"last-modified"))
    if last_modified is None:
        last_modified = meta.date_value
    return last_modified <= ims


def not_modified_fields(meta: StoredResponse) -> Headers:
    """The stored fields a 304 answer carries (RFC 9110 15.4.5)."""
    has_etag = meta.field(b"etag") is not None
    return Headers(
        (n, v)
        for n, v in meta.headers
        if n.lower() in _NOT_MODIFIED_FIELDS or (not has_etag and n.lower() == b"last-modified")
    )


class _Unsatisfiable:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSATISFIABLE"


#: `byte_range` result for a range that lies outside the representation (416).
UNSATISFIABLE = _Unsatisfiable()


def byte_range(value: bytes, length: int) -> tuple[int, int] | _Unsatisfiable | None:
    """
    The single byte range ``value`` (a Range field) asks of a body of
    ``length`` bytes, as (first, last) inclusive; `UNSATISFIABLE`; or None
    when the field is to be ignored (another unit, malformed, or several
    ranges, which this cache answers with the full response).
    """
    unit, eq, spec = value.strip(b" \t").partition(b"=")
    if not eq or unit.strip(b" \t").lower() != b"bytes":
        return None
    specs = [s.strip(b" \t") for s in spec.split(b",") if s.strip(b" \t")]
    if len(specs) != 1:
        return None
    first, dash, last = specs[0].partition(b"-")
    first, last = first.strip(b" \t"), last.strip(b" \t")
    if not dash:
        return None
    if not first:
        if not last.isdigit():
            return None
        suffix = int(last)
        if suffix == 0 or length == 0:
            return UNSATISFIABLE
        return (max(0, length - suffix), length - 1)
    if not first.isdigit() or (last and not last.isdigit()):
        return None
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= length:
        return UNSATISFIABLE
    end = int(last) if last else length - 1
    return (start, min(end, length - 1))


def if_range_holds(value: bytes, meta: StoredResponse) -> bool:
    """
    Does an If-Range precondition hold for ``meta`` (RFC 9110 13.1.5)?  An
    entity-tag must match strongly; a date must equal a strong Last-Modified.
    """
    v = value.strip(b" \t")
    if v[:1] == b'"' or v[:2] in (b"W/", b"w/"):
        tag, mine = parse_etag(v), stored_etag(meta)
        return tag is not None and mine is not None and tag.strong_match(mine)
    when = parse_http_date(v)
    last_modified = parse_http_date(meta.field(b"last-modified"))
    if when is None or last_modified is None:
        return False
    return when == last_modified and last_modified <= meta.date_value - 1
