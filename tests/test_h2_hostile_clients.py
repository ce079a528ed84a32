"""
The reverse proxy's HTTP/2 front end against hostile clients: a raw client
(hyperframe frames, hpack blocks) over loopback does what a well-behaved
library refuses to, and the proxy (twistd, as run in production) must bound
what it holds, answer with GOAWAY or RST_STREAM as RFC 9113 allows, spare its
backend, and log no traceback.
"""

from __future__ import annotations

import gc
import socket
import time

import h2.errors
import h2.events
import hpack
import hpack.hpack
import pytest
import trustme
from h2_peers import (
    HUGE_SIZE,
    Proxy,
    RawClient,
    get,
    h2_client,
    has_goaway,
    peak_rss_kib,
    read_events,
    reset_peak_rss,
    rss_kib,
    start_origin,
)
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from multiproxy.h2 import H2Limits

pytestmark = pytest.mark.integration

LIMITS = H2Limits()
CODES = h2.errors.ErrorCodes


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


class _Running:
    """A proxy and its origin, stopped at the end with no traceback in the log."""

    def __init__(self, tmp_path, ca, extra: str = "") -> None:
        self.origin = start_origin()
        self.proxy = Proxy(tmp_path, self.origin, ca, extra)
        self.proxy.origin = self.origin

    def stop(self) -> str:
        self.origin.release.set()
        log = self.proxy.stop()
        self.origin.shutdown()
        assert "Traceback" not in log, log
        return log


@pytest.fixture
def running(tmp_path, ca):
    run = _Running(tmp_path, ca)
    yield run
    run.stop()


@pytest.fixture
def proxy(running):
    return running.proxy


def _block(encoder: hpack.Encoder, path: bytes, method: bytes = b"GET") -> bytes:
    headers = get(path)
    headers[0] = (b":method", method)
    return encoder.encode(headers)


def _headers(encoder, sid: int, path: bytes, *, end_stream: bool = True,
             method: bytes = b"GET") -> HeadersFrame:
    flags = {"END_HEADERS", "END_STREAM"} if end_stream else {"END_HEADERS"}
    return HeadersFrame(sid, data=_block(encoder, path, method), flags=flags)


def _ended(frames, sid: int) -> bool:
    return any(f.stream_id == sid and "END_STREAM" in f.flags
               for f in frames if isinstance(f, (HeadersFrame, DataFrame)))


def _refusals(log: str) -> list[str]:
    return [line for line in log.splitlines() if "HTTP/2" in line and "client" in line]


def _origin_quiet(origin, seconds: float = 0.3) -> int:
    """How many requests reached the origin, once nothing more arrives."""
    count = -1
    while count != len(origin.seen):
        count = len(origin.seen)
        time.sleep(seconds)
    return count


# -- Rapid Reset (CVE-2023-44487) --------------------------------------------


def test_rapid_reset_gets_goaway_enhance_your_calm_and_spares_the_backend(running):
    proxy = running.proxy
    client = RawClient(proxy.port)
    encoder = hpack.Encoder()
    opened = 0
    for _ in range(40):  # 40 x 50 = 2000 streams at most
        frames = []
        for _ in range(50):
            sid = 2 * opened + 1
            opened += 1
            frames += [_headers(encoder, sid, b"/r%d" % sid),
                       RstStreamFrame(sid, error_code=CODES.CANCEL)]
        if not client.send(*frames):
            break
    client.read(has_goaway, timeout=5)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == CODES.ENHANCE_YOUR_CALM
    client.read(lambda frames: False, timeout=5)
    assert client.closed
    reached = _origin_quiet(running.origin)
    assert reached <= LIMITS.resets and reached < opened // 4
    client.close()
    assert len(_refusals(running.stop())) == 1


def test_streams_the_proxy_refuses_count_as_resets(running):
    # Made-you-reset: a client can have the server reset its streams (here
    # with a malformed request) instead of resetting them itself.
    client = RawClient(running.proxy.port)
    encoder = hpack.Encoder()
    sid = 1
    for _ in range(10):
        frames = []
        for _ in range(50):
            bad = get(b"/a b")
            frames.append(HeadersFrame(sid, data=encoder.encode(bad),
                                       flags={"END_HEADERS", "END_STREAM"}))
            sid += 2
        if not client.send(*frames):
            break
    client.read(has_goaway, timeout=5)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == CODES.ENHANCE_YOUR_CALM
    client.close()


# -- CONTINUATION flood (CVE-2024-27316) and oversized frames -----------------


def test_a_header_block_that_never_ends_is_cut_at_the_head_size_limit(running):
    proxy = running.proxy
    client = RawClient(proxy.port)
    block = _block(hpack.Encoder(), b"/cont")
    client.send(HeadersFrame(1, data=block, flags={"END_STREAM"}))  # no END_HEADERS
    fragment = ContinuationFrame(1, data=b"\x00" * 16384)
    sent = 0
    for _ in range(64):  # 1 MiB at most: h2's own bound is 64 frames
        if not client.send(fragment):
            break
        sent += 1
        if client.read(has_goaway, timeout=0.3) and has_goaway(client.frames):
            break
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == CODES.ENHANCE_YOUR_CALM
    # Cut once the block passes max_head (64 KiB, four frames), not at h2's 1 MiB.
    assert sent <= 65536 // 16384 + 2
    client.close()
    # Many connections doing it at once: the proxy's memory stays bounded.
    pid = proxy.process.pid
    reset_peak_rss(pid)
    before = peak_rss_kib(pid)
    clients = [RawClient(proxy.port) for _ in range(30)]
    for each in clients:
        each.send(HeadersFrame(1, data=block, flags={"END_STREAM"}))
    for _ in range(64):
        alive = [each for each in clients if each.send(fragment)]
        if not alive:
            break
    for each in clients:
        each.read(has_goaway, timeout=5)
        assert has_goaway(each.frames)
        each.close()
    grew = peak_rss_kib(pid) - before
    assert grew < 8 * 1024, f"peak RSS grew by {grew} KiB"
    assert running.origin.seen == []
    assert len(_refusals(running.stop())) == 31


def test_a_frame_longer_than_max_frame_size_is_refused_from_its_header(proxy):
    client = RawClient(proxy.port)
    # A HEADERS frame announcing 16 MiB: refused before its body is buffered.
    client.send(b"\xff\xff\xff\x01\x04\x00\x00\x00\x01" + b"\x00" * 1000)
    client.read(has_goaway, timeout=3)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == CODES.FRAME_SIZE_ERROR
    client.close()


# -- SETTINGS, PING, PRIORITY and empty DATA floods ---------------------------


def _flood_frames(kind: str, encoder) -> tuple[list, object]:
    if kind == "settings":
        return [], SettingsFrame(0)
    if kind == "ping":
        return [], PingFrame(0, opaque_data=b"12345678")
    if kind == "priority":
        return [], PriorityFrame(1, depends_on=0, stream_weight=16)
    return [_headers(encoder, 1, b"/upload", end_stream=False, method=b"POST")], DataFrame(1)


@pytest.mark.parametrize("kind", ["settings", "ping", "priority", "empty-data"])
def test_a_control_frame_flood_gets_goaway_enhance_your_calm(running, kind):
    client = RawClient(running.proxy.port)
    first, frame = _flood_frames(kind, hpack.Encoder())
    client.send(*first)
    for _ in range(20):  # 20 x 100 frames at most
        if not client.send(*[frame] * 100) or has_goaway(client.read(has_goaway, timeout=0.01)):
            break
    client.read(has_goaway, timeout=5)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == CODES.ENHANCE_YOUR_CALM
    client.close()
    assert len(_refusals(running.stop())) == 1


def test_control_frames_under_the_limit_are_answered(proxy):
    sock, conn = h2_client(proxy.port)
    for n in range(20):
        conn.ping(b"%08d" % n)
    conn.send_headers(1, get(b"/after-pings"), end_stream=True)
    sock.sendall(conn.data_to_send())
    seen = read_events(sock, conn, lambda seen: any(
        isinstance(e, h2.events.StreamEnded) for e in seen))
    assert sum(isinstance(e, h2.events.PingAckReceived) for e in seen) == 20
    assert b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived)) == \
        b"hello /after-pings"
    sock.close()


# -- HPACK bomb ----------------------------------------------------------------


def _literal_indexed(name: bytes, value: bytes) -> bytes:
    """A literal field with incremental indexing (RFC 7541 6.2.1), new name, no Huffman."""
    return (b"\x40" + bytes(hpack.hpack.encode_integer(len(name), 7)) + name
            + bytes(hpack.hpack.encode_integer(len(value), 7)) + value)


def _request_prefix(path: bytes) -> bytes:
    # :method GET, :scheme http (static 2, 6), :path literal, :authority literal.
    return (b"\x82\x86" + b"\x04" + bytes(hpack.hpack.encode_integer(len(path), 7)) + path
            + b"\x01\x09site.test")


def test_an_hpack_bomb_is_refused_without_decoding_it(running):
    proxy = running.proxy
    pid = proxy.process.pid
    client = RawClient(proxy.port)
    # One 4000-byte field in the dynamic table (stream 1, a request the proxy serves)...
    client.send(HeadersFrame(1, data=_request_prefix(b"/first")
                             + _literal_indexed(b"x-bomb", b"b" * 4000),
                             flags={"END_HEADERS", "END_STREAM"}))
    client.read(lambda frames: _ended(frames, 1))
    assert _ended(client.frames, 1)
    # ... then named 16000 times in one 16 KiB block: 64 MB once decoded.
    reset_peak_rss(pid)
    before = peak_rss_kib(pid)
    client.send(HeadersFrame(3, data=_request_prefix(b"/bomb") + b"\xbe" * 16000,
                             flags={"END_HEADERS", "END_STREAM"}))
    client.read(has_goaway, timeout=5)
    goaway = client.goaway()
    assert goaway is not None
    assert goaway.error_code in (CODES.ENHANCE_YOUR_CALM, CODES.COMPRESSION_ERROR)
    grew = peak_rss_kib(pid) - before
    assert grew < 8 * 1024, f"peak RSS grew by {grew} KiB"
    assert [p for _, p, _, _ in running.origin.seen] == ["/first"]
    client.close()


def test_a_header_list_within_the_advertised_size_is_decoded(tmp_path, ca):
    run = _Running(tmp_path, ca, extra="max_head_size = 262144\n")
    try:
        client = RawClient(run.proxy.port)
        settings = client.read(lambda frames: any(
            isinstance(f, SettingsFrame) and "ACK" not in f.flags for f in frames))
        advertised = next(f.settings for f in settings if isinstance(f, SettingsFrame))
        assert advertised[SettingsFrame.MAX_HEADER_LIST_SIZE] == 262144
        # 80 KiB of fields: past h2's default 64 KiB, within what was advertised.
        encoder = hpack.Encoder()
        fields = [*get(b"/wide"), (b"x-one", b"1" * 40000), (b"x-two", b"2" * 40000)]
        block = encoder.encode(fields, huffman=False)
        chunks = [block[i:i + 16384] for i in range(0, len(block), 16384)]
        frames = [HeadersFrame(1, data=chunks[0], flags={"END_STREAM"})]
        frames += [ContinuationFrame(1, data=c) for c in chunks[1:]]
        frames[-1].flags.add("END_HEADERS")
        client.send(*frames)
        client.read(lambda frames: _ended(frames, 1) or has_goaway(frames))
        assert not has_goaway(client.frames) and _ended(client.frames, 1)
        assert [p for _, p, _, _ in run.origin.seen] == ["/wide"]
        client.close()
    finally:
        run.stop()


# -- SETTINGS_MAX_CONCURRENT_STREAMS -----------------------------------------


def test_the_stream_past_max_concurrent_streams_is_refused_and_the_others_complete(running):
    client = RawClient(running.proxy.port)
    client.send(SettingsFrame(0, flags={"ACK"}))
    encoder = hpack.Encoder()
    sids = [2 * n + 1 for n in range(LIMITS.max_streams + 1)]
    client.send(*[_headers(encoder, sid, b"/hold") for sid in sids])
    last = sids[-1]
    client.read(lambda frames: any(isinstance(f, RstStreamFrame) for f in frames), timeout=10)
    resets = [f for f in client.frames if isinstance(f, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in resets] == [(last, CODES.REFUSED_STREAM)]
    assert not has_goaway(client.frames)
    deadline = time.monotonic() + 10
    while len(running.origin.seen) < LIMITS.max_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    running.origin.release.set()
    client.read(lambda frames: all(_ended(frames, sid) for sid in sids[:-1]), timeout=15)
    assert all(_ended(client.frames, sid) for sid in sids[:-1])
    assert not has_goaway(client.frames)
    assert len(running.origin.seen) == LIMITS.max_streams
    client.close()


# -- a client that never reads ---------------------------------------------------


def test_a_client_that_never_reads_with_huge_windows_holds_little_memory(running):
    proxy = running.proxy
    pid = proxy.process.pid
    gc.collect()
    reset_peak_rss(pid)
    before = peak_rss_kib(pid)
    window = 2**31 - 1
    client = RawClient(proxy.port, {SettingsFrame.INITIAL_WINDOW_SIZE: window})
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    client.send(SettingsFrame(0, flags={"ACK"}),
                WindowUpdateFrame(0, window_increment=window - 65535), _headers(hpack.Encoder(), 1, b"/huge"))
    deadline = time.monotonic() + 10
    while not running.origin.seen and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # the proxy sends what the socket takes, then must stop
    grew = peak_rss_kib(pid) - before
    assert grew < 8 * 1024, f"peak RSS grew by {grew} KiB for a {HUGE_SIZE >> 20} MiB body"
    # Other clients are served meanwhile.
    sock, conn = h2_client(proxy.port)
    conn.send_headers(1, get(b"/other"), end_stream=True)
    sock.sendall(conn.data_to_send())
    seen = read_events(sock, conn, lambda seen: any(
        isinstance(e, h2.events.StreamEnded) for e in seen), timeout=5)
    assert b"".join(e.data for e in seen if isinstance(e, h2.events.DataReceived)) == \
        b"hello /other"
    sock.close()
    client.close()


# -- graceful shutdown and idle connections -------------------------------------


def test_sigterm_sends_goaway_in_two_steps_lets_open_streams_finish_and_refuses_new_ones(
        running):
    proxy = running.proxy
    client = RawClient(proxy.port)
    client.send(SettingsFrame(0, flags={"ACK"}))
    encoder = hpack.Encoder()
    client.send(_headers(encoder, 1, b"/slow"))
    deadline = time.monotonic() + 5
    while not running.origin.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    proxy.terminate()
    # Step one (RFC 9113 6.8): GOAWAY with the largest stream id, then a PING.
    client.read(lambda frames: has_goaway(frames) and _ping(frames) is not None, timeout=5)
    first = client.goaway()
    assert first.error_code == CODES.NO_ERROR and first.last_stream_id == 2**31 - 1
    # A stream the client sent before it saw the GOAWAY is still served ...
    client.send(_headers(encoder, 3, b"/inflight"))
    # ... and once the PING is answered, the final GOAWAY names the last stream served.
    client.send(PingFrame(0, flags={"ACK"}, opaque_data=_ping(client.frames).opaque_data))
    client.read(lambda frames: len(_goaways(frames)) == 2, timeout=5)
    final = _goaways(client.frames)[1]
    assert final.error_code == CODES.NO_ERROR and final.last_stream_id == 3
    # A stream opened after the final GOAWAY is not served; frames on the open ones still are.
    client.send(_headers(encoder, 5, b"/late"), WindowUpdateFrame(0, window_increment=1000),
                PingFrame(0, opaque_data=b"stillok!"))
    client.read(lambda frames: _ended(frames, 1) and _ended(frames, 3), timeout=5)
    for sid, body in ((1, b"hello /slow"), (3, b"hello /inflight")):
        assert b"".join(f.data for f in client.frames
                        if isinstance(f, DataFrame) and f.stream_id == sid) == body
    client.read(lambda frames: False, timeout=5)
    assert client.closed  # the connection closes once the streams are done
    assert not any(f.stream_id == 5 for f in client.frames
                   if isinstance(f, (HeadersFrame, DataFrame)))
    assert sorted(p for _, p, _, _ in running.origin.seen) == ["/inflight", "/slow"]
    proxy.process.wait(10)  # twistd ends with the signal it was stopped by
    client.close()


def test_a_client_goaway_lets_its_open_streams_finish(running):
    client = RawClient(running.proxy.port)
    client.send(SettingsFrame(0, flags={"ACK"}))
    encoder = hpack.Encoder()
    goaway = GoAwayFrame(0)
    goaway.last_stream_id = 0
    goaway.error_code = CODES.NO_ERROR
    client.send(_headers(encoder, 1, b"/slow"))
    deadline = time.monotonic() + 5
    while not running.origin.seen and time.monotonic() < deadline:
        time.sleep(0.02)
    client.send(goaway)  # the client opens no more streams; stream 1 is still wanted
    client.read(lambda frames: _ended(frames, 1), timeout=5)
    assert b"".join(f.data for f in client.frames
                    if isinstance(f, DataFrame) and f.stream_id == 1) == b"hello /slow"
    client.read(lambda frames: False, timeout=3)
    assert client.closed
    client.close()


def _goaways(frames) -> list:
    return [f for f in frames if isinstance(f, GoAwayFrame)]


def _ping(frames):
    return next((f for f in frames if isinstance(f, PingFrame) and "ACK" not in f.flags), None)


def test_an_idle_connection_gets_goaway_after_the_keepalive_timeout(tmp_path, ca):
    run = _Running(tmp_path, ca, extra="keepalive_timeout = 1\n")
    try:
        client = RawClient(run.proxy.port)
        client.send(SettingsFrame(0, flags={"ACK"}))
        started = time.monotonic()
        client.read(has_goaway, timeout=5)
        waited = time.monotonic() - started
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == CODES.NO_ERROR
        assert 0.8 <= waited < 4
        client.read(lambda frames: False, timeout=3)
        assert client.closed
        client.close()
    finally:
        run.stop()


# -- memory per connection and per stream ------------------------------------------


def test_memory_per_idle_connection_and_per_open_stream(running, capsys):
    proxy = running.proxy
    pid = proxy.process.pid
    time.sleep(0.3)
    base = rss_kib(pid)
    idle = [RawClient(proxy.port) for _ in range(200)]
    for client in idle:
        client.send(SettingsFrame(0, flags={"ACK"}))
        client.read(lambda frames: any(isinstance(f, SettingsFrame) for f in frames))
    time.sleep(0.5)
    per_connection = (rss_kib(pid) - base) / len(idle)
    for client in idle:
        client.close()
    time.sleep(0.5)
    base = rss_kib(pid)
    busy = [RawClient(proxy.port) for _ in range(4)]
    for client in busy:
        client.send(SettingsFrame(0, flags={"ACK"}))
        encoder = hpack.Encoder()
        client.send(*[_headers(encoder, 2 * n + 1, b"/hold") for n in range(50)])
    deadline = time.monotonic() + 15
    while len(running.origin.seen) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(running.origin.seen) == 200
    time.sleep(0.3)
    per_stream = (rss_kib(pid) - base - 4 * per_connection) / 200
    running.origin.release.set()
    for client in busy:
        client.read(lambda frames: all(_ended(frames, 2 * n + 1) for n in range(50)))
        client.close()
    with capsys.disabled():
        print(f"\nHTTP/2 memory: {per_connection:.1f} KiB per idle connection, "
              f"{per_stream:.1f} KiB per open stream (with its backend connection)")
    assert per_connection < 256 and per_stream < 512
