"""
Zero-copy relaying on Linux: ``splice(2)`` through one pipe per direction.

When a `Relay` joins two plain TCP transports (no TLS, no protocol wrapper)
and neither side needs to see the bytes, the bytes need not pass through
Python at all: the kernel moves them from one socket into a pipe and from
the pipe into the other socket.  `SplicePump` takes both sockets over from
their Twisted transports (which stop reading and writing, with whatever
they still had buffered handed over first), registers one selectable per
socket with the reactor, and gives them back to the relay to close when it
ends.

Backpressure is the pipe: a direction whose destination cannot take more
stops reading its source until the pipe drains.  Half-close: the end of a
source is forwarded as ``shutdown(SHUT_WR)`` once its pipe is empty.

The transports must not be used while the pump runs (no writes, no
pause/resume, no producers): the relay unregisters its producers first.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.python.failure import Failure

__all__ = ["SPLICE_AVAILABLE", "SplicePump", "splice_capable"]

SPLICE_AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "splice")
_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_SIZE = 256 * 1024
"""Bytes a pipe holds: how much can be in flight per direction."""
_PER_EVENT = 4 * PIPE_SIZE  # bytes moved per readiness event, so one busy relay cannot starve others
_LOST = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.ETIMEDOUT, errno.EHOSTUNREACH)


def splice_capable(*transports: Any) -> bool:
    """Whether each of ``transports`` is a plain, open TCP connection a pump can take over."""
    return SPLICE_AVAILABLE and all(
        isinstance(t, tcp.Connection)
        and not getattr(t, "TLS", False)
        and bool(t.connected)
        and not t.disconnecting
        and not getattr(t, "_writeDisconnecting", False)
        and hasattr(t, "socket")
        for t in transports
    )


def _take_buffer(transport: Any) -> bytes:
    """What ``transport`` still had to send (it will not send it now)."""
    pending = bytes(transport.dataBuffer[transport.offset:]) + b"".join(
        transport._tempDataBuffer
    )
    transport.dataBuffer = b""
    transport.offset = 0
    transport._tempDataBuffer = []
    transport._tempDataLen = 0
    return pending


class _Side:
    """One socket of a pump: reads into its own pipe, writes from its peer's pipe."""

    def __init__(self, pump: SplicePump, transport: Any, name: str) -> None:
        self.pump = pump
        self.transport = transport
        self.name = name  # "downstream" or "upstream"
        self.socket: socket.socket = transport.socket
        self.fd = self.socket.fileno()
        self.peer: _Side = self
        self.pipe_r, self.pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.pipe_w, _F_SETPIPE_SZ, PIPE_SIZE)
        except OSError:  # above /proc/sys/fs/pipe-max-size: keep the default
            pass
        self.in_pipe = 0  # bytes read from this side, waiting in its pipe
        self.pending = b""  # bytes to write to this side before any from the pipe
        self.read_eof = False
        self.write_shut = False
        self.reading = False
        self.writing = False

    # reactor interface

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return f"splice-{self.name}"

    def doRead(self) -> None:
        moved = 0
        peer = self.peer
        while moved < _PER_EVENT:
            try:
                n = os.splice(self.fd, self.pipe_w, PIPE_SIZE, flags=_FLAGS)
            except BlockingIOError:
                break
            except OSError as e:
                self.pump.lost(self, e)
                return
            if n == 0:
                self.read_eof = True
                self.stop_reading()
                if moved:
                    self.pump.moved(self, moved)
                if peer.flush():
                    self.pump.direction_done(self)
                else:
                    peer.start_writing()
                return
            moved += n
            self.in_pipe += n
            if not peer.flush():
                self.stop_reading()
                peer.start_writing()
                break
            if self.pump.stopped:
                return
        if moved:
            self.pump.moved(self, moved)

    def doWrite(self) -> None:
        if not self.flush():
            return
        self.stop_writing()
        source = self.peer
        if source.read_eof:
            self.pump.direction_done(source)
        elif not self.pump.stopped:
            source.start_reading()

    def connectionLost(self, reason: Failure) -> None:
        self.pump.lost(self, reason.value)

    # moving bytes

    def flush(self) -> bool:
        """Write what is owed to this side; True when nothing is left."""
        source = self.peer
        try:
            while self.pending:
                sent = self.socket.send(self.pending)
                self.pending = self.pending[sent:]
            while source.in_pipe:
                source.in_pipe -= os.splice(source.pipe_r, self.fd, source.in_pipe, flags=_FLAGS)
        except BlockingIOError:
            return False
        except OSError as e:
            self.pump.lost(self, e)
            return False
        if source.read_eof and not self.write_shut:
            self.write_shut = True
            try:
                self.socket.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        return True

    def start_reading(self) -> None:
        if not self.reading and not self.read_eof and not self.pump.stopped:
            self.reading = True
            self.pump.reactor.addReader(self)

    def stop_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.pump.reactor.removeReader(self)

    def start_writing(self) -> None:
        if not self.writing and not self.pump.stopped:
            self.writing = True
            self.pump.reactor.addWriter(self)

    def stop_writing(self) -> None:
        if self.writing:
            self.writing = False
            self.pump.reactor.removeWriter(self)

    def close(self) -> None:
        self.stop_reading()
        self.stop_writing()
        for fd in (self.pipe_r, self.pipe_w):
            try:
                os.close(fd)
            except OSError:
                pass


class SplicePump:
    """
    Moves bytes between two plain TCP transports with ``splice(2)``.

    @param on_moved: called with ("downstream"|"upstream", count) for bytes
        read from that side.
    @param on_eof: called with the side whose input ended, once its bytes
        have all been delivered (and the other side's write half shut).
    @param on_lost: called with the side that failed and the error.
    """

    def __init__(
        self,
        reactor: Any,
        downstream: Any,
        upstream: Any,
        on_moved: Callable[[str, int], None],
        on_eof: Callable[[str], None],
        on_lost: Callable[[str, BaseException], None],
    ) -> None:
        self.reactor = reactor
        self.stopped = False
        self.on_moved = on_moved
        self.on_eof = on_eof
        self.on_lost = on_lost
        self.down = _Side(self, downstream, "downstream")
        try:
            self.up = _Side(self, upstream, "upstream")
        except OSError:
            self.down.close()
            raise
        self.down.peer, self.up.peer = self.up, self.down

    def start(self, to_downstream: bytes = b"", to_upstream: bytes = b"") -> None:
        """Take both sockets over; ``to_*`` are bytes to deliver before relaying."""
        for side, extra in ((self.down, to_downstream), (self.up, to_upstream)):
            side.transport.stopReading()
            side.transport.stopWriting()
            side.pending = _take_buffer(side.transport) + extra
        for side in (self.down, self.up):
            if side.pending:
                side.start_writing()
            side.peer.start_reading()

    def moved(self, side: _Side, count: int) -> None:
        self.on_moved(side.name, count)

    def direction_done(self, source: _Side) -> None:
        if not self.stopped:
            self.on_eof(source.name)

    def lost(self, side: _Side, error: BaseException | None) -> None:
        if self.stopped:
            return
        self.stop()
        self.on_lost(side.name, error if error is not None else ConnectionError())

    def stop(self) -> None:
        """Unregister from the reactor and close the pipes (the sockets stay open)."""
        if self.stopped:
            return
        self.stopped = True
        self.down.close()
        self.up.close()
