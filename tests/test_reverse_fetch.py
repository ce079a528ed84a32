"""
The reverse proxy's failover rules (BalancingFetcher), on fakes: no reactor,
no sockets.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet import defer

from multiproxy.http._failover import BalancingFetcher
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import RequestHead
from multiproxy.pipeline._errors import UpstreamError
from multiproxy.pipeline._values import Intent
from multiproxy.reverse._fetch import ReverseRequest, backend_authority


class FakeBackend:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.key = name
        self.host = "127.0.0.1"
        self.port = port
        self.tls = None
        self.results: list[bool] = []
        self.active = 0

    def started(self) -> None:
        self.active += 1

    def finished(self, ok: bool, elapsed: float) -> None:
        self.active -= 1
        self.results.append(ok)


class FakePool:
    """A BackendPool stand-in: the first backend not excluded."""

    name = "web"

    def __init__(self, backends) -> None:
        self.backends = backends

    def choose(self, intent, excluded=frozenset()):
        for b in self.backends:
            if b.key not in excluded:
                return b
        return None

    def healthy(self):
        return list(self.backends)

    def retry_after(self) -> int:
        return 4


class FakeConnection:
    def __init__(self, upstream) -> None:
        self.upstream = upstream
        self.sent = []
        self.abandoned = False

    def send(self, request, sink, on_stale=None) -> None:
        self.sent.append(request)
        self.sink = sink
        self.on_stale = on_stale

    def abandon(self) -> None:
        self.abandoned = True


class FakeConnectionPool:
    def __init__(self) -> None:
        self.pending: list[tuple[object, defer.Deferred]] = []
        self.released = []

    def take_idle(self, upstream):
        return None

    def connect(self, upstream) -> defer.Deferred:
        d = defer.Deferred(lambda d: d.errback(UpstreamError("timed out connecting", 504)))
        self.pending.append((upstream, d))
        return d

    def release(self, conn) -> None:
        self.released.append(conn)

    def succeed(self) -> FakeConnection:
        upstream, d = self.pending.pop(0)
        conn = FakeConnection(upstream)
        d.callback(conn)
        return conn

    def refuse(self) -> None:
        upstream, d = self.pending.pop(0)
        d.errback(UpstreamError(f"connection refused by {upstream.name}", 502))


class Sink:
    def __init__(self) -> None:
        self.events = []

    def head(self, response, producer):
        self.events.append(("head", response))

    def data(self, data):
        self.events.append(("data", data))

    def end(self):
        self.events.append(("end",))

    def fail(self, error):
        self.events.append(("fail", error))

    def flush(self):
        pass


def setup(method=b"GET", body=None, rewrite_host=False):
    a, b, c = FakeBackend("a", 9001), FakeBackend("b", 9002), FakeBackend("c", 9003)
    pool = FakePool([a, b, c])
    intent = Intent(kind="http", proxy="t", client_host="127.0.0.1", client_port=1)
    head = RequestHead(method, b"/x", b"HTTP/1.1", Headers([(b"Host", b"site.test")]))
    request = ReverseRequest(intent=intent, upstream=a, head=head, body=body, pool=pool,
                             rewrite_host=rewrite_host)
    connections = FakeConnectionPool()
    fetcher = BalancingFetcher(connections, max_attempts=3)
    return fetcher, connections, request, (a, b, c), Sink()


def test_refused_connect_moves_to_the_next_backend_with_its_host():
    fetcher, connections, request, (a, b, c), sink = setup(rewrite_host=True)
    fetcher.fetch(request, sink)
    connections.refuse()
    conn = connections.succeed()
    assert conn.upstream is b
    assert conn.sent[0].upstream is b
    assert conn.sent[0].head.headers.get(b"host") == backend_authority(b) == b"127.0.0.1:9002"
    assert a.results == [False] and a.active == 0
    assert sink.events == []


def test_every_backend_refusing_is_a_503_failure_with_retry_after():
    # A failure rather than a 503 response: a cache in front must know the
    # origin was not reached (the client still sees 503 with Retry-After).
    fetcher, connections, request, backends, sink = setup()
    fetcher.fetch(request, sink)
    for _ in range(3):
        connections.refuse()
    assert connections.pending == []
    [(kind, error)] = sink.events
    assert (kind, error.status, error.retry_after, error.ended) == ("fail", 503, 4,
                                                                    "connect-failed")
    assert "no backend of pool web could be reached" in str(error)
    assert [b.results for b in backends] == [[False], [False], [False]]


def test_request_without_a_backend_gets_one_from_its_pool_or_a_no_backend_failure():
    fetcher, connections, request, (a, _, _), sink = setup()
    fetcher.fetch(replace(request, upstream=None), sink)
    assert connections.pending and connections.pending[0][0] is a
    empty = FakePool([])
    fetcher.fetch(replace(request, upstream=None, pool=empty), sink)
    [(kind, error)] = sink.events
    assert (kind, error.status, error.ended) == ("fail", 503, "no-backend")
    assert "no healthy backend in pool web" in str(error)


def test_max_attempts_bounds_the_failover():
    fetcher, connections, request, backends, sink = setup()
    fetcher.max_attempts = 2
    fetcher.fetch(request, sink)
    connections.refuse()
    connections.refuse()
    assert connections.pending == [] and sink.events[0][1].status == 503
    assert backends[2].results == []


def test_client_leaving_during_connect_does_not_count_against_the_backend():
    fetcher, connections, request, (a, b, c), sink = setup()
    abandon = fetcher.fetch(request, sink)
    abandon()
    assert a.results == [True] and a.active == 0
    assert sink.events == []
    assert [d.called for _, d in connections.pending] == [True]  # cancelled, nothing retried


def test_client_leaving_while_answered_abandons_the_connection_without_blame():
    fetcher, connections, request, (a, b, c), sink = setup()
    abandon = fetcher.fetch(request, sink)
    conn = connections.succeed()
    abandon()
    assert conn.abandoned and a.results == [True]


def test_idempotent_request_is_replayed_once_on_another_backend():
    fetcher, connections, request, (a, b, c), sink = setup()
    fetcher.fetch(request, sink)
    first = connections.succeed()
    first.sink.fail(UpstreamError("upstream closed the connection without answering", 502))
    assert sink.events == []
    second = connections.succeed()
    assert second.upstream is b
    second.sink.fail(UpstreamError("upstream closed the connection without answering", 502))
    assert [e[0] for e in sink.events] == ["fail"]
    assert connections.pending == []


def test_post_is_never_replayed():
    fetcher, connections, request, backends, sink = setup(method=b"POST")
    fetcher.fetch(request, sink)
    conn = connections.succeed()
    conn.sink.fail(UpstreamError("upstream closed the connection without answering", 502))
    assert [e[0] for e in sink.events] == ["fail"]
    assert connections.pending == []


def test_request_with_a_body_is_never_replayed():
    fetcher, connections, request, backends, sink = setup(method=b"PUT", body=object())
    fetcher.fetch(request, sink)
    conn = connections.succeed()
    conn.sink.fail(UpstreamError("upstream closed the connection without answering", 502))
    assert [e[0] for e in sink.events] == ["fail"] and connections.pending == []


def test_timeout_is_not_replayed():
    fetcher, connections, request, backends, sink = setup()
    fetcher.fetch(request, sink)
    conn = connections.succeed()
    conn.sink.fail(UpstreamError("upstream sent no response within 1 s", 504))
    assert sink.events[0][1].status == 504 and connections.pending == []


def test_failure_after_the_head_is_passed_on():
    from multiproxy.http1._parser import ResponseHead

    fetcher, connections, request, backends, sink = setup()
    fetcher.fetch(request, sink)
    conn = connections.succeed()
    conn.sink.head(ResponseHead(b"HTTP/1.1", 200, b"OK", Headers()), None)
    conn.sink.fail(UpstreamError("upstream closed the connection mid-response", 502))
    assert [e[0] for e in sink.events] == ["head", "fail"]
    assert connections.pending == []


def test_stale_pooled_connection_is_replaced_by_a_fresh_one_to_the_same_backend():
    fetcher, connections, request, (a, b, c), sink = setup()
    fetcher.fetch(request, sink)
    conn = connections.succeed()
    conn.on_stale()
    again = connections.succeed()
    assert again.upstream is a and a.results == [True]


def test_reverse_proxy_fits_the_shared_contract():
    from twisted.internet.task import Clock
    from zope.interface.verify import verifyObject

    from multiproxy.balancing import Backend, BackendPool, RoundRobin
    from multiproxy.pipeline._errors import ConfigError
    from multiproxy.pipeline._interfaces import IProxy, IUpstreamChooser
    from multiproxy.reverse import ReverseProxy, Route, RouteTable

    clock = Clock()
    pool = BackendPool("web", [Backend(host="127.0.0.1", port=9001)], RoundRobin(), clock)
    proxy = ReverseProxy(clock, routes=RouteTable([Route("web")]), pools={"web": pool})
    assert verifyObject(IProxy, proxy)
    assert verifyObject(IUpstreamChooser, proxy.chooser)
    import pytest

    with pytest.raises(ConfigError, match="policy: .* does not provide IPolicy"):
        ReverseProxy(clock, routes=RouteTable([Route("web")]), pools={"web": pool},
                     policy=object())
    with pytest.raises(ValueError, match="routes name pools that do not exist: api"):
        ReverseProxy(clock, routes=RouteTable([Route("api")]), pools={"web": pool})
