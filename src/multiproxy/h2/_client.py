"""
The upstream side of HTTP/2: multiplexed connections to HTTP/2 backends.

A backend marked ``http2`` (``h2://`` with prior knowledge, or ``https://``
offering only ``h2`` in ALPN) is reached over `H2Session` connections, each
carrying up to the backend's SETTINGS_MAX_CONCURRENT_STREAMS streams (at
most `MAX_STREAMS`).  `H2Sessions` hands out an `UpstreamStream` per
request: on a connection with a free stream when there is one, else on a
new connection (requests that arrive while it connects share it).  An
`UpstreamStream` is driven like an HTTP/1 `UpstreamConnection` (``send``,
``abandon``, the request body's consumer), so the fetchers, failover, the
cache and the access log work the same over either.

A GOAWAY from the backend takes its connection out of use at once: new
requests go to a fresh one, streams it says it will still answer finish, and
streams it never processed (above its last stream id, or refused with
REFUSED_STREAM) are retried as a stale keep-alive connection is, which RFC
9113 8.7 allows for any method.  Flow control is backpressure: the
response DATA of a stream whose client reads slowly is not acknowledged
until the client catches up, and a request body waits for the backend's
window, pausing the client past `HIGH_WATER` bytes held.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet import defer
from twisted.internet.interfaces import IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.balancing._backend import note_exchanged
from multiproxy.h2._translate import trailer_fields, upstream_request_fields, upstream_response
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import ResponseHead
from multiproxy.http1._rules import trailers_to_forward
from multiproxy.pipeline._connect import UpstreamEndpoint
from multiproxy.pipeline._errors import ProtocolError, UpstreamError
from multiproxy.transport._deadline import Deadline
from multiproxy.transport._directwrite import no_delay
from multiproxy.transport._tls import tls_failure

__all__ = ["HIGH_WATER", "MAX_STREAMS", "H2Session", "H2Sessions", "UpstreamStream"]

MAX_STREAMS = 100
"""Streams at once on one connection to a backend, whatever it allows."""

HIGH_WATER = 65536
"""Request body bytes held for a backend's window before the client is paused."""

WINDOW = 1 << 20
"""The receive window per stream: response bytes a backend may send ahead of the client."""

_VERSION = b"HTTP/2"


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class H2Sessions:
    """The HTTP/2 connections of a `ConnectionPool`, per upstream key."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.reactor = pool.reactor
        self._by_key: dict[object, list[H2Session]] = {}

    def ready_stream(self, upstream: Any) -> UpstreamStream | None:
        """A stream on an open connection to ``upstream`` with one free, if there is one."""
        for session in self._by_key.get(upstream.key, ()):
            if session.ready and session.has_room():
                return session.reserve()
        return None

    def stream(self, upstream: Any) -> defer.Deferred[UpstreamStream]:
        """A stream to ``upstream``: on a connection with room, or on a new one."""
        for session in self._by_key.get(upstream.key, ()):
            if session.has_room():
                return session.wait()
        session = H2Session(self, upstream)
        self._by_key.setdefault(upstream.key, []).append(session)
        waiting = session.wait()
        endpoint = UpstreamEndpoint(self.reactor, upstream, self.pool.connect_timeout)
        session.connecting = endpoint.connect(_SessionFactory(session))
        session.connecting.addCallbacks(session.connected, session.connect_failed)
        return waiting

    def forget(self, session: H2Session) -> None:
        sessions = self._by_key.get(session.key)
        if sessions and session in sessions:
            sessions.remove(session)
            if not sessions:
                del self._by_key[session.key]

    def close_idle(self) -> None:
        """Close every connection with no stream open (at shutdown)."""
        for sessions in list(self._by_key.values()):
            for session in list(sessions):
                if not session.streams and not session.reserved:
                    session.close()


class _SessionFactory(Factory):
    noisy = False

    def __init__(self, session: H2Session) -> None:
        self.session = session

    def buildProtocol(self, addr):
        return self.session


@implementer(IHandshakeListener)
class H2Session(Protocol):
    """One HTTP/2 connection to a backend, carrying many `UpstreamStream`s."""

    def __init__(self, sessions: H2Sessions, upstream: Any) -> None:
        self.sessions = sessions
        self.pool = sessions.pool
        self.reactor = sessions.reactor
        self.upstream = upstream
        self.key = upstream.key
        self.scheme = b"https" if getattr(upstream, "tls", None) is not None else b"http"
        self.streams: dict[int, UpstreamStream] = {}
        self.reserved = 0  # streams handed out and not yet done, sent or not
        self.ready = False
        self.gone_away = False  # the backend sent GOAWAY: no new streams here
        self.lost = False
        self.connecting: defer.Deferred | None = None
        # Streams given response events by the bytes being read: flushed
        # once they are all delivered (a head and its end leave together).
        self.touched: set[UpstreamStream] = set()
        self._waiting: list[defer.Deferred] = []
        self._idle = Deadline(self.reactor, self._idle_expired)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None,
                                           validate_inbound_headers=True,
                                           normalize_inbound_headers=True,
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config)
        codes = h2.settings.SettingCodes
        max_head = self.pool.limits.max_head
        self.conn.local_settings = h2.settings.Settings(client=True, initial_values={
            codes.ENABLE_PUSH: 0,
            codes.MAX_CONCURRENT_STREAMS: 0,  # a client accepts no streams (no push)
            codes.INITIAL_WINDOW_SIZE: WINDOW,
            codes.MAX_HEADER_LIST_SIZE: max_head,
        })
        self.conn.decoder.max_header_list_size = max_head

    # -- handing out streams ----------------------------------------------------

    def capacity(self) -> int:
        return min(self.conn.remote_settings.max_concurrent_streams, MAX_STREAMS)

    def has_room(self) -> bool:
        return not (self.gone_away or self.lost) and self.reserved < self.capacity()

    def reserve(self) -> UpstreamStream:
        self.reserved += 1
        self._idle.clear()
        return UpstreamStream(self)

    def wait(self) -> defer.Deferred[UpstreamStream]:
        """A stream once the connection is up (at once if it is)."""
        if self.ready:
            return defer.succeed(self.reserve())
        self.reserved += 1

        def cancel(d: defer.Deferred) -> None:
            self._waiting.remove(d)
            self.reserved -= 1
            if not self._waiting and not self.reserved and self.connecting is not None:
                self.connecting.cancel()

        d: defer.Deferred = defer.Deferred(cancel)
        self._waiting.append(d)
        return d

    def connected(self, session: H2Session) -> None:
        self.connecting = None
        self.ready = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(UpstreamStream(self))
        if not self.reserved:
            self._idle_from_now()

    def connect_failed(self, failure: Failure) -> None:
        self.connecting = None
        self.lost = True
        self.sessions.forget(self)
        waiting, self._waiting = self._waiting, []
        self.reserved = 0
        for d in waiting:
            d.errback(failure)

    def release(self, stream: UpstreamStream) -> None:
        """``stream`` is done (answered, failed or never sent)."""
        if stream.released:
            return
        stream.released = True
        self.reserved -= 1
        if stream.stream_id is not None:
            self.streams.pop(stream.stream_id, None)
        if not self.reserved:
            if self.gone_away:
                self.close()
            else:
                self._idle_from_now()

    def _idle_from_now(self) -> None:
        self._idle.set("idle", self.pool.keepalive_timeout)

    def _idle_expired(self, kind: str) -> None:
        if not self.reserved:
            self.close()

    def close(self) -> None:
        """Say GOAWAY and close (nothing is open on it)."""
        self.gone_away = True
        self.sessions.forget(self)
        if self.transport is not None and not self.lost:
            try:
                self.conn.close_connection()
            except h2.exceptions.ProtocolError:
                pass
            self.send()
            self.transport.loseConnection()

    # -- the connection -----------------------------------------------------------

    def connectionMade(self) -> None:
        no_delay(self.transport)
        self.conn.initiate_connection()
        self.send()

    def handshakeCompleted(self) -> None:  # noqa: N802 (IHandshakeListener)
        if getattr(self.transport, "negotiatedProtocol", None) != b"h2":
            self._fail_all(UpstreamError(
                f"backend {self.upstream.name} did not choose HTTP/2 (h2) in TLS ALPN", 502,
                "invalid-response"))
            self.transport.abortConnection()

    def send(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.lost:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            self.send()
            self._fail_all(UpstreamError(f"invalid HTTP/2 from upstream: {e}", 502,
                                         "invalid-response"))
            self.transport.abortConnection()
            return
        streams = self.streams
        for event in events:
            kind = type(event)
            if kind is h2.events.DataReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.data_received(event.data, event.flow_controlled_length)
                else:
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
            elif kind is h2.events.ResponseReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.head_received(event.headers)
            elif kind is h2.events.StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.ended()
            elif kind is h2.events.TrailersReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.trailers = Headers(list(event.headers))
            elif kind is h2.events.InformationalResponseReceived:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.head_received(event.headers, interim=True)
            elif kind is h2.events.StreamReset:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.reset_by_upstream(event.error_code)
            elif kind is h2.events.WindowUpdated or kind is h2.events.RemoteSettingsChanged:
                for stream in list(streams.values()):
                    stream.flush_body()
            elif kind is h2.events.ConnectionTerminated:
                self._gone_away(event.last_stream_id, event.error_code)
        self.send()
        if self.touched:
            touched, self.touched = self.touched, set()
            for stream in touched:
                stream.flush()

    def _gone_away(self, last_stream_id: int | None, code: Any) -> None:
        self.gone_away = True
        if code == h2.errors.ErrorCodes.NO_ERROR:
            # h2 takes any GOAWAY as the connection's end; a graceful one
            # still answers the streams up to its last id (RFC 9113 6.8),
            # and this side opens no new ones.
            self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
        self.sessions.forget(self)
        last = last_stream_id if last_stream_id is not None else 0
        for sid, stream in sorted(self.streams.items()):
            if sid > last:
                stream.unprocessed(f"backend sent GOAWAY ({_code_name(code)}) before stream {sid}")
        if not self.reserved:
            self.close()

    def connectionLost(self, reason: Failure = None) -> None:
        self.lost = True
        self.ready = False
        self._idle.cancel()
        self.sessions.forget(self)
        message = "upstream closed the HTTP/2 connection"
        kind = "closed"
        tls = tls_failure(reason)
        if tls is not None:
            message, kind = f"TLS handshake with the upstream failed: {tls}", "tls"
            if "no application protocol" in tls:
                message = (f"backend {self.upstream.name} did not choose HTTP/2 (h2) in TLS "
                           f"ALPN (it answered: no application protocol)")
        self._fail_all(UpstreamError(message, 502, kind))

    def _fail_all(self, error: UpstreamError) -> None:
        self.gone_away = True
        for stream in list(self.streams.values()):
            stream.connection_failed(error)


def _code_name(code: Any) -> str:
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


@implementer(IPushProducer)
class UpstreamStream:
    """
    One request on an `H2Session`, driven as an `UpstreamConnection` is:
    `send` starts it, the request body is written through `body_data` and
    `body_end`, `abandon` resets it.  It is its own ``transport`` for the
    body (the client is registered as its producer) and the producer a
    sink pauses while its client reads slowly.
    """

    def __init__(self, session: H2Session) -> None:
        self.session = session
        self.key = session.key
        self.transport = self
        self.stream_id: int | None = None
        self.released = False
        self.trailers: Headers | None = None
        self._request: Any = None
        self._sink: Any = None
        self._on_stale: Any = None
        self._got_response = False
        self._held: list[bytes] = []  # body bytes waiting for the backend's window
        self._held_bytes = 0
        self._body_ended = False  # the client's body is all here
        self._body_open = False  # END_STREAM is still to be sent
        self._producer: Any = None
        self._producer_paused = False
        self._paused = False  # the client reads slowly: DATA is not acknowledged
        self._unacknowledged = 0
        self._sent = self._received = self._status = 0
        self._sent_at = 0.0
        self._deadline = Deadline(session.reactor, self._timed_out)

    @property
    def lost(self) -> bool:
        return self.session.lost

    # -- the request --------------------------------------------------------------

    def send(self, request: Any, sink: Any, on_stale: Any = None) -> None:
        session = self.session
        conn = session.conn
        self._request, self._sink, self._on_stale = request, sink, on_stale
        self._sent_at = session.reactor.seconds()
        head = request.head
        body = request.body
        length = None if body is None or body.chunked else (body.length or 0)
        block = upstream_request_fields(head.method, head.target, head.headers,
                                        scheme=session.scheme, length=length)
        try:
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, block, end_stream=body is None)
        except h2.exceptions.TooManyStreamsError:
            # The backend's SETTINGS allow fewer streams than were handed out
            # before they arrived: this one goes on another connection.
            session.release(self)
            if on_stale is not None:
                on_stale()
            else:
                sink.fail(UpstreamError("the upstream allows no more streams", 502, "closed"))
            return
        except h2.exceptions.H2Error as e:
            session.release(self)
            sink.fail(UpstreamError(f"cannot open a stream to the upstream: {e}", 502,
                                    "closed"))
            return
        self.stream_id = sid
        self._body_open = body is not None
        session.streams[sid] = self
        self._sent = sum(len(n) + len(v) for n, v in block)
        self._deadline.set("response", session.pool.response_timeout)
        session.send()
        if body is not None:
            body.attach(self)

    def body_data(self, data: bytes) -> None:
        self._held.append(data)
        self._held_bytes += len(data)
        self.flush_body()
        if self._held_bytes > HIGH_WATER and self._producer is not None \
                and not self._producer_paused:
            self._producer_paused = True
            self._producer.pauseProducing()

    def body_end(self) -> None:
        self._body_ended = True
        self.flush_body()

    def flush_body(self) -> None:
        """Send what the backend's window allows of the held body."""
        sid = self.stream_id
        if sid is None or not self._body_open:
            return
        conn = self.session.conn
        held = self._held
        sent = 0
        try:
            while held:
                room = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if room <= 0:
                    break
                chunk = held[0]
                if len(chunk) > room:
                    held[0] = chunk[room:]
                    chunk = chunk[:room]
                else:
                    held.pop(0)
                conn.send_data(sid, chunk)
                sent += len(chunk)
            if not held and self._body_ended and self._body_open:
                self._body_open = False
                trailers = self._request.body.trailers
                forwarded = trailers_to_forward(trailers) if trailers else None
                if forwarded:
                    conn.send_headers(sid, trailer_fields(forwarded), end_stream=True)
                else:
                    conn.end_stream(sid)
                sent = sent or 1  # the end goes out too
        except h2.exceptions.H2Error:
            return  # the stream is closed; its reset or end is reported by the session
        if sent:
            self._held_bytes = sum(map(len, held))
            self._sent += sent
            self.session.send()
            if self._producer_paused and self._held_bytes <= HIGH_WATER:
                self._producer_paused = False
                self._producer.resumeProducing()

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802
        self._producer = producer

    def unregisterProducer(self) -> None:  # noqa: N802
        self._producer = None
        self._producer_paused = False

    def abandon(self) -> None:
        """The client no longer wants the response: reset the stream."""
        request = self._request
        self._sink = None
        if request is not None:
            self._settle(True)
        self._reset(h2.errors.ErrorCodes.CANCEL)

    def _reset(self, code: Any) -> None:
        sid = self.stream_id
        if sid is not None and not self.session.lost:
            try:
                self.session.conn.reset_stream(sid, code)
            except h2.exceptions.H2Error:
                pass
            self.session.send()
        self._done()

    def _done(self) -> None:
        self._deadline.cancel()
        self._request = self._sink = None
        self.session.release(self)

    # -- the response ---------------------------------------------------------------

    def head_received(self, block: list[tuple[bytes, bytes]], interim: bool = False) -> None:
        """A response header block: the final one, or (``interim``) a 1xx."""
        if self._sink is None:
            return
        try:
            status, fields = upstream_response(block)
        except ProtocolError as e:
            self._fail_and_reset(UpstreamError(f"invalid response from upstream: {e}", 502,
                                               "invalid-response"))
            return
        self._got_response = True
        self._received += sum(len(n) + len(v) for n, v in block)
        head = ResponseHead(_VERSION, status, _reason(status), Headers(fields))
        if interim:
            self._sink.head(head, None)
            return
        self._status = status
        self._deadline.set("body", self.session.pool.idle_timeout)
        self._sink.head(head, self)
        self.session.touched.add(self)

    def data_received(self, data: bytes, flow_length: int) -> None:
        if self._sink is None:
            self.session.conn.acknowledge_received_data(flow_length, self.stream_id)
            return
        self._received += len(data)
        if self._paused:
            self._unacknowledged += flow_length
        else:
            self.session.conn.acknowledge_received_data(flow_length, self.stream_id)
        self._deadline.set("body", self.session.pool.idle_timeout)
        if data:
            self._sink.data(data)
            self.session.touched.add(self)

    def flush(self) -> None:
        """The session has delivered what it read: the sink writes out what it holds."""
        if self._sink is not None:
            self._sink.flush()

    def ended(self) -> None:
        sink, trailers = self._sink, self.trailers
        body = self._request.body if self._request is not None else None
        self._settle(True)
        if self._body_open:
            # Answered before the whole body went: the rest is not wanted
            # (RFC 9113 8.1); the stream ends here.
            if body is not None:
                body.detach()
            self._reset(h2.errors.ErrorCodes.NO_ERROR)
        else:
            self._done()
        if trailers:
            self._received += sum(len(n) + len(v) for n, v in trailers)
            sink.end(trailers)
        else:
            sink.end()

    def reset_by_upstream(self, code: Any) -> None:
        if code == h2.errors.ErrorCodes.REFUSED_STREAM and not self._got_response:
            self.unprocessed("backend refused the stream (REFUSED_STREAM)")
            return
        self._fail(UpstreamError(f"upstream reset the stream ({_code_name(code)})", 502,
                                 "closed"))

    def unprocessed(self, why: str) -> None:
        """The backend never processed this stream: retry it elsewhere if nothing is lost."""
        request, retry = self._request, self._on_stale
        body = request.body if request is not None else None
        if retry is not None and (body is None or body.received == 0):
            if body is not None:
                body.detach()
            self._sink = self._on_stale = None
            self._done()
            retry()
            return
        self._fail(UpstreamError(f"{why}; not retried", 502, "closed"))

    def connection_failed(self, error: UpstreamError) -> None:
        if self._got_response and error.kind == "closed":
            error = UpstreamError("upstream closed the HTTP/2 connection mid-response", 502,
                                  "closed")
        self._fail(error)

    def _fail_and_reset(self, error: UpstreamError) -> None:
        sink = self._sink
        self._sink = None
        self._settle(False)
        self._reset(h2.errors.ErrorCodes.PROTOCOL_ERROR)
        if sink is not None:
            sink.fail(error)

    def _fail(self, error: UpstreamError) -> None:
        sink, request = self._sink, self._request
        self._sink = None
        if request is not None:
            if request.body is not None:
                request.body.detach()
            self._settle(False)
        self._done()
        if sink is not None:
            sink.fail(error)

    def _settle(self, ok: bool) -> None:
        request = self._request
        if request is None:
            return
        upstream = request.upstream
        upstream.finished(ok, self.session.reactor.seconds() - self._sent_at)
        note_exchanged(upstream, self._status, self._sent, self._received)
        record = request.record
        if record is not None:
            record.bytes_to_upstream += self._sent
            record.bytes_from_upstream += self._received

    # -- backpressure from the client ------------------------------------------------

    def pauseProducing(self) -> None:  # noqa: N802
        self._paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._paused = False
        if self._unacknowledged and self.stream_id is not None and not self.session.lost:
            count, self._unacknowledged = self._unacknowledged, 0
            try:
                self.session.conn.acknowledge_received_data(count, self.stream_id)
            except h2.exceptions.H2Error:
                return
            self.session.send()

    def stopProducing(self) -> None:  # noqa: N802
        self.abandon()

    # -- timers ------------------------------------------------------------------------

    def _timed_out(self, kind: str) -> None:
        pool = self.session.pool
        if kind == "response":
            error = UpstreamError(
                f"upstream sent no response within {pool.response_timeout:g} s", 504,
                "response-timeout")
        else:
            error = UpstreamError(
                f"upstream stalled for {pool.idle_timeout:g} s mid-response", 504, "stalled")
        sink = self._sink
        self._sink = None
        self._settle(False)
        self._reset(h2.errors.ErrorCodes.CANCEL)
        if sink is not None:
            sink.fail(error)
