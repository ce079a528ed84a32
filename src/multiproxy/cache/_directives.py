"""
Cache-Control parsing (RFC 9111 section 5.2) into frozen values.

Directive names compare case-insensitively; arguments may be tokens or
quoted strings (recipients accept both, section 5.2).  A directive that
appears more than once counts by its first occurrence (section 4.2.1 allows
"the first occurrence").  A ``max-age`` or ``s-maxage`` whose argument is not
a delta-seconds makes the response stale rather than being ignored, so a
garbled lifetime never makes a response fresher than its sender meant.

Targeted fields (RFC 9213) such as ``CDN-Cache-Control`` carry the same
directives as a Structured Field Dictionary (RFC 8941).  A cache with a
target list uses the first of its fields that is present, valid and not
empty instead of Cache-Control (and Expires): see
`parse_response_directives`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from multiproxy import _memo as memo
from multiproxy.http1._structured import (
    InnerList,
    StructuredFieldError,
    field_text,
    parse_dictionary,
)

if TYPE_CHECKING:
    from multiproxy.http1._headers import Headers

#: RFC 9111 1.2.2: a delta-seconds too large to represent counts as 2**31.
DELTA_MAX = 2**31

#: ``max-stale`` without an argument: any staleness is acceptable.
ANY_STALENESS = float("inf")


class _Invalid:
    """Marks a directive whose argument is malformed."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


INVALID = _Invalid()

_TOKEN_CHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _is_token(value: bytes) -> bool:
    return bool(value) and all(c in _TOKEN_CHARS for c in value)


def split_list(value: bytes) -> list[bytes]:
    """
    Split a comma-separated field value into stripped, non-empty members,
    never splitting inside a quoted string (RFC 9110 5.6.1).
    """
    if b'"' not in value:
        return [m for m in (p.strip(b" \t") for p in value.split(b",")) if m]
    out: list[bytes] = []
    start = 0
    quoted = False
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if quoted:
            if c == 0x5C:  # backslash escapes the next octet
                i += 1
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x2C:
            member = value[start:i].strip(b" \t")
            if member:
                out.append(member)
            start = i + 1
        i += 1
    member = value[start:].strip(b" \t")
    if member:
        out.append(member)
    return out


def _unquote(value: bytes) -> bytes | _Invalid:
    if len(value) < 2 or value[-1] != 0x22:
        return INVALID
    inner = value[1:-1]
    if b"\\" not in inner:
        return inner if b'"' not in inner else INVALID
    out = bytearray()
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == 0x5C and i + 1 < len(inner):
            i += 1
            c = inner[i]
        elif c == 0x22:
            return INVALID
        out.append(c)
        i += 1
    return bytes(out)


def parse_directives(headers: Headers) -> dict[bytes, bytes | None | _Invalid]:
    """
    The Cache-Control directives of ``headers``: lower-case name to argument
    (unquoted bytes), None for no argument, or `INVALID`.  First occurrence wins.
    """
    return _parse_values(headers.get_all(b"cache-control"))


def _parse_values(values: list[bytes]) -> dict[bytes, bytes | None | _Invalid]:
    out: dict[bytes, bytes | None | _Invalid] = {}
    for value in values:
        for member in split_list(value):
            eq = member.find(b"=")
            if eq < 0:
                key, arg = member, None
            else:
                key = member[:eq]
                raw = member[eq + 1 :]
                if raw[:1] == b'"':
                    arg = _unquote(raw)
                elif _is_token(raw):
                    arg = raw
                else:
                    arg = INVALID
            if not _is_token(key):
                continue
            key = key.lower()
            if key not in out:
                out[key] = arg
    return out


def delta_seconds(arg: bytes | None | _Invalid) -> int | None:
    """A delta-seconds argument as an int (capped at 2**31), or None if malformed."""
    if arg is None or arg is INVALID or not arg.isdigit():  # type: ignore[union-attr]
        return None
    return min(int(arg), DELTA_MAX)  # type: ignore[arg-type]


def _field_names(arg: bytes | None | _Invalid) -> frozenset[bytes] | None:
    """The field-name list of a qualified no-cache / private, or None if unqualified."""
    if arg is None or arg is INVALID:
        return None
    names = frozenset(n.lower() for n in split_list(arg))  # type: ignore[arg-type]
    return names or None


@dataclass(frozen=True, slots=True)
class ResponseDirectives:
    """
    The Cache-Control of a response, as a shared cache reads it.

    ``max_age`` / ``s_maxage`` are None when absent and 0 when malformed.
    ``no_cache`` / ``private`` are True only in their unqualified form; the
    qualified forms list field names in ``no_cache_fields`` /
    ``private_fields`` (those fields are dropped before storing).
    ``target`` is the lower-case name of the targeted field (RFC 9213) the
    directives were read from, or None when they come from Cache-Control;
    with a target, Expires is ignored too (RFC 9213 2.2).
    """

    max_age: int | None = None
    s_maxage: int | None = None
    no_store: bool = False
    no_cache: bool = False
    no_cache_fields: frozenset[bytes] = frozenset()
    private: bool = False
    private_fields: frozenset[bytes] = frozenset()
    public: bool = False
    must_revalidate: bool = False
    proxy_revalidate: bool = False
    must_understand: bool = False
    no_transform: bool = False
    immutable: bool = False
    stale_while_revalidate: int | None = None
    stale_if_error: int | None = None
    target: bytes | None = None

    @property
    def explicit_freshness(self) -> bool:
        """True when ``s-maxage`` or ``max-age`` set the lifetime."""
        return self.s_maxage is not None or self.max_age is not None

    @property
    def forbids_stale(self) -> bool:
        """
        True when a shared cache must not serve this response stale
        (RFC 9111 4.2.4: no-cache, must-revalidate, proxy-revalidate, s-maxage).
        """
        return (
            self.no_cache
            or self.must_revalidate
            or self.proxy_revalidate
            or self.s_maxage is not None
        )


def _lifetime(arg: bytes | None | _Invalid) -> int:
    value = delta_seconds(arg)
    return 0 if value is None else value


# Cache-Control values already read -> their directives (immutable, so
# shared); bounded, as the values come from upstreams.
_RESPONSE_DIRECTIVES = memo.table("cache.response-directives", 1024)


def parse_response_directives(
    headers: Headers, targets: tuple[bytes, ...] = ()
) -> ResponseDirectives:
    """
    Read a response's cache directives as a cache with target list
    ``targets`` (lower-case field names, most specific first) does: from the
    first targeted field that is present, a valid Structured Field
    Dictionary and not empty (RFC 9213 2.2), else from Cache-Control.
    """
    for name in targets:
        values = headers.get_all(name)
        if values:
            targeted = _targeted(name, values)
            if targeted is not None:
                return targeted
    values = headers.get_all(b"cache-control")
    if not values:
        return _EMPTY_RESPONSE
    key = tuple(values)
    known = _RESPONSE_DIRECTIVES.get(key)
    if known is None:
        known = _response_directives(_parse_values(values))
        _RESPONSE_DIRECTIVES.remember(key, known)
    return known


# Targeted field values already read -> their directives, or None when the
# field is invalid or empty (bounded, as for Cache-Control).
_TARGETED = memo.table("cache.targeted-directives", 1024)


def _targeted(name: bytes, values: list[bytes]) -> ResponseDirectives | None:
    """The directives of targeted field ``name``, or None if it is to be ignored."""
    key = (name, *values)
    if key in _TARGETED:
        return _TARGETED[key]
    d = targeted_directives(values)
    known = None if not d else replace(_response_directives(d), target=name)
    _TARGETED.remember(key, known)
    return known


def targeted_directives(values: list[bytes]) -> dict[bytes, bytes | None | _Invalid] | None:
    """
    The directives of a targeted field's lines ``values`` in the shape
    `parse_directives` gives, or None when the field is not a valid
    Structured Field Dictionary (RFC 9213 2.1: then it is ignored).

    Members map back to Cache-Control arguments (RFC 9213 2.1): Boolean
    true is a directive without argument, an Integer or a Token its text, a
    String its content; parameters are ignored.  A value no cache directive
    can have (a Decimal, ``?0``, a Byte Sequence, an Inner List) is not
    consumed (2.1 says it SHOULD NOT be) and counts as malformed: the
    directive is present with `INVALID`, so ``max-age=1.5`` makes the
    response stale and ``no-store=?0`` still forbids storing, rather than
    either being read more leniently than it was written.
    """
    try:
        members = parse_dictionary(field_text(values))
    except StructuredFieldError:
        return None
    out: dict[bytes, bytes | None | _Invalid] = {}
    for key, member in members.items():
        arg: bytes | None | _Invalid
        value = None if isinstance(member, InnerList) else member.value
        if value is True:
            arg = None
        elif isinstance(value, bool) or value is None or isinstance(value, (Decimal, bytes)):
            arg = INVALID
        elif isinstance(value, int):
            arg = b"%d" % value
        else:
            arg = value.encode("ascii")
        out[key.encode("ascii")] = arg
    return out


def _response_directives(d: dict[bytes, bytes | None | _Invalid]) -> ResponseDirectives:
    if not d:
        return _EMPTY_RESPONSE
    no_cache_fields = _field_names(d[b"no-cache"]) if b"no-cache" in d else None
    private_fields = _field_names(d[b"private"]) if b"private" in d else None
    return ResponseDirectives(
        max_age=_lifetime(d[b"max-age"]) if b"max-age" in d else None,
        s_maxage=_lifetime(d[b"s-maxage"]) if b"s-maxage" in d else None,
        no_store=b"no-store" in d,
        no_cache=b"no-cache" in d and no_cache_fields is None,
        no_cache_fields=no_cache_fields or frozenset(),
        private=b"private" in d and private_fields is None,
        private_fields=private_fields or frozenset(),
        public=b"public" in d,
        must_revalidate=b"must-revalidate" in d,
        proxy_revalidate=b"proxy-revalidate" in d,
        must_understand=b"must-understand" in d,
        no_transform=b"no-transform" in d,
        immutable=b"immutable" in d,
        stale_while_revalidate=delta_seconds(d.get(b"stale-while-revalidate")),
        stale_if_error=delta_seconds(d.get(b"stale-if-error")),
    )


_EMPTY_RESPONSE = ResponseDirectives()


@dataclass(frozen=True, slots=True)
class RequestDirectives:
    """
    The Cache-Control of a request (RFC 9111 5.2.1), plus ``Pragma: no-cache``
    when the request has no Cache-Control (section 5.4).

    Malformed arguments make a directive count as absent.  ``max_stale`` is
    `ANY_STALENESS` when given without an argument.
    """

    max_age: int | None = None
    max_stale: float | None = None
    min_fresh: int | None = None
    no_cache: bool = False
    no_store: bool = False
    no_transform: bool = False
    only_if_cached: bool = False
    stale_if_error: int | None = None


_EMPTY_REQUEST = RequestDirectives()


def parse_request_directives(headers: Headers) -> RequestDirectives:
    """Read a request's Cache-Control (and Pragma)."""
    d = parse_directives(headers)
    if not d:
        if b"cache-control" not in headers and b"no-cache" in headers.tokens(b"pragma"):
            return RequestDirectives(no_cache=True)
        return _EMPTY_REQUEST
    max_stale: float | None = None
    if b"max-stale" in d:
        arg = d[b"max-stale"]
        max_stale = ANY_STALENESS if arg is None else delta_seconds(arg)
    return RequestDirectives(
        max_age=delta_seconds(d.get(b"max-age")),
        max_stale=max_stale,
        min_fresh=delta_seconds(d.get(b"min-fresh")),
        no_cache=b"no-cache" in d,
        no_store=b"no-store" in d,
        no_transform=b"no-transform" in d,
        only_if_cached=b"only-if-cached" in d,
        stale_if_error=delta_seconds(d.get(b"stale-if-error")),
    )
