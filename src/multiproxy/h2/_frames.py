"""
Bounds on the frames a client sends, read from their 9-byte headers before
the h2 library buffers them: plain values, no I/O.

The h2 library checks a frame's length only once the whole frame is in its
buffer, so a frame header announcing 16 MiB makes it hold 16 MiB; and it
joins up to 64 CONTINUATION frames of a header block (1 MiB at the default
frame size) before it decodes anything (CVE-2024-27316).  `FrameScanner`
refuses both as soon as the header that crosses the bound arrives.
"""

from __future__ import annotations

import h2.errors

__all__ = ["CONTROL_TYPES", "FrameLimitError", "FrameScanner"]

_DATA, _HEADERS, _PRIORITY, _SETTINGS, _PUSH_PROMISE, _PING, _CONTINUATION = (
    0x0, 0x1, 0x2, 0x4, 0x5, 0x6, 0x9)
_END_HEADERS = 0x4

CONTROL_TYPES = frozenset({_PRIORITY, _SETTINGS, _PING})
"""Frame types that cost the server work and carry no request: counted against floods."""


class FrameLimitError(Exception):
    """A client's frame broke a bound; ``code`` is the HTTP/2 error code for GOAWAY."""

    def __init__(self, code: h2.errors.ErrorCodes, why: str) -> None:
        super().__init__(why)
        self.code = code


class FrameScanner:
    """
    Follows the frame boundaries of what a client sends (after the preface)
    and refuses a frame longer than ``max_frame_size`` or a header block
    (HEADERS and its CONTINUATION frames) longer than ``max_header_block``.
    """

    __slots__ = ("max_frame_size", "max_header_block", "_preface", "_head", "_skip", "_block")

    def __init__(self, max_frame_size: int, max_header_block: int, preface: int = 24) -> None:
        self.max_frame_size = max_frame_size
        self.max_header_block = max_header_block
        self._preface = preface  # bytes of the connection preface still to pass
        self._head = b""  # part of a frame header
        self._skip = 0  # bytes of the current frame's payload still to pass
        self._block: int | None = None  # bytes of the open header block, if one is open

    def feed(self, data: bytes) -> int:
        """
        Take the next bytes from the client; return how many control frames
        (`CONTROL_TYPES`) began in them.

        @raise FrameLimitError: a bound is broken; the connection must end.
        """
        view = memoryview(data)
        if self._preface:
            taken = min(self._preface, len(view))
            self._preface -= taken
            view = view[taken:]
        control = 0
        while view:
            if self._skip:
                taken = min(self._skip, len(view))
                self._skip -= taken
                view = view[taken:]
                continue
            need = 9 - len(self._head)
            self._head += bytes(view[:need])
            view = view[need:]
            if len(self._head) < 9:
                break
            head, self._head = self._head, b""
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            self._skip = length
            if length > self.max_frame_size:
                raise FrameLimitError(h2.errors.ErrorCodes.FRAME_SIZE_ERROR,
                                      f"a frame of {length} bytes, over {self.max_frame_size}")
            if kind in CONTROL_TYPES:
                control += 1
            if kind in (_HEADERS, _PUSH_PROMISE):
                self._block = length
            elif kind == _CONTINUATION and self._block is not None:
                self._block += length
            else:
                continue
            if self._block > self.max_header_block:
                raise FrameLimitError(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                                      f"a header block over {self.max_header_block} bytes")
            if flags & _END_HEADERS:
                self._block = None
        return control
