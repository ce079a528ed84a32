"""
The reverse proxy's upstream side: pooled connections to backends, with
failover.

`BalancingFetcher` is an `IFetcher` (so a cache can stand in front of it).
Given a `ReverseRequest` it sends the request to the backend chosen by the
protocol and, when that goes wrong before any response head:

- a connect that fails (refused, unreachable, timed out) is retried on
  another backend of the same pool, for any method, since nothing was sent;
- an idempotent request without a body (RFC 9110 9.2.2) is retried once, on
  another backend when there is one, when the connection ends or answers
  garbage before a response head; a request with a non-idempotent method or a
  body is never replayed: the client gets 502;
- a backend that does not answer in time gives 504, and is not retried
  (the request may still be running there).

When every backend of the pool failed to connect, or a request comes without
a backend because the pool has no healthy one (a route with the cache on
lets its requests through, as the cache may answer them), the sink is told
`PoolUnavailable`: the client gets 503 with ``Retry-After``, unless a
cache in front serves a stored response instead.  A reused keep-alive connection that the backend had closed
is replaced by a fresh one to the same backend (that race is not a failure).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy._errors import PoolUnavailable, UpstreamError
from multiproxy.balancing._backend import note_connect_failed, note_retried
from multiproxy.http._client import ConnectionPool, UpstreamConnection
from multiproxy.http._exchange import ForwardedRequest, IFetcher, IResponseSink
from multiproxy.http._parser import RequestHead, ResponseHead

log = Logger()


def _nothing() -> None:
    pass


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


def backend_authority(backend: Any) -> bytes:
    """``host[:port]`` of a `multiproxy.balancing.Backend`, as a Host field value."""
    tls = getattr(backend, "tls", None)
    host = (tls.server_name if tls is not None and tls.server_name else None) or backend.host
    if ":" in host:
        host = f"[{host}]"
    default = 443 if tls is not None else 80
    port = backend.port
    return (host if port == default else f"{host}:{port}").encode("idna")


@implementer(IFetcher)
class BalancingFetcher:
    """
    Fetches from backends over a `ConnectionPool`, failing over within the
    request's pool (see the module docstring for the rules).

    @param max_attempts: connect attempts per request, across backends.
    """

    def __init__(self, pool: ConnectionPool, max_attempts: int = 3) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.pool = pool
        self.max_attempts = max_attempts

    def fetch(self, request: ForwardedRequest, sink: IResponseSink) -> Callable[[], None]:
        """
        Start the exchange; returns a callable that abandons it.  A request
        without an upstream is given one from its pool, if it has a healthy one.
        """
        delivery = _Delivery(self, request, sink)
        upstream = request.upstream
        if upstream is None:
            upstream = delivery._next_backend()
            if upstream is None:
                pool = getattr(request, "pool", None)
                name = getattr(pool, "name", "?")
                retry = pool.retry_after() if pool is not None else 1
                sink.fail(PoolUnavailable(f"no healthy backend in pool {name}", retry,
                                          "no-backend"))
                return _nothing
        delivery.start(upstream, fresh=False)
        return delivery.abandon


class _Delivery:
    """One request's attempts, backend after backend."""

    def __init__(self, fetcher: BalancingFetcher, request: ForwardedRequest, sink) -> None:
        self.fetcher = fetcher
        self.request = request
        self.sink = sink
        self.tried: set[Any] = set()
        self.attempts = 0
        self.replayed = False
        self.abandoned = False
        self.pending: defer.Deferred | None = None
        self.connection: UpstreamConnection | None = None
        self.answering = False  # a connection is working on the request
        self.last_error: UpstreamError | None = None

    # -- attempts ---------------------------------------------------------

    def start(self, upstream: Any, fresh: bool) -> None:
        request = self.request
        if isinstance(request, ReverseRequest):
            request = self.request = request.to(upstream)
        if request.record is not None:
            request.record.upstream = upstream.name  # the log names the backend that answered
        self.tried.add(upstream.key)
        self.attempts += 1
        upstream.started()
        pool = self.fetcher.pool
        if not fresh:
            conn = pool.take_idle(upstream)
            if conn is not None:
                self._connected(conn, upstream)
                return
        self.pending = pool.connect(upstream)
        self.pending.addCallbacks(self._connected, self._connect_failed,
                                  callbackArgs=(upstream,), errbackArgs=(upstream,))

    def _connected(self, conn: UpstreamConnection, upstream: Any) -> None:
        self.pending = None
        if self.abandoned:
            upstream.finished(True, 0.0)
            self.fetcher.pool.release(conn)
            return
        self.connection = conn
        self.answering = True
        conn.send(self.request, _AttemptSink(self), on_stale=lambda: self._stale(upstream))

    def _stale(self, upstream: Any) -> None:
        # A kept-alive connection the backend had already closed: not its fault.
        self.answering = False
        upstream.finished(True, 0.0)
        if not self.abandoned:
            self.attempts -= 1
            self.start(upstream, fresh=True)

    def _connect_failed(self, failure: Failure, upstream: Any) -> None:
        self.pending = None
        if self.abandoned:
            # Cancelled because the client left: says nothing about the backend.
            upstream.finished(True, 0.0)
            return
        note_connect_failed(upstream)
        if not failure.check(UpstreamError):
            if not failure.check(defer.CancelledError):
                log.failure("unexpected error connecting to backend {name}", failure,
                            name=upstream.name)
            error = UpstreamError(f"internal error connecting to {upstream.name}", 502)
        else:
            error = failure.value
        self.last_error = error
        following = self._next_backend() if self.attempts < self.fetcher.max_attempts else None
        if following is not None:
            log.info("backend {name}: {error}; trying {next}", name=upstream.name,
                     error=str(error), next=following.name)
            note_retried(upstream, following)
            self.start(following, fresh=False)
            return
        self._give_up(error)

    def _next_backend(self) -> Any:
        pool = getattr(self.request, "pool", None)
        if pool is None:
            return None
        return pool.choose(self.request.intent, frozenset(self.tried))

    def _give_up(self, error: UpstreamError) -> None:
        pool = getattr(self.request, "pool", None)
        if pool is None:
            self.sink.fail(error)
            return
        # Every backend we could try failed to connect: the pool is down.  A
        # failure, not a 503 response, so a cache in front knows the origin
        # was not reached (and may serve stale, RFC 9111 4.2.4).
        name = getattr(pool, "name", "?")
        self.sink.fail(PoolUnavailable(
            f"no backend of pool {name} could be reached (last: {error})",
            pool.retry_after(), "connect-failed"))

    # -- outcomes of a sent request ----------------------------------------

    def failed_before_head(self, error: UpstreamError) -> bool:
        """
        The connection failed before a response head: replay if allowed.
        Returns True when a replay was started (the sink is not told).
        """
        self.answering = False
        request = self.request
        if (self.abandoned or self.replayed or error.status == 504
                or not request.idempotent):
            return False
        self.replayed = True
        following = self._next_backend() or _still_available(request)
        if following is None:
            return False
        log.info("replaying {method} on {name} after: {error}",
                 method=request.head.method.decode("latin-1"), name=following.name,
                 error=str(error))
        note_retried(request.upstream, following)
        self.start(following, fresh=True)
        return True

    def abandon(self) -> None:
        self.abandoned = True
        if self.pending is not None:
            self.pending.cancel()
        elif self.connection is not None and self.answering:
            self.answering = False
            # The connection will not report this request any more; the
            # client left, which says nothing against the backend.
            self.request.upstream.finished(True, 0.0)
            self.connection.abandon()


def _still_available(request: ForwardedRequest) -> Any:
    pool = getattr(request, "pool", None)
    if pool is None:
        return None
    return request.upstream if request.upstream in pool.healthy() else None


@implementer(IResponseSink)
class _AttemptSink:
    """The sink one attempt writes into: passes everything on, except a failure it can retry."""

    def __init__(self, delivery: _Delivery) -> None:
        self.delivery = delivery
        self.responded = False

    def head(self, response: ResponseHead, producer: Any) -> None:
        if response.status >= 200:
            self.responded = True
        self.delivery.sink.head(response, producer)

    def data(self, data: bytes) -> None:
        self.delivery.sink.data(data)

    def end(self) -> None:
        self.delivery.answering = False
        self.delivery.sink.end()

    def flush(self) -> None:
        self.delivery.sink.flush()

    def fail(self, error: UpstreamError) -> None:
        if not self.responded and self.delivery.failed_before_head(error):
            return
        self.delivery.answering = False
        self.delivery.sink.fail(error)
