"""
Invalidation after unsafe requests (RFC 9111 section 4.4).

A non-error response (2xx or 3xx) to a request whose method is not known to
be safe invalidates the target URI, and the URIs in Location and
Content-Location when they are on the same origin (a response must not be
able to evict another site's entries).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from multiproxy.cache._keys import cache_key

if TYPE_CHECKING:
    from multiproxy.http1._headers import Headers

#: Methods RFC 9110 9.2.1 defines as safe; every other method invalidates.
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


def _origin(url: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if port is None:
        port = {"http": 80, "https": 443}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def invalidated_keys(method: bytes, url: bytes, status: int, headers: Headers) -> list[bytes]:
    """
    The cache keys a response with ``status`` and ``headers`` to a ``method``
    request for ``url`` invalidates (empty for safe methods and errors).
    """
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    keys = [cache_key(url)]
    base = url.decode("latin-1")
    origin = _origin(base)
    for name in (b"location", b"content-location"):
        value = headers.get(name)
        if not value:
            continue
        try:
            target = urljoin(base, value.strip(b" \t").decode("latin-1"))
        except ValueError:
            continue
        if origin is not None and _origin(target) == origin:
            key = cache_key(target.encode("latin-1"))
            if key not in keys:
                keys.append(key)
    return keys
