"""
The access policy in the reverse proxy, over loopback: refusals use the
policy's HTML page (and its configured template), an ``authenticate`` rule
is a plain 403 since proxy credentials do not apply to a gateway, the
per-client connection and request limits answer 429, and client-network and
work-hours rules follow an injected clock.
"""

from __future__ import annotations

import http.client
import json
import tomllib
from datetime import datetime
from zoneinfo import ZoneInfo

import bcrypt
import pytest
import pytest_twisted
from loopback import curl, raw_exchange, wait_for
from reverse_peers import NamedBackend, RunningProxy, make_pool
from twisted.internet import threads
from twisted.internet.task import Clock

from multiproxy._tablereader import TableReader
from multiproxy.policy import PolicyHolder, settings_from_table

BERLIN = ZoneInfo("Europe/Berlin")


def holder(text: str, clock: Clock | None = None) -> PolicyHolder:
    settings = settings_from_table(TableReader(tomllib.loads(text)["policy"], "policy"))
    return PolicyHolder(settings, clock=(clock or Clock()).seconds)


@pytest.fixture
def backend():
    named = NamedBackend("shop")
    named.start()
    yield named
    pytest_twisted.blockon(named.stop())


@pytest.fixture
def reverse(backend, reporter):
    """``reverse(policy) -> port``: a reverse proxy for every host, in front of ``backend``."""
    running = []

    def start(policy) -> int:
        proxy = RunningProxy({"shop": make_pool("shop", [backend.port])}, policy=policy,
                             reporters=(reporter,))
        running.append(proxy)
        return proxy.port

    yield start
    for proxy in running:
        pytest_twisted.blockon(proxy.stop())


def get(port: int, path: str, *headers: str):
    """curl GET with the response head in the output: fires with (head, body)."""
    args = ["-D", "-", f"http://127.0.0.1:{port}{path}", "-H", "Host: shop.test"]
    for header in headers:
        args += ["-H", header]

    def split(result):
        out, err, code = result
        assert code == 0, err
        head, _, body = out.partition(b"\r\n\r\n")
        return head.decode("latin-1").lower(), body

    return curl(*args).addCallback(split)


NO_ADMIN = """
[policy]
[[policy.rules]]
name = "no-admin-from-outside"
action = "deny"
url_regex = "^https?://[^/]+/admin/"
message = "The admin pages are for the office network"
"""


@pytest_twisted.ensureDeferred
async def test_denied_request_gets_the_policy_page_naming_rule_and_reason(
    backend, reverse, reporter,
):
    port = reverse(holder(NO_ADMIN))
    # '<' and '>' never get past the reader (not URI characters); quotes
    # and '&' do, and must come out escaped.
    head, body = await get(port, "/admin/users?id='x'&y")
    assert head.startswith("http/1.1 403 ")
    assert "content-type: text/html; charset=utf-8" in head
    assert "cache-control: no-store" in head
    assert b"The admin pages are for the office network" in body
    assert b"no-admin-from-outside" in body
    assert b"http://shop.test/admin/users?id=&#x27;x&#x27;&amp;y" in body  # escaped, never markup
    record = reporter.records[-1]
    assert (record.status, record.rule, record.ended) == (403, "no-admin-from-outside", "denied")
    assert backend.hits == []

    head, body = await get(port, "/who")
    assert head.startswith("http/1.1 200 ") and body == b"shop"
    assert reporter.records[-1].rule == "default"


@pytest_twisted.ensureDeferred
async def test_refusal_page_template_from_the_configuration_is_used(reverse, tmp_path):
    page = tmp_path / "denied.html"
    page.write_text("<p>Blocked by $rule: $message ($host, $proxy)</p>\n")
    port = reverse(holder(NO_ADMIN.replace("[policy]\n", f"[policy]\ndeny_page = '{page}'\n")))
    head, body = await get(port, "/admin/")
    assert head.startswith("http/1.1 403 ")
    assert body == (b"<p>Blocked by no-admin-from-outside: The admin pages are for the office "
                    b"network (shop.test, reverse)</p>\n")


AUTHENTICATE = f"""
[policy]
[policy.auth]
users = {{ alice = "{bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).decode()}" }}
[[policy.rules]]
name = "staff-only"
action = "authenticate"
url_regex = "/headers"
"""


@pytest_twisted.ensureDeferred
async def test_authenticate_rule_is_a_403_with_no_credential_challenge(
    backend, reverse, reporter,
):
    # Proxy authentication (407) is between a client and its forward proxy; a
    # gateway neither asks for it nor reads it, and never passes it on.
    port = reverse(holder(AUTHENTICATE))
    for credentials in ((), ("Proxy-Authorization: Basic YWxpY2U6d29uZGVybGFuZA==",)):
        head, body = await get(port, "/headers", *credentials)
        assert head.startswith("http/1.1 403 ")
        assert "proxy-authenticate" not in head and "www-authenticate" not in head
        assert b"staff-only" in body
        assert reporter.records[-1].ended == "denied" and reporter.records[-1].user is None
    assert backend.hits == []

    port = reverse(holder("[policy]\n"))
    head, body = await get(port, "/headers", "Proxy-Authorization: Basic YWxpY2U6d29uZGVybGFuZA==")
    assert head.startswith("http/1.1 200 ")
    sent = {name.lower() for name, _ in json.loads(body)["headers"]}
    assert "proxy-authorization" not in sent


@pytest_twisted.ensureDeferred
async def test_request_rate_over_the_limit_gets_429_until_the_bucket_refills(
    backend, reverse, reporter,
):
    clock = Clock()
    clock.advance(1_000_000)
    port = reverse(holder("[policy]\n[policy.limits]\nrequests_per_second = 1\nburst = 1\n",
                          clock))
    head, _ = await get(port, "/who")
    assert head.startswith("http/1.1 200 ")
    head, body = await get(port, "/who")
    assert head.startswith("http/1.1 429 ") and "retry-after: 1\r\n" in head
    assert b"Too many requests" in body
    assert reporter.records[-1].ended == "rate-limited"
    clock.advance(1)
    head, _ = await get(port, "/who")
    assert head.startswith("http/1.1 200 ")
    assert len(backend.hits) == 2


@pytest_twisted.ensureDeferred
async def test_connection_over_the_per_client_limit_gets_429_and_is_closed(
    backend, reverse, reporter,
):
    policy = holder("[policy]\n[policy.limits]\nconnections_per_client = 1\n")
    port = reverse(policy)

    def open_first():
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/who", headers={"Host": "shop.test"})
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, b"shop")
        return connection  # kept open: the client's one connection

    first = await threads.deferToThread(open_first)
    answer = await raw_exchange(port, b"GET /who HTTP/1.1\r\nHost: shop.test\r\n\r\n")
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 429 ") and b"connection: close" in head
    assert reporter.records[-1].ended == "rate-limited"
    assert len(backend.hits) == 1

    first.close()
    await wait_for(lambda: policy.connection_limit.count("127.0.0.1") == 0)
    head, body = await get(port, "/who")
    assert head.startswith("http/1.1 200 ") and body == b"shop"


OFFICE_HOURS = """
[policy]
timezone = "Europe/Berlin"
[[policy.rules]]
name = "loopback-outside-office-hours"
action = "deny"
clients = ["127.0.0.0/8", "::1"]
days = "Sat,Sun"
message = "The shop is closed at the weekend"
[[policy.rules]]
name = "other-networks"
action = "deny"
clients = ["192.0.2.0/24"]
"""


@pytest_twisted.ensureDeferred
async def test_client_network_time_window_rule_follows_the_injected_clock(reverse, reporter):
    clock = Clock()
    friday_evening = datetime(2026, 11, 27, 23, 59, 59, tzinfo=BERLIN)
    assert friday_evening.strftime("%a") == "Fri"
    clock.advance(friday_evening.timestamp())
    port = reverse(holder(OFFICE_HOURS, clock))

    head, _ = await get(port, "/who")
    assert head.startswith("http/1.1 200 ")
    assert reporter.records[-1].rule == "default"

    clock.advance(1)  # Saturday 00:00 in Berlin
    head, body = await get(port, "/who")
    assert head.startswith("http/1.1 403 ") and b"closed at the weekend" in body
    assert reporter.records[-1].rule == "loopback-outside-office-hours"
