"""
The server side of an HTTP/2 connection, over the h2 library (sans-I/O).

`H2ServerConnection` takes over a client connection of an HTTP proxy once
it has said HTTP/2 (ALPN ``h2`` or the prior-knowledge preface).  Each
stream gets its own instance of the proxy's HTTP/1 protocol, joined to a
`StreamTransport`: the stream's request is read by the strict HTTP/1
parser, goes through the same policy, routing, cache, fetch and access log
as an HTTP/1 request, and the response the protocol writes is read back
(`multiproxy.h2._translate`) and sent as HEADERS and DATA.  A CONNECT
stream (RFC 9113 8.5) becomes the protocol's byte relay.

Flow control is backpressure both ways: a stream's request DATA is
acknowledged (WINDOW_UPDATE) only as the upstream takes it, and a stream
whose send window is spent holds its DATA and, past `HIGH_WATER` bytes,
pauses its upstream; when the client stops reading the connection, every
stream stops sending, and past `HIGH_WATER` of other frames the proxy stops
reading the client too.  Floods get GOAWAY ENHANCE_YOUR_CALM (`H2Limits`):
streams reset soon after they open, by the client or by the proxy (Rapid
Reset), and control frames; frame and header block sizes are checked from
the frame headers (`FrameScanner`) before the h2 library buffers them.
"""

from __future__ import annotations

import base64
import os
from collections import deque
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IConsumer, IPushProducer, ISSLTransport, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer

from multiproxy.h2._frames import FrameLimitError, FrameScanner
from multiproxy.h2._settings import HTTP2Settings
from multiproxy.h2._translate import (
    MalformedRequest,
    read_request,
    request_bytes,
    response_fields,
    trailer_fields,
)
from multiproxy.http1._parser import (
    Data,
    EndOfMessage,
    Limits,
    ResponseHead,
    ResponseReader,
)
from multiproxy.pipeline._errors import ProtocolError

__all__ = ["HIGH_WATER", "H2ServerConnection", "StreamTransport"]

_log = Logger()

DRAIN_GRACE = 1.0
"""Seconds between a graceful stop's first GOAWAY and its final one, when the PING is not answered."""

_DRAIN_PING = b"mp-drain"

HIGH_WATER = 65536
"""
Bytes a stream may hold for a client that has no window left before its
upstream pauses; and bytes of replies (ACKs, resets) written to a client
that does not read before the proxy stops reading it.
"""


class _Rate:
    """Counts events in the current one-second slot."""

    __slots__ = ("slot", "count")

    def __init__(self) -> None:
        self.slot = -1
        self.count = 0

    def add(self, now: float, events: int = 1) -> int:
        slot = int(now)
        if slot != self.slot:
            self.slot, self.count = slot, 0
        self.count += events
        return self.count


class _Stream:
    """One stream's state between the h2 connection and its HTTP/1 protocol."""

    def __init__(self, stream_id: int, connection: H2ServerConnection, method: bytes,
                 limits: Limits) -> None:
        self.id = stream_id
        self.method = method
        self.transport = StreamTransport(connection, self)
        self.protocol: Any = None
        self.reader = ResponseReader(limits)
        self.reader.expect(method)
        self.chunked_body = False
        self.raw = False  # a CONNECT tunnel: DATA both ways, no HTTP/1 framing
        self.websocket = False  # an extended CONNECT: the HTTP/1 side is an upgrade
        self.outbound: deque[bytes] = deque()
        self.outbound_bytes = 0
        self.ending = False  # the response is complete: END_STREAM once the DATA is out
        self.trailers: Any = None  # the response's trailer fields, sent after its DATA
        # The response's HEADERS, held until its first DATA or its end: a
        # response without a body is one HEADERS frame ending the stream, as
        # gRPC's trailers-only answers must be.
        self.head_fields: list | None = None
        self.closed = False  # END_STREAM or RST_STREAM sent or received
        self.remote_ended = False  # the client's END_STREAM has arrived
        self.unacknowledged = 0  # request DATA taken from the window, not yet given back
        self.producer: Any = None
        self.producer_paused = False
        self.reading_paused = False


@implementer(ITransport, IConsumer, IPushProducer)
class StreamTransport:
    """
    What the HTTP/1 protocol of one stream writes to: bytes are an HTTP/1.1
    response, sent as HEADERS and DATA; as a producer, pausing it stops
    acknowledging the stream's request DATA.
    """

    disconnecting = False

    def __init__(self, connection: H2ServerConnection, stream: _Stream) -> None:
        self._connection = connection
        self._stream = stream
        if ISSLTransport.providedBy(connection.transport):
            directlyProvides(self, ITransport, IConsumer, IPushProducer, ISSLTransport)

    # ITransport

    def write(self, data: bytes) -> None:
        if data:
            self._connection.response_bytes(self._stream, data)

    def writeSequence(self, data) -> None:  # noqa: N802 (Twisted's name)
        self.write(b"".join(data))

    def loseConnection(self) -> None:  # noqa: N802
        if not self.disconnecting:
            self.disconnecting = True
            self._connection.stream_closing(self._stream, Failure(ConnectionDone()))

    def loseWriteConnection(self) -> None:  # noqa: N802 (ITCPTransport's half-close)
        """A tunnel's upstream finished: END_STREAM after what is queued; the client may go on."""
        self._connection.half_close(self._stream)

    def abortConnection(self) -> None:  # noqa: N802
        if not self.disconnecting:
            self.disconnecting = True
            self._connection.reset(self._stream, h2.errors.ErrorCodes.CANCEL)
            self._connection.stream_closing(self._stream, Failure(ConnectionLost()))

    def getPeer(self):  # noqa: N802
        return self._connection.transport.getPeer()

    def getHost(self):  # noqa: N802
        return self._connection.transport.getHost()

    def getPeerCertificate(self):  # noqa: N802 (ISSLTransport)
        return self._connection.transport.getPeerCertificate()

    @property
    def negotiatedProtocol(self) -> bytes:  # noqa: N802
        return b"h2"

    # IConsumer: the upstream, paused while the client has no window

    def registerProducer(self, producer: Any, streaming: bool) -> None:  # noqa: N802
        self._stream.producer = producer
        self._connection.check_backpressure(self._stream)

    def unregisterProducer(self) -> None:  # noqa: N802
        stream = self._stream
        if stream.producer is not None and stream.producer_paused:
            stream.producer_paused = False
            stream.producer.resumeProducing()
        stream.producer = None

    # IPushProducer: the client's request DATA, held back while the upstream is slow

    def pauseProducing(self) -> None:  # noqa: N802
        self._stream.reading_paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self._stream.reading_paused = False
        self._connection.acknowledge(self._stream)

    def stopProducing(self) -> None:  # noqa: N802
        self.abortConnection()


@implementer(IPushProducer)
class H2ServerConnection:
    """
    An HTTP/2 client connection of the proxy whose HTTP/1 protocol is
    ``outer``; it takes the connection's bytes as a tunnel does
    (``downstream_data``, ``downstream_eof``, ``downstream_lost``).
    """

    def __init__(self, outer: Any, settings: HTTP2Settings = HTTP2Settings()) -> None:
        limits = settings.limits
        self.settings = settings
        self.outer = outer
        self.factory = outer.factory
        self.transport = outer.transport
        self.reactor = outer.factory.reactor
        self.limits = limits
        self.streams: dict[int, _Stream] = {}
        self.sending_paused = False
        self.reading_paused = False  # the client's bytes are not read while it reads none
        self._unread = 0  # bytes written since the client's socket filled up
        self.draining = False  # closing once the open streams are done
        # The last stream id of the final GOAWAY: streams above it are refused.
        self._last_stream: int | None = None
        self._final_goaway_call: Any = None
        self._resets = _Rate()
        self._control = _Rate()
        self._lost = False
        self._holding = False  # frames wait in h2 until the response's write is read whole
        self._closing = False  # the connection is ending: nothing more is read
        self._malformed_logged = False
        self._admitted: set[int] = set()  # streams served that h2 may still count as open
        self._idle: Any = None
        # What goes out was read by the strict HTTP/1 parser and put in HTTP/2
        # form by `_translate` (lower-case names, no connection-specific
        # fields): h2's outbound checks would only repeat that (~10 us a response).
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_inbound_headers=True,
                                           normalize_inbound_headers=True,
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        self.conn = h2.connection.H2Connection(config)
        codes = h2.settings.SettingCodes
        max_head = self.factory.limits.max_head
        advertised = {
            codes.MAX_CONCURRENT_STREAMS: limits.max_streams,
            codes.INITIAL_WINDOW_SIZE: limits.window,
            codes.MAX_HEADER_LIST_SIZE: max_head,
            codes.ENABLE_CONNECT_PROTOCOL: 1 if settings.websockets else 0,
        }
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=advertised)
        self.conn.initiate_connection()
        # h2 meets a stream past its own MAX_CONCURRENT_STREAMS with a
        # connection error (GOAWAY, every stream lost); RFC 9113 5.1.2 makes
        # it a stream error, so the limit advertised above is enforced in
        # `_request` (REFUSED_STREAM) and h2's own check is set out of reach.
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values={
            **advertised, codes.MAX_CONCURRENT_STREAMS: 2**31 - 1})
        # Initial values never pass through h2's acknowledgement, which is
        # where it would hand MAX_HEADER_LIST_SIZE to the HPACK decoder: the
        # decoder stops at the size advertised, not at h2's default 64 KiB.
        self.conn.decoder.max_header_list_size = max_head
        self._frames = FrameScanner(self.conn.max_inbound_frame_size, max_head)
        self.transport.registerProducer(self, True)
        self._send()
        self._idle_from_now()

    def _idle_from_now(self) -> None:
        """With no stream open, the connection closes after the keep-alive timeout."""
        timeout = self.factory.timeouts.keepalive
        if timeout and self._idle is None and not self._lost:
            self._idle = self.reactor.callLater(timeout, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle = None
        if not self.streams:
            self.drain()

    # -- bytes from the client ---------------------------------------------

    def downstream_data(self, data: bytes) -> None:
        if self._lost or self._closing:
            return
        now = self.reactor.seconds()
        try:
            control = self._frames.feed(data)
        except FrameLimitError as e:
            self._refuse(e.code, str(e))
            return
        if control:
            self._flood(now, control)
            if self._closing:
                return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            _log.info("{proxy}: HTTP/2 client {client}: protocol error: {error}; GOAWAY",
                      proxy=self.factory.name, client=self.outer.client_host, error=e)
            self._send()
            self._close()
            return
        for event in events:
            kind = type(event)
            if kind is h2.events.RequestReceived:
                self._request(event, now)
            elif kind is h2.events.DataReceived:
                self._data(event, now)
            elif kind is h2.events.StreamEnded:
                self._request_ended(event.stream_id)
            elif kind is h2.events.TrailersReceived:
                self._trailers(event)
            elif kind is h2.events.StreamReset:
                self._client_reset(event.stream_id, now)
            elif kind is h2.events.WindowUpdated:
                self._window(event.stream_id)
            elif kind is h2.events.RemoteSettingsChanged:
                self._window(0)
            elif kind is h2.events.PingAckReceived:
                if event.ping_data == _DRAIN_PING:
                    self._final_goaway()
            elif kind is h2.events.ConnectionTerminated:
                if event.error_code == h2.errors.ErrorCodes.NO_ERROR and self.streams:
                    # The client opens no more streams (RFC 9113 6.8); those it
                    # opened still get their answers.  h2 takes any GOAWAY as
                    # the end of the connection: its state goes back to open.
                    self.conn.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
                    self.draining = True
                    self._last_stream = self.conn.highest_inbound_stream_id
                    continue
                self._send()
                self._close()
                return
            if self._lost or self._closing:
                return
        self._send()

    def downstream_eof(self) -> None:
        self._close()

    def downstream_lost(self, reason: Failure | None) -> None:
        self._lost = True
        if self._final_goaway_call is not None and self._final_goaway_call.active():
            self._final_goaway_call.cancel()
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        streams, self.streams = list(self.streams.values()), {}
        for stream in streams:
            # Nothing goes out any more: the protocol's own close is not to be answered.
            stream.closed = True
            protocol, stream.protocol = stream.protocol, None
            if protocol is not None:
                protocol.connectionLost(reason or Failure(ConnectionDone()))

    # -- streams -------------------------------------------------------------

    def _request(self, event: h2.events.RequestReceived, now: float) -> None:
        sid = event.stream_id
        # After the final GOAWAY (RFC 9113 6.8), or past SETTINGS_MAX_CONCURRENT_STREAMS (5.1.2).
        if (self._last_stream is not None and sid > self._last_stream) or (
                self._closing or self._streams_open() >= self.limits.max_streams):
            self._refuse_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM, now)
            return
        try:
            request = read_request(event.headers)
        except MalformedRequest as e:
            if not self._malformed_logged:  # one line per connection, not per stream
                self._malformed_logged = True
                _log.info("{proxy}: malformed HTTP/2 request from {client}: {error}",
                          proxy=self.factory.name, client=self.outer.client_host, error=e)
            self._refuse_stream(sid, h2.errors.ErrorCodes.PROTOCOL_ERROR, now)
            return
        self._admitted.add(sid)
        ended = event.stream_ended is not None
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        # The method of the HTTP/1.1 request the stream becomes (RFC 8441: a GET upgrade).
        method = b"GET" if request.websocket else request.method
        stream = _Stream(sid, self, method, self.factory.limits)
        stream.raw = request.method == b"CONNECT"
        has_body = not ended and not stream.raw
        stream.chunked_body = has_body and request.content_length is None
        self.streams[sid] = stream
        protocol = self.factory.protocol()
        protocol.factory = self.factory
        protocol.nested = True  # the connection holds the client's slot
        protocol.stream = True
        protocol.wire_version = "HTTP/2.0"
        stream.protocol = protocol
        protocol.makeConnection(stream.transport)
        key = base64.b64encode(os.urandom(16)) if request.websocket else b""
        head = request_bytes(request, absolute=self.factory.absolute_targets,
                             has_body=has_body, websocket_key=key)
        stream.websocket = request.websocket
        protocol.dataReceived(head)

    def _data(self, event: h2.events.DataReceived, now: float) -> None:
        stream = self.streams.get(event.stream_id)
        size = event.flow_controlled_length
        if stream is None or stream.protocol is None or (stream.closed and stream.reader is not None):
            if size:
                self.conn.acknowledge_received_data(size, event.stream_id)
            return
        if not event.data and event.stream_ended is None:
            self._flood(now)
            if self._closing:
                return
        stream.unacknowledged += size
        if event.data:
            data = event.data
            if stream.chunked_body:
                data = b"%x\r\n%s\r\n" % (len(data), data)
            stream.protocol.dataReceived(data)
        self.acknowledge(stream)

    def acknowledge(self, stream: _Stream) -> None:
        """Give the client back the window its DATA used, unless the upstream is behind."""
        if stream.reading_paused or not stream.unacknowledged:
            return
        size, stream.unacknowledged = stream.unacknowledged, 0
        try:
            self.conn.acknowledge_received_data(size, stream.id)
        except h2.exceptions.StreamClosedError:
            return
        self._send()

    def _request_ended(self, sid: int) -> None:
        stream = self.streams.get(sid)
        if stream is None:
            return
        stream.remote_ended = True
        if stream.protocol is not None:
            if stream.raw:
                stream.protocol.readConnectionLost()
            elif stream.chunked_body:
                stream.protocol.dataReceived(b"0\r\n\r\n")
        if stream.closed:
            self._stream_done(stream)  # both sides have ended

    def _trailers(self, event: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None or stream.protocol is None or not stream.chunked_body:
            return  # trailers after a content-length body have no HTTP/1 place: dropped
        fields = b"".join(n + b": " + v + b"\r\n" for n, v in event.headers)
        stream.protocol.dataReceived(b"0\r\n" + fields + b"\r\n")
        stream.chunked_body = False  # the last chunk is sent

    def _client_reset(self, sid: int, now: float) -> None:
        stream = self.streams.pop(sid, None)
        if stream is None:
            self._flood(now)  # a reset of a stream already done costs as a PING does
            return
        stream.closed = True
        if stream.unacknowledged:  # the connection's window gets back what was held
            size, stream.unacknowledged = stream.unacknowledged, 0
            self.conn.acknowledge_received_data(size, sid)
        protocol, stream.protocol = stream.protocol, None
        if protocol is not None:
            protocol.connectionLost(Failure(ConnectionLost("the client reset the stream")))
        if not self.streams:
            self._idle_from_now()
        self._count_reset(now)

    def _streams_open(self) -> int:
        """
        Streams served that are open or half-closed, as RFC 9113 5.1.2
        counts them: a stream whose response is sent stays open until the
        client ends its side.  Asked of h2, but only for streams served:
        h2 has already opened every stream of the bytes just read.
        """
        h2_streams = self.conn.streams
        self._admitted = {sid for sid in self._admitted
                          if (s := h2_streams.get(sid)) is not None and s.open}
        return len(self._admitted)

    def _refuse_stream(self, sid: int, code: int, now: float) -> None:
        """
        Reset a stream the proxy will not serve; it counts as a client's
        reset, or a client could have the proxy reset streams for it
        (refused, malformed) at no cost.
        """
        self.conn.reset_stream(sid, code)
        self._count_reset(now)

    def _count_reset(self, now: float) -> None:
        if self._resets.add(now) > self.limits.resets:
            self._refuse(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "too many streams reset")

    def _flood(self, now: float, frames: int = 1) -> None:
        if self._control.add(now, frames) > self.limits.control_frames:
            self._refuse(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "too many control frames")

    def _refuse(self, code: h2.errors.ErrorCodes, why: str) -> None:
        """End the connection with GOAWAY ``code``, logged once."""
        if self._closing or self._lost:
            return
        _log.info("{proxy}: HTTP/2 client {client}: {why}; GOAWAY {code}",
                  proxy=self.factory.name, client=self.outer.client_host, why=why,
                  code=code.name)
        self.conn.close_connection(code)
        self._send()
        self._close()

    # -- the response, from the stream's HTTP/1 protocol ------------------

    def response_bytes(self, stream: _Stream, data: bytes) -> None:
        if stream.closed or self._lost:
            return
        # A small response arrives in one write: its HEADERS, DATA and end
        # leave in one write to the client too.
        self._holding = True
        try:
            self._response_bytes(stream, data)
        finally:
            self._holding = False
        self._send()

    def _response_bytes(self, stream: _Stream, data: bytes) -> None:
        if stream.reader is None:  # a tunnel: the bytes are DATA as they are
            self._queue(stream, data)
            return
        reader = stream.reader
        reader.feed(data)
        while stream.reader is not None and not stream.closed:
            try:
                event = reader.next_event()
            except ProtocolError:
                self.reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
                return
            kind = type(event)
            if kind is ResponseHead:
                self._head(stream, event)
            elif kind is Data:
                self._queue(stream, event.data)
            elif kind is EndOfMessage:
                stream.ending = True
                stream.trailers = event.trailers
                self._flush(stream)
                return
            else:  # NEED_DATA: the rest of the response has not been written yet
                self._send_head(stream)
                return

    def _head(self, stream: _Stream, head: ResponseHead) -> None:
        status = head.status
        if status == 101 and stream.websocket:
            # RFC 8441 5: the upgrade's 101 is the extended CONNECT's 200.
            fields = [(n, v) for n, v in head.headers
                      if n.lower() not in (b"sec-websocket-accept", b"upgrade")]
            self.conn.send_headers(stream.id, response_fields(200, fields))
            self._tunnel_from_here(stream)
        elif status != 101:
            fields = response_fields(status, list(head.headers))
            if stream.raw and not stream.websocket and 200 <= status < 300:
                self.conn.send_headers(stream.id, fields)
                self._tunnel_from_here(stream)  # a CONNECT's tunnel is open
            elif status < 200:
                self.conn.send_headers(stream.id, fields)
            else:
                stream.head_fields = fields
                return
        self._send()

    def _send_head(self, stream: _Stream) -> None:
        """The response's HEADERS go out (before its DATA or trailers)."""
        fields, stream.head_fields = stream.head_fields, None
        if fields is not None:
            self.conn.send_headers(stream.id, fields)

    def _tunnel_from_here(self, stream: _Stream) -> None:
        """From here on the stream's bytes are a tunnel's: DATA as they are, both ways."""
        assert stream.reader is not None
        rest = stream.reader.take_buffered()
        stream.reader = None
        if rest:
            self._queue(stream, rest)

    def _queue(self, stream: _Stream, data: bytes) -> None:
        stream.outbound.append(data)
        stream.outbound_bytes += len(data)
        self._flush(stream)

    def _flush(self, stream: _Stream) -> None:
        conn = self.conn
        if stream.head_fields is not None and (stream.outbound or stream.trailers):
            self._send_head(stream)
        while stream.outbound and not self.sending_paused and not stream.closed:
            window = conn.local_flow_control_window(stream.id)
            if window <= 0:
                break
            chunk = stream.outbound[0]
            size = min(window, conn.max_outbound_frame_size, len(chunk))
            conn.send_data(stream.id, chunk[:size])
            if size == len(chunk):
                stream.outbound.popleft()
            else:
                stream.outbound[0] = chunk[size:]
            stream.outbound_bytes -= size
        if stream.ending and not stream.outbound and not stream.closed:
            if stream.trailers:
                # Trailing HEADERS end the stream (RFC 9113 8.1): gRPC's status rides here.
                conn.send_headers(stream.id, trailer_fields(stream.trailers), end_stream=True)
            elif stream.head_fields is not None:
                fields, stream.head_fields = stream.head_fields, None
                conn.send_headers(stream.id, fields, end_stream=True)
            else:
                conn.end_stream(stream.id)
            stream.ending = False
            stream.closed = True
            if stream.reader is not None or stream.remote_ended:
                self._stream_done(stream)
            # else a tunnel, half closed: the client's DATA still goes upstream
        self.check_backpressure(stream)
        self._send()

    def check_backpressure(self, stream: _Stream) -> None:
        """Pause the stream's upstream while it holds more than `HIGH_WATER` for the client."""
        producer = stream.producer
        if producer is None:
            return
        if stream.outbound_bytes > HIGH_WATER and not stream.producer_paused:
            stream.producer_paused = True
            producer.pauseProducing()
        elif stream.outbound_bytes <= HIGH_WATER // 2 and stream.producer_paused:
            stream.producer_paused = False
            producer.resumeProducing()

    def _window(self, sid: int) -> None:
        if sid:
            stream = self.streams.get(sid)
            if stream is not None:
                self._flush(stream)
            return
        for stream in list(self.streams.values()):
            self._flush(stream)

    def stream_closing(self, stream: _Stream, reason: Failure) -> None:
        """
        The stream's protocol closed its side: a tunnel ends (END_STREAM),
        a response cut short is reset; the protocol hears connectionLost on
        the next reactor turn, as from any transport.
        """
        if self._lost:
            return  # the client's connection is gone; its streams have been told
        if stream.reader is None:
            if not stream.closed:
                stream.ending = True
                self._flush(stream)
            if stream.closed and stream.id in self.streams:
                # The tunnel is over: the client need send nothing more (RFC 9113 8.1).
                self.reset(stream, h2.errors.ErrorCodes.NO_ERROR)
        elif not stream.closed and not stream.ending:
            self.reset(stream, h2.errors.ErrorCodes.INTERNAL_ERROR)
        protocol, stream.protocol = stream.protocol, None
        if protocol is not None:
            self.reactor.callLater(0, protocol.connectionLost, reason)

    def half_close(self, stream: _Stream) -> None:
        """A tunnel stream's sending side ends (END_STREAM); its receiving side stays open."""
        if stream.reader is None and not stream.closed and not self._lost:
            stream.ending = True
            self._flush(stream)

    def reset(self, stream: _Stream, code: int) -> None:
        if stream.id not in self.streams or self._lost:
            return
        try:
            self.conn.reset_stream(stream.id, code)
        except h2.exceptions.StreamClosedError:
            pass
        self._stream_done(stream)
        self._send()

    def _stream_done(self, stream: _Stream) -> None:
        """END_STREAM or RST_STREAM has been sent: nothing more goes out on the stream."""
        stream.closed = True
        self.streams.pop(stream.id, None)
        if stream.unacknowledged and not self._lost:
            # DATA its upstream never took: the connection's window gets it back.
            size, stream.unacknowledged = stream.unacknowledged, 0
            self.conn.acknowledge_received_data(size, stream.id)
        if not self.streams:
            if self.draining:
                self._final_goaway()
                self._close()
            else:
                self._idle_from_now()

    # -- the connection ----------------------------------------------------

    def drain(self) -> None:
        """
        Graceful stop in two steps (RFC 9113 6.8): a GOAWAY naming the
        largest stream id tells the client to open no more streams, and a
        PING follows it; once the PING's ACK is back (every stream the
        client sent before it saw the GOAWAY has arrived), or after
        `DRAIN_GRACE` seconds, the final GOAWAY names the last stream served.
        The connection closes once the open streams are done.
        """
        if self.draining or self._lost or self._closing:
            return
        self.draining = True
        self._send()
        if not self.streams:
            self._final_goaway()
            return
        self._write_goaway(2**31 - 1)
        self.conn.ping(_DRAIN_PING)
        self._send()
        self._final_goaway_call = self.reactor.callLater(DRAIN_GRACE, self._final_goaway)

    def _final_goaway(self) -> None:
        if self._last_stream is not None or self._lost:
            return
        if self._final_goaway_call is not None:
            if self._final_goaway_call.active():
                self._final_goaway_call.cancel()
            self._final_goaway_call = None
        self._last_stream = self.conn.highest_inbound_stream_id
        self._write_goaway(self._last_stream)
        if not self.streams:
            self._close()

    def _write_goaway(self, last_stream_id: int) -> None:
        # Written here rather than by h2's close_connection, which moves h2 to
        # its CLOSED state: the client's next frame (a WINDOW_UPDATE the open
        # streams need, a HEADERS sent before it saw the GOAWAY) would then
        # be a protocol error ending every stream.
        goaway = GoAwayFrame(0)
        goaway.last_stream_id = last_stream_id
        goaway.error_code = h2.errors.ErrorCodes.NO_ERROR
        self.transport.write(goaway.serialize())

    def _send(self) -> None:
        if self._holding:
            return
        data = self.conn.data_to_send()
        if data and not self._lost:
            self.transport.write(data)
            if self.sending_paused:
                # DATA waits while the client does not read, but what h2 answers
                # by itself (PING and SETTINGS ACKs, RST_STREAM on closed
                # streams) does not: past HIGH_WATER of it, stop reading the
                # client until it reads.
                self._unread += len(data)
                if self._unread > HIGH_WATER and not self.reading_paused:
                    self.reading_paused = True
                    self.transport.pauseProducing()

    def _close(self) -> None:
        self._closing = True
        if not self._lost:
            self.transport.loseConnection()

    # IPushProducer: the client's TCP connection

    def pauseProducing(self) -> None:  # noqa: N802
        self.sending_paused = True

    def resumeProducing(self) -> None:  # noqa: N802
        self.sending_paused = False
        self._unread = 0
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resumeProducing()
        self._window(0)

    def stopProducing(self) -> None:  # noqa: N802
        self.transport.abortConnection()
