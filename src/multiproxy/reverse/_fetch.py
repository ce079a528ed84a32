"""
The reverse proxy's requests: aimed at a backend of a pool, failing over
within it (the rules are `multiproxy.http._failover`'s); when the whole pool
is down the client is told 503 with ``Retry-After``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from multiproxy.http._exchange import ForwardedRequest
from multiproxy.http1._parser import RequestHead
from multiproxy.pipeline._errors import PoolUnavailable, UpstreamError

__all__ = ["ReverseRequest", "backend_authority"]


@dataclass(frozen=True, slots=True)
class ReverseRequest(ForwardedRequest):
    """
    A `ForwardedRequest` that knows where else it may go.

    @ivar pool: the `BackendPool` to fail over in (its ``choose`` and
        ``retry_after``).
    @ivar rewrite_host: the route sends the backend's own ``host[:port]`` as
        Host, so a retry on another backend rewrites it again.
    """

    pool: Any = None
    rewrite_host: bool = False

    def to(self, backend: Any) -> ReverseRequest:
        """The same request aimed at ``backend``."""
        if backend is self.upstream:
            return self
        head = self.head
        if self.rewrite_host:
            headers = head.headers.copy()
            headers.set(b"host", backend_authority(backend))
            head = RequestHead(head.method, head.target, head.version, headers)
        return replace(self, upstream=backend, head=head)

    def unavailable(self, last: UpstreamError | None) -> UpstreamError:
        """503 with ``Retry-After``: no backend of the pool is up, or none could be reached."""
        pool = self.pool
        if pool is None:
            return ForwardedRequest.unavailable(self, last)
        name = getattr(pool, "name", "?")
        if last is None:
            return PoolUnavailable(f"no healthy backend in pool {name}", pool.retry_after(),
                                   "no-backend")
        return PoolUnavailable(f"no backend of pool {name} could be reached (last: {last})",
                               pool.retry_after(), "connect-failed")


def backend_authority(backend: Any) -> bytes:
    """``host[:port]`` of a `multiproxy.balancing.Backend`, as a Host field value."""
    tls = getattr(backend, "tls", None)
    host = (tls.server_name if tls is not None and tls.server_name else None) or backend.host
    if ":" in host:
        host = f"[{host}]"
    default = 443 if tls is not None else 80
    port = backend.port
    return (host if port == default else f"{host}:{port}").encode("idna")
