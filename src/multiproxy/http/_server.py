"""
The client side of the HTTP proxies: one protocol instance per connection.

`HTTPServerProtocol` joins the sans-I/O `ServerConnection` (which reads
the requests, answers them one at a time in order, and decides the
client-facing timeouts and what follows each exchange) to a transport and a
clock, and writes each response with framing recomputed for this client.  What a request *means* is decided by a
subclass (`handle`): the forward proxy and the reverse proxy differ only
there.  Each request lives in an `Exchange`, which is the `IResponseSink`
the upstream side writes the response into.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.h2._settings import PREFACE, HTTP2Settings
from multiproxy.http._exchange import ForwardedRequest, IFetcher, IResponseSink, RequestBody
from multiproxy.http1._connection import (
    STOP_READING,
    ExchangeRules,
    ServerConnection,
    response_framing,
)
from multiproxy.http1._dates import format_http_date
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import (
    CLOSED,
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    Limits,
    RequestHead,
    ResponseHead,
)
from multiproxy.http1._rules import end_to_end, via_value
from multiproxy.http1._writer import response_head_bytes
from multiproxy.pipeline._contract import report_all
from multiproxy.pipeline._errors import STATUS_REASONS, ProtocolError, UpstreamError
from multiproxy.pipeline._values import AccessRecord, Decision, Intent
from multiproxy.policy._admission import Refusal, Verdict, admit, connection_slot, refusal
from multiproxy.transport._deadline import Deadline
from multiproxy.transport._directwrite import no_delay, send_now, write_direct

log = Logger()


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Client- and upstream-facing timeouts of an HTTP proxy, in seconds (None: no limit)."""

    header: float | None = 30.0
    """From the first byte of a request head until the head is complete (slowloris)."""
    keepalive: float | None = 60.0
    """An idle persistent client connection is closed after this long."""
    client_idle: float | None = 60.0
    """A client that stops sending a request body for this long gets 408."""
    connect: float = 10.0
    """Connecting to an upstream (name resolution included): 504 after this."""
    response: float | None = 60.0
    """Waiting for the upstream's response head: 504 after this."""
    upstream_idle: float | None = 60.0
    """An upstream that stalls mid-response for this long is cut off."""
    tunnel_idle: float | None = 600.0
    """A CONNECT tunnel or upgraded connection with no traffic is closed."""


class HTTPProxyFactory(Factory):
    """
    Shared state of an HTTP proxy: settings, reporters and the upstream side.

    Subclasses set ``protocol`` to their `HTTPServerProtocol` subclass.
    """

    protocol: type[HTTPServerProtocol]
    noisy = False  # the listening port already logs "... starting on PORT"

    def __init__(
        self,
        reactor,
        *,
        name: str,
        fetcher: IFetcher,
        limits: Limits = Limits(),
        timeouts: Timeouts = Timeouts(),
        reporters: tuple = (),
        via: bytes | None = b"multiproxy",
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.fetcher = fetcher
        self.limits = limits
        self.timeouts = timeouts
        self.reporters = tuple(reporters)
        self.via = via
        self.connections: set[HTTPServerProtocol] = set()
        self.draining = False

    http2: HTTP2Settings | None = None
    """Where clients may speak HTTP/2 (`multiproxy.h2`); None: HTTP/1 only."""

    absolute_targets = False
    """HTTP/2 requests reach the protocol in absolute form (a forward proxy's requests)."""

    def report(self, record: AccessRecord) -> None:
        report_all(self.reporters, record)

    _date_second = -1
    _date = b""

    def http_date(self) -> bytes:
        """The current time as an HTTP-date, formatted once per second."""
        second = int(self.reactor.seconds())
        if second != self._date_second:
            self._date_second = second
            self._date = format_http_date(second)
        return self._date

    def drain(self) -> None:
        """
        Begin a graceful shutdown: idle keep-alive connections close now,
        busy ones after their current response; tunnels run on until they
        end.  A connection that has not sent its first request yet (just
        accepted, its bytes on the way) or holds part of the next one gets
        it answered, then closes: closing it now would drop a request the
        client had every right to send.
        """
        self.draining = True
        for conn in list(self.connections):
            if conn.speaks_http2:
                conn.tunnel.drain()  # GOAWAY; open streams finish
            elif conn.exchange is not None:
                conn.exchange.close_after = True
            elif conn.tunnel is None and conn.http.idle_between_requests:
                conn.transport.loseConnection()

    def close_all(self) -> None:
        """Cut every client connection still open (after the shutdown deadline)."""
        for conn in list(self.connections):
            conn.transport.abortConnection()


@implementer(IResponseSink)
class Exchange(ExchangeRules):
    """
    One request and its response on a client connection: the HTTP/1.1
    rules of `ExchangeRules` (framing, interim responses, keep-alive), and
    the I/O.

    It is the `IResponseSink` the upstream side writes into: it rewrites the
    response head for this client (end-to-end fields, ``Via``, framing) and
    streams the body.  Once the client transport has to queue bytes (the
    client reads slower than the upstream sends), the upstream transport is
    registered as its producer, so a slow client slows the upstream; a
    response the kernel takes whole never needs that.  The head is held
    until the first piece of body, the end or a `flush`, so a small response
    leaves in one send.
    """

    def __init__(self, protocol: HTTPServerProtocol, request: RequestHead, record: AccessRecord):
        ExchangeRules.__init__(self, request)
        self.protocol = protocol
        self.record = record
        self.body: RequestBody | None = None
        self.abort_fetch: Callable[[], None] | None = None
        self.chooser = None
        """The `IUpstreamChooser` the policy's decision named for this request
        (a rule's parent proxies); None: the proxy's own."""
        self._producer = None  # the upstream's, while the body streams
        self._registered = False  # whether it is the client transport's producer
        self._transport = protocol.transport
        self._held = b""

    # -- the request side ------------------------------------------------

    def request_data(self, data: bytes) -> None:
        self.record.bytes_from_client += len(data)
        if self.body is not None:
            self.body.write(data)

    def request_end(self, trailers: Headers | None = None) -> None:
        self.request_complete = True
        if self.body is not None:
            self.body.finish(trailers)
        if self.finished:
            self.protocol.exchange_done(self)

    def forward(self, request: ForwardedRequest, fetcher: IFetcher | None = None) -> None:
        """
        Send ``request`` upstream through ``fetcher`` (by default the
        proxy's); the answer comes here.
        """
        self.record.upstream = getattr(request.upstream, "name", None)
        abort = (fetcher or self.protocol.factory.fetcher).fetch(request, self)
        if not self.finished:  # a cache may have answered already
            self.abort_fetch = abort

    # -- IResponseSink ---------------------------------------------------

    def head(self, response: ResponseHead, producer) -> None:
        if self.finished:
            return
        status = response.status
        if status < 200:
            interim = self.interim_fields(response, self.protocol.factory.via)
            if interim is not None:
                write_direct(self._transport, response_head_bytes(status, response.reason,
                                                                  interim))
            return
        self.response_started = True
        self.record.status = status
        headers = self.protocol.response_headers(self, response)
        framing = self.protocol.response_framing(self, response)
        body = self.body
        self._held = self.final_head(status, response.reason, headers, framing,
                                     body is not None and body.received > 0)
        if framing != "none":
            self._producer = producer

    def data(self, data: bytes) -> None:
        if self.finished:
            return
        self.record.bytes_to_client += len(data)
        data = self.body_bytes(data)
        if self._held:
            data = self._held + data
            self._held = b""
        self._write(data)

    def end(self, trailers: Headers | None = None) -> None:
        if self.finished:
            return
        self._held += self.end_bytes(trailers)
        self._producer = None  # nothing more to pause once this is written
        if self._held:
            self.flush()
        self._finish()

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self._write(held)

    def fail(self, error: UpstreamError) -> None:
        if self.finished:
            return
        self.record.upstream_error = getattr(error, "kind", "error")
        if not self.response_started:
            self.record.ended = error.ended
            self.respond_error(error.status, str(error), retry_after=error.retry_after)
            return
        # Mid-body: the client must see a truncated response as truncated.
        self.record.ended = "upstream-truncated"
        self.flush()
        self._release_producer()
        self.finished = True
        self.abort_fetch = None
        self.protocol.report(self)
        # Closing without the framing's end (length not reached, no last
        # chunk) is how HTTP/1.1 says "truncated"; flush what arrived first.
        if self.close_delimited:
            # The close itself ends a close-delimited body, so a clean close
            # would pass the truncated body off as complete: reset instead.
            self.protocol.abort()
            return
        self.protocol.close_flushing()

    # -- answering from the proxy itself --------------------------------

    def respond(
        self, status: int, headers: Headers, body: bytes = b"", *, close: bool = False
    ) -> None:
        """Answer from the proxy itself with a complete, small response."""
        if self.finished or self.response_started:
            return
        self.record.status = status
        if body and self.request.method != b"HEAD":
            self.record.bytes_to_client += len(body)
        write_direct(self._transport, self.answer(
            status, STATUS_REASONS.get(status, b"Unknown"), headers, body, close=close,
            date=self.protocol.http_date()))
        self._finish()

    def respond_error(
        self, status: int, message: str, *, close: bool = False, retry_after: int | None = None
    ) -> None:
        """
        Answer with ``status`` and a short plain-text body that names the
        cause (and ``Retry-After`` when ``retry_after`` is given).
        """
        if self.abort_fetch is not None and not self.response_started:
            self.abort_fetch = None
        body = f"{status} {STATUS_REASONS.get(status, b'Error').decode()}: {message}\n".encode()
        headers = Headers([
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Cache-Control", b"no-store"),
        ])
        if status == 405:
            # RFC 9110 15.5.6: a 405 MUST list the methods that are allowed.
            headers.add(b"Allow", self.protocol.allowed_methods)
        if retry_after is not None:
            headers.add(b"Retry-After", b"%d" % retry_after)
        self.record.extra.setdefault("reason", message)
        self.respond(status, headers, body, close=close)

    # -- internals -------------------------------------------------------

    def _write(self, data: bytes) -> None:
        """Send ``data``; what the kernel does not take waits, with backpressure on."""
        rest = send_now(self._transport, data)
        if rest:
            if self._producer is not None and not self._registered:
                # From now on the transport pauses the upstream whenever
                # its buffer is full (Twisted checks on each write).
                self._registered = True
                self._transport.registerProducer(self._producer, True)
            self._transport.write(rest)

    def _release_producer(self) -> None:
        self._producer = None
        if self._registered:
            self._registered = False
            self._transport.unregisterProducer()

    def _finish(self) -> None:
        if self._registered:
            self._release_producer()
        self.finished = True
        # The fetch holds this exchange as its sink: dropping the way back
        # lets reference counting free both at once, no garbage cycle.
        self.abort_fetch = None
        self.protocol.exchange_done(self)

    def become_tunnel(self, status: int, reason: bytes, headers: Headers, tunnel) -> bytes:
        """
        Answer ``status`` (200 to a CONNECT, 101 to an upgrade) with
        ``headers`` and hand the client connection to ``tunnel`` (a
        `multiproxy.transport._relay.Relay` or anything taking
        ``downstream_data``/``downstream_eof``/``downstream_lost``): from now
        on the client's bytes are the tunnel's.  The exchange is over as
        HTTP; whoever ends the tunnel reports its record.  Returns the bytes
        the client sent past the request, which belong to the tunnel.
        """
        self.abort_fetch = None
        self.finished = True
        self.response_started = True
        self.record.status = status
        protocol = self.protocol
        protocol.transport.write(response_head_bytes(status, reason, headers))
        return protocol.hand_over(tunnel)

    def client_lost(self) -> None:
        """The client went away: abandon the upstream side quietly."""
        if self.body is not None:
            self.body.detach()
        if not self.finished:
            self.finished = True
            self._held = b""
            self.record.ended = "client-closed"
            self._producer = None
            abort, self.abort_fetch = self.abort_fetch, None
            if abort is not None:
                abort()
            self.protocol.report(self)


@implementer(IHalfCloseableProtocol)
class HTTPServerProtocol(Protocol):
    """
    A client connection to an HTTP proxy.

    Subclasses implement `handle`, and may override `response_headers` to
    rewrite what goes back to the client.
    """

    factory: HTTPProxyFactory

    nested = False
    """
    True for a connection carried inside another one (an inspected TLS
    tunnel, an HTTP/2 stream): the outer connection already holds the
    client's slot under the per-client connection limit.
    """

    stream = False
    """True for one HTTP/2 stream: its connection is the h2 connection's, not a client's."""

    wire_version: str | None = None
    """The protocol the client spoke, when it was not the request head's (``HTTP/2.0``)."""

    def __init__(self) -> None:
        self.http: ServerConnection | None = None
        """The HTTP/1 connection's state and rules (`ServerConnection`)."""
        self.tunnel = None
        self._deadline: Deadline | None = None
        self._peer_host = ""
        self._peer_port = 0
        self._release_slot: Callable[[], None] | None = None
        self.over_connection_limit = False
        self._sniffed = b""  # the first bytes, while they may be an HTTP/2 preface
        self._sniffing = False

    @property
    def exchange(self) -> Exchange | None:
        """The exchange being answered, or None between requests."""
        return self.http.exchange if self.http is not None else None

    # -- connection life -------------------------------------------------

    def connectionMade(self) -> None:
        self._deadline = Deadline(self.factory.reactor, self._timed_out)
        no_delay(self.transport)
        self.http = ServerConnection(self.factory.limits)
        peer = self.transport.getPeer()
        self._peer_host = getattr(peer, "host", "") or ""
        self._peer_port = getattr(peer, "port", 0) or 0
        if not self.stream:
            self.factory.connections.add(self)
        self._sniffing = self.factory.http2 is not None and not self.nested
        # The policy's per-client connection limit: over it, the first
        # request is answered 429 and the connection closes (`_begin`).
        if not self.nested:
            self._release_slot, self.over_connection_limit = connection_slot(
                getattr(self.factory, "policy", None), self._peer_host
            )
        self._set_timer()

    def connectionLost(self, reason: Failure = None) -> None:
        exchange = self.http.exchange
        self.http.close()
        self._deadline.cancel()
        self.factory.connections.discard(self)
        release, self._release_slot = self._release_slot, None
        if release is not None:
            release()
        if self.tunnel is not None:
            self.tunnel.downstream_lost(reason)
        if exchange is not None:
            exchange.client_lost()

    def readConnectionLost(self) -> None:
        """The client shut its write side: answer what was asked, then close."""
        if self.tunnel is not None:
            self.tunnel.downstream_eof()
            return
        self.http.receive_eof()
        self._read_requests()

    def writeConnectionLost(self) -> None:
        self.transport.loseConnection()

    @property
    def client_host(self) -> str:
        return self._peer_host

    @property
    def client_port(self) -> int:
        return self._peer_port

    # -- reading requests -------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.downstream_data(data)
            return
        if self._sniffing:
            data = self._sniff_http2(data)
            if not data:
                return
        self.http.receive_data(data)
        self._read_requests()

    def _sniff_http2(self, data: bytes) -> bytes:
        """
        Switch to HTTP/2 when the client chose it (ALPN ``h2``) or opens
        with the preface on a plain connection; else give back the bytes
        held (b"" while they may still be the start of a preface).
        """
        settings = self.factory.http2
        assert settings is not None
        held = self._sniffed + data
        alpn = getattr(self.transport, "negotiatedProtocol", None)
        tls = ISSLTransport.providedBy(self.transport)
        if alpn == b"h2" and settings.tls:
            self._become_http2(held)
            return b""
        if not tls and settings.prior_knowledge and held[:len(PREFACE)] == PREFACE[:len(held)]:
            if len(held) < len(PREFACE):
                self._sniffed = held  # too short to tell yet
                return b""
            self._become_http2(held)
            return b""
        self._sniffing = False
        self._sniffed = b""
        return held

    @property
    def speaks_http2(self) -> bool:
        """Whether this connection switched to HTTP/2 (its streams are the exchanges)."""
        from multiproxy.h2._connection import H2ServerConnection

        return isinstance(self.tunnel, H2ServerConnection)

    def _become_http2(self, data: bytes) -> None:
        from multiproxy.h2._connection import H2ServerConnection

        self._sniffing = False
        self._sniffed = b""
        settings = self.factory.http2
        assert settings is not None
        self.http.hand_over()
        self._set_timer()
        self.tunnel = H2ServerConnection(self, settings)
        self.tunnel.downstream_data(data)

    def _read_requests(self) -> None:
        """Act on the connection's events until it needs more from the client."""
        http = self.http
        while not http.closing and self.tunnel is None:
            try:
                event = http.next_event()
            except ProtocolError as e:
                self._protocol_error(e)
                break
            kind = type(event)
            if kind is Data:
                http.exchange.request_data(event.data)
            elif kind is RequestHead:
                self._begin(event)
            elif kind is EndOfMessage:
                http.exchange.request_end(event.trailers)
            elif event is NEED_DATA or event is PAUSED:
                break
            elif event is STOP_READING:
                self.transport.pauseProducing()
                break
            elif event is CLOSED:
                if http.exchange is None:
                    self._close()
                break
        if http.timer_moved:
            self._set_timer()

    def _set_timer(self) -> None:
        """Run the client timeout the connection calls for, from now."""
        http = self.http
        http.timer_moved = False
        timer = http.timer
        if timer is None:
            self._deadline.clear()
        else:
            self._deadline.set(timer, getattr(self.factory.timeouts, timer))

    def _begin(self, head: RequestHead) -> None:
        factory = self.factory
        headers = head.headers
        # Positional (kind, proxy, started, client_host, client_port, user,
        # method, target, version): keyword matching costs more than the record.
        record = AccessRecord(
            "http", factory.name, factory.reactor.seconds(), self._peer_host, self._peer_port,
            None, head.method.decode("latin-1"), head.target.decode("latin-1"),
            self.wire_version or head.version.decode("latin-1"),
        )
        referer = headers.get(b"referer")
        if referer is not None:
            record.referer = referer.decode("latin-1")
        user_agent = headers.get(b"user-agent")
        if user_agent is not None:
            record.user_agent = user_agent.decode("latin-1")
        exchange = Exchange(self, head, record)
        http = self.http
        framing = http.begin(exchange, factory.draining)
        if framing != "none":
            exchange.body = RequestBody(
                self.transport, framing == "chunked", http.reader.body_length
            )
        if self.over_connection_limit:
            self.refuse(exchange, refusal(
                factory.policy, 429, None, now=factory.reactor.seconds(),
            ), close=True)
            return
        try:
            self.handle(exchange)
        except (ProtocolError, UpstreamError) as e:
            exchange.respond_error(e.status, str(e))
        except Exception:
            # A bug (ours or a plug-in's): log it once, answer, keep serving.
            log.failure("error handling {method} {target}", method=record.method,
                        target=record.target)
            exchange.respond_error(500, "internal error in the proxy; see its log", close=True)

    def handle(self, exchange: Exchange) -> None:
        """Decide what to do with a request; subclasses must implement this."""
        raise NotImplementedError

    # -- admission -----------------------------------------------------------

    def admit(self, exchange: Exchange, intent: Intent, proceed: Callable[[Intent], None]) -> None:
        """
        Ask the shared admission (`multiproxy.policy._admission.admit`: the
        client's request rate, proxy credentials where `credentials` gives
        some, the policy) about ``intent``; call ``proceed(intent)`` if it is
        allowed, with the user filled in.  Override to add checks first.
        """
        verdict = admit(self.factory.policy, intent, self.credentials(exchange))
        if isinstance(verdict, Deferred):
            verdict.addCallback(self.admitted, exchange, proceed)
            verdict.addErrback(self._failed_after_admission, exchange)
        else:
            self.admitted(verdict, exchange, proceed)

    def _failed_after_admission(self, failure: Failure, exchange: Exchange) -> None:
        log.failure("error handling {method} {target}", failure,
                    method=exchange.record.method, target=exchange.record.target)
        if not exchange.finished:
            exchange.respond_error(500, "internal error in the proxy; see its log", close=True)

    def credentials(self, exchange: Exchange) -> bytes | None:
        """The proxy credentials the policy is to check for this request: none here."""
        return None

    def admitted(self, verdict: Verdict, exchange: Exchange,
                 proceed: Callable[[Intent], None]) -> None:
        """Act on admission's ``verdict``: go on, or answer 403, 407, 429 or 500."""
        if exchange.finished:
            return  # the client left while its credentials were checked
        record = exchange.record
        intent, decision = verdict.intent, verdict.decision
        if decision is not None:
            record.rule = decision.rule
        record.user = intent.user
        action = verdict.action
        if action == "allow":
            try:
                proceed(intent)
            except (ProtocolError, UpstreamError) as e:
                exchange.respond_error(e.status, str(e))
        elif action == "authenticate":
            self.challenge(exchange, intent, decision)
        elif action == "rate-limited":
            self.refuse(exchange, refusal(self.factory.policy, 429, intent,
                                          retry_after=verdict.retry_after,
                                          now=self.factory.reactor.seconds()))
        elif action == "error":
            exchange.respond_error(500, "the access check failed; see the proxy's log")
        else:
            self.deny(exchange, intent, decision)

    def deny(self, exchange: Exchange, intent: Intent, decision: Decision | None) -> None:
        """Answer a request the policy refused: 403 with a page saying what and why."""
        self.refuse(exchange, refusal(
            self.factory.policy, 403, intent, decision, now=self.factory.reactor.seconds(),
        ))

    def challenge(self, exchange: Exchange, intent: Intent, decision: Decision | None) -> None:
        """Answer 407 with ``Proxy-Authenticate``: the policy wants to know who the client is."""
        self.refuse(exchange, refusal(
            self.factory.policy, 407, intent, decision, now=self.factory.reactor.seconds(),
        ))

    def refuse(self, exchange: Exchange, answer: Refusal, *, close: bool = False) -> None:
        """Send a refusal (403, 407, 429) from the policy layer."""
        exchange.record.ended = answer.ended
        exchange.respond(answer.status, answer.headers, answer.body, close=close)

    allowed_methods: bytes = b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
    """The ``Allow`` value of the proxy's own answer to ``OPTIONS`` with ``Max-Forwards: 0``."""

    def answer_max_forwards(self, exchange: Exchange) -> bool:
        """
        RFC 9110 7.6.2: an OPTIONS or TRACE with ``Max-Forwards: 0`` is
        answered here (True); with a higher value the field is decremented
        in ``exchange.request`` and the request goes on (False).
        """
        request = exchange.request
        if request.method not in (b"OPTIONS", b"TRACE"):
            return False
        value = request.headers.get(b"max-forwards")
        if value is None:
            return False
        if not value.isdigit():
            raise ProtocolError("Max-Forwards must be a non-negative integer")
        remaining = int(value)
        if remaining > 0:
            rewritten = [
                (n, b"%d" % (remaining - 1) if n.lower() == b"max-forwards" else v)
                for n, v in request.headers
            ]
            exchange.request = RequestHead(
                request.method, request.target, request.version, Headers(rewritten)
            )
            return False
        if request.method == b"OPTIONS":
            exchange.respond(200, Headers([(b"Allow", self.allowed_methods)]))
        else:
            exchange.respond_error(405, "TRACE is not answered by this proxy")
        return True

    # -- writing responses -------------------------------------------------

    def response_headers(self, exchange: Exchange, response: ResponseHead) -> Headers:
        """The header fields to send to the client for ``response`` (framing excluded)."""
        headers = end_to_end(response.headers)
        via = self.factory.via
        if via is not None:
            headers.add(b"Via", via_value(response.version, via))
        self.add_date(headers)
        return headers

    def add_date(self, headers: Headers) -> None:
        """
        RFC 9110 6.6.1: a sender with a clock dates a response that has no
        Date, whether it forwards the response or makes it.
        """
        if b"date" not in headers:
            headers.add(b"Date", self.http_date())

    def http_date(self) -> bytes:
        """The current time as an HTTP-date."""
        return self.factory.http_date()

    def response_framing(self, exchange: Exchange, response: ResponseHead) -> str:
        """
        How the response body is delimited for this client: "none", "length"
        (the upstream's Content-Length is kept), "chunked" or "close".
        """
        return response_framing(exchange.request, response)

    def report(self, exchange: Exchange) -> None:
        record = exchange.record
        record.duration = self.factory.reactor.seconds() - record.started
        self.factory.report(record)

    def exchange_done(self, exchange: Exchange) -> None:
        """The response is complete; move on to the next request when the request is too."""
        http = self.http
        if exchange is not http.exchange:
            return
        step = http.exchange_over(exchange, self.factory.draining)
        if step == "read-body":
            return  # request_end brings us back here
        self.report(exchange)
        if step == "close":
            self._close()
            return
        if http.reading_stopped:
            http.reading_stopped = False
            self.transport.resumeProducing()
        if http.reader.buffered or http.eof_received:
            self._read_requests()
        else:  # nothing to read yet
            self._set_timer()

    # -- switching to a byte relay (CONNECT, Upgrade) --------------------

    def hand_over(self, tunnel) -> bytes:
        """
        From now on the connection's bytes go to ``tunnel`` (see
        `Exchange.become_tunnel`, the one way a request switches to one).
        Returns bytes the client already sent past the request.
        """
        http = self.http
        buffered = http.hand_over()
        self._set_timer()
        self.tunnel = tunnel
        if http.reading_stopped:
            http.reading_stopped = False
            self.transport.resumeProducing()
        return buffered

    # -- errors and timeouts -----------------------------------------------

    def _protocol_error(self, error: ProtocolError) -> None:
        exchange = self.http.exchange
        if self.http.broken() == "reset":
            # Framing broke while a response was being written: nothing
            # more can be said on this connection.
            exchange.client_lost()
            self.abort()
            return
        if exchange is None:
            exchange = self._unasked_exchange()
            record = exchange.record
            if error.request_line is not None:
                record.method, record.target, record.version = (
                    part.decode("latin-1") for part in error.request_line)
        exchange.record.ended = "bad-request"
        if exchange.abort_fetch is not None:
            abort, exchange.abort_fetch = exchange.abort_fetch, None
            abort()
        exchange.respond_error(error.status, str(error), close=True)

    def _unasked_exchange(self) -> Exchange:
        """An exchange for an answer to no request head (400 or 408 before one was read)."""
        record = AccessRecord(
            kind="http", proxy=self.factory.name, started=self.factory.reactor.seconds(),
            client_host=self._peer_host, client_port=self._peer_port,
        )
        exchange = Exchange(self, _BAD_REQUEST_HEAD, record)
        self.http.exchange = exchange
        return exchange

    def _timed_out(self, timer: str) -> None:
        if timer == "abort":  # `close_flushing`'s limit
            self.transport.abortConnection()
            return
        outcome, why = self.http.expired(timer)
        if outcome == "close":
            self._close()
            return
        exchange = self.http.exchange
        if outcome == "reset":
            # The exchange stays: losing the connection abandons its fetch.
            exchange.record.ended = "client-timeout"
            self.transport.abortConnection()
            return
        if exchange is None:
            exchange = self._unasked_exchange()
        exchange.record.ended = "client-timeout"
        if exchange.abort_fetch is not None:
            abort, exchange.abort_fetch = exchange.abort_fetch, None
            abort()
        exchange.respond_error(408, why, close=True)

    def _close(self) -> None:
        self.http.close()
        self._set_timer()  # none any more (`close_flushing` sets its own after)
        self.transport.loseConnection()

    def close_flushing(self) -> None:
        """Close after flushing, but never wait on a client that stopped reading."""
        self._close()
        self._deadline.set("abort", self.factory.timeouts.client_idle or 60.0)

    def abort(self) -> None:
        """Reset the connection now: what is still queued for the client is dropped."""
        self.http.close()
        self._set_timer()
        self.transport.abortConnection()


_BAD_REQUEST_HEAD = RequestHead(b"-", b"-", b"HTTP/1.1", Headers())

