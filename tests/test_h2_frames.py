"""FrameScanner: frame and header block bounds read from frame headers, no reactor."""

from __future__ import annotations

import h2.errors
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from multiproxy.h2._frames import FrameLimitError, FrameScanner

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _feed(scanner: FrameScanner, data: bytes, one_byte_at_a_time: bool) -> int:
    if not one_byte_at_a_time:
        return scanner.feed(data)
    return sum(scanner.feed(data[i:i + 1]) for i in range(len(data)))


@pytest.mark.parametrize("bytewise", [False, True])
def test_control_frames_are_counted_and_others_passed_over(bytewise):
    frames = [SettingsFrame(0), HeadersFrame(1, data=b"x" * 300, flags={"END_HEADERS"}),
              DataFrame(1, data=b"d" * 1000), PingFrame(0, opaque_data=b"8 bytes!"),
              WindowUpdateFrame(0, window_increment=5), PriorityFrame(3, depends_on=1),
              SettingsFrame(0, flags={"ACK"})]
    data = PREFACE + b"".join(f.serialize() for f in frames)
    assert _feed(FrameScanner(16384, 1024), data, bytewise) == 4


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_frame_over_max_frame_size_is_refused_from_its_header(bytewise):
    scanner = FrameScanner(16384, 65536, preface=0)
    with pytest.raises(FrameLimitError) as e:
        _feed(scanner, b"\x00\x40\x01\x00\x00\x00\x00\x00\x01", bytewise)  # 16385 bytes of DATA
    assert e.value.code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR


@pytest.mark.parametrize("bytewise", [False, True])
def test_a_header_block_is_bounded_across_continuation_frames(bytewise):
    scanner = FrameScanner(16384, 1000, preface=0)
    _feed(scanner, HeadersFrame(1, data=b"h" * 400).serialize(), bytewise)
    _feed(scanner, ContinuationFrame(1, data=b"c" * 400).serialize(), bytewise)
    with pytest.raises(FrameLimitError) as e:
        _feed(scanner, ContinuationFrame(1, data=b"c" * 400).serialize(), bytewise)
    assert e.value.code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_each_ended_header_block_starts_the_count_again():
    scanner = FrameScanner(16384, 1000, preface=0)
    for sid in (1, 3, 5):
        scanner.feed(HeadersFrame(sid, data=b"h" * 600).serialize())
        scanner.feed(ContinuationFrame(sid, data=b"c" * 300, flags={"END_HEADERS"}).serialize())
    # A CONTINUATION outside a block is h2's to refuse; it does not count here.
    scanner.feed(ContinuationFrame(7, data=b"c" * 900).serialize())
