"""
The HTTP/1.1 rules of one exchange on a client connection, without I/O.

In the spirit of h11's ``Connection`` for the server side: given the request
head and what the proxy is about to answer, `ExchangeRules` decides how the
response is framed for this client (RFC 9112 6.3: none for HEAD, 204 and
304; the upstream's length; chunked to an HTTP/1.1 client; the
connection's end to an HTTP/1.0 one), what an interim (1xx) response
becomes (RFC 9110 15.2: none to HTTP/1.0, never a 101, never a
Content-Length), whether the connection goes on after this exchange
(``Connection: close`` asked for, an unread request body, a final status
sent to a client still waiting for 100-continue, a close-delimited body),
and turns the answer into bytes.  `ServerConnection` is the connection
around the exchanges: it reads the requests, answers them one at a time in
order (pipelined ones wait, and reading stops past one head's worth of
them), says which client timeout runs and what one expiring means, and
what follows each exchange.  Towards the upstream, `ClientConnection` is
the other direction: it frames each forwarded request for its body
(`forwarded_request_head`, `last_chunk`), reads the response, and decides
whether the connection may carry another request.  The Twisted `multiproxy.http.Exchange`
is `ExchangeRules` plus the writing, the producers and the fetch, and
`multiproxy.http.HTTPServerProtocol` is `ServerConnection` joined to a
transport and a clock (`multiproxy.http.UpstreamConnection` is
`ClientConnection` so joined); an HTTP/2 stream drives the same exchange through
its `StreamTransport`.

Nothing here reads a clock or a socket: tests/test_http1_connection.py
drives it with plain values.
"""

from __future__ import annotations

from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import (
    NEED_DATA,
    PAUSED,
    Data,
    EndOfMessage,
    Event,
    Limits,
    RequestHead,
    RequestReader,
    ResponseHead,
    ResponseReader,
    _Sentinel,
)
from multiproxy.http1._rules import end_to_end, trailers_to_forward, via_value
from multiproxy.http1._writer import (
    LAST_CHUNK,
    chunk_bytes,
    request_head_bytes,
    response_head_bytes,
    trailers_bytes,
)
from multiproxy.pipeline._errors import ProtocolError

__all__ = ["FRAMINGS", "STOP_READING", "TIMERS", "ClientConnection", "ExchangeRules",
           "ServerConnection", "forwarded_request_head", "last_chunk", "response_framing"]

FRAMINGS = ("none", "length", "chunked", "close")
"""How a response body is delimited for the client (see `response_framing`)."""


def response_framing(request: RequestHead, response: ResponseHead) -> str:
    """
    How ``response``'s body is delimited for the client that sent
    ``request``: "none" (HEAD, 204, 304), "length" (the upstream's
    Content-Length is kept), "chunked" (an HTTP/1.1 client) or "close" (an
    HTTP/1.0 client: the connection's end delimits it).
    """
    if request.method == b"HEAD" or response.status in (204, 304):
        return "none"
    if b"content-length" in response.headers:
        return "length"
    if request.version == b"HTTP/1.1":
        return "chunked"
    return "close"


def last_chunk(trailers: Headers | None) -> bytes:
    """
    The end of a chunked body, either way: the last chunk with the trailer
    fields that may be forwarded (RFC 9110 6.5.1; none are merged anywhere).
    """
    forwarded = trailers_to_forward(trailers) if trailers else None
    return trailers_bytes(forwarded) if forwarded else LAST_CHUNK


_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


def forwarded_request_head(head: RequestHead, chunked: bool | None, length: int | None) -> bytes:
    """
    ``head`` as sent to an upstream, framed for the body it has: none
    (``chunked`` None), chunked, or ``length`` bytes (RFC 9112 6.1-6.2:
    one framing, whatever the client sent, which the proxy has decoded).
    """
    headers = head.headers
    if chunked is not None:
        headers = headers.copy()
        headers.remove_all(_FRAMING)
        if chunked:
            headers.add(b"Transfer-Encoding", b"chunked")
        else:
            headers.add(b"Content-Length", b"%d" % (length or 0,))
    return request_head_bytes(head.method, head.target, headers)


class ExchangeRules:
    """
    One request and its response on an HTTP/1.x client connection, as rules.

    @ivar close_after: the connection closes once this exchange is over.
    @ivar request_complete: the whole request (body included) has been read.
    @ivar response_started: a final response head has been decided.
    @ivar finished: the response is complete (or abandoned).
    """

    def __init__(self, request: RequestHead) -> None:
        self.request = request
        self.request_complete = False
        self.response_started = False
        self.finished = False
        self.close_after = not request.keep_alive
        self._chunked = False
        self._close_delimited = False

    # -- the response head -------------------------------------------------

    def interim_fields(self, response: ResponseHead, via: bytes | None) -> Headers | None:
        """
        The fields of the interim (1xx) ``response`` to send on, or None when
        none is sent: to an HTTP/1.0 client (RFC 9110 15.2), and a 101,
        which only the upgrade path sends.  Never a Content-Length (8.6);
        ``via`` adds this proxy's Via entry (7.6.3).
        """
        if self.request.version != b"HTTP/1.1" or response.status == 101:
            return None
        fields = end_to_end(response.headers)
        fields.remove(b"content-length")
        if via is not None:
            fields.add(b"Via", via_value(response.version, via))
        return fields

    def final_head(self, status: int, reason: bytes, headers: Headers, framing: str,
                   body_started: bool) -> bytes:
        """
        The bytes of the final response head, for a body delimited by
        ``framing`` (one of `FRAMINGS`); ``body_started``: some of the
        request body has been read.
        """
        self.response_started = True
        if not self.request_complete and not body_started:
            # RFC 9110 10.1.1: a client waiting for 100 (Continue) that gets
            # a final status may never send the body; whatever it sends next
            # would be read as that body.  The connection closes after this.
            if b"100-continue" in self.request.headers.tokens(b"expect"):
                self.close_after = True
        if framing == "chunked":
            self._chunked = True
            headers.add(b"Transfer-Encoding", b"chunked")
        elif framing == "close":
            self.close_after = True
            self._close_delimited = True
        elif status == 204:
            # RFC 9110 8.6: a 204 carries no Content-Length, whatever the
            # upstream sent (a client trusting it would read the next
            # response as this one's body).
            headers.remove(b"content-length")
        return self.head_bytes(status, reason, headers)

    def head_bytes(self, status: int, reason: bytes, headers: Headers) -> bytes:
        """A response head, with the Connection field this exchange's end calls for."""
        if self.close_after:
            headers.add(b"Connection", b"close")
        elif self.request.version == b"HTTP/1.0":
            headers.add(b"Connection", b"keep-alive")
        return response_head_bytes(status, reason, headers)

    # -- the response body -------------------------------------------------

    def body_bytes(self, data: bytes) -> bytes:
        """A piece of the response body as it goes to the client."""
        return chunk_bytes(data) if self._chunked else data

    def end_bytes(self, trailers: Headers | None) -> bytes:
        """
        What ends the body: the last chunk, with the trailer fields that may
        be forwarded (RFC 9110 6.5.1), when it is chunked; else nothing.
        """
        return last_chunk(trailers) if self._chunked else b""

    @property
    def close_delimited(self) -> bool:
        """The connection's end delimits the body (a truncated one must be a reset)."""
        return self._close_delimited

    # -- the proxy's own answers -------------------------------------------

    def answer(self, status: int, reason: bytes, headers: Headers, body: bytes, *,
               close: bool = False, date: bytes | None = None) -> bytes:
        """
        The bytes of a complete small answer the proxy makes itself: with
        Content-Length, dated ``date`` unless it has a Date (RFC 9110 6.6.1:
        the proxy is its origin), the body left out for HEAD, and the
        connection closed after it when asked or when the request body has
        not all been read (it cannot be skipped safely).
        """
        self.response_started = True
        if close or not self.request_complete:
            self.close_after = True
        headers.add(b"Content-Length", b"%d" % len(body))
        if date is not None and b"date" not in headers:
            headers.add(b"Date", date)
        head = self.head_bytes(status, reason, headers)
        if body and self.request.method != b"HEAD":
            head += body
        return head

    # -- the connection after this exchange ---------------------------------

    def after(self, draining: bool) -> str:
        """
        Once the response is complete: "read-body" (the request body is
        still arriving and the connection goes on: read it to its end
        first), "close", or "next" (the next request may be read).
        """
        if draining:
            self.close_after = True
        if not self.request_complete and not self.close_after:
            return "read-body"
        return "close" if self.close_after else "next"


STOP_READING = _Sentinel("STOP_READING")
"""
From `ServerConnection.next_event`: pipelined requests past one head's worth
wait in the buffer while the current one is answered; stop reading from the
client until `ServerConnection.exchange_over` says to go on, or a client
could make the proxy hold any amount.
"""

TIMERS = ("keepalive", "header", "client_idle")
"""
The client-facing timeouts of a connection: idle between requests, the
rest of a request head once part of it is here (slowloris), and a request
body that stops arriving.
"""


class ServerConnection:
    """
    The server side of one HTTP/1.x client connection, without I/O.

    The driver feeds what the client sends (`receive_data`, `receive_eof`)
    and acts on `next_event` until it gives `NEED_DATA`, `PAUSED`,
    `STOP_READING` or `CLOSED`.  A `RequestHead` is answered by the
    `ExchangeRules` the driver hands to `begin`; once its response is
    complete, `exchange_over` says what follows.  Requests are answered one
    at a time, in order: pipelined ones wait in the reader.

    @ivar exchange: the exchange being answered, or None between requests.
    @ivar timer: the client timeout that applies now (one of `TIMERS`), or
        None.
    @ivar timer_moved: set when ``timer`` must run again from now (it
        changed, or a piece of request body arrived); the driver clears it
        when it has set its clock.
    @ivar reading_stopped: `STOP_READING` was given; the driver clears it
        when it reads again (after `exchange_over` or `hand_over`).
    @ivar closing: the connection is closing; nothing more is read.
    """

    def __init__(self, limits: Limits = Limits()) -> None:
        self.reader = RequestReader(limits)
        self._max_backlog = limits.max_head
        self.exchange: ExchangeRules | None = None
        self.requests_begun = 0
        self.eof_received = False
        self.reading_stopped = False
        self.closing = False
        self.timer: str | None = "keepalive"
        self.timer_moved = True

    # -- what the client sends ---------------------------------------------

    def receive_data(self, data: bytes) -> None:
        self.reader.feed(data)

    def receive_eof(self) -> None:
        """The client shut its write side: what it asked is still answered."""
        self.eof_received = True
        self.reader.feed_eof()

    def next_event(self) -> Event | _Sentinel:
        """
        The reader's next event (a `ProtocolError` raised as it does), with
        the timers it calls for, and `STOP_READING` in place of a `PAUSED`
        with more than one head's worth of pipelined bytes waiting.
        """
        reader = self.reader
        event = reader.next_event()
        kind = type(event)
        if kind is Data:
            self.timer = "client_idle"  # from now: the body is still coming
            self.timer_moved = True
        elif kind is EndOfMessage:
            if self.timer == "client_idle":
                self.timer = None
                self.timer_moved = True
        elif event is NEED_DATA:
            if self.timer == "keepalive" and reader.buffered:
                # Part of a request head is here (a whole one would have
                # been an event): from now on it has the header timeout.
                self.timer = "header"
                self.timer_moved = True
        elif event is PAUSED and reader.buffered > self._max_backlog:
            # Given again on every read past the bound, since a request
            # body's backpressure may have resumed reading meanwhile.
            self.reading_stopped = True
            return STOP_READING
        return event

    # -- the exchanges -------------------------------------------------------

    def begin(self, exchange: ExchangeRules, draining: bool) -> str:
        """
        ``exchange`` answers the `RequestHead` just read.  Returns how its
        body is framed (the reader's ``body_framing``: "none", "length" or
        "chunked"); ``draining``: the proxy is shutting down, so the
        connection closes after this one (said in its head).
        """
        self.exchange = exchange
        self.requests_begun += 1
        if draining:
            exchange.close_after = True
        framing = self.reader.body_framing
        if framing == "none":
            exchange.request_complete = True
            self.timer = None
        else:
            self.timer = "client_idle"
        self.timer_moved = True
        return framing

    def exchange_over(self, exchange: ExchangeRules, draining: bool) -> str:
        """
        ``exchange``'s response is complete: "read-body" (read the request
        body to its end first; its end brings the driver back here),
        "close", or "next" (the connection is kept alive: read again if
        ``reading_stopped``, and act on `next_event` again if
        ``reader.buffered`` or ``eof_received``).
        """
        step = exchange.after(draining)
        if step == "read-body":
            return step
        self.exchange = None
        if step == "close" or self.closing:
            self.close()
            return "close"
        self.reader.start_next()
        self.timer = "keepalive"
        self.timer_moved = True
        return "next"

    def hand_over(self) -> bytes:
        """
        The connection becomes a byte relay (a CONNECT's tunnel, an
        upgrade): no HTTP exchange and no client timeout any more.  Returns
        the bytes the client sent past the request, which are the relay's.
        """
        self.exchange = None
        self.timer = None
        self.timer_moved = True
        return self.reader.take_buffered()

    def close(self) -> None:
        """No more requests: the connection is closing."""
        self.closing = True
        self.exchange = None
        self.timer = None
        self.timer_moved = True

    @property
    def idle_between_requests(self) -> bool:
        """Kept alive after an answer, with nothing of the next request read yet."""
        return (self.exchange is None and self.requests_begun > 0
                and not self.reader.buffered)

    # -- what goes wrong -------------------------------------------------------

    def expired(self, timer: str) -> tuple[str, str | None]:
        """
        What ``timer`` (one of `TIMERS`) expiring means: ("close", None)
        for an idle kept-alive connection; ("reset", None) once a response
        has started (nothing more can be said on the connection); else
        ("answer", why) with a 408 naming what the client was slow to send.
        """
        if timer == "keepalive":
            return "close", None
        exchange = self.exchange
        if exchange is not None and exchange.response_started:
            return "reset", None
        what = "request head" if timer == "header" else "request body"
        return "answer", f"the client took too long to send the {what}"

    def broken(self) -> str:
        """
        What a `ProtocolError` from the reader means: "answer" (400 or the
        error's own status, then close) or "reset" when a response has
        started (its framing is no longer trustworthy).
        """
        exchange = self.exchange
        if exchange is not None and exchange.response_started:
            return "reset"
        return "answer"


class ClientConnection:
    """
    The client side of one HTTP/1.1 connection to an upstream, without
    I/O: one request at a time, its response read, and whether the
    connection may carry another one (`reusable`).

    The driver sends what `send`, `body_bytes` and `body_end` give, feeds
    what arrives to ``reader``, acts on `next_event`, and calls
    `response_over` at the response's `EndOfMessage`.

    @ivar in_body: a final response head has come and its body is not
        complete (a read ending here leaves the rest owed: the driver's
        body timer).
    """

    def __init__(self, limits: Limits = Limits()) -> None:
        self.reader = ResponseReader(limits)
        self.in_body = False
        self._keep_alive = False
        self._body_sent = True
        self._chunked = False

    def send(self, head: RequestHead, chunked: bool | None, length: int | None) -> bytes:
        """
        The bytes of ``head`` forwarded with a body that is chunked, of
        ``length`` bytes, or none (``chunked`` None); its response is read
        next.
        """
        self.reader.expect(head.method)
        self.in_body = False
        self._keep_alive = False
        self._body_sent = chunked is None
        self._chunked = bool(chunked)
        return forwarded_request_head(head, chunked, length)

    def body_bytes(self, data: bytes) -> bytes:
        """A piece of the request body as it goes to the upstream."""
        return chunk_bytes(data) if self._chunked else data

    def body_end(self, trailers: Headers | None) -> bytes:
        """The request body is all sent: what ends it (a chunked body's last chunk)."""
        self._body_sent = True
        return last_chunk(trailers) if self._chunked else b""

    def next_event(self) -> Event:
        """
        The response reader's next event, a `ProtocolError` raised as it
        does, and for a 101 nobody asked for (the proxy never sends
        ``Upgrade`` on this connection, RFC 9110 15.2.2).
        """
        reader = self.reader
        event = reader.next_event()
        if type(event) is ResponseHead:
            status = event.status
            if status >= 200:
                # RFC 9112 9.3 and 6.3: a close-delimited body ends the connection.
                self._keep_alive = event.keep_alive and reader.body_framing != "eof"
                self.in_body = True
            elif status == 101:
                raise ProtocolError("it switched protocols (101) without being asked")
        elif type(event) is EndOfMessage:
            self.in_body = False
        elif event is PAUSED and self.in_body:
            # A head but no end: a 2xx to CONNECT, the connection is no longer HTTP.
            self._keep_alive = False
        return event

    def response_over(self) -> None:
        """The response is complete (its `EndOfMessage`): ready for the next request."""
        if self._keep_alive and self.reader.buffered:
            # Bytes past the response asked for (one request at a time):
            # reused, they would answer the next request sent here.
            self._keep_alive = False
        if self._keep_alive:
            self.reader.start_next()

    def failed(self) -> None:
        """The exchange broke off: the connection is not reused."""
        self._keep_alive = False
        self.in_body = False

    @property
    def reusable(self) -> bool:
        """The response is complete, the request body sent, and the connection persists."""
        return self._keep_alive and self._body_sent and not self.in_body
