"""
Time HTTP/1.x message parsing: multiproxy's reader against h11 and httptools.

    python3 bench/parser_bench.py [--quick]
    python3 bench/parser_bench.py --against OLD_PARSER.py [--quick]

Prints CPU microseconds per message (best of 3 rounds; process time, so
other load on a shared machine disturbs the figures less) and each parser's ratio
to ours for: a browser-like request head, a response head with a small body,
a chunked request body (64 KiB in 4 KiB chunks) and a 16 MiB Content-Length
body fed in 64 KiB pieces (MB/s).  Then replays the smuggling corpus
(tests/vectors/smuggling.py) through all three and lists what each lets
through.  Every parser builds the same things: the
head fields as a list of byte pairs and the body pieces.  Runs in about 10 s
of CPU.

With ``--against``, compares our reader with another version of
``multiproxy/http1/_parser.py`` (e.g. ``git show HEAD~3:src/multiproxy/http1/_parser.py
> /tmp/old.py``) instead: the rounds of the two alternate, so on a shared
machine both see the same load, and the best of each is printed with the
ratio.  Separate runs are not comparable there: one busy neighbour moves
every figure by 30% or more.
"""

from __future__ import annotations

import sys
import time

import h11
import httptools

from multiproxy.http1 import _parser as ours
from multiproxy.http1._parser import NEED_DATA, Data, EndOfMessage, RequestReader

REQUEST = (
    b"GET /static/app/main.js?v=1234567 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-GB,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Referer: https://www.example.com/index.html\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n"
    b"Sec-Fetch-Dest: script\r\n"
    b"Sec-Fetch-Mode: no-cors\r\n"
    b"\r\n"
)

RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Date: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
    b"Server: nginx/1.25.3\r\n"
    b"Content-Type: application/javascript; charset=utf-8\r\n"
    b"Content-Length: 100\r\n"
    b"Last-Modified: Sun, 31 Dec 2023 12:00:00 GMT\r\n"
    b"ETag: \"6590d2c0-64\"\r\n"
    b"Cache-Control: public, max-age=3600\r\n"
    b"Vary: Accept-Encoding\r\n"
    b"Connection: keep-alive\r\n"
    b"Accept-Ranges: bytes\r\n"
    b"\r\n" + b"x" * 100
)

CHUNKED = (
    b"POST /upload HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Type: application/octet-stream\r\n\r\n"
    + (b"1000\r\n" + b"y" * 4096 + b"\r\n") * 16
    + b"0\r\n\r\n"
)

BIG_BODY = 16 * 1024 * 1024
PIECE = 64 * 1024


# -- ours -----------------------------------------------------------------------


def ours_requests(messages: list[bytes], parser=ours) -> None:
    reader = parser.RequestReader()
    end, need_data = parser.EndOfMessage, parser.NEED_DATA
    for data in messages:
        reader.feed(data)
        while True:
            event = reader.next_event()
            if type(event) is end:
                break
            assert event is not need_data
        reader.start_next()


def ours_responses(data: bytes, n: int, parser=ours) -> None:
    reader = parser.ResponseReader()
    end, need_data = parser.EndOfMessage, parser.NEED_DATA
    for _ in range(n):
        reader.expect(b"GET")
        reader.feed(data)
        while True:
            event = reader.next_event()
            if type(event) is end:
                break
            assert event is not need_data
        reader.start_next()


def ours_big_body(n: int) -> None:
    piece = b"z" * PIECE
    for _ in range(n):
        reader = RequestReader()
        reader.feed(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % BIG_BODY)
        reader.next_event()
        got = 0
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                reader.feed(piece)
            elif type(event) is Data:
                got += len(event.data)
            else:
                break
        assert got == BIG_BODY


# -- h11 ------------------------------------------------------------------------


def h11_requests(messages: list[bytes]) -> float:
    # h11 needs our side to send a response before the next request cycle,
    # so each message gets a fresh connection (made outside the timed loop).
    conns = [h11.Connection(h11.SERVER) for _ in messages]
    start = time.process_time()
    for conn, data in zip(conns, messages):
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if type(event) is h11.EndOfMessage:
                break
            assert event is not h11.NEED_DATA
    return time.process_time() - start


def h11_responses(data: bytes, n: int) -> float:
    conns = []
    for _ in range(n):
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "h")]))
        conn.send(h11.EndOfMessage())
        conns.append(conn)
    start = time.process_time()
    for conn in conns:
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if type(event) is h11.EndOfMessage:
                break
            assert event is not h11.NEED_DATA
    return time.process_time() - start


def h11_big_body(n: int) -> None:
    piece = b"z" * PIECE
    for _ in range(n):
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % BIG_BODY)
        conn.next_event()
        got = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(piece)
            elif type(event) is h11.Data:
                got += len(event.data)
            else:
                break
        assert got == BIG_BODY


# -- httptools (llhttp) -----------------------------------------------------------


class _Collector:
    """The callbacks httptools needs to build what the other parsers build."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.url = b""
        self.done = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.done += 1
        self.headers = []
        self.body = []
        self.url = b""


def httptools_requests(messages: list[bytes]) -> None:
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    for data in messages:
        parser.feed_data(data)
        parser.get_method()
    assert collector.done == len(messages)


def httptools_responses(data: bytes, n: int) -> None:
    collector = _Collector()
    parser = httptools.HttpResponseParser(collector)
    for _ in range(n):
        parser.feed_data(data)
        parser.get_status_code()
    assert collector.done == n


def httptools_big_body(n: int) -> None:
    piece = b"z" * PIECE

    class Count(_Collector):
        got = 0

        def on_body(self, body: bytes) -> None:
            self.got += len(body)

    for _ in range(n):
        collector = Count()
        parser = httptools.HttpRequestParser(collector)
        parser.feed_data(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % BIG_BODY)
        for _ in range(BIG_BODY // PIECE):
            parser.feed_data(piece)
        assert collector.got == BIG_BODY and collector.done == 1


# -- strictness ------------------------------------------------------------------------


def _load_corpus():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "smuggling.py"
    spec = importlib.util.spec_from_file_location("smuggling_vectors", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.load_vectors(direction="request", stage="parser")


def _accepts_ours(data: bytes) -> bool:
    reader = RequestReader()
    reader.feed(data)
    try:
        while True:
            event = reader.next_event()
            if type(event) is EndOfMessage:
                return True
            if event is NEED_DATA:
                return False
    except Exception:
        return False


def _accepts_h11(data: bytes) -> bool:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    try:
        while True:
            event = conn.next_event()
            if type(event) is h11.EndOfMessage:
                return True
            if event is h11.NEED_DATA:
                return False
    except h11.RemoteProtocolError:
        return False


def _accepts_httptools(data: bytes) -> bool:
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    try:
        parser.feed_data(data)
    except httptools.HttpParserError:
        return False
    return collector.done > 0


def strictness() -> None:
    vectors = _load_corpus()
    hostile = [v for v in vectors if v.status is not None]
    valid = [v for v in vectors if v.status is None]
    print(f"\nstrictness: {len(hostile)} hostile request vectors (tests/vectors/smuggling.py), "
          f"{len(valid)} valid ones")
    for name, accepts in [("multiproxy", _accepts_ours), ("h11", _accepts_h11),
                          ("httptools", _accepts_httptools)]:
        let_through = [v.name for v in hostile if accepts(v.data)]
        refused_valid = [v.name for v in valid if not accepts(v.data)]
        print(f"  {name:<11} accepts {len(let_through):3d} hostile: {', '.join(let_through) or '-'}")
        print(f"  {'':<11} refuses {len(refused_valid):3d} valid:   {', '.join(refused_valid) or '-'}")


# -- harness --------------------------------------------------------------------------


def best_of(fn, *args, rounds: int = 3) -> float:
    """Best wall time of ``rounds`` runs (functions may return their own timed part)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        inner = fn(*args)
        elapsed = inner if isinstance(inner, float) else time.process_time() - start
        best = min(best, elapsed)
    return best


def _distinct(n: int) -> list[bytes]:
    # Every field line different in every message: the reader's cache of
    # parsed field lines never hits (its worst case).
    return [
        b"\r\n".join(
            line + b"-%d" % i if b": " in line else line for line in REQUEST.split(b"\r\n")
        )
        for i in range(n)
    ]


def against(path: str, quick: bool) -> None:
    """Alternate rounds of our reader and the one in ``path``; print the best of each."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("parser_against", path)
    other = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = other  # dataclasses look their module up
    spec.loader.exec_module(other)
    n = 2000 if quick else 5000
    n_chunked = 300 if quick else 800
    rounds = 5 if quick else 12
    cases = [
        ("request head (11 fields)", n, ours_requests, ([REQUEST] * n,)),
        ("request head, every field line distinct", n, ours_requests, (_distinct(n),)),
        ("response head + 100 B body", n, ours_responses, (RESPONSE, n)),
        ("chunked request, 16 x 4 KiB", n_chunked, ours_requests, ([CHUNKED] * n_chunked,)),
    ]
    best: dict[tuple[str, str], float] = {}
    for _ in range(rounds):
        for title, count, fn, args in cases:
            for name, parser in (("against", other), ("ours", ours)):
                start = time.process_time()
                fn(*args, parser=parser)
                micro = (time.process_time() - start) / count * 1e6
                best[title, name] = min(best.get((title, name), micro), micro)
    print(f"microseconds per message, best of {rounds} alternated rounds; against: {path}")
    for title, _, _, _ in cases:
        old, new = best[title, "against"], best[title, "ours"]
        print(f"  {title:<42} against {old:8.2f}   ours {new:8.2f}   x{new / old:5.2f}")


def main() -> None:
    quick = "--quick" in sys.argv
    if "--against" in sys.argv:
        against(sys.argv[sys.argv.index("--against") + 1], quick)
        return
    n = 2000 if quick else 5000
    n_chunked = 300 if quick else 800
    same = [REQUEST] * n
    distinct = _distinct(n)
    cases = [
        ("request head (11 fields)", n, [
            ("multiproxy", ours_requests, (same,)),
            ("h11", h11_requests, (same,)),
            ("httptools", httptools_requests, (same,)),
        ]),
        ("request head, every field line distinct", n, [
            ("multiproxy", ours_requests, (distinct,)),
            ("h11", h11_requests, (distinct,)),
            ("httptools", httptools_requests, (distinct,)),
        ]),
        ("response head + 100 B body", n, [
            ("multiproxy", ours_responses, (RESPONSE, n)),
            ("h11", h11_responses, (RESPONSE, n)),
            ("httptools", httptools_responses, (RESPONSE, n)),
        ]),
        ("chunked request, 16 x 4 KiB", n_chunked, [
            ("multiproxy", ours_requests, ([CHUNKED] * n_chunked,)),
            ("h11", h11_requests, ([CHUNKED] * n_chunked,)),
            ("httptools", httptools_requests, ([CHUNKED] * n_chunked,)),
        ]),
    ]
    print(f"python {sys.version.split()[0]}, h11 {h11.__version__}, httptools {httptools.__version__}")
    for title, count, runs in cases:
        print(f"\n{title}: microseconds per message (best of 3, {count} messages)")
        base = None
        for name, fn, args in runs:
            micro = best_of(fn, *args) / count * 1e6
            base = base or micro
            print(f"  {name:<11} {micro:9.2f} us   x{micro / base:6.2f} of multiproxy")
    print(f"\nstreamed Content-Length body, {BIG_BODY >> 20} MiB in {PIECE >> 10} KiB pieces: MB/s")
    rounds = 1 if quick else 3
    base = None
    for name, fn in [("multiproxy", ours_big_body), ("h11", h11_big_body), ("httptools", httptools_big_body)]:
        seconds = best_of(fn, 1, rounds=rounds)
        rate = BIG_BODY / seconds / 1e6
        base = base or rate
        print(f"  {name:<11} {rate:9.0f} MB/s  x{rate / base:6.2f} of multiproxy")
    strictness()


if __name__ == "__main__":
    main()
