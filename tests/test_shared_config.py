"""
The configuration pieces the proxies share: one reader per section, so a
key means the same in every proxy that has it.
"""

from __future__ import annotations

import pytest

from multiproxy._tablereader import TableReader
from multiproxy.balancing import HealthConfig, health_from_table
from multiproxy.forward._config import ForwardOptions, forward_config_from_table
from multiproxy.http._config import limits_from_table, timeouts_from_table
from multiproxy.pipeline._errors import ConfigError
from multiproxy.reverse import ReverseOptions, reverse_config_from_table
from multiproxy.tcp import TCPOptions, tcp_config_from_table
from multiproxy.transport._tls import CertificateFile
from multiproxy.transport._tlsconfig import TLSConfig, tls_from_table

BOUNDS = {
    "max_head_size": 4096, "max_request_line": 1024, "max_header_fields": 20,
    "max_body_size": 0, "header_timeout": 5, "keepalive_timeout": 0, "idle_timeout": 7,
    "connect_timeout": 2.5, "response_timeout": 9, "upstream_idle_timeout": 0,
    "tunnel_idle_timeout": 30,
}


def test_limits_and_timeouts_read_the_same_in_forward_and_reverse_tables():
    limits = limits_from_table(TableReader(dict(BOUNDS), "t"))
    timeouts = timeouts_from_table(TableReader(dict(BOUNDS), "t"))
    assert (limits.max_head, limits.max_request_line, limits.max_fields, limits.max_body) == (
        4096, 1024, 20, None)
    assert (timeouts.header, timeouts.keepalive, timeouts.client_idle, timeouts.connect) == (
        5, None, 7, 2.5)
    assert (timeouts.response, timeouts.upstream_idle, timeouts.tunnel_idle) == (9, None, 30)
    forward = forward_config_from_table(TableReader(dict(BOUNDS), "forward[0]"))
    reverse = reverse_config_from_table(
        TableReader({**BOUNDS, "backends": ["http://127.0.0.1:9001"]}, "reverse[0]"))
    assert forward.limits == reverse.limits == limits
    assert forward.timeouts == reverse.timeouts == timeouts


def test_absent_timeouts_keep_their_defaults_and_a_bad_one_names_its_key():
    from multiproxy.http._server import Timeouts

    assert timeouts_from_table(TableReader({}, "t")) == Timeouts()
    with pytest.raises(ConfigError, match=r"t\.connect_timeout"):
        timeouts_from_table(TableReader({"connect_timeout": 0}, "t"))


def test_health_and_tls_tables_read_the_same_in_reverse_and_tcp():
    health = {"path": "/ping", "interval": 1.5, "expect": 204}
    tls = {"certs": [{"cert": "a.pem", "names": ["a.test"]}], "default": "a.test"}
    expected_health = HealthConfig(check="http", path="/ping", expect=(204,), interval=1.5)
    expected_tls = TLSConfig((CertificateFile("a.pem", None, ("a.test",)),), None, "a.test")
    assert health_from_table(TableReader(dict(health), "h")) == expected_health
    assert tls_from_table(TableReader(dict(tls), "t")) == expected_tls
    reverse = reverse_config_from_table(TableReader({
        "tls_listen": ["tcp:8443"], "tls": dict(tls), "health": dict(health),
        "backends": ["http://127.0.0.1:9001"],
    }, "reverse[0]"))
    tcp = tcp_config_from_table(TableReader({
        "tls_listen": ["tcp:9443"], "tls": dict(tls), "health": dict(health),
        "backends": ["tcp:host=127.0.0.1:port=5432"],
    }, "tcp[0]"))
    assert reverse.pools[0].health == tcp.health == expected_health
    assert reverse.tls == tcp.tls == expected_tls


def test_health_and_tls_options_mean_the_same_in_reverse_and_tcp():
    shared = ["--health-interval", "1.5", "--health-rise", "4", "--health-fall", "5",
              "--health-timeout", "0.5", "--tls-cert", "a.pem", "--tls-cert", "b.crt:b.key",
              "--tls-dir", "/certs", "--tls-default", "a.test"]
    reverse = ReverseOptions()
    reverse.parseOptions(["--backend", "http://127.0.0.1:9001", "--tls-listen", "tcp:8443",
                          *shared])
    tcp = TCPOptions()
    tcp.parseOptions(["--backend", "tcp:host=127.0.0.1:port=5432", "--tls-listen", "tcp:9443",
                      *shared])
    assert reverse.config.pools[0].health == tcp.config.health == HealthConfig(
        interval=1.5, timeout=0.5, rise=4, fall=5)
    assert reverse.config.tls == tcp.config.tls == TLSConfig(
        (CertificateFile("a.pem", None), CertificateFile("b.crt", "b.key")), "/certs", "a.test")


def test_without_certificates_there_is_no_tls_config():
    tcp = TCPOptions()
    tcp.parseOptions(["--listen", "tcp:9000", "--backend", "tcp:host=127.0.0.1:port=5432"])
    assert tcp.config.tls is None


def test_client_connection_options_mean_the_same_in_forward_and_reverse():
    shared = ["--header-timeout", "4", "--keepalive-timeout", "0", "--max-body-size", "1000"]
    forward = ForwardOptions()
    forward.parseOptions(shared)
    reverse = ReverseOptions()
    reverse.parseOptions(["--backend", "http://127.0.0.1:9001", *shared])
    for config in (forward.config, reverse.config):
        assert (config.timeouts.header, config.timeouts.keepalive) == (4, None)
        assert config.limits.max_body == 1000


@pytest.mark.parametrize(("value", "expected"), [
    (True, b"multiproxy"), (False, None), ("edge-1", b"edge-1"),
])
def test_via_reads_the_same_in_forward_and_reverse_tables(value, expected):
    forward = forward_config_from_table(TableReader({"via": value}, "forward[0]"))
    reverse = reverse_config_from_table(
        TableReader({"via": value, "backends": ["http://127.0.0.1:9001"]}, "reverse[0]"))
    assert forward.settings.via == reverse.via == expected


@pytest.mark.parametrize("value", ["two words", "", 3])
def test_a_bad_via_is_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match=r"forward\[0\]\.via: expected true, false or a pseudonym"):
        forward_config_from_table(TableReader({"via": value}, "forward[0]"))
