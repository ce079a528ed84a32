"""
Configuring the TCP relay: twistd options and ``[[tcp]]`` TOML tables.
"""

from __future__ import annotations

import tomllib

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from multiproxy._tablereader import TableReader
from multiproxy.balancing import HealthChecker, HTTPCheck, LeastConnections
from multiproxy.pipeline._errors import ConfigError
from multiproxy.tcp import TCPConfig, TCPOptions, make_tcp_service, tcp_config_from_table
from multiproxy.tcp._haproxy import ProxyHeaderWrappingFactory


def options(*argv):
    o = TCPOptions()
    o.parseOptions(list(argv))
    return o.config


BASE = ["--listen", "tcp:9000:interface=127.0.0.1", "--backend", "tcp:host=127.0.0.1:port=5432"]


def test_options_build_a_config_with_repeatable_listen_and_backend():
    config = options(*BASE, "--backend", "tcp:127.0.0.1:5433", "--balance", "leastconn",
                     "--connect-timeout", "2", "--idle-timeout", "60", "--proxy-protocol", "v2",
                     "--health-interval", "1")
    assert config.listen == ("tcp:9000:interface=127.0.0.1",)
    assert [b.address for b in config.backends] == [
        "tcp:host=127.0.0.1:port=5432", "tcp:127.0.0.1:5433"]
    assert config.balance == "leastconn"
    assert config.settings.connect_timeout == 2 and config.settings.idle_timeout == 60
    assert config.settings.proxy_protocol == "v2"
    assert config.health.interval == 1 and config.health.check == "tcp"


def test_idle_timeout_zero_means_none():
    assert options(*BASE).settings.idle_timeout is None


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--backend", "tcp:host=127.0.0.1:port=1"], "at least one --listen"),
        (["--listen", "tcp:9000"], "at least one --backend"),
        (BASE + ["--proxy-protocol", "v3"], "--proxy-protocol must be v1 or v2"),
        (BASE + ["--balance", "fastest"], "unknown balancer 'fastest'"),
        (BASE + ["--connect-timeout", "0"], "--connect-timeout must be more than 0"),
        (BASE + ["--idle-timeout", "-1"], "--idle-timeout must not be negative"),
        (BASE + ["--health-check", "ping"], "--health-check must be tcp, http or none"),
        (BASE + ["--health-fall", "0"], "--health-fall must be at least 1"),
        (["--listen", "tcp:9000", "--backend", "nonsense:x"], "not a client endpoint"),
        (["--listen", "bogus:9000", "--backend", "tcp:a:1"], "bad endpoint .bogus:9000.: Unknown endpoint type"),
        (BASE + ["--tls-listen", "tcp:9443"], "tls_listen needs certificates"),
        (BASE + ["--backend", "tcp:host=127.0.0.1:port=5432"], "listed twice"),
    ],
)
def test_bad_options_are_refused_with_an_actionable_sentence(argv, message):
    with pytest.raises(usage.UsageError, match=message):
        options(*argv)


def test_health_path_implies_http_checks_and_no_health_turns_them_off():
    assert options(*BASE, "--health-path", "/ping").health.check == "http"
    assert options(*BASE, "--no-health").health.check == "none"


def table(text):
    reader = TableReader(tomllib.loads(text)["tcp"][0], "tcp[0]")
    config = tcp_config_from_table(reader)
    reader.finish()
    return config


FULL = """
[[tcp]]
name = "db"
listen = ["tcp:15432:interface=127.0.0.1", "haproxy:tcp:15433:interface=127.0.0.1"]
balance = "leastconn"
connect_timeout = 1.5
idle_timeout = 600
proxy_protocol = "v1"
retries = 1
backends = [
  "tcp:host=127.0.0.1:port=5432",
  { address = "tcp:host=127.0.0.1:port=5433", weight = 3, proxy_protocol = "v2", name = "replica" },
  { address = "tcp:host=127.0.0.1:port=5434", tls = true, server_name = "db.internal", verify = false },
]
[tcp.health]
path = "/health"
interval = 2
rise = 1
"""


def test_a_full_table_is_read():
    config = table(FULL)
    assert config.name == "db" and config.balance == "leastconn"
    assert config.settings.connect_timeout == 1.5 and config.settings.idle_timeout == 600
    assert config.settings.proxy_protocol == "v1" and config.settings.retries == 1
    first, replica, tls = config.backends
    assert replica.weight == 3 and replica.proxy_protocol == "v2" and replica.name == "replica"
    assert tls.tls and tls.server_name == "db.internal" and tls.verify is False
    assert config.health.check == "http" and config.health.path == "/health"


@pytest.mark.parametrize(
    "text, message",
    [
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = ["tcp:a:1"]\ncolour = "red"', "tcp\\[0\\].colour"),
        ('[[tcp]]\nlisten = ["tcp:1"]', "no backend"),
        ('[[tcp]]\nbackends = ["tcp:a:1"]', "no listener"),
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = ["tcp:a:1"]\nbalance = "x"', "tcp\\[0\\].balance"),
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = [{address = "tcp:a:1", weight = -1}]',
         "backends\\[0\\].weight"),
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = [{address = "tcp:a:1", tls = true}]',
         "backends\\[0\\].server_name: is required"),
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = [{address = "tcp:a:1", verify = false}]',
         "need tls = true"),
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = [{address = "tcp:a:1", port = 1}]',
         "backends\\[0\\].port: unknown key"),
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = ["tcp:a:1"]\nproxy_protocol = "v9"',
         "proxy_protocol: must be one of v1, v2"),
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = ["tcp:a:1"]\n[tcp.health]\nfall = 0',
         "health.fall"),
        ('[[tcp]]\nlisten = ["tcp:1"]\nbackends = 5', "backends: expected a list"),
    ],
)
def test_bad_tables_are_refused_naming_the_key(text, message):
    with pytest.raises(ConfigError, match=message):
        table(text)


def test_make_tcp_service_wires_listeners_pool_and_health_checks():
    config = table(FULL)
    reactor = MemoryReactorClock()
    service = make_tcp_service(config, reactor, [])
    children = list(service)
    checker = [c for c in children if isinstance(c, HealthChecker)]
    assert len(checker) == 1 and isinstance(checker[0].check, HTTPCheck)
    assert isinstance(service.pool.balancer, LeastConnections)
    assert [b.name for b in service.pool.backends][1] == "replica"
    service.startService()
    try:
        ports = [(p[0], p[1]) for p in reactor.tcpServers]
        assert sorted(p for p, _ in ports) == [15432, 15433]
        factories = {p: f for p, f in ports}
        assert factories[15432] is service.factory
        assert isinstance(factories[15433], ProxyHeaderWrappingFactory)
    finally:
        service.stopService()


def test_no_health_checks_when_turned_off():
    config = options(*BASE, "--no-health")
    service = make_tcp_service(config, MemoryReactorClock(), [])
    assert not [c for c in service if isinstance(c, HealthChecker)]


def test_config_defaults_are_safe():
    config = TCPConfig()
    assert config.settings.connect_timeout > 0 and config.settings.retries >= 1
