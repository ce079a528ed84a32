"""
The cache as an `IFetcher`: the only Twisted-facing part of the cache.

`CachingFetcher` wraps another fetcher (the forward proxy's pool, or a
reverse proxy route's balancing fetcher).  For each request it asks
`SharedCache.plan` what to do, and then:

- answers from storage, streaming the stored body with a push producer so a
  slow client pauses the reading (and, for stale-while-revalidate, starts a
  background revalidation, one at a time per URL);
- or fetches through the wrapped fetcher, with conditional fields when it
  revalidates, and hands the response to `SharedCache.on_response`: the body
  is relayed to the client as it arrives and teed into the store's writer,
  so the first client never waits for the whole body;
- collapses concurrent misses for one URL: the first request fetches, the
  others wait on its `Flight` and are served from the same stream;
- serves stale when the origin fails and the response allows it.

The access log's ``cache`` column gets HIT, MISS, REVALIDATED or STALE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from multiproxy.cache._cache import Action, Answer, Plan, SharedCache
from multiproxy.cache._collapse import CollapsedForwarding, Flight
from multiproxy.cache._config import CacheConfig, make_store
from multiproxy.cache._interfaces import IBodyReader
from multiproxy.cache._keys import cache_key
from multiproxy.cache._store import CorruptEntry
from multiproxy.http._exchange import ForwardedRequest, IFetcher, IResponseSink
from multiproxy.http1._parser import RequestHead, ResponseHead
from multiproxy.pipeline._errors import UpstreamError

log = Logger()

_CHUNK = 65536
_ANSWER = Action.ANSWER  # an Enum member read from its class is slow in Python 3.11
_VERSION = b"HTTP/1.1"


def _nothing() -> None:
    pass


def _note(sink, outcome_x_cache: str) -> None:
    record = getattr(sink, "record", None)
    if record is not None:
        record.cache = outcome_x_cache


@implementer(IPushProducer)
class _AnswerPump:
    """Streams a stored body into a sink, pausing when the client is slow."""

    def __init__(self, reader: IBodyReader, sink: IResponseSink) -> None:
        self._reader = reader
        self._sink = sink
        self._paused = False
        self._done = False
        self._pumping = False

    def _pump(self) -> None:
        if self._pumping:
            return
        self._pumping = True
        try:
            while not self._paused and not self._done:
                try:
                    chunk = self._reader.read(_CHUNK)
                except (CorruptEntry, OSError) as e:
                    self._stop()
                    log.warn("cache: {error}", error=e)
                    self._sink.fail(UpstreamError("the cached copy is damaged", 502))
                    return
                if chunk is None:
                    # An asynchronous store's next chunk is on its way.
                    self._reader.wait(self._arrived)
                    self._sink.flush()
                    return
                if not chunk:
                    self._stop()
                    self._sink.end()
                    return
                self._sink.data(chunk)
            if not self._done:
                self._sink.flush()  # paused: send what the sink holds
        finally:
            self._pumping = False

    def _arrived(self) -> None:
        if not self._paused and not self._done:
            self._pump()

    def _stop(self) -> None:
        self._done = True
        self._reader.close()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if not self._done:
            self._pump()

    def stopProducing(self) -> None:
        self._stop()


def _read_small(reader: IBodyReader) -> bytes:
    """All of a body of at most `_CHUNK` bytes (usually one read)."""
    body = reader.read(_CHUNK)
    if len(body) == reader.length:
        return body
    parts = [body]
    while body:
        body = reader.read(_CHUNK)
        parts.append(body)
    return b"".join(parts)


def _serve(answer: Answer, sink: IResponseSink) -> Callable[[], None]:
    """
    Send ``answer`` to ``sink``; returns what stops it (the client went away).

    A body that fits in one piece is read before the head is sent and goes
    out in one `data`: there is nothing to pause, and a damaged stored copy
    is answered 502 rather than sent truncated.  A larger body is streamed
    by an `_AnswerPump`, the client transport's producer.
    """
    _note(sink, answer.outcome.x_cache)
    reader = answer.open_body()
    head = ResponseHead(_VERSION, answer.status, answer.reason, answer.headers)
    if reader is None:
        sink.head(head, None)
        sink.end()
        return _nothing
    ready = getattr(reader, "ready", None)
    if reader.length <= _CHUNK and (ready is None or ready()):
        try:
            body = _read_small(reader)
        except (CorruptEntry, OSError) as e:
            reader.close()
            log.warn("cache: {error}", error=e)
            sink.fail(UpstreamError("the cached copy is damaged", 502))
            return _nothing
        reader.close()
        sink.head(head, None)
        if body:
            sink.data(body)
        sink.end()
        return _nothing
    pump = _AnswerPump(reader, sink)
    sink.head(head, pump)
    pump._pump()
    return pump.stopProducing


@implementer(IPushProducer)
class _UpstreamProducer:
    """
    The upstream transport as the leader's client sees it: pausing passes
    through, but the client going away does not stop a fetch that collapsed
    waiters or the store still need (`_UpstreamSink.client_gone` decides).
    """

    def __init__(self, producer, owner: _UpstreamSink) -> None:
        self._producer = producer
        self._owner = owner
        self.paused = False

    def pauseProducing(self) -> None:
        if not self.paused:
            self.paused = True
            self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        if self.paused:
            self.paused = False
            self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._owner.client_gone()


@implementer(IResponseSink)
class _UpstreamSink:
    """
    Receives the wrapped fetcher's response for one planned request and
    turns it into what the client sees, what is stored and what collapsed
    waiters get.  ``client`` is None for a background revalidation.
    """

    def __init__(
        self,
        fetcher: CachingFetcher,
        request: ForwardedRequest,
        plan: Plan,
        client: IResponseSink | None,
        flight: Flight | None,
    ) -> None:
        self.fetcher = fetcher
        self.request = request
        self.plan = plan
        self.client = client
        self.flight = flight
        self.writer = None
        self.relaying = False
        self.replaced = False
        self.request_time = fetcher.reactor.seconds()
        self.abort_upstream: Callable[[], None] = _nothing
        self.abort_answer: Callable[[], None] | None = None
        self.on_done: Callable[[], None] | None = None
        self.producer: _UpstreamProducer | None = None
        self.replacement: _UpstreamSink | None = None

    # -- IResponseSink ----------------------------------------------------

    def head(self, response: ResponseHead, producer) -> None:
        if self.replaced:
            return
        if response.status < 200:
            if self.client is not None:
                self.client.head(response, producer)
            return
        cache = self.fetcher.cache
        reply = cache.on_response(
            self.plan,
            response.status,
            response.reason,
            response.headers,
            self.request_time,
            self.fetcher.reactor.seconds(),
        )
        if reply.refetch:
            # The 304 was for another representation: ask again, unconditionally.
            self.replaced = True
            on_done, self.on_done = self.on_done, None
            self.replacement = self.fetcher._forward(
                self.request, cache.refetch_plan(self.plan), self.client, self.flight, on_done
            )
            return
        self.writer = reply.writer
        collapsing = self.fetcher.collapsing
        if collapsing is not None:
            if reply.writer is not None:
                collapsing.shareable(self.plan.key)
            elif reply.answer is None and self.plan.method == b"GET":
                collapsing.not_shareable(self.plan.key)
        if self.flight is not None:
            length = _length(response) if reply.shared is not None else None
            self.flight.head(reply.shared, length)
            if reply.shared is None:
                self.flight = None
        if self.client is None:
            return
        if reply.answer is not None:
            self.abort_answer = _serve(reply.answer, self.client)
            return
        self.relaying = True
        _note(self.client, reply.outcome.x_cache)
        if producer is not None:
            self.producer = _UpstreamProducer(producer, self)
        self.client.head(
            ResponseHead(response.version, response.status, response.reason, reply.headers),
            self.producer,
        )

    def data(self, data: bytes) -> None:
        if self.replaced:
            return
        if self.writer is not None and not self.writer.write(data):
            self.writer = None
            if self.flight is not None:
                self.flight.stop_sharing()
        if self.flight is not None:
            self.flight.data(data)
        if self.relaying and self.client is not None:
            self.client.data(data)

    def end(self, trailers: Any = None) -> None:
        if self.replaced:
            return
        if self.writer is not None:
            self.writer.commit()  # the body only: a stored answer has no trailers
            self.writer = None
        if self.flight is not None:
            self.flight.end()
            self.flight = None
        if self.relaying and self.client is not None:
            if trailers:
                self.client.end(trailers)
            else:
                self.client.end()
        self._done()

    def flush(self) -> None:
        if self.replaced:
            if self.replacement is not None:
                self.replacement.flush()
        elif self.relaying and self.client is not None:
            self.client.flush()
        if self.flight is not None:
            self.flight.flush()

    def fail(self, error: UpstreamError) -> None:
        if self.replaced:
            return
        if self.writer is not None:
            self.writer.abandon()
            self.writer = None
        if self.flight is not None:
            self.flight.fail(error)
            self.flight = None
        client, self.client = self.client, None
        if client is not None:
            if self.relaying:
                client.fail(error)
            elif self.abort_answer is None:
                self.fetcher._unreachable(self.plan, error, client)
        self._done()

    # -- control ----------------------------------------------------------

    def _done(self) -> None:
        # The upstream fetch and the producer wrapper point back at this
        # sink: dropping them lets reference counting free it, no cycle.
        self.abort_upstream = _nothing
        self.producer = None
        done, self.on_done = self.on_done, None
        if done is not None:
            done()

    def client_gone(self) -> None:
        """The client went away: keep filling the cache only if others wait on it."""
        if self.replacement is not None:
            self.replacement.client_gone()
            return
        if self.client is None and self.abort_answer is None:
            return
        self.client = None
        if self.abort_answer is not None:
            abort, self.abort_answer = self.abort_answer, None
            abort()
        if self.producer is not None:
            self.producer.resumeProducing()  # a pause by the departed client must not stick
        if self.flight is not None and self.flight.waiters:
            return
        if self.writer is not None:
            self.writer.abandon()
            self.writer = None
        if self.flight is not None:
            self.flight.fail(UpstreamError("the request was abandoned", 502))
            self.flight = None
        self.abort_upstream()


def _length(response: ResponseHead) -> int | None:
    value = response.headers.get(b"content-length")
    return int(value) if value is not None and value.isdigit() else None


class _Waiter:
    """A request served from another request's fetch (see `CollapsedForwarding`)."""

    def __init__(
        self, fetcher: CachingFetcher, request: ForwardedRequest, plan: Plan, sink: IResponseSink
    ) -> None:
        self.fetcher = fetcher
        self.request = request
        self.plan = plan
        self.sink: IResponseSink | None = sink
        self.flight: Flight | None = None
        self.started = False
        self.cancel_own: Callable[[], None] | None = None

    def collapsed_head(self, shared, expected_length) -> bool:
        sink = self.sink
        if sink is None:
            return False
        answer = None
        if shared is not None:
            answer = self.fetcher.cache.answer_waiter(self.plan, shared, expected_length)
        if answer is None:
            # Not for us: look up again, and fetch alone if need be.
            self.cancel_own = self.fetcher._fetch(self.request, sink, collapse=False)
            return False
        self.started = True
        _note(sink, answer.outcome.x_cache)
        sink.head(ResponseHead(_VERSION, answer.status, answer.reason, answer.headers), None)
        if answer.body_length == 0:
            self.sink = None
            sink.end()
            return False
        return True

    def collapsed_data(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink.data(data)

    def collapsed_flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    def collapsed_end(self) -> None:
        sink, self.sink = self.sink, None
        if sink is not None:
            sink.end()

    def collapsed_fail(self, error: Exception) -> None:
        sink, self.sink = self.sink, None
        if sink is None:
            return
        if self.started:
            sink.fail(error)
        else:
            self.fetcher._unreachable(self.plan, error, sink)

    def cancel(self) -> None:
        self.sink = None
        if self.flight is not None:
            self.flight.leave(self)
        if self.cancel_own is not None:
            self.cancel_own()


class _RemoteFlight:
    """
    A miss that may be collapsed with other hosts' through the store's lock:
    the lock holder fetches; the others look the key up again every
    `_REMOTE_POLL` seconds until the response is stored (a HIT), the lock
    is free again (the holder gave up or died: fetch), or the lock's
    timeout has passed (fetch anyway).
    """

    def __init__(
        self,
        fetcher: CachingFetcher,
        request: ForwardedRequest,
        plan: Plan,
        sink: IResponseSink,
        flight: Flight,
    ) -> None:
        self.fetcher = fetcher
        self.request = request
        self.plan = plan
        self.sink = sink
        self.flight: Flight | None = flight
        self.cancel_own: Callable[[], None] | None = None
        self.gone = False
        self.deadline = 0.0
        self.call = None

    def start(self) -> None:
        store = self.fetcher.cache.store
        self.deadline = self.fetcher.reactor.seconds() + store.lock_timeout
        self._try_lock()

    def _try_lock(self) -> None:
        d = self.fetcher._lock(self.plan.key)
        d.addCallback(self._locked).addErrback(
            lambda f: log.failure("cache: collapsing a miss across hosts failed", f)
        )

    def _locked(self, mine: bool) -> None:
        if self.gone:
            if mine:
                self.fetcher.cache.store.unlock(self.plan.key)
            return
        if mine or self.fetcher.reactor.seconds() >= self.deadline:
            self._fetch(mine)
            return
        self.call = self.fetcher.reactor.callLater(_REMOTE_POLL, self._look_again)

    def _fetch(self, locked: bool) -> None:
        key = self.plan.key
        store = self.fetcher.cache.store
        on_done = (lambda: store.unlock(key)) if locked else None
        upstream = self.fetcher._forward(self.request, self.plan, self.sink, self.flight, on_done)
        self.flight = None
        self.cancel_own = upstream.client_gone

    def _look_again(self) -> None:
        self.call = None
        if self.gone:
            return
        loading = self.fetcher._prepare(self.plan.key)
        if loading is None:
            self._fetch(False)  # the store went away: an ordinary fetch
            return
        loading.addCallback(self._looked).addErrback(
            lambda f: log.failure("cache: collapsing a miss across hosts failed", f)
        )

    def _looked(self, _result) -> None:
        if self.gone:
            return
        head = self.request.head
        url = self.request.intent.target.encode("latin-1")
        plan = self.fetcher.cache.plan(head.method, url, head.headers)
        if plan.action is _ANSWER:
            self._release_waiters()
            self.cancel_own = _serve(plan.answer, self.sink)
            return
        self.plan = plan
        self._try_lock()

    def _release_waiters(self) -> None:
        flight, self.flight = self.flight, None
        if flight is not None:
            flight.head(None)  # local waiters look up again, and find it

    def cancel(self) -> None:
        self.gone = True
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        if self.cancel_own is not None:
            self.cancel_own()
        else:
            self._release_waiters()


_REMOTE_POLL = 0.05


@implementer(IFetcher)
class CachingFetcher:
    """
    An `IFetcher` that answers from a `SharedCache` where it may and fetches
    through ``inner`` where it must.
    """

    def __init__(
        self,
        inner: IFetcher,
        cache: SharedCache,
        reactor,
        collapsing: CollapsedForwarding | None = None,
    ) -> None:
        self.inner = inner
        self.cache = cache
        self.reactor = reactor
        self.collapsing = collapsing
        self._revalidating: set[bytes] = set()
        # An asynchronous store (Redis) loads a key before the plan looks it up,
        # and can say which host fetches a miss.
        store = cache.store
        self._prepare = getattr(store, "prepare", None)
        self._lock = getattr(store, "lock", None)

    def fetch(self, request: ForwardedRequest, sink: IResponseSink) -> Callable[[], None]:
        return self._fetch(request, sink, collapse=True)

    def _fetch(
        self, request: ForwardedRequest, sink: IResponseSink, collapse: bool
    ) -> Callable[[], None]:
        head = request.head
        if request.body is not None and head.method in (b"GET", b"HEAD"):
            # A GET with content has no defined meaning; never mix it with stored answers.
            return self.inner.fetch(request, sink)
        if self._prepare is not None and head.method in (b"GET", b"HEAD"):
            loading = self._prepare(cache_key(request.intent.target.encode("latin-1")))
            if loading is not None:
                return self._after_loading(loading, request, sink, collapse)
        return self._planned(request, sink, collapse)

    def _after_loading(
        self, loading, request: ForwardedRequest, sink: IResponseSink, collapse: bool
    ) -> Callable[[], None]:
        """Plan once the store has loaded the key (at most its reply timeout)."""
        cancel: list[Callable[[], None] | None] = [None]
        gone = [False]

        def loaded(_result) -> None:
            if not gone[0]:
                cancel[0] = self._planned(request, sink, collapse)

        def stop() -> None:
            gone[0] = True
            if cancel[0] is not None:
                cancel[0]()

        loading.addCallback(loaded).addErrback(
            lambda f: log.failure("cache: planning a request failed", f)
        )
        return stop

    def _planned(
        self, request: ForwardedRequest, sink: IResponseSink, collapse: bool
    ) -> Callable[[], None]:
        head = request.head
        url = request.intent.target.encode("latin-1")
        plan = self.cache.plan(head.method, url, head.headers)
        if plan.action is _ANSWER:
            cancel = _serve(plan.answer, sink)
            if plan.revalidate:
                self._revalidate(request, plan)
            return cancel
        flight = None
        if (
            collapse
            and plan.collapsible
            and self.collapsing is not None
            and self.collapsing.collapses(plan.key)
        ):
            existing = self.collapsing.flight(plan.key)
            if existing is not None:
                waiter = _Waiter(self, request, plan, sink)
                waiter.flight = existing
                if existing.join(waiter):
                    return waiter.cancel
            else:
                flight = self.collapsing.lead(plan.key)
                if self._lock is not None:
                    remote = _RemoteFlight(self, request, plan, sink, flight)
                    remote.start()
                    return remote.cancel
        return self._forward(request, plan, sink, flight).client_gone

    def _forward(
        self,
        request: ForwardedRequest,
        plan: Plan,
        client: IResponseSink | None,
        flight: Flight | None,
        on_done: Callable[[], None] | None = None,
    ) -> _UpstreamSink:
        head = request.head
        upstream_head = head
        if plan.upstream_headers is not head.headers:
            upstream_head = RequestHead(
                plan.method, head.target, head.version, plan.upstream_headers
            )
        outgoing = replace(request, head=upstream_head) if upstream_head is not head else request
        upstream = _UpstreamSink(self, request, plan, client, flight)
        upstream.on_done = on_done
        upstream.abort_upstream = self.inner.fetch(outgoing, upstream) or _nothing
        return upstream

    def _revalidate(self, request: ForwardedRequest, plan: Plan) -> None:
        """Start a background revalidation for stale-while-revalidate (one per URL)."""
        if plan.key in self._revalidating:
            return
        self._revalidating.add(plan.key)
        background = self.cache.background_plan(plan)
        head = RequestHead(b"GET", request.head.target, request.head.version, request.head.headers)
        self._forward(
            # The client's record is answered already: this fetch is the cache's.
            replace(request, head=head, body=None, record=None),
            background,
            None,
            None,
            on_done=lambda: self._revalidating.discard(plan.key),
        )

    def _unreachable(self, plan: Plan, error: Exception, sink: IResponseSink) -> None:
        """The upstream failed before a response head: stale if allowed, else the error."""
        answer = self.cache.on_error(plan)
        if answer is not None:
            _serve(answer, sink)
            return
        if isinstance(error, UpstreamError):
            status = self.cache.unreachable_status(plan, error.status)
            if status != error.status:
                error = UpstreamError(str(error), status, error.kind)
        else:
            error = UpstreamError(str(error), 502)
        sink.fail(error)


def caching_fetcher_factory(
    config: CacheConfig,
    reactor,
) -> Callable[[IFetcher], CachingFetcher] | None:
    """
    A function that puts one shared cache (built from ``config``) in front
    of any fetcher, or None when the cache is switched off.  Every fetcher it
    wraps shares the same store, so a forward proxy and reverse-proxy routes
    can share one cache.
    """
    if not config.enabled:
        return None
    store = make_store(config, reactor)
    if config.redis and hasattr(reactor, "addSystemEventTrigger"):
        reactor.addSystemEventTrigger("before", "shutdown", store.close)
    cache = SharedCache(store, config, clock=reactor.seconds)
    collapsing = None
    if config.collapse and config.collapse_waiters > 0:
        collapsing = CollapsedForwarding(
            reactor,
            max_waiters=config.collapse_waiters,
            timeout=config.collapse_timeout,
            buffer_limit=config.max_object_size,
        )

    def wrap(inner: IFetcher) -> CachingFetcher:
        return CachingFetcher(inner, cache, reactor, collapsing)

    return wrap
