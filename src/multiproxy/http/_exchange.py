"""
The seam between the client side and the upstream side of an HTTP proxy.

The client-facing protocol turns each request into a `ForwardedRequest` and
asks an `IFetcher` for the response, which arrives through an
`IResponseSink`.  The plain fetcher talks to the upstream over a pooled
connection; a cache is a fetcher that wraps another one.  Bodies stream in
both directions: `RequestBody` carries the request body from the client as it
arrives, and the sink receives the response body chunk by chunk, with the
producer it may pause when the client reads slowly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

from multiproxy.pipeline._errors import UpstreamError

if TYPE_CHECKING:
    from twisted.internet.interfaces import IPushProducer

    from multiproxy.http1._headers import Headers
    from multiproxy.http1._parser import RequestHead
    from multiproxy.pipeline._values import AccessRecord, Intent


class IResponseSink(Interface):
    """
    Receives one response, in order: `head`, any number of `data`, then
    `end` or `fail`, with `flush` between any of them.
    """

    def head(response, producer):
        """
        The response head (a `ResponseHead`).  Called more than once only for
        interim (1xx) responses, which have no body.

        @param producer: an C{IPushProducer} (the upstream transport) to pause
            while the client cannot keep up, or None.
        """

    def data(data):
        """A piece of the response body (bytes, never empty)."""

    def end(trailers=None):
        """
        The response body is complete.  ``trailers`` (a `Headers`) are the
        trailer fields of a chunked response (RFC 9110 6.5), given only
        when there are some: a sink that passes them on calls ``end(trailers)``
        on the next one, else ``end()``.
        """

    def fail(error):
        """
        The response cannot be completed (an `UpstreamError`).  Before `head`
        the sink answers with ``error.status``; after it, the client must see
        the response as truncated.
        """

    def flush():
        """
        No more events until more bytes arrive: write out anything held.

        A sink may hold a response head back so that it leaves with the
        first piece of body (or the end) in one send; whoever drives a sink
        calls this when it has delivered all it has for now, so a head is
        never kept waiting on a body that has not arrived.  `end` and `fail`
        flush by themselves.
        """


class IFetcher(Interface):
    """Obtains the response to a `ForwardedRequest`."""

    def fetch(request, sink):
        """Start fetching; the outcome arrives at the `IResponseSink` ``sink``."""


class IBodyConsumer(Interface):
    """Where a `RequestBody` delivers its bytes (an upstream connection)."""

    transport = Attribute("The transport the body is written to (for producer registration).")

    def body_data(data):
        """A piece of the request body."""

    def body_end():
        """The request body is complete (its trailer fields, if any, in ``trailers``)."""


@dataclass(frozen=True)
class ForwardedRequest:
    """
    A request ready to go upstream.

    ``head`` is what will be sent: origin-form target, end-to-end headers
    already rewritten by the proxy (framing fields are derived from ``body``).
    ``upstream`` is an `IUpstream`; ``body`` is None when the request has no
    content.  ``record``, when given, is the `AccessRecord` whose
    ``bytes_to_upstream`` and ``bytes_from_upstream`` the upstream connection
    adds the bytes it really sends and receives to (none for an answer from
    the cache; heads and framing included).
    """

    intent: Intent
    upstream: object
    head: RequestHead
    body: RequestBody | None = None
    record: AccessRecord | None = None

    def __init__(
        self, intent: Intent, upstream: object, head: RequestHead,
        body: RequestBody | None = None, record: AccessRecord | None = None,
    ) -> None:
        # Made for every request: one update instead of the five
        # object.__setattr__ calls of a generated frozen __init__ (as Intent).
        self.__dict__.update(intent=intent, upstream=upstream, head=head, body=body,
                             record=record)

    @property
    def idempotent(self) -> bool:
        return self.head.method in IDEMPOTENT_METHODS and self.body is None

    def to(self, upstream: object) -> ForwardedRequest:
        """
        The same request aimed at ``upstream`` (another attempt after a
        failure); a subclass also rewrites what that upstream must be sent.
        """
        return self if upstream is self.upstream else replace(self, upstream=upstream)

    def unavailable(self, last: UpstreamError | None) -> UpstreamError:
        """
        What the client is told when no upstream could take the request:
        ``last`` is the failure of the last one tried (None: none was tried).
        """
        return last if last is not None else UpstreamError("no upstream available", 503)


IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})


class RequestBody:
    """
    A request body in flight from the client to an upstream connection.

    Bytes written before a consumer is attached are held, and the client is
    paused while more than ``high_water`` bytes wait; once attached, the
    client transport is registered as the upstream transport's producer, so
    a slow upstream slows the client down.
    """

    high_water = 65536

    def __init__(self, producer: IPushProducer, chunked: bool, length: int | None) -> None:
        self.producer = producer
        self.chunked = chunked
        self.length = length
        self.received = 0
        self.complete = False
        self.trailers: Headers | None = None  # a chunked body's trailer fields, once complete
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._paused = False
        self._consumer: IBodyConsumer | None = None
        self._on_complete: list[Callable[[], None]] = []

    @property
    def started(self) -> bool:
        """True once any byte has been handed to a consumer (no safe replay)."""
        return self._consumer is not None and self.received > 0

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if self._consumer is not None:
            self._consumer.body_data(data)
            return
        self._held.append(data)
        self._held_bytes += len(data)
        if self._held_bytes > self.high_water and not self._paused:
            self._paused = True
            self.producer.pauseProducing()

    def finish(self, trailers: Headers | None = None) -> None:
        self.complete = True
        self.trailers = trailers
        if self._consumer is not None:
            self._release(self._consumer)
            self._consumer.body_end()

    def attach(self, consumer: IBodyConsumer) -> None:
        """Deliver held and future bytes to ``consumer``."""
        self._consumer = consumer
        held, self._held, self._held_bytes = self._held, [], 0
        for data in held:
            consumer.body_data(data)
        if self.complete:
            consumer.body_end()
            if self._paused:
                # Held past high water, then completed: nothing else resumes
                # the client, and its next request would never be read.
                self._paused = False
                self.producer.resumeProducing()
            return
        consumer.transport.registerProducer(self.producer, True)
        if self._paused:
            self._paused = False
            self.producer.resumeProducing()

    def detach(self) -> None:
        """The consumer is gone: stop pushing into it."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None and not self.complete:
            self._release(consumer)

    def _release(self, consumer: IBodyConsumer) -> None:
        # The upstream may have paused the client; a finished body must not
        # leave it paused, or the next pipelined request would never be read.
        if consumer.transport is not None:
            consumer.transport.unregisterProducer()
        self.producer.resumeProducing()
