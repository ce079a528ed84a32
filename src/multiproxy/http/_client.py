"""
The upstream side of the HTTP proxies: persistent connections and their pool.

An `UpstreamConnection` sends one request at a time over a connection to an
upstream and feeds the response to an `IResponseSink` as it arrives: the
sans-I/O `ClientConnection` frames the request, reads the response and
decides whether the connection is reused; this protocol joins it to the
transport, the timers and the pool.  The
`ConnectionPool` keeps idle connections per upstream key, bounded in number
and closed after an idle timeout.  `UpstreamFetcher` is the `IFetcher` that
puts the two together, and is what the forward and reverse proxies use when
nothing (such as a cache) stands in front of the upstream.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.balancing._backend import note_exchanged
from multiproxy.h2._client import H2Sessions, UpstreamStream
from multiproxy.http._exchange import ForwardedRequest, IBodyConsumer, IFetcher, IResponseSink
from multiproxy.http1._connection import ClientConnection
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    Limits,
    ResponseHead,
)
from multiproxy.pipeline._connect import UpstreamEndpoint
from multiproxy.pipeline._errors import ProtocolError, UpstreamError
from multiproxy.transport._deadline import Deadline
from multiproxy.transport._directwrite import no_delay, send_now
from multiproxy.transport._tls import tls_failure

log = Logger()


@implementer(IBodyConsumer)
class UpstreamConnection(Protocol):
    """One HTTP/1.1 connection to an upstream, carrying one request at a time."""

    def __init__(self, pool: ConnectionPool, key: object) -> None:
        self.pool = pool
        self.key = key
        self.requests = 0
        self.http = ClientConnection(pool.limits)
        self._request: ForwardedRequest | None = None
        self._sink: IResponseSink | None = None
        # This request's traffic, told to its record and upstream when it ends.
        self._sent = self._received = self._status = 0
        self._on_stale: Callable[[], None] | None = None
        self._got_response = False
        self._deadline = Deadline(pool.reactor, self._timed_out)
        self._sent_at = 0.0
        self.lost = False

    def connectionMade(self) -> None:
        no_delay(self.transport)

    # -- driving a request ----------------------------------------------

    def send(
        self, request: ForwardedRequest, sink: IResponseSink,
        on_stale: Callable[[], None] | None = None,
    ) -> None:
        """
        Send ``request`` and stream its response to ``sink``.

        ``on_stale`` is called instead of failing the sink when a reused
        connection turns out to have been closed by the upstream before any
        byte of the response came back, and the request is safe to replay.
        """
        self.requests += 1
        self._request = request
        self._sink = sink
        # Whether a replay is safe (request.idempotent) is asked only if it comes to that.
        self._on_stale = on_stale if self.requests > 1 else None
        self._got_response = False
        self._sent_at = self.pool.reactor.seconds()
        body = request.body
        if body is None:
            head_bytes = self.http.send(request.head, None, None)
        else:
            head_bytes = self.http.send(request.head, body.chunked, body.length)
        rest = send_now(self.transport, head_bytes)
        if rest:
            self.transport.write(rest)
        self._sent, self._received, self._status = len(head_bytes), 0, 0
        self._deadline.set("response", self.pool.response_timeout)
        if body is not None:
            body.attach(self)

    def body_data(self, data: bytes) -> None:
        data = self.http.body_bytes(data)
        self.transport.write(data)
        self._sent += len(data)

    def body_end(self) -> None:
        request = self._request
        end = self.http.body_end(request.body.trailers if request is not None else None)
        if end:
            self.transport.write(end)
            self._sent += len(end)
        if request is None:
            self._maybe_idle()

    def abandon(self) -> None:
        """The client no longer wants the response: drop the connection."""
        self._sink = None
        request, self._request = self._request, None
        if request is not None:
            # The client left; that says nothing against the upstream.
            self._settle(request, True)
        self.transport.abortConnection()

    # -- receiving -------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._sink is None:
            # Bytes with no request outstanding: the upstream is broken.
            self.transport.abortConnection()
            return
        self._got_response = True
        self._received += len(data)
        self.http.reader.feed(data)
        self._pump()

    def _pump(self) -> None:
        http = self.http
        while self._sink is not None:
            try:
                event = http.next_event()
            except ProtocolError as e:
                self._fail(UpstreamError(f"invalid response from upstream: {e}", 502,
                                           "invalid-response"))
                self.transport.abortConnection()
                return
            kind = type(event)
            if kind is Data:
                self._sink.data(event.data)
            elif kind is ResponseHead:
                if event.status < 200:
                    self._sink.head(event, None)
                    continue
                self._status = event.status
                self._sink.head(event, self.transport)
            elif kind is EndOfMessage:
                self._finish_response(event.trailers)
                return
            elif event is NEED_DATA:
                if http.in_body:
                    # The bytes so far end mid-response (a response read
                    # whole never needs this): the rest must keep coming.
                    self._deadline.set("body", self.pool.idle_timeout)
                self._sink.flush()
                return
            elif event is CLOSED:
                # The upstream closed before any byte of a response;
                # connectionLost reports it.
                return
            elif event is PAUSED:  # a 2xx to CONNECT: no more HTTP here
                return

    def _finish_response(self, trailers: Headers | None = None) -> None:
        sink, request = self._sink, self._request
        self._sink = None
        self._deadline.clear()
        self._request = None
        self.http.response_over()
        if request is not None:
            self._settle(request, True)
        if trailers:
            sink.end(trailers)
        else:
            sink.end()
        self._maybe_idle()

    def _maybe_idle(self) -> None:
        if self._request is not None or self._sink is not None or self.lost:
            return
        if self.http.reusable:
            self.pool.release(self)
        else:
            self.transport.loseConnection()

    def _fail(self, err: UpstreamError) -> None:
        sink, request = self._sink, self._request
        self._sink = None
        self._request = None
        self.http.failed()
        self._deadline.clear()
        if request is not None:
            if request.body is not None:
                request.body.detach()
            self._settle(request, False)
        if sink is not None:
            sink.fail(err)

    def _settle(self, request: ForwardedRequest, ok: bool) -> None:
        """
        ``request`` is over on this connection: its upstream hears how it
        went (health, latency) and, with its record, the bytes that really
        crossed (heads and chunk framing included) and the status.
        """
        upstream = request.upstream
        upstream.finished(ok, self.pool.reactor.seconds() - self._sent_at)
        note_exchanged(upstream, self._status, self._sent, self._received)
        record = request.record
        if record is not None:
            record.bytes_to_upstream += self._sent
            record.bytes_from_upstream += self._received

    # -- timers ----------------------------------------------------------

    def _timed_out(self, kind: str) -> None:
        if kind == "pooled":
            self.transport.loseConnection()
        elif kind == "response":
            seconds = self.pool.response_timeout
            self._fail(UpstreamError(f"upstream sent no response within {seconds:g} s", 504,
                                     "response-timeout"))
            self.transport.abortConnection()
        else:
            seconds = self.pool.idle_timeout
            self._fail(UpstreamError(f"upstream stalled for {seconds:g} s mid-response", 504,
                                     "stalled"))
            self.transport.abortConnection()

    # -- end of the connection --------------------------------------------

    def connectionLost(self, reason: Failure = None) -> None:
        self.lost = True
        self._deadline.cancel()
        self.pool.forget(self)
        if self._sink is None:
            return
        if (not self._got_response and self._on_stale is not None
                and self._request is not None and self._request.idempotent):
            retry, self._on_stale, self._sink, self._request = self._on_stale, None, None, None
            retry()
            return
        self.http.reader.feed_eof()
        self._pump()
        if self._sink is not None:
            if self._got_response:
                message = "upstream closed the connection mid-response"
            else:
                message = "upstream closed the connection without answering"
            kind = "closed"
            tls = tls_failure(reason)
            if tls is not None:
                message = f"TLS handshake with the upstream failed: {tls}"
                kind = "tls"
            self._fail(UpstreamError(message, 502, kind))


class _ConnectionFactory(Factory):
    noisy = False

    def __init__(self, pool: ConnectionPool, key: object) -> None:
        self.pool = pool
        self.key = key

    def buildProtocol(self, addr):
        return UpstreamConnection(self.pool, self.key)


class ConnectionPool:
    """
    Persistent upstream connections, kept idle per upstream key for reuse.

    At most ``max_idle_per_key`` idle connections are kept per key and
    ``max_idle_total`` in all (a forward proxy meets many origins: past the
    total, the connection idle the longest is closed to make room); each is
    closed after ``keepalive_timeout`` seconds unused.
    """

    def __init__(
        self,
        reactor,
        limits: Limits,
        *,
        connect_timeout: float = 10.0,
        response_timeout: float | None = 60.0,
        idle_timeout: float | None = 60.0,
        keepalive_timeout: float = 30.0,
        max_idle_per_key: int = 256,
        max_idle_total: int = 1024,
    ) -> None:
        self.reactor = reactor
        self.limits = limits
        self.connect_timeout = connect_timeout
        self.response_timeout = response_timeout
        self.idle_timeout = idle_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_idle_per_key = max_idle_per_key
        self.max_idle_total = max_idle_total
        self._idle: dict[object, list[UpstreamConnection]] = {}
        self._idle_order: dict[UpstreamConnection, None] = {}  # every idle one, oldest first
        self.h2 = H2Sessions(self)  # connections to HTTP/2 upstreams, multiplexed

    @classmethod
    def from_timeouts(cls, reactor, limits: Limits, timeouts) -> ConnectionPool:
        """A pool using the upstream-side values of an HTTP proxy's `Timeouts`."""
        return cls(
            reactor,
            limits,
            connect_timeout=timeouts.connect,
            response_timeout=timeouts.response,
            idle_timeout=timeouts.upstream_idle,
        )

    def idle_count(self, key: object | None = None) -> int:
        """How many idle connections are kept (for one key, or in all)."""
        if key is not None:
            return len(self._idle.get(key, ()))
        return len(self._idle_order)

    def take_idle(self, upstream) -> UpstreamConnection | UpstreamStream | None:
        """
        An idle connection to ``upstream``, if one is kept (most recently
        used first); for an HTTP/2 upstream, a stream on an open connection.
        """
        if getattr(upstream, "http2", False):
            return self.h2.ready_stream(upstream)
        idle = self._idle.get(upstream.key)
        while idle:
            conn = idle.pop()
            self._idle_order.pop(conn, None)
            if not conn.lost:
                conn._deadline.clear()
                return conn
        return None

    def acquire(self, upstream) -> defer.Deferred[UpstreamConnection]:
        """An idle connection to ``upstream`` if one is kept, else a new one."""
        conn = self.take_idle(upstream)
        if conn is not None:
            return defer.succeed(conn)
        return self.connect(upstream)

    def connect(self, upstream) -> defer.Deferred[UpstreamConnection | UpstreamStream]:
        """
        A new connection to ``upstream``, failing with `UpstreamError`; for an
        HTTP/2 upstream, a stream on a connection with room (new if none has).
        """
        if getattr(upstream, "http2", False):
            return self.h2.stream(upstream)
        endpoint = UpstreamEndpoint(self.reactor, upstream, self.connect_timeout)
        return endpoint.connect(_ConnectionFactory(self, upstream.key))

    def release(self, conn: UpstreamConnection | UpstreamStream) -> None:
        """``conn`` finished a request and may be reused."""
        if type(conn) is UpstreamStream:
            conn.session.release(conn)
            return
        idle = self._idle.get(conn.key)
        if idle is not None and len(idle) >= self.max_idle_per_key:
            conn.transport.loseConnection()
            return
        if len(self._idle_order) >= self.max_idle_total:
            oldest = next(iter(self._idle_order))
            self.forget(oldest)
            oldest.transport.loseConnection()
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_order[conn] = None
        conn._deadline.set("pooled", self.keepalive_timeout)

    def forget(self, conn: UpstreamConnection) -> None:
        """``conn`` is closed: it must never be handed out again."""
        self._idle_order.pop(conn, None)
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]

    def close_idle(self) -> None:
        """Close every idle connection (at shutdown)."""
        self.h2.close_idle()
        for idle in list(self._idle.values()):
            for conn in list(idle):
                conn.transport.loseConnection()
        self._idle.clear()
        self._idle_order.clear()


@implementer(IFetcher)
class UpstreamFetcher:
    """Fetches responses from the request's upstream over pooled connections."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

    def fetch(self, request: ForwardedRequest, sink: IResponseSink) -> Callable[[], None]:
        """Start the exchange; returns a callable that abandons it."""
        state = _Fetch(self, request, sink)
        state.start(fresh=False)
        return state.abandon


class _Fetch:
    """One request's journey through the pool (with one replay on a stale connection)."""

    def __init__(self, fetcher: UpstreamFetcher, request: ForwardedRequest, sink) -> None:
        self.fetcher = fetcher
        self.request = request
        self.sink = sink
        self.connection: UpstreamConnection | None = None
        self.abandoned = False
        self.pending: defer.Deferred | None = None

    def start(self, fresh: bool) -> None:
        pool = self.fetcher.pool
        upstream = self.request.upstream
        upstream.started()
        if not fresh:
            conn = pool.take_idle(upstream)
            if conn is not None:
                self._connected(conn)
                return
        self.pending = pool.connect(upstream)
        self.pending.addCallbacks(self._connected, self._failed)

    def _connected(self, conn: UpstreamConnection) -> None:
        self.pending = None
        if self.abandoned:
            self.request.upstream.finished(True, 0.0)
            self.fetcher.pool.release(conn)
            return
        self.connection = conn
        conn.send(self.request, self.sink, on_stale=self._stale)

    def _stale(self) -> None:
        self.request.upstream.finished(True, 0.0)
        if not self.abandoned:
            self.start(fresh=True)

    def _failed(self, failure: Failure) -> None:
        self.pending = None
        if self.abandoned:
            # Cancelled because the client left: not the upstream's failure.
            self.request.upstream.finished(True, 0.0)
            return
        self.request.upstream.finished(False, 0.0)
        if failure.check(UpstreamError):
            self.sink.fail(failure.value)
        else:
            log.failure("unexpected error connecting upstream", failure)
            self.sink.fail(UpstreamError("internal error connecting upstream", 502))

    def abandon(self) -> None:
        self.abandoned = True
        if self.pending is not None:
            self.pending.cancel()
        elif self.connection is not None and self.connection._sink is not None:
            self.connection.abandon()
