"""
Writing to a TCP transport without waiting for the next reactor turn.

Twisted's ``transport.write`` always buffers: the bytes go out only when the
reactor next reports the socket writable, which costs two epoll updates and a
dispatch per write.  For a proxy that writes one small response head and body
per request, that is a large share of the work.  `write_direct` sends at once
when nothing is queued ahead (what asyncio's transports do), and leaves
anything the kernel did not take to Twisted's own buffer, so ordering,
backpressure (producers) and error handling stay Twisted's.  `send_now` is
its first half, for a caller with something to do (registering a producer)
before bytes are queued.

It relies on three attributes of ``twisted.internet.abstract.FileDescriptor``
(``dataBuffer``, ``offset``, ``_tempDataBuffer``); if a Twisted release
changes them, `direct_write_supported` is False and every write goes through
``transport.write``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import abstract, tcp


def _supported() -> bool:
    probe = abstract.FileDescriptor(reactor=object())
    try:
        return (
            isinstance(probe._tempDataBuffer, list)
            and probe.dataBuffer == b""
            and probe.offset == 0
            and issubclass(tcp.Connection, abstract.FileDescriptor)
        )
    except AttributeError:
        return False


direct_write_supported = _supported()


def send_now(transport: Any, data: bytes) -> bytes:
    """
    Send what the kernel takes of ``data`` right away, when nothing is queued
    ahead of it; return the rest for ``transport.write`` (all of ``data``
    when the transport cannot be written to directly or already has bytes
    waiting, b"" when everything went).
    """
    if (
        direct_write_supported
        and isinstance(transport, tcp.Connection)
        and not transport._tempDataBuffer
        and len(transport.dataBuffer) == transport.offset
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            return data
        except OSError:
            # Let Twisted meet the error on its own path and report it as usual.
            return data
        return data[sent:] if sent < len(data) else b""
    return data


def write_direct(transport: Any, data: bytes) -> None:
    """Write ``data`` to ``transport``, sending it right away when nothing is queued."""
    rest = send_now(transport, data)
    if rest:
        transport.write(rest)


def no_delay(transport: Any) -> None:
    """
    Turn off Nagle's algorithm on ``transport`` where it has one: a proxy
    relays messages, and a small write held back waiting for the peer's
    delayed ACK costs tens of milliseconds per exchange.
    """
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass
