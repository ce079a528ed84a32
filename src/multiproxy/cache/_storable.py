"""
May a shared cache store this response, and which of its fields
(RFC 9111 section 3, 3.1 and 3.5)?
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from multiproxy.cache._directives import RequestDirectives, ResponseDirectives
from multiproxy.cache._freshness import HEURISTIC_STATUSES
from multiproxy.cache._keys import vary_names

if TYPE_CHECKING:
    from multiproxy.http._headers import Headers

#: Request methods whose responses this cache stores.
STORABLE_METHODS = frozenset({b"GET"})

#: Final status codes this cache implements all caching behaviour for, for
#: ``must-understand`` (RFC 9111 5.2.2.3).  206 and 304 are never stored.
UNDERSTOOD_STATUSES = frozenset(
    {
        200,
        203,
        204,
        300,
        301,
        302,
        303,
        307,
        308,
        400,
        403,
        404,
        405,
        410,
        414,
        421,
        451,
        500,
        501,
        502,
        503,
        504,
    }
)

# Never stored: connection-specific fields (RFC 9110 7.6.1), the proxy
# authentication fields (RFC 9111 3.1), framing (the stored body is
# decoded and re-framed on the way out) and Age (recomputed on every use).
_NOT_STORED = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"proxy-authenticate",
        b"proxy-authentication-info",
        b"proxy-authorization",
        b"content-length",
        b"age",
    }
)


def refusal(
    method: bytes,
    status: int,
    request_headers: Headers,
    request_cc: RequestDirectives,
    response_headers: Headers,
    response_cc: ResponseDirectives,
) -> str | None:
    """
    Why a shared cache must not store this response, or None if it may.

    The reason is a short word for logs: ``method``, ``status``,
    ``must-understand``, ``no-store``, ``private``, ``authorization``,
    ``vary`` (``Vary: *``, which could never match) or ``no-freshness``.
    """
    if method not in STORABLE_METHODS:
        return "method"
    if status < 200 or status in (206, 304) or status > 999:
        return "status"
    if response_cc.must_understand:
        # RFC 9111 5.2.2.3: with must-understand, no-store is ignored when
        # the status code is understood.
        if status not in UNDERSTOOD_STATUSES:
            return "must-understand"
    elif response_cc.no_store:
        return "no-store"
    if request_cc.no_store:
        return "no-store"
    if response_cc.private:
        return "private"
    if b"authorization" in request_headers and not (
        response_cc.public or response_cc.must_revalidate or response_cc.s_maxage is not None
    ):
        return "authorization"
    if vary_names(response_headers) is None:
        return "vary"
    if not (
        response_cc.public
        or response_cc.max_age is not None
        or response_cc.s_maxage is not None
        or b"expires" in response_headers
        or status in HEURISTIC_STATUSES
    ):
        return "no-freshness"
    return None


def update_refusal(
    status: int,
    request_headers: Headers,
    request_cc: RequestDirectives,
    merged_cc: ResponseDirectives,
) -> str | None:
    """
    Why a stored response must not take an update (from a 304 or a 200 to
    HEAD; RFC 9111 3.2, 4.3.4, 4.3.5), or None if it may.

    ``request``: the validating request forbids keeping anything of its
    response (``no-store``, 5.2.1.5; ``Authorization`` without a directive
    allowing shared caching, 3.5), so the stored response stays as it was.
    ``response``: with the update's fields (``merged_cc``) the response is
    one a shared cache must not store (``no-store``, ``private``, or
    ``must-understand`` with a status it does not implement; 3), so it
    must be removed.
    """
    if request_cc.no_store or (
        b"authorization" in request_headers
        and not (merged_cc.public or merged_cc.must_revalidate or merged_cc.s_maxage is not None)
    ):
        return "request"
    if merged_cc.must_understand:
        if status not in UNDERSTOOD_STATUSES:
            return "response"
    elif merged_cc.no_store:
        return "response"
    if merged_cc.private:
        return "response"
    return None


def stored_fields(headers: Headers, cc: ResponseDirectives) -> tuple[tuple[bytes, bytes], ...]:
    """
    The fields of a response as stored: without connection-specific and
    proxy-authentication fields, framing, Age, and the fields a qualified
    ``no-cache`` or ``private`` names (RFC 9111 3.1).
    """
    drop = set(_NOT_STORED)
    drop.update(headers.tokens(b"connection"))
    drop.update(cc.no_cache_fields)
    drop.update(cc.private_fields)
    return tuple(headers.without(drop))


def is_dropped_on_update(name: bytes) -> bool:
    """True for fields a 304 or HEAD response must not copy into a stored response (3.2)."""
    return name in _NOT_STORED or name == b"content-range"
