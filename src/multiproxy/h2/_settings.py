"""What an HTTP proxy's clients may do over HTTP/2: plain values, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PREFACE", "H2Limits", "HTTP2Settings"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
"""The first bytes of every HTTP/2 connection from a client (RFC 9113 3.4)."""


@dataclass(frozen=True, slots=True)
class H2Limits:
    """
    Bounds of one HTTP/2 client connection.

    @ivar max_streams: SETTINGS_MAX_CONCURRENT_STREAMS (RFC 9113 5.1.2);
        a stream past it is refused (RST_STREAM REFUSED_STREAM).
    @ivar window: SETTINGS_INITIAL_WINDOW_SIZE: bytes of request body a
        stream may send before the upstream has taken any.
    @ivar resets: streams per second that may end in a reset before their
        response, whether the client cancels them (RST_STREAM) or the proxy
        refuses them (malformed, over max_streams, after GOAWAY), before
        GOAWAY ENHANCE_YOUR_CALM (Rapid Reset, CVE-2023-44487).
    @ivar control_frames: SETTINGS, PING and PRIORITY frames (ACKs
        included), empty DATA frames and resets of streams already done,
        per second, before GOAWAY ENHANCE_YOUR_CALM.

    The header list (SETTINGS_MAX_HEADER_LIST_SIZE) and the encoded header
    block are bounded by the proxy's ``Limits.max_head``.
    """

    max_streams: int = 100
    window: int = 65535
    resets: int = 100
    control_frames: int = 200


@dataclass(frozen=True, slots=True)
class HTTP2Settings:
    """
    Where a proxy speaks HTTP/2 to its clients.

    @ivar tls: offer ``h2`` by ALPN on TLS listeners.
    @ivar prior_knowledge: accept the HTTP/2 preface on plain listeners.
    @ivar websockets: accept WebSockets over HTTP/2 (RFC 8441: the
        extended CONNECT, SETTINGS_ENABLE_CONNECT_PROTOCOL).
    @ivar limits: the bounds of each HTTP/2 connection.
    """

    tls: bool = True
    prior_knowledge: bool = True
    websockets: bool = True
    limits: H2Limits = field(default_factory=H2Limits)
