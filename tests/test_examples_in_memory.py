"""
Each example's own plug-ins and subclasses, tested in memory as a user would:
with `multiproxy.testing` and public names only (beside the loopback tests
that run the examples for real).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import pathlib
from datetime import datetime
from zoneinfo import ZoneInfo

from twisted.internet.ssl import Certificate, optionsForClientTLS

from multiproxy.testing import Harness, Reply

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def basic(user: str, password: str) -> tuple[bytes, bytes]:
    token = base64.b64encode(f"{user}:{password}".encode())
    return (b"Proxy-Authorization", b"Basic " + token)


def trusting(cert_path: str, name: str = "localhost"):
    """A TLS client creator that trusts the example's self-signed certificate."""
    with open(cert_path, "rb") as f:
        return optionsForClientTLS(name, trustRoot=Certificate.loadPEM(f.read()))


# custom_forward_proxy.py: TaggingProtocol (a subclass) and NoAdsPolicy (a plug-in)


def test_custom_forward_proxy_tags_requests_and_its_policy_blocks_ads():
    example = load("custom_forward_proxy")
    harness = Harness()
    origin = harness.origin("example.com", reply=Reply(200, b"page"))
    proxy = example.make_proxy(harness.reactor)
    proxy.reporters = (harness.reporter,)
    client = harness.connect(proxy)

    assert client.request("GET", "http://example.com/").body == b"page"
    assert origin.requests[0].header("x-proxied-by") == b"custom-forward-proxy-example"

    denied = client.request("GET", "http://ads.example.net/banner")
    assert denied.status == 403
    assert b"ads.example.net serves ads" in denied.body
    assert [r.rule for r in harness.records] == [None, "no-ads"]


def test_no_ads_policy_judges_only_the_first_label():
    example = load("custom_forward_proxy")
    harness = Harness()
    harness.origin("www.ads.example", reply=Reply(200, b"not an ad server"))
    client = harness.connect(example.make_proxy(harness.reactor))
    assert client.request("GET", "http://www.ads.example/").status == 200
    assert client.request("GET", "http://tracker.example/").status == 403


# work_hours_proxy.py: ExecutablesForITOnly (a PolicyHolder subclass)


def test_work_hours_policy_blocks_social_sites_until_evening_and_programs_for_non_it():
    example = load("work_hours_proxy")
    wednesday_11 = datetime(2026, 3, 4, 11, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    harness = Harness(start=wednesday_11)
    harness.origin("www.facebook.com", reply=Reply(200, b"feed"))
    downloads = harness.origin("downloads.example.com", reply=Reply(200, b"MZ..."))
    proxy = example.make_proxy(harness.reactor, example.make_policy(harness.reactor))
    proxy.reporters = (harness.reporter,)

    def ask(target: str, *headers: tuple[bytes, bytes]):
        return harness.connect(proxy).request("GET", target, headers=headers)

    refused = ask("http://www.facebook.com/")
    assert refused.status == 407  # signing in would exempt: the proxy asks for credentials
    assert b"Social media is blocked during work hours" in refused.body
    alice = basic("alice", "wonderland")
    assert ask("http://www.facebook.com/", alice).body == b"feed"

    program = "http://downloads.example.com/setup.exe"
    denied = ask(program, alice)
    assert denied.status == 403 and b"Program downloads are for the IT team" in denied.body
    assert downloads.requests == []
    assert ask(program, basic("bob", "builder")).body == b"MZ..."

    harness.advance(7 * 3600)  # 18:00: after work
    assert ask("http://www.facebook.com/").body == b"feed"
    assert [r.rule for r in harness.records if r.status in (403, 407)] == [
        "no-social-at-work", "executables-for-it-only"]


# caching_forward_proxy.py: the cache in front of the fetcher, and DemoOrigin


def test_caching_forward_proxy_serves_fresh_pages_from_cache_and_revalidates_the_others():
    example = load("caching_forward_proxy")
    harness = Harness()
    listening, demo_origin = example.make_origin(harness.reactor, 8000)
    proxy = example.make_proxy(harness.reactor)
    client = harness.connect(proxy)

    fresh = [client.request("GET", "http://127.0.0.1:8000/fresh").header("x-cache")
             for _ in range(3)]
    assert fresh == [b"MISS", b"HIT", b"HIT"]
    harness.advance(31)  # past max-age=30
    assert client.request("GET", "http://127.0.0.1:8000/fresh").header("x-cache") == b"MISS"

    validated = [client.request("GET", "http://127.0.0.1:8000/validated") for _ in range(3)]
    assert [r.status for r in validated] == [200, 200, 200]
    assert {r.body for r in validated} == {b"a page the cache must check before each use\n"}
    assert demo_origin.requests == [("/fresh", False), ("/fresh", False),
                                    ("/validated", False), ("/validated", True),
                                    ("/validated", True)]
    client.close()
    listening.stopListening()
    harness.close()
    harness.assert_quiet()


# reverse_proxy.py: DemoPage backends behind the configured reverse proxy


def test_reverse_proxy_example_redirects_to_https_and_health_checks_take_gamma_out(tmp_path):
    example = load("reverse_proxy")
    harness = Harness()
    service, _ = example.build(harness.reactor, 8080, 8443, 8404, str(tmp_path),
                               [harness.reporter])
    service.startService()

    plain = harness.connect(8080).request("GET", "/", headers=[(b"Host", b"localhost")])
    assert plain.status == 308
    assert plain.header("location") == b"https://localhost:8443/"

    harness.advance(2)  # four health-check rounds: gamma's /healthz fails twice
    client = harness.connect(8443, tls=trusting(str(tmp_path / "cert.pem")))
    bodies = [client.request("GET", "/", headers=[(b"Host", b"localhost")]) for _ in range(6)]
    assert {r.body for r in bodies} == {b"hello from alpha\n", b"hello from beta\n"}
    assert bodies[0].header("strict-transport-security") == b"max-age=300"

    status = json.loads(harness.connect(8404).request(
        "GET", "/status.json", headers=[(b"Host", b"127.0.0.1")]).body)
    states = {b["name"]: b["state"] for pool in status["pools"] for b in pool["backends"]}
    assert states == {"alpha": "up", "beta": "up", "gamma": "down"}

    stopped = []
    service.stopService().addCallback(stopped.append)
    harness.advance(5)  # the graceful stop lets open connections finish first
    assert stopped == [None]
    harness.close()
    harness.assert_quiet()


# tcp_balancing.py: NamedBackend behind a balancing relay with a dead backend


def test_tcp_balancing_example_skips_the_dead_backend_and_health_checks_remove_it():
    example = load("tcp_balancing")
    harness = Harness()
    service, _ = example.build(harness.reactor, 9000, reporters=[harness.reporter])
    service.startService()

    def greeting() -> bytes:
        client = harness.connect(9000)
        line = client.read()
        client.close()
        return line

    before = len(harness.reactor.connectors)
    names = [greeting() for _ in range(6)]
    assert names == [b"alpha\n", b"beta\n", b"gamma\n"] * 2  # "down" is skipped unseen
    assert {c.outcome for c in harness.reactor.connectors[before:]} == {"connected", "refused"}

    harness.advance(3)  # the health checks (every 1 s, fall 2) take "down" out
    before = len(harness.reactor.connectors)
    assert [greeting() for _ in range(6)] == [b"alpha\n", b"beta\n", b"gamma\n"] * 2
    assert {c.outcome for c in harness.reactor.connectors[before:]} == {"connected"}
    assert {r.upstream for r in harness.records} == {"alpha", "beta", "gamma"}

    client = harness.connect(9000)
    first = client.read()
    client.send(b"echo me\n")
    assert client.read() == b"echo me\n" and first.endswith(b"\n")
    client.close()
    service.stopService()
    harness.close()
    harness.assert_quiet()


# tcp_tls_termination.py: ShoutingEcho behind a TLS-terminating relay


def test_tcp_tls_termination_example_speaks_tls_in_front_and_plain_text_behind(tmp_path):
    example = load("tcp_tls_termination")
    harness = Harness()
    cert = example.self_signed(str(tmp_path))
    service, _ = example.build(harness.reactor, 9443, cert, [harness.reporter])
    service.startService()

    client = harness.connect(9443, tls=trusting(cert))
    client.send(b"hello, relay\n")
    assert client.read() == b"HELLO, RELAY\n"
    client.close()
    (record,) = harness.records
    assert record.upstream == "shouting-echo"
    service.stopService()
    harness.close()
    harness.assert_quiet()
