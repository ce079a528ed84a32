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
    from multiproxy.http1._headers import Headers

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
    why = _directives_forbid(status, response_cc)
    if why is not None:
        return why
    if request_cc.no_store:
        return "no-store"
    if response_cc.private:
        return "private"
    if _unshared_authorization(request_headers, response_cc):
        return "authorization"
    if vary_names(response_headers) is None:
        return "vary"
    if not (
        response_cc.public
        or response_cc.max_age is not None
        or response_cc.s_maxage is not None
        or (b"expires" in response_headers and response_cc.target is None)
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
    if request_cc.no_store or _unshared_authorization(request_headers, merged_cc):
        return "request"
    if merged_cc.private or _directives_forbid(status, merged_cc) is not None:
        return "response"
    return None


def _directives_forbid(status: int, cc: ResponseDirectives) -> str | None:
    """``must-understand`` or ``no-store`` if the response's own directives forbid storing it."""
    if cc.must_understand:
        # RFC 9111 5.2.2.3: with must-understand, no-store is ignored when
        # the status code is understood.
        return None if status in UNDERSTOOD_STATUSES else "must-understand"
    return "no-store" if cc.no_store else None


def _unshared_authorization(request_headers: Headers, cc: ResponseDirectives) -> bool:
    """RFC 9111 3.5: a response to a request with Authorization is shared only if it says so."""
    return b"authorization" in request_headers and not (
        cc.public or cc.must_revalidate or cc.s_maxage is not None
    )


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
