"""
The line each proxy logs when it starts: name, kind, listeners, policy,
cache and backends, from the configuration values (pure), and as twistd
prints it for a file with one proxy of every kind.
"""

from __future__ import annotations

import re

from tests.test_policy_twistd import free_port, listening, wait_until
from tests.test_twistd_operations import start, stop

from multiproxy._startup import describe_cache, describe_policy, describe_pool, startup_summary
from multiproxy.balancing import HealthConfig
from multiproxy.cache import CacheConfig
from multiproxy.policy import PolicyHolder, load_policy_file


def test_cache_descriptions_name_the_store_and_sizes_and_hide_a_redis_password():
    assert describe_cache(CacheConfig(size=256 << 20, max_object_size=16 << 20)) == (
        "cache: memory, 256 MiB, objects up to 16 MiB")
    assert describe_cache(CacheConfig(directory="/var/cache/mp", size=1 << 30)) == (
        "cache: disk /var/cache/mp, 1 GiB, objects up to 8 MiB")
    redis = describe_cache(CacheConfig(redis="redis://:hunter2@10.0.0.7:6379/0"))
    assert redis.startswith("cache: redis redis://***@10.0.0.7:6379/0") and "hunter2" not in redis
    assert describe_cache(CacheConfig(enabled=False)) == describe_cache(None) == "cache: off"


def test_policy_description_counts_rules_and_names_the_default_and_the_extras(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("""
[policy]
default = "deny"
[[policy.rules]]
name = "lan"
action = "allow"
clients = ["10.0.0.0/8"]
[[policy.rules]]
name = "no-x"
action = "deny"
hosts = [".x.com"]
[policy.limits]
connections_per_client = 20
requests_per_second = 5
""")
    holder = PolicyHolder(load_policy_file(str(path)), clock=lambda: 0.0)
    assert describe_policy(holder) == (
        "policy: 2 rules, default deny, at most 20 connections per client, "
        "5 requests/s per client")
    assert describe_policy(None) == "policy: none (everything allowed)"

    class MyPolicy:
        def decide(self, intent):
            raise NotImplementedError

    assert describe_policy(MyPolicy()) == "policy: MyPolicy"


def test_pool_description_names_the_balancer_the_checks_and_every_backend():
    assert describe_pool("api", "leastconn", ["a", "b"], HealthConfig(
        check="http", path="/healthz", interval=2.0)) == (
        "pool api (leastconn, http /healthz check every 2 s): a, b")
    assert describe_pool("x", "roundrobin", [], HealthConfig(check="none")) == (
        "pool x (roundrobin, no active checks): no backends")
    assert startup_summary("p", "tcp relay", ["one", "", "two"]) == "p (tcp relay): one; two"


def test_twistd_logs_one_line_per_proxy_at_start(tmp_path):
    ports = [free_port() for _ in range(5)]
    (tmp_path / "p.toml").write_text(f"""
[log]
access = false
[[forward]]
name = "office"
listen = "tcp:{ports[0]}:interface=127.0.0.1"
[forward.cache]
size = "32MiB"
[[reverse]]
name = "site"
listen = "tcp:{ports[1]}:interface=127.0.0.1"
backends = ["http://127.0.0.1:9", {{ url = "http://127.0.0.2:9", name = "two" }}]
[reverse.health]
check = "none"
[[tcp]]
name = "db"
listen = "tcp:{ports[2]}:interface=127.0.0.1"
status_listen = "tcp:{ports[4]}:interface=127.0.0.1"
backends = ["tcp:host=127.0.0.1:port=9"]
balance = "leastconn"
[tcp.health]
check = "none"
[[socks]]
name = "sox"
listen = "tcp:{ports[3]}:interface=127.0.0.1"
[policy]
[[policy.rules]]
name = "no-x"
action = "deny"
hosts = [".x.com"]
""")
    process = start(tmp_path, "--config", "p.toml")
    try:
        wait_until(lambda: all(listening(p) for p in ports))
        wait_until(lambda: "sox (socks proxy)" in (tmp_path / "twistd.out").read_text())
    finally:
        stop(process)
    text = (tmp_path / "twistd.out").read_text()
    lines = {m.group(1): m.group(0) for m in re.finditer(r"(\w+) \((?:\w+ )+\w+\): .*", text)}
    assert lines["office"].endswith(
        f"office (forward proxy): listening on tcp:{ports[0]}:interface=127.0.0.1; "
        "policy: 1 rule, default allow; cache: memory, 32 MiB, objects up to 8 MiB; "
        "pac: generated, proxy as asked, no direct hosts")
    assert lines["site"].endswith(
        f"site (reverse proxy): listening on tcp:{ports[1]}:interface=127.0.0.1; 1 route; "
        "pool default (roundrobin, no active checks): http://127.0.0.1:9, two; "
        "policy: 1 rule, default allow; cache: off")
    assert lines["db"].endswith(
        f"db (tcp relay): listening on tcp:{ports[2]}:interface=127.0.0.1; status on "
        f"tcp:{ports[4]}:interface=127.0.0.1; pool db (leastconn, no active checks): "
        "tcp:host=127.0.0.1:port=9; policy: 1 rule, default allow")
    assert lines["sox"].endswith(
        f"sox (socks proxy): listening on tcp:{ports[3]}:interface=127.0.0.1; "
        "policy: 1 rule, default allow")
    assert "Traceback" not in text
