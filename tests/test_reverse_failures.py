"""
The reverse proxy when backends fail — killed, refusing, dropping
connections, slow, unusable — run in memory on a fake clock
(multiproxy.testing).  tests/test_reverse_proxy.py drives it over loopback.
"""

from __future__ import annotations

from multiproxy.balancing import Backend, BackendPool, HealthChecker, RoundRobin, TCPCheck
from multiproxy.http import Timeouts
from multiproxy.reverse import ReverseProxy, Route, RouteTable
from multiproxy.testing import Harness, Reply

HOST = [(b"Host", b"www.example.com")]


def named(name: str) -> Reply:
    return Reply(200, name.encode())


def echo(request) -> Reply:
    return Reply(200, request.body)


def pool_of(harness: Harness, ports: list[int], **kwargs) -> BackendPool:
    backends = [Backend(f"web-{i}", host="127.0.0.1", port=p, connect_timeout=2.0)
                for i, p in enumerate(ports)]
    return BackendPool("web", backends, RoundRobin(), harness.reactor, **kwargs)


def reverse(harness: Harness, pool: BackendPool, **kwargs) -> ReverseProxy:
    return ReverseProxy(harness.reactor, routes=RouteTable([Route("web")]), pools={"web": pool},
                        reporters=[harness.reporter], **kwargs)


def fetch_many(harness: Harness, proxy, count: int, path: str = "/who", *, method="GET",
               body=b"", keepalive=True):
    """``count`` requests, over one connection (or one each): their responses."""
    client = harness.connect(proxy)
    answers = []
    for _ in range(count):
        answers.append(client.request(method, path, headers=HOST, body=body))
        if not keepalive or client.closed:
            client.close()
            client = harness.connect(proxy)
    client.close()
    return answers


def test_killed_backend_no_idempotent_client_sees_an_error():
    harness = Harness()
    origins = [harness.origin("127.0.0.1", 9000 + i, reply=named(f"b{i}")) for i in range(3)]
    pool = pool_of(harness, [9000, 9001, 9002], max_failures=2)
    checker = HealthChecker(harness.reactor, pool.backends, TCPCheck(), interval=0.1,
                            timeout=0.5, rise=1, fall=1)
    checker.startService()
    proxy = reverse(harness, pool)
    assert {r.status for r in fetch_many(harness, proxy, 9)} == {200}

    origins[2].close_connections()  # killed: open connections close, new ones are refused
    origins[2].refuse()
    # Right after the kill (health has not noticed yet) and after it has.
    during = fetch_many(harness, proxy, 30)
    assert [r.status for r in during] == [200] * 30
    harness.advance(0.1)
    assert not pool.backends[2].checked_up
    after = fetch_many(harness, proxy, 10, keepalive=False)
    assert [r.status for r in after] == [200] * 10
    assert b"b2" not in {r.body for r in during + after}
    assert pool.snapshot()[2].state == "down"
    checker.stopService()


def test_refused_connect_is_retried_on_another_backend_even_for_post():
    harness = Harness()
    harness.origin("127.0.0.1", 9001, reply=echo)  # 9000: nothing listens
    pool = pool_of(harness, [9000, 9001])
    answers = fetch_many(harness, reverse(harness, pool), 4, "/echo", method="POST",
                         body=b"payload")
    assert [(r.status, r.body) for r in answers] == [(200, b"payload")] * 4
    # Each line names the backend that answered, not the one that refused first.
    assert [r.upstream for r in harness.records] == ["web-1"] * 4
    refused, answered = pool.backends
    assert answered.responses == {"2xx": 4} and answered.bytes_out > 4 * len(b"payload")
    assert (refused.responses, refused.bytes_in, refused.connect_failures) == ({}, 0, 2)


def test_dropped_connection_replays_get_once_but_never_post():
    harness = Harness()
    drops = [harness.origin("127.0.0.1", port, reply=Reply(raw=b"", close=True))
             for port in (9000, 9001)]
    proxy = reverse(harness, pool_of(harness, [9000, 9001]))
    [response] = fetch_many(harness, proxy, 1, "/get")
    assert response.status == 502
    assert sum(len(o.requests) for o in drops) == 2  # tried, replayed once, then 502
    [response] = fetch_many(harness, proxy, 1, "/post", method="POST", body=b"x")
    assert response.status == 502
    assert sum(len(o.requests) for o in drops) == 3  # never replayed
    assert b"without answering" in response.body


def test_get_replayed_on_a_healthy_backend_after_a_drop():
    harness = Harness()
    drop = harness.origin("127.0.0.1", 9000, reply=Reply(raw=b"", close=True))
    harness.origin("127.0.0.1", 9001, reply=named("b0"))
    answers = fetch_many(harness, reverse(harness, pool_of(harness, [9000, 9001])), 4)
    assert [(r.status, r.body) for r in answers] == [(200, b"b0")] * 4
    assert len(drop.requests) >= 1


def test_backend_timeout_gives_504():
    harness = Harness()
    harness.origin("127.0.0.1", 9000, reply=Reply(200, b"late", delay=3))
    proxy = reverse(harness, pool_of(harness, [9000]), timeouts=Timeouts(response=0.3))
    client = harness.connect(proxy)
    client.send_request("GET", "/slow", headers=HOST)
    harness.advance(0.3)
    response = client.response()
    assert response.status == 504
    assert b"no response within 0.3 s" in response.body


def test_unusable_response_gives_502():
    harness = Harness()
    harness.origin("127.0.0.1", 9000, reply=Reply(raw=b"HELLO THERE\r\n\r\n", close=True))
    [response] = fetch_many(harness, reverse(harness, pool_of(harness, [9000])), 1, "/")
    assert response.status == 502
    assert b"invalid response" in response.body


def test_no_backend_reachable_gives_503_with_retry_after():
    harness = Harness()
    proxy = reverse(harness, pool_of(harness, [9000, 9001], max_failures=1, backoff=7))
    [response] = fetch_many(harness, proxy, 1, "/")
    assert response.status == 503
    assert b"could be reached" in response.body
    assert int(response.header("retry-after")) >= 1
    # Both are ejected now: the pool has no healthy backend at all.
    harness.advance(2)
    [response] = fetch_many(harness, proxy, 1, "/")
    assert response.status == 503
    assert b"no healthy backend in pool web" in response.body
    assert int(response.header("retry-after")) == 5  # the 7 s backoff, 2 s of it gone
