"""
The status page's own listener: GET ``/`` (HTML), ``/status.json`` and
``/metrics`` (Prometheus), served by the shared HTTP server protocol on an
endpoint apart from the proxy's, so it is never reachable through a route.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from multiproxy.http._headers import Headers
from multiproxy.http._server import Exchange, HTTPProxyFactory, HTTPServerProtocol, Timeouts
from multiproxy.reverse._status import StatusSnapshot, pool_status, status_page


class StatusProtocol(HTTPServerProtocol):
    """Answers status requests from the current snapshot; forwards nothing."""

    factory: StatusSite

    def handle(self, exchange: Exchange) -> None:
        head = exchange.request
        if head.method not in (b"GET", b"HEAD"):
            exchange.respond(405, Headers([(b"Allow", b"GET, HEAD")]),
                             b"405 Method Not Allowed: the status page is read-only\n")
            return
        page = status_page(self.factory.snapshot(), head.target)
        exchange.respond(page.status, Headers([
            (b"Content-Type", page.content_type),
            (b"Cache-Control", b"no-store"),
        ]), page.body)


class StatusSite(HTTPProxyFactory):
    """
    The factory for a status listener.

    @param pools: a callable returning the `BackendPool`s to show (called
        per request, so reloaded configurations show up).
    """

    protocol = StatusProtocol

    def __init__(self, reactor: Any, name: str, pools: Callable[[], Sequence[Any]],
                 started_at: float | None = None) -> None:
        super().__init__(
            reactor, name=f"{name}-status", fetcher=None,  # type: ignore[arg-type]
            timeouts=Timeouts(header=10.0, keepalive=10.0, client_idle=10.0),
            via=None,
        )
        self.proxy_name = name
        self.pools = pools
        self.started_at = time.time() if started_at is None else started_at

    def snapshot(self) -> StatusSnapshot:
        """The pools as they are now."""
        return StatusSnapshot(
            proxy=self.proxy_name,
            pools=tuple(pool_status(p) for p in self.pools()),
            taken_at=time.time(),
            started_at=self.started_at,
        )
