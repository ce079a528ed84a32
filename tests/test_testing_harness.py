"""multiproxy.testing: every proxy run in memory on fake time, against scripted origins."""

from __future__ import annotations

import math
import time

import pytest
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.wire import Echo

from multiproxy.balancing import Backend, BackendPool, RoundRobin
from multiproxy.cache import CacheConfig, caching_fetcher_factory
from multiproxy.forward import ForwardProxy
from multiproxy.http import Timeouts
from multiproxy.reverse import ReverseProxy, Route, RouteTable
from multiproxy.socks import SocksProxy
from multiproxy.tcp import TCPRelayFactory
from multiproxy.testing import (
    FakeReactor,
    Harness,
    NotQuiet,
    Reply,
    ResponseIncomplete,
)


def forward(harness: Harness, **kwargs) -> ForwardProxy:
    return ForwardProxy(harness.reactor, reporters=[harness.reporter], **kwargs)


# scripted origins


def test_origin_answers_by_route_and_records_what_the_proxy_sent():
    harness = Harness()
    origin = harness.origin("example.com")
    origin.route("/a", Reply(200, b"page a", headers=[(b"Content-Type", b"text/plain"),
                                                       (b"Set-Cookie", b"x=1"),
                                                       (b"Set-Cookie", b"y=2")]))
    client = harness.connect(forward(harness), client=("10.1.2.3", 5555))

    response = client.request("GET", "http://example.com/a?q=1",
                              headers=[(b"User-Agent", b"test")])

    assert (response.status, response.body) == (200, b"page a")
    assert response.header_values("set-cookie") == [b"x=1", b"y=2"]
    assert [name for name, _ in response.headers][:3] == [b"Content-Type", b"Set-Cookie",
                                                        b"Set-Cookie"]
    (request,) = origin.requests
    assert (request.method, request.target, request.path) == (b"GET", b"/a?q=1", b"/a")
    assert request.header("host") == b"example.com"
    assert request.header("x-forwarded-for") == b"10.1.2.3"
    assert request.header("via") == b"1.1 multiproxy"
    (record,) = harness.records
    assert (record.status, record.upstream, record.client_host) == (200, "example.com:80",
                                                                    "10.1.2.3")


def test_unrouted_path_is_a_404_naming_the_fake_origin():
    harness = Harness()
    harness.origin("example.com").route("/known", Reply(200))
    response = harness.connect(forward(harness)).request("GET", "http://example.com/other")
    assert response.status == 404
    assert b"fake origin example.com:80 has no route for /other" in response.body


def test_answer_can_be_computed_from_the_request_and_a_body_is_received():
    harness = Harness()
    origin = harness.origin("api.example.com", 8080,
                            reply=lambda request: Reply(201, request.body.upper()))
    client = harness.connect(forward(harness))
    response = client.request("POST", "http://api.example.com:8080/items", body=b"new item")
    assert (response.status, response.body) == (201, b"NEW ITEM")
    assert origin.requests[0].header("content-length") == b"8"


def test_keep_alive_requests_reuse_one_origin_connection():
    harness = Harness()
    origin = harness.origin("example.com", reply=Reply(200, b"ok"))
    client = harness.connect(forward(harness))
    for _ in range(3):
        assert client.request("GET", "http://example.com/").body == b"ok"
    assert (len(origin.requests), origin.connections) == (3, 1)


def test_chunked_reply_is_relayed_whole():
    harness = Harness()
    harness.origin("example.com", reply=Reply(
        200, b"in chunks", headers=[(b"Transfer-Encoding", b"chunked")]))
    response = harness.connect(forward(harness)).request("GET", "http://example.com/")
    assert (response.body, response.complete) == (b"in chunks", True)


# failures: slow, cut, refused, unknown


def test_slow_origin_within_the_response_timeout_is_answered_when_it_replies():
    harness = Harness()
    harness.origin("slow.example", reply=Reply(200, b"late", delay=3))
    client = harness.connect(forward(harness, timeouts=Timeouts(response=5)))
    client.send_request("GET", "http://slow.example/")
    with pytest.raises(ResponseIncomplete, match="advance the clock"):
        client.response()
    harness.advance(3)
    assert client.response().body == b"late"


def test_slow_origin_past_the_response_timeout_is_a_504():
    harness = Harness()
    harness.origin("slow.example", reply=Reply(200, b"late", delay=30))
    client = harness.connect(forward(harness, timeouts=Timeouts(response=5)))
    client.send_request("GET", "http://slow.example/")
    harness.advance(4.9)
    with pytest.raises(ResponseIncomplete):
        client.response()
    harness.advance(0.2)
    assert client.response().status == 504
    assert harness.records[0].status == 504


def test_origin_that_never_answers_leaves_only_the_proxy_timeout():
    harness = Harness()
    harness.origin("silent.example", reply=Reply(delay=math.inf))
    client = harness.connect(forward(harness, timeouts=Timeouts(response=7)))
    client.send_request("GET", "http://silent.example/")
    harness.advance(7)
    assert client.response().status == 504


def test_slow_client_holds_the_body_back_through_backpressure():
    harness = Harness()
    harness.origin("example.com", reply=Reply(200, b"x" * 5_000_000))
    client = harness.connect(forward(harness))
    client.pause_reading()
    client.send_request("GET", "http://example.com/big")
    assert client.received == b""
    paused = [line for line in harness.leftovers() if "paused" in line]
    assert any("fake origin" in line for line in paused)  # the proxy stopped reading the origin
    client.resume_reading()
    response = client.response()
    assert (len(response.body), response.complete) == (5_000_000, True)


def test_origin_closing_mid_body_gives_the_client_a_cut_response():
    harness = Harness()
    harness.origin("example.com", reply=Reply(200, b"0123456789", close_after=4))
    client = harness.connect(forward(harness))
    response = client.request("GET", "http://example.com/")
    assert response.status == 200
    assert response.header("content-length") == b"10"
    assert (response.body, response.complete) == (b"0123", False)
    assert client.closed
    assert harness.records[0].ended != "ok"


def test_request_to_a_host_no_fake_origin_serves_is_a_502_dns_failure():
    harness = Harness()
    response = harness.connect(forward(harness)).request("GET", "http://nowhere.example/")
    assert response.status == 502
    assert b"cannot resolve host nowhere.example" in response.body
    assert harness.records[0].upstream_error == "dns"


def test_port_no_fake_origin_serves_is_a_502_refused():
    harness = Harness()
    harness.origin("example.com", 80)
    client = harness.connect(forward(harness))
    client.send_request("GET", "http://example.com:8080/")
    # HostnameEndpoint notices its last address failed at its next attempt, 0.3 s on.
    harness.advance(0.3)
    response = client.response()
    assert response.status == 502
    assert harness.records[0].upstream_error == "connect-refused"


def test_refusing_origin_is_a_502_and_accepts_again_later():
    harness = Harness()
    origin = harness.origin("example.com", reply=Reply(200, b"back"))
    client = harness.connect(forward(harness))
    origin.refuse()
    client.send_request("GET", "http://example.com/")
    harness.advance(0.3)
    assert client.response().status == 502
    origin.accept()
    assert client.request("GET", "http://example.com/").body == b"back"


def test_hanging_origin_is_a_504_after_the_connect_timeout():
    harness = Harness()
    harness.origin("blackhole.example").hang()
    client = harness.connect(forward(harness, timeouts=Timeouts(connect=3)))
    client.send_request("GET", "http://blackhole.example/")
    harness.advance(2.9)
    with pytest.raises(ResponseIncomplete):
        client.response()
    harness.advance(0.1)
    response = client.response()
    assert response.status == 504
    assert harness.records[0].upstream_error == "connect-timeout"


def test_https_origin_fails_with_a_message_saying_tls_is_not_in_memory():
    harness = Harness()
    harness.origin("secure.example", 443)
    client = harness.connect(forward(harness))
    client.send_request("GET", "https://secure.example/")
    harness.advance(0.3)
    response = client.response()
    assert response.status == 502
    assert b"TLS from the proxy to secure.example:443 is not supported in memory" in response.body
    assert harness.reactor.connectors[-1].outcome == "tls unsupported"


def test_origin_form_request_without_host_is_refused_by_the_client():
    harness = Harness()
    client = harness.connect(forward(harness))
    with pytest.raises(ValueError, match="needs a Host header"):
        client.request("GET", "/")


# time


def test_cached_response_is_served_until_max_age_then_fetched_again():
    harness = Harness()
    origin = harness.origin("example.com", reply=Reply(
        200, b"fresh", headers=[(b"Cache-Control", b"max-age=30")]))
    proxy = forward(harness)
    proxy.fetcher = caching_fetcher_factory(CacheConfig(), harness.reactor)(proxy.fetcher)
    client = harness.connect(proxy)

    first = client.request("GET", "http://example.com/page")
    harness.advance(29)
    second = client.request("GET", "http://example.com/page")
    harness.advance(2)
    third = client.request("GET", "http://example.com/page")

    assert [r.header("x-cache") for r in (first, second, third)] == [b"MISS", b"HIT", b"MISS"]
    assert second.header("age") == b"29"
    assert b"fwd=stale" in third.header("cache-status")
    assert len(origin.requests) == 2
    assert [r.cache for r in harness.records] == ["MISS", "HIT", "MISS"]


def test_advance_runs_each_timer_at_its_time_with_bytes_delivered_between():
    harness = Harness()
    # The reply is due at t=5 and the timeout at t=30: one advance past both still answers.
    harness.origin("example.com", reply=Reply(200, b"in time", delay=5))
    client = harness.connect(forward(harness, timeouts=Timeouts(response=30)))
    client.send_request("GET", "http://example.com/")
    harness.advance(100)
    assert client.response().body == b"in time"
    assert harness.reactor.seconds() == 100


def test_an_exchange_takes_milliseconds_and_no_wall_clock():
    harness = Harness(start=1_000_000.0)
    harness.origin("example.com", reply=Reply(200, b"x"))
    client = harness.connect(forward(harness))
    began = time.perf_counter()
    for _ in range(20):
        client.request("GET", "http://example.com/")
    assert (time.perf_counter() - began) / 20 < 0.05
    assert harness.records[-1].started == 1_000_000.0


# leftovers


def test_assert_quiet_lists_open_connections_and_pending_timers():
    harness = Harness()
    harness.origin("example.com", reply=Reply(200, b"ok"))
    client = harness.connect(forward(harness))
    client.request("GET", "http://example.com/")
    with pytest.raises(NotQuiet) as caught:
        harness.assert_quiet()
    text = str(caught.value)
    assert "open connection client" in text and "ForwardProxyProtocol" in text
    assert "open connection fake origin example.com:80" in text
    assert "timer due at t=" in text
    assert len(caught.value.leftovers) >= 3


def test_closing_the_client_and_waiting_out_idle_timeouts_is_quiet():
    harness = Harness()
    harness.origin("example.com", reply=Reply(200, b"ok"))
    client = harness.connect(forward(harness))
    client.request("GET", "http://example.com/")
    client.close()
    harness.advance(120)  # the pooled upstream connection's idle timeout
    harness.assert_quiet()


def test_close_aborts_everything_and_leaves_only_leaked_timers():
    harness = Harness()
    harness.origin("example.com", reply=Reply(200, b"ok"))
    harness.connect(forward(harness)).request("GET", "http://example.com/")
    harness.reactor.callLater(5, lambda: None)  # a timer nobody cancels
    harness.close()
    leftovers = harness.leftovers()
    assert len(leftovers) == 1 and leftovers[0].startswith("timer due at t=5")


# other proxies


def test_tcp_relay_carries_bytes_both_ways_and_half_closes():
    harness = Harness()
    harness.serve(Factory.forProtocol(Echo), "10.0.0.5", 7000)
    pool = BackendPool("echo", [Backend(host="10.0.0.5", port=7000)], RoundRobin(),
                       harness.reactor)
    relay = TCPRelayFactory(harness.reactor, pool, reporters=[harness.reporter])
    client = harness.connect(relay)
    client.send(b"ping")
    assert client.read() == b"ping"
    client.send(b"pong" * 100_000)
    assert client.read() == b"pong" * 100_000
    client.half_close()
    assert client.closed
    (record,) = harness.records
    assert (record.kind, record.upstream) == ("tcp", "10.0.0.5:7000")
    assert record.bytes_from_client == record.bytes_to_client == 400_004
    harness.assert_quiet()


def test_tcp_relay_to_a_refusing_backend_closes_the_client():
    harness = Harness()
    pool = BackendPool("down", [Backend(host="10.0.0.9", port=7000)], RoundRobin(),
                       harness.reactor)
    relay = TCPRelayFactory(harness.reactor, pool, reporters=[harness.reporter])
    client = harness.connect(relay)
    assert client.closed
    assert harness.records[0].upstream_error == "connect-refused"


class Greeter(Protocol):
    def connectionMade(self) -> None:
        self.transport.write(b"hello from the backend\n")

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data[::-1])


def test_socks5_connect_relays_to_the_named_backend():
    harness = Harness()
    harness.serve(Factory.forProtocol(Greeter), "db.internal", 5432)
    client = harness.connect(SocksProxy(harness.reactor, reporters=[harness.reporter]))
    assert client.socks5_connect("db.internal", 5432) == 0
    assert client.read() == b"hello from the backend\n"
    client.send(b"abc")
    assert client.read() == b"cba"
    client.close()
    (record,) = harness.records
    assert (record.proxy, record.upstream) == ("socks", "db.internal:5432")
    assert (record.bytes_from_client, record.bytes_to_client) == (3, 26)


def test_socks5_connect_to_an_unknown_host_is_refused_with_a_reply_code():
    harness = Harness()
    client = harness.connect(SocksProxy(harness.reactor))
    assert client.socks5_connect("nowhere.internal", 80) == 4  # host unreachable


def test_reverse_proxy_reaches_fake_backends_by_url():
    harness = Harness()
    harness.origin("http://127.0.0.1:9001", reply=Reply(200, b"one"))
    harness.origin("http://127.0.0.1:9002", reply=Reply(200, b"two"))
    pool = BackendPool("web", [Backend(host="127.0.0.1", port=9001),
                               Backend(host="127.0.0.1", port=9002)],
                       RoundRobin(), harness.reactor)
    proxy = ReverseProxy(harness.reactor, routes=RouteTable([Route("web")]),
                         pools={"web": pool}, reporters=[harness.reporter])
    client = harness.connect(proxy)
    bodies = [client.request("GET", "/", headers=[(b"Host", b"www.example.com")]).body
              for _ in range(4)]
    assert sorted(bodies) == [b"one", b"one", b"two", b"two"]


def test_a_listening_proxy_is_reached_by_its_port():
    harness = Harness()
    harness.origin("example.com", reply=Reply(200, b"via the port"))
    from twisted.internet.endpoints import serverFromString

    serverFromString(harness.reactor, "tcp:3128:interface=127.0.0.1").listen(forward(harness))
    assert harness.connect(3128).request("GET", "http://example.com/").body == b"via the port"
    with pytest.raises(LookupError, match="nothing listens at 127.0.0.1:3129"):
        harness.connect(3129)


# the fake reactor alone


def test_fake_reactor_advance_refuses_to_go_back():
    with pytest.raises(ValueError):
        FakeReactor().advance(-1)


def test_fake_reactor_runs_calls_from_threads_at_the_next_pump():
    reactor = FakeReactor()
    seen = []
    reactor.callFromThread(seen.append, 1)
    assert seen == []
    reactor.pump()
    assert seen == [1]


def test_fake_reactor_pump_runs_timers_already_due_but_not_later_ones():
    reactor = FakeReactor()
    seen = []
    reactor.callLater(0, seen.append, "now")
    reactor.callLater(1, seen.append, "later")
    reactor.pump()
    assert seen == ["now"]
    reactor.advance(1)
    assert seen == ["now", "later"]


def test_every_public_name_is_documented_and_annotated():
    import inspect

    import multiproxy.testing

    missing = []
    for name in multiproxy.testing.__all__:
        obj = getattr(multiproxy.testing, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(f"{name}: no docstring")
        for attr, value in vars(obj).items() if inspect.isclass(obj) else ():
            function = value.fget if isinstance(value, property) else value
            if attr.startswith("_") or not inspect.isfunction(function):
                continue
            if not (function.__doc__ or "").strip():
                missing.append(f"{name}.{attr}: no docstring")
            signature = inspect.signature(function)
            if signature.return_annotation is inspect.Signature.empty:
                missing.append(f"{name}.{attr}: no return annotation")
            missing += [f"{name}.{attr}({p.name}): no annotation"
                        for p in list(signature.parameters.values())[1:]
                        if p.annotation is inspect.Parameter.empty
                        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    assert missing == []


def test_the_examples_in_docs_testing_md_run_as_written():
    import pathlib
    import re

    from multiproxy.http import Timeouts

    text = (pathlib.Path(__file__).parent.parent / "docs" / "testing.md").read_text()
    blocks = [block for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
              # The whole-service fragment needs a configuration the page does not give.
              if "make_reverse_service" not in block]
    assert len(blocks) >= 5
    for block in blocks:
        namespace = {"Harness": Harness, "Reply": Reply, "ForwardProxy": ForwardProxy,
                     "Timeouts": Timeouts, "harness": Harness()}
        exec(compile(block, "docs/testing.md", "exec"), namespace)


def test_fake_reactor_provides_the_reactor_interfaces_it_declares():
    from twisted.internet import interfaces
    from zope.interface.verify import verifyObject

    reactor = FakeReactor()
    for interface in (interfaces.IReactorTime, interfaces.IReactorTCP, interfaces.IReactorSSL,
                      interfaces.IReactorPluggableNameResolver, interfaces.IReactorCore,
                      interfaces.IReactorThreads, interfaces.IReactorFromThreads):
        assert verifyObject(interface, reactor)


def test_an_ssl_endpoint_string_listens_with_tls_in_memory(tmp_path):
    import trustme
    from twisted.internet.endpoints import serverFromString
    from twisted.internet.protocol import ClientFactory
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    ca = trustme.CA()
    server_pem = tmp_path / "server.pem"
    ca.issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(server_pem))
    harness = Harness()
    serverFromString(harness.reactor, f"ssl:4433:privateKey={server_pem}:interface=127.0.0.1"
                     ).listen(Factory.forProtocol(Echo))
    trust = Certificate.loadPEM(ca.cert_pem.bytes())
    client = harness.connect(4433, tls=optionsForClientTLS("localhost", trustRoot=trust))
    client.send(b"over TLS")
    assert client.read() == b"over TLS"

    # And the reactor's own connectSSL reaches it, its TLS layer on the fake clock.
    received = []

    class Collect(Protocol):
        def connectionMade(self):
            self.transport.write(b"hello")

        def dataReceived(self, data):
            received.append(data)

    factory = ClientFactory.forProtocol(Collect)
    connector = harness.reactor.connectSSL("127.0.0.1", 4433, factory,
                                           optionsForClientTLS("localhost", trustRoot=trust))
    harness.pump()
    assert connector.outcome == "connected"
    assert received == [b"hello"]


def test_a_listener_connect_mode_is_checked_and_obeyed():
    harness = Harness()
    port = harness.serve(Factory.forProtocol(Echo), "10.0.0.5", 7000)
    with pytest.raises(ValueError, match="connect_mode must be one of accept, refuse, hang"):
        port.connect_mode = "drop"
    port.connect_mode = "refuse"
    with pytest.raises(ConnectionRefusedError, match="refuses connections"):
        harness.connect(("10.0.0.5", 7000))


def test_a_factory_connected_to_directly_is_started_once_and_stopped_by_close():
    events = []

    class Counting(Factory):
        protocol = Echo

        def startFactory(self):
            events.append("start")

        def stopFactory(self):
            events.append("stop")

    harness = Harness()
    factory = Counting()
    harness.connect(factory)
    harness.connect(factory)
    assert events == ["start"]
    harness.close()
    assert events == ["start", "stop"]


def test_connect_tunnel_through_the_forward_proxy_carries_raw_bytes():
    harness = Harness()
    harness.serve(Factory.forProtocol(Echo), "example.com", 443)
    client = harness.connect(forward(harness))
    response = client.request("CONNECT", "example.com:443")
    assert response.status == 200
    client.send(b"not TLS, but allowed")
    assert client.read() == b"not TLS, but allowed"
    client.close()
    (record,) = harness.records
    assert (record.method, record.upstream) == ("CONNECT", "example.com:443")


class UpgradingEcho(Protocol):
    """Answers one Upgrade request with 101, then echoes."""

    upgraded = False

    def dataReceived(self, data: bytes) -> None:
        if self.upgraded:
            self.transport.write(data)
            return
        self.upgraded = True
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")


def test_upgrade_through_the_reverse_proxy_becomes_a_tunnel():
    harness = Harness()
    harness.serve(Factory.forProtocol(UpgradingEcho), "127.0.0.1", 9001)
    pool = BackendPool("ws", [Backend(host="127.0.0.1", port=9001)], RoundRobin(),
                       harness.reactor)
    proxy = ReverseProxy(harness.reactor, routes=RouteTable([Route("ws")]), pools={"ws": pool})
    client = harness.connect(proxy)
    response = client.request("GET", "/chat", headers=[
        (b"Host", b"chat.example"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ=="), (b"Sec-WebSocket-Version", b"13")])
    assert response.status == 101
    client.send(b"\x81\x02hi")
    assert client.read() == b"\x81\x02hi"


def test_a_unix_listener_is_refused_with_a_message_naming_the_way_out():
    from twisted.internet.endpoints import serverFromString

    harness = Harness()
    failures = []
    serverFromString(harness.reactor, "unix:/run/proxy.sock").listen(
        forward(harness)).addErrback(failures.append)
    (failure,) = failures
    assert failure.check(NotImplementedError)
    assert "give the proxy a tcp: listener in the test" in str(failure.value)
