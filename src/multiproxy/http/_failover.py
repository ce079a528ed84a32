"""
The upstream side with failover: pooled connections to the upstreams a
request may go to, tried one after another.

`BalancingFetcher` is an `IFetcher` (so a cache can stand in front of it).
A request may carry a ``pool``: the `IUpstreamChooser` of the upstreams it
may go to (a reverse proxy's `BackendPool`, a forward proxy's parent
proxies).  It sends the request to the upstream chosen by the protocol and,
when that goes wrong before any response head:

- a connect that fails (refused, unreachable, timed out) is retried on
  another upstream of the pool, for any method, since nothing was sent;
- an idempotent request without a body (RFC 9110 9.2.2) is retried once, on
  another upstream when there is one, when the connection ends or answers
  garbage before a response head; a request with a non-idempotent method or a
  body is never replayed: the client gets 502;
- an upstream that does not answer in time gives 504, and is not retried
  (the request may still be running there).

Each attempt aims the request at its upstream with ``request.to(upstream)``
(a reverse proxy rewrites Host, a forward proxy the target form for a
parent).  When every upstream failed to connect, or a request comes without
an upstream because the pool has none available (a route with the cache on
lets its requests through, as the cache may answer them), the sink is told
``request.unavailable(last_error)``: for a reverse proxy's pool a
`PoolUnavailable` (503 with ``Retry-After``, unless a cache in front serves a
stored response instead).  A reused keep-alive connection that the upstream
had closed is replaced by a fresh one to the same upstream (that race is not
a failure).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.balancing._backend import note_connect_failed, note_retried
from multiproxy.http._client import ConnectionPool, UpstreamConnection
from multiproxy.http._exchange import ForwardedRequest, IFetcher, IResponseSink
from multiproxy.http1._parser import ResponseHead
from multiproxy.pipeline._attempts import Attempts
from multiproxy.pipeline._errors import UpstreamError

log = Logger()


def _nothing() -> None:
    pass


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
            upstream = delivery.attempts.first()
            if upstream is None:
                sink.fail(request.unavailable(None))
                return _nothing
        delivery.start(upstream, fresh=False)
        return delivery.abandon


class _Delivery:
    """One request's attempts, backend after backend."""

    def __init__(self, fetcher: BalancingFetcher, request: ForwardedRequest, sink) -> None:
        self.fetcher = fetcher
        self.request = request
        self.sink = sink
        self.attempts = Attempts(getattr(request, "pool", None), request.intent,
                                 fetcher.max_attempts, replayable=request.idempotent)
        self.abandoned = False
        self.pending: defer.Deferred | None = None
        self.connection: UpstreamConnection | None = None
        self.answering = False  # a connection is working on the request
        self.last_error: UpstreamError | None = None

    # -- attempts ---------------------------------------------------------

    def start(self, upstream: Any, fresh: bool) -> None:
        request = self.request = self.request.to(upstream)
        if request.record is not None:
            request.record.upstream = upstream.name  # the log names the backend that answered
        self.attempts.begin(upstream)
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
            self.attempts.uncount()
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
        following = self.attempts.after_failure()
        if following is not None:
            log.info("backend {name}: {error}; trying {next}", name=upstream.name,
                     error=str(error), next=following.name)
            note_retried(upstream, following)
            self.start(following, fresh=False)
            return
        self._give_up(error)

    def _give_up(self, error: UpstreamError) -> None:
        # Every upstream we could try failed to connect.  A failure, not a
        # response, so a cache in front knows the origin was not reached (and
        # may serve stale, RFC 9111 4.2.4).
        self.sink.fail(self.request.unavailable(error))

    # -- outcomes of a sent request ----------------------------------------

    def failed_before_head(self, error: UpstreamError) -> bool:
        """
        The connection failed before a response head: replay if allowed.
        Returns True when a replay was started (the sink is not told).
        """
        self.answering = False
        request = self.request
        if self.abandoned:
            return False
        following = self.attempts.replay(request.upstream, error.status)
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

    def end(self, trailers: Any = None) -> None:
        self.delivery.answering = False
        if trailers:
            self.delivery.sink.end(trailers)
        else:
            self.delivery.sink.end()

    def flush(self) -> None:
        self.delivery.sink.flush()

    def fail(self, error: UpstreamError) -> None:
        if not self.responded and self.delivery.failed_before_head(error):
            return
        self.delivery.answering = False
        self.delivery.sink.fail(error)
