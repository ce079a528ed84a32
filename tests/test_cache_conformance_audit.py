"""
An RFC 9111 conformance audit of the shared cache, modelled on the groups
of the http-tests cache-tests suite (freshness, storage, validation,
invalidation, headers on hits, stale responses).

Every test drives a real `ForwardProxy` with the cache on, over loopback,
with `http.client`, against `RawOrigin`: a raw-socket origin whose
responses carry exactly the fields the test gives (no Date or Server unless
asked) and which records every request it gets.  The cache's clock is
`ShiftedClock`, the real reactor with an offset the test advances, so ages
of hours take no time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import pytest_twisted
from hardening import no_tracebacks  # noqa: F401  (autouse: a logged traceback fails the test)
from loopback import http_client_request
from twisted.internet import protocol, reactor

from multiproxy.cache import CacheConfig
from multiproxy.cache._fetcher import caching_fetcher_factory
from multiproxy.http._dates import format_http_date

# -- the harness ---------------------------------------------------------------


class ShiftedClock:
    """The real reactor, but ``seconds()`` runs ``offset`` seconds ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def seconds(self) -> float:
        return reactor.seconds() + self.offset

    def __getattr__(self, name):
        return getattr(reactor, name)


@dataclass
class Seen:
    """One request as the origin received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


#: A response script: (status, [(field, value)], body).
Response = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class RawOrigin:
    """
    The origin's behaviour: ``routes[path]`` is a function of the request
    (and the origin) giving (status, fields, body); fields are sent exactly
    as given, plus Content-Length (except for 1xx, 204 and 304).
    """

    clock: ShiftedClock
    routes: dict[str, Callable[[Seen], Response]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0

    def date(self, offset: float = 0) -> str:
        return format_http_date(self.clock.seconds() + offset).decode()

    def count(self, path: str) -> int:
        return sum(1 for s in self.seen if s.path == path)

    def last(self, path: str) -> Seen:
        return [s for s in self.seen if s.path == path][-1]

    def answer(self, request: Seen) -> bytes:
        self.seen.append(request)
        route = self.routes.get(request.path)
        if route is None:
            status, fields, body = 404, [], b"no such route"
        else:
            status, fields, body = route(request)
        lines = [b"HTTP/1.1 %d X" % status]
        lines += [f"{k}: {v}".encode("utf-8") for k, v in fields]
        framed = status >= 200 and status not in (204, 304)
        if framed:
            lines.append(b"Content-Length: %d" % len(body))
        head = b"\r\n".join(lines) + b"\r\n\r\n"
        if request.method == "HEAD" or not framed:
            return head
        return head + body


class _OriginProtocol(protocol.Protocol):
    def __init__(self, origin: RawOrigin) -> None:
        self.origin = origin
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, rest = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:]]
            length = 0
            for k, v in headers:
                if k.lower() == "content-length":
                    length = int(v)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            path = target.split("://", 1)[-1]
            path = "/" + path.split("/", 1)[1] if "://" in target else target
            self.transport.write(self.origin.answer(Seen(method, path, headers, body)))


@pytest.fixture
def clock():
    return ShiftedClock()


@pytest.fixture
def raw_origin(clock):
    origin = RawOrigin(clock)
    factory = protocol.Factory.forProtocol(lambda: _OriginProtocol(origin))
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    origin.port = port.getHost().port
    yield origin
    pytest_twisted.blockon(port.stopListening())


@pytest.fixture
def proxy(start_forward, clock, raw_origin):
    """A forward proxy with the (memory) cache on, timed by ``clock``; returns its port."""
    port, factory = start_forward()
    factory.fetcher = caching_fetcher_factory(CacheConfig(), clock)(factory.fetcher)
    return port


@dataclass
class Client:
    """http.client through the proxy to ``raw_origin``."""

    port: int
    origin: RawOrigin

    async def __call__(self, path: str, headers=None, method: str = "GET", body=None):
        url = f"http://127.0.0.1:{self.origin.port}{path}"
        status, fields, data = await http_client_request(
            self.port, method, url, body=body, headers=headers
        )
        return Reply(status, fields, data)


@dataclass
class Reply:
    status: int
    fields: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        for k, v in self.fields:
            if k.lower() == name.lower():
                return v
        return None

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.fields if k.lower() == name.lower()]

    @property
    def x_cache(self) -> str | None:
        return self.get("X-Cache")


@pytest.fixture
def client(proxy, raw_origin):
    return Client(proxy, raw_origin)


def script(*responses: Response) -> Callable[[Seen], Response]:
    """A route answering with ``responses`` in turn (the last one repeats)."""
    queue = list(responses)

    def route(request: Seen) -> Response:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return route


# -- validation: freshening with a 304 (RFC 9111 4.3.4, RFC 9110 6.6.1) --------


@pytest_twisted.ensureDeferred
async def test_304_without_date_freshens_from_the_time_it_arrived(client, raw_origin, clock):
    """
    A 304 without Date counts as dated when received (RFC 9110 6.6.1: the
    recipient appends Date), so the stored Date it replaces no longer ages
    the freshened response (RFC 9111 4.3.4).
    """
    raw_origin.routes["/r"] = script(
        (200, [("Date", raw_origin.date()), ("Cache-Control", "max-age=10"), ("ETag", '"a"')], b"one"),
        (304, [("Cache-Control", "max-age=100"), ("ETag", '"a"')], b""),
    )
    await client("/r")
    clock.offset += 1000
    revalidated = await client("/r")
    assert revalidated.status == 200 and revalidated.body == b"one"
    assert revalidated.x_cache == "REVALIDATED"
    assert int(revalidated.get("Age")) < 5
    clock.offset += 5
    hit = await client("/r")
    assert hit.x_cache == "HIT" and raw_origin.count("/r") == 2
    assert 5 <= int(hit.get("Age")) < 10
