"""
The access policy in the forward proxy, through curl over loopback: allow,
deny (403 page), proxy authentication (407), work-hours rules on an injected
clock, CONNECT denial, limits (429), anonymity, and reloading.
"""

from __future__ import annotations

import json
import tomllib
from datetime import datetime
from zoneinfo import ZoneInfo

import bcrypt
import pytest_twisted
from loopback import curl, raw_exchange
from twisted.internet import reactor
from twisted.internet.task import Clock

from multiproxy._accesslog import AccessLog
from multiproxy._tablereader import TableReader
from multiproxy.forward import ForwardSettings
from multiproxy.policy import (
    PolicyHolder,
    PolicyService,
    PolicySource,
    make_policy_holder,
    settings_from_table,
)

PASSWORD_HASH = bcrypt.hashpw(b"wonderland", bcrypt.gensalt(4)).decode()


def holder(text: str, clock: Clock | None = None) -> PolicyHolder:
    settings = settings_from_table(TableReader(tomllib.loads(text)["policy"], "policy"))
    return PolicyHolder(settings, clock=(clock or Clock()).seconds)


def proxy_url(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def fields(body: bytes) -> dict[str, str]:
    return {k.lower(): v for k, v in json.loads(body)["headers"]}


DENY_LOCAL_ORIGIN = """
[policy]
[[policy.rules]]
name = "no-bytes"
action = "deny"
hosts = ["127.0.0.1"]
url_regex = "/bytes/"
message = "Downloads are blocked"
"""


@pytest_twisted.ensureDeferred
async def test_requests_no_rule_denies_are_allowed(start_forward, origin, reporter):
    port, _ = start_forward(policy=holder(DENY_LOCAL_ORIGIN))
    out, err, code = await curl("-x", proxy_url(port), f"http://127.0.0.1:{origin}/headers")
    assert code == 0, err
    assert json.loads(out)["method"] == "GET"
    assert reporter.records[-1].status == 200 and reporter.records[-1].rule == "default"


@pytest_twisted.ensureDeferred
async def test_denied_request_gets_a_403_page_naming_what_and_why(start_forward, origin,
                                                                   reporter):
    port, _ = start_forward(policy=holder(DENY_LOCAL_ORIGIN))
    url = f"http://0x7f.1:{origin}/bytes/10"  # 127.0.0.1 spelt another way
    out, err, code = await curl("-x", proxy_url(port), "-D", "-", url)
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"content-type: text/html; charset=utf-8" in head.lower()
    assert b"Downloads are blocked" in body and b"no-bytes" in body
    assert b"/bytes/10" in body
    record = reporter.records[-1]
    assert (record.status, record.rule, record.ended) == (403, "no-bytes", "denied")
    assert record.upstream is None


AUTH_POLICY = f"""
[policy]
[policy.auth]
realm = "Test proxy"
users = {{ alice = "{PASSWORD_HASH}" }}
groups = {{ staff = ["alice"] }}
[[policy.rules]]
name = "login"
action = "authenticate"
[[policy.rules]]
name = "staff"
action = "allow"
groups = ["staff"]
"""


@pytest_twisted.ensureDeferred
async def test_proxy_authentication_407_then_allowed_and_credentials_stay_here(
    start_forward, origin, reporter, tmp_path,
):
    log_path = tmp_path / "access.log"
    access_log = AccessLog(reactor, str(log_path))
    port, _ = start_forward(policy=holder(AUTH_POLICY), reporters=(reporter, access_log))
    url = f"http://127.0.0.1:{origin}/headers"

    out, err, code = await curl("-x", proxy_url(port), "-D", "-", url)
    head = out.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 407 ")
    assert b'proxy-authenticate: basic realm="test proxy", charset="utf-8"' in head
    assert reporter.records[-1].ended == "auth-required"

    out, err, code = await curl("-x", proxy_url(port), "--proxy-user", "alice:nope", "-D", "-",
                                url)
    assert out.startswith(b"HTTP/1.1 407 ")

    out, err, code = await curl("-x", proxy_url(port), "--proxy-user", "alice:wonderland", url)
    assert code == 0, err
    seen = fields(out)
    assert "proxy-authorization" not in seen
    record = reporter.records[-1]
    assert (record.status, record.user, record.rule) == (200, "alice", "staff")

    access_log.close()
    logged = log_path.read_text()
    assert " alice " in logged
    assert "wonderland" not in logged and "nope" not in logged
    assert "YWxpY2U6" not in logged  # base64 of "alice:"


@pytest_twisted.ensureDeferred
async def test_hash_checks_run_in_the_thread_pool_with_make_policy_holder(start_forward, origin):
    settings = settings_from_table(TableReader(tomllib.loads(AUTH_POLICY)["policy"], "policy"))
    policy = make_policy_holder(PolicySource(settings), reactor)
    port, _ = start_forward(policy=policy)
    url = f"http://127.0.0.1:{origin}/bytes/3"
    for _ in range(2):  # the second is answered from the cache of checked credentials
        out, err, code = await curl("-x", proxy_url(port), "--proxy-user", "alice:wonderland",
                                    url)
        assert out == b"xxx", err


WORK_HOURS = """
[policy]
[policy.auth]
users = { alice = "%s" }
[[policy.rules]]
name = "staff-exempt"
action = "allow"
authenticated = true
[[policy.rules]]
name = "no-social-at-work"
action = "deny"
hosts = ["localhost"]
days = "Mon-Fri"
hours = "09:00-17:30"
timezone = "Europe/Berlin"
message = "Social media is blocked during work hours"
""" % PASSWORD_HASH


@pytest_twisted.ensureDeferred
async def test_work_hours_rule_follows_the_injected_clock(start_forward, origin):
    clock = Clock()
    clock.advance(datetime(2026, 3, 2, 10, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp())
    port, _ = start_forward(policy=holder(WORK_HOURS, clock))
    url = f"http://localhost:{origin}/bytes/4"

    out, err, code = await curl("-x", proxy_url(port), "-w", " %{http_code}", url)
    assert out.endswith(b" 407") and b"blocked during work hours" in out

    out, err, code = await curl("-x", proxy_url(port), "--proxy-user", "alice:wonderland", url)
    assert out == b"xxxx"  # authenticated users are exempt

    clock.advance(8 * 3600)  # 18:00: after work
    out, err, code = await curl("-x", proxy_url(port), url)
    assert out == b"xxxx"


@pytest_twisted.ensureDeferred
async def test_denied_connect_gets_403_before_any_tunnel_opens(start_forward, reporter):
    policy = holder('[policy]\n[[policy.rules]]\nname = "no-twitter"\naction = "deny"\n'
                    'hosts = [".twitter.com"]\nkinds = ["connect"]\n')
    port, _ = start_forward(policy=policy)
    out, err, code = await curl("-p", "-x", proxy_url(port), "https://WWW.Twitter.com./")
    assert code != 0
    assert b"403" in err
    record = reporter.records[-1]
    assert (record.method, record.status, record.rule, record.ended) == (
        "CONNECT", 403, "no-twitter", "denied")
    assert record.upstream is None


@pytest_twisted.ensureDeferred
async def test_request_rate_limit_answers_429_with_retry_after(start_forward, origin, reporter):
    clock = Clock()
    policy = holder("[policy]\n[policy.limits]\nrequests_per_second = 1\nburst = 2\n", clock)
    port, _ = start_forward(policy=policy)
    url = f"http://127.0.0.1:{origin}/bytes/1"
    out, err, code = await curl("-x", proxy_url(port), "-D", "-", url, url, url)
    assert out.count(b"HTTP/1.1 200 OK") == 2
    assert b"HTTP/1.1 429 Too Many Requests" in out
    assert b"Retry-After: 1" in out
    assert reporter.records[-1].ended == "rate-limited"
    clock.advance(1.0)
    out, err, code = await curl("-x", proxy_url(port), url)
    assert out == b"x"


@pytest_twisted.ensureDeferred
async def test_connection_limit_answers_429_on_the_extra_connection(start_forward, origin):
    policy = holder("[policy]\n[policy.limits]\nconnections_per_client = 1\n")
    port, factory = start_forward(policy=policy)
    from twisted.internet.protocol import ClientCreator, Protocol

    held = await ClientCreator(reactor, Protocol).connectTCP("127.0.0.1", port)
    try:
        from loopback import wait_for

        await wait_for(lambda: policy.connection_limit.count("127.0.0.1") == 1)
        answer = await raw_exchange(
            port, f"GET http://127.0.0.1:{origin}/bytes/1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 429 ")
        assert b"Connection: close" in answer
    finally:
        held.transport.loseConnection()
    await wait_for(lambda: policy.connection_limit.count("127.0.0.1") == 0)
    out, err, code = await curl("-x", proxy_url(port), f"http://127.0.0.1:{origin}/bytes/2")
    assert out == b"xx"


@pytest_twisted.ensureDeferred
async def test_anonymous_mode_sends_no_via_forwarded_for_or_from(start_forward, origin):
    policy = holder('[policy]\n[policy.anonymity]\nuser_agent = "Anonymous/1.0"\n'
                    'referer = "origin"\n')
    port, _ = start_forward(policy=policy,
                            settings=ForwardSettings(via=b"multiproxy", x_forwarded_for="add"))
    out, err, code = await curl(
        "-x", proxy_url(port), "-H", "From: alice@example.org", "-H", "X-Forwarded-For: 1.2.3.4",
        "-H", "Via: 1.1 inner", "-e", "https://intranet.example/secret?q=1",
        f"http://127.0.0.1:{origin}/headers",
    )
    seen = fields(out)
    for name in ("via", "x-forwarded-for", "from", "proxy-authorization"):
        assert name not in seen, seen
    assert seen["user-agent"] == "Anonymous/1.0"
    assert seen["referer"] == "https://intranet.example/"


@pytest_twisted.ensureDeferred
async def test_without_anonymity_via_and_forwarded_for_are_added(start_forward, origin):
    port, _ = start_forward(policy=holder("[policy]\n"))
    out, err, code = await curl("-x", proxy_url(port), f"http://127.0.0.1:{origin}/headers")
    seen = fields(out)
    assert seen["via"] == "1.1 multiproxy" and seen["x-forwarded-for"] == "127.0.0.1"


@pytest_twisted.ensureDeferred
async def test_reload_hook_swaps_rules_without_dropping_connections_and_keeps_them_on_error(
    start_forward, origin, tmp_path,
):
    path = tmp_path / "policy.toml"
    path.write_text("[policy]\n")
    source = PolicySource.read(str(path))
    policy = make_policy_holder(source, reactor)
    service = PolicyService(policy, reactor)
    port, _ = start_forward(policy=policy)
    url = f"http://127.0.0.1:{origin}/bytes/2"

    # One keep-alive connection across the reload: the same curl run, two URLs.
    path.write_text(DENY_LOCAL_ORIGIN)
    assert service.reload() is True
    out, err, code = await curl("-x", proxy_url(port), "-w", " %{http_code} %{num_connects}",
                                url, f"http://127.0.0.1:{origin}/headers")
    assert b" 403 1" in out and b'"method": "GET"' in out

    path.write_text('[policy]\n[[policy.rules]]\naction = "deny"\nhours = "9-17"\n')
    assert service.reload() is False
    out, err, code = await curl("-x", proxy_url(port), "-w", " %{http_code}", url)
    assert out.endswith(b" 403")
