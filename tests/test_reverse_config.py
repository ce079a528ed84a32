"""Tests for reverse proxy configuration: [[reverse]] tables and ReverseOptions."""

from __future__ import annotations

import ipaddress
import tomllib

import pytest
from twisted.python import usage

from multiproxy._tablereader import TableReader
from multiproxy.pipeline._errors import ConfigError
from multiproxy.reverse._config import (
    DEFAULT_LISTEN,
    ReverseOptions,
    parse_backend_url,
    reverse_config_from_table,
)

FULL = """
[[reverse]]
name = "site"
listen = ["tcp:8080:interface=127.0.0.1"]
tls_listen = ["tcp:8443:interface=127.0.0.1"]
status_listen = "tcp:8404:interface=127.0.0.1"
redirect_https = true
https_port = 8443
hsts = "max-age=600; includeSubDomains"
connect_timeout = 2
response_timeout = 0
shutdown_timeout = 5

[reverse.tls]
dir = "/etc/multiproxy/certs"
default = "example.com"
certs = [{ cert = "a.pem", key = "a.key", names = ["a.example"] }, { cert = "b.pem" }]

[reverse.forwarded]
trusted = ["10.0.0.0/8", "::1"]
forwarded = false
include_port = true

[[reverse.routes]]
hosts = ["api.example.com"]
path = "/v1"
pool = "api"
strip_prefix = true
host_header = "backend"

[[reverse.routes]]
pool = "web"
cache = true

[reverse.pools.api]
balance = "hash:cookie=session"
backends = [
  "http://127.0.0.1:9001",
  { url = "https://[::1]:9443", weight = 3, server_name = "api.internal", ca_file = "ca.pem" },
]
[reverse.pools.api.health]
path = "/healthz"
interval = 1
expect = [200, 204]
rise = 1
fall = 2
max_failures = 5

[reverse.pools.web]
backends = ["http://web.internal"]
"""


def read(text: str):  # type: ignore[no-untyped-def]
    data = tomllib.loads(text)
    reader = TableReader(data, "")
    tables = reader.tables("reverse")
    config = reverse_config_from_table(tables[0])
    tables[0].finish()
    return config


def test_full_table_is_read() -> None:
    c = read(FULL)
    assert c.name == "site"
    assert c.listen == ("tcp:8080:interface=127.0.0.1",)
    assert c.tls_listen == ("tcp:8443:interface=127.0.0.1",)
    assert c.status_listen == ("tcp:8404:interface=127.0.0.1",)
    assert c.redirect_https and c.https_port == 8443
    assert c.hsts == b"max-age=600; includeSubDomains"
    assert c.timeouts.connect == 2.0 and c.timeouts.response is None
    assert c.shutdown_timeout == 5.0
    assert c.tls.directory == "/etc/multiproxy/certs" and c.tls.default == "example.com"
    assert [(x.cert, x.key, x.names) for x in c.tls.certificates] == [
        ("a.pem", "a.key", ("a.example",)), ("b.pem", None, ())]
    assert c.forwarded.trusted == (ipaddress.ip_network("10.0.0.0/8"),
                                   ipaddress.ip_network("::1/128"))
    assert not c.forwarded.forwarded and c.forwarded.x_forwarded and c.forwarded.include_port
    api, web = c.pools
    assert api.name == "api" and api.balance == "hash:cookie=session"
    assert [(b.scheme, b.host, b.port, b.weight) for b in api.backends] == [
        ("http", "127.0.0.1", 9001, 1), ("https", "::1", 9443, 3)]
    assert api.backends[1].server_name == "api.internal" and api.backends[1].ca_file == "ca.pem"
    assert api.backends[1].verify
    assert api.health.check == "http" and api.health.path == "/healthz"
    assert api.health.expect == (200, 204) and api.health.max_failures == 5
    assert web.backends[0].port == 80 and web.health.check == "tcp"
    table = c.route_table()
    m = table.match("api.example.com", b"/v1/users")
    assert (m.pool, m.target, m.route.host_header) == ("api", b"/users", "backend")
    assert table.match("other", b"/").route.cache


def test_shorthand_backends_make_one_pool_and_a_default_route() -> None:
    c = read('[[reverse]]\nbackends = ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]\n'
             'balance = "leastconn"\n')
    assert c.listen == (DEFAULT_LISTEN,)
    assert [p.name for p in c.pools] == ["default"]
    assert c.pools[0].balance == "leastconn"
    assert c.route_table().match("any.host", b"/x").pool == "default"


def test_shorthand_pool_takes_health_from_the_proxy_table() -> None:
    c = read('[[reverse]]\nbackends = "http://h:1"\n[reverse.health]\npath = "/ok"\n')
    assert c.pools[0].health.check == "http" and c.pools[0].health.path == "/ok"


def test_tls_listen_alone_needs_no_plain_listener() -> None:
    c = read('[[reverse]]\ntls_listen = "tcp:8443"\nbackends = "http://h:1"\n'
             '[reverse.tls]\ndir = "/certs"\n')
    assert c.listen == () and c.tls.directory == "/certs"


@pytest.mark.parametrize("text,message", [
    ('backends = ["ftp://h:1"]', r"reverse\[0\]\.backends\[0\]: backend 'ftp://h:1': expected "
                                 r"http://host:port"),
    ('backends = ["http://h:1/app"]', r"backends\[0\]: .*has no path; use a route's "
                                      r"replace_prefix"),
    ('backends = ["http://h:99999"]', r"backends\[0\]: backend .*Port out of range"),
    ('backends = []', r"reverse\[0\]\.backends: expected a list of URLs"),
    ('backends = ["http://h:1", "http://h:1"]', r"listed twice"),
    ('backends = ["http://h:1"]\nbalance = "random"',
     r"reverse\[0\]\.balance: unknown balancer 'random'; use one of roundrobin"),
    ('backends = [{ url = "http://h:1", verify = false }]',
     r"backends\[0\]\.url: server_name, ca_file and verify apply to https"),
    ('backends = [{ url = "https://h:1", weigth = 2 }]',
     r"backends\[0\]\.weigth: unknown key"),
    ('backends = ["http://h:1"]\nhsts = "yes"', r"reverse\[0\]\.hsts: expected true, false"),
    ('backends = ["http://h:1"]\nlisten = []', r"no listener; give listen or tls_listen"),
    ('backends = ["http://h:1"]\ntls_listen = "tcp:8443"', r"tls_listen needs certificates"),
    ('backends = ["http://h:1"]\n[reverse.tls]\ndir = "/c"', r"no TLS listener; add tls_listen"),
    ('backends = ["http://h:1"]\n[reverse.tls]\ndefault = "x"',
     r"reverse\[0\]\.tls\.certs: give certs"),
    ('backends = ["http://h:1"]\n[reverse.forwarded]\ntrusted = ["10.0.0/8"]',
     r"reverse\[0\]\.forwarded\.trusted: '10.0.0/8' is not an IP network"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[reverse.health]\npath = "/"',
     r"reverse\[0\]\.health: unknown key"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[reverse.pools.b]\nbackends = ["http://h:2"]',
     r"reverse\[0\]\.routes: several pools need"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[[reverse.routes]]\npool = "b"',
     r"reverse\[0\]\.routes\[0\]\.pool: no pool named 'b' \(pools: a\)"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[reverse.pools.b]\nbackends = ["http://h:2"]'
     '\n[[reverse.routes]]\npool = "a"', r"pool 'b' is not used by any route"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[[reverse.routes]]\npath = "x"',
     r"reverse\[0\]\.routes\[0\]\.path: path prefix must start with '/'"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[[reverse.routes]]\nhosts = ["bad host"]',
     r"reverse\[0\]\.routes\[0\]\.hosts: host 'bad host' must be a name"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[[reverse.routes]]\n[[reverse.routes]]',
     r"both claim path '/' on the default virtual host"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[reverse.pools.a.health]\nexpect = ["200"]',
     r"reverse\[0\]\.pools\.a\.health\.expect: expected status codes"),
    ('[reverse.pools.a]\nbackends = ["http://h:1"]\n[reverse.pools.a.health]\ninterval = 0',
     r"pools\.a\.health\.interval: must be at least"),
    ('backends = ["http://h:1"]\nlisten_on = "x"', r"reverse\[0\]\.listen_on: unknown key"),
    ('', r"reverse\[0\]\.pools: no backend"),
])
def test_bad_tables_name_the_key_and_the_fix(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        read("[[reverse]]\n" + text + "\n")


def test_backend_url_forms() -> None:
    b = parse_backend_url("https://Api.Example:8443/")
    assert (b.scheme, b.host, b.port, b.authority) == ("https", "api.example", 8443,
                                                       "api.example:8443")
    assert parse_backend_url("http://[::1]").authority == "[::1]"
    assert parse_backend_url("https://h").port == 443
    with pytest.raises(ValueError, match="credentials"):
        parse_backend_url("http://u:p@h:1")
    with pytest.raises(ValueError, match="has no host"):
        parse_backend_url("http://:80")


def test_http2_backends_by_url_and_by_table_option() -> None:
    from multiproxy.reverse._service import make_backend

    clear = parse_backend_url("h2://127.0.0.1:50051")
    assert (clear.scheme, clear.http2, clear.port) == ("h2", True, 50051)
    assert parse_backend_url("h2://grpc.internal").port == 80
    backend = make_backend(clear, 5)
    assert backend.http2 and backend.tls is None
    assert backend.key != make_backend(parse_backend_url("http://127.0.0.1:50051"), 5).key
    config = read('''
[[reverse]]
backends = [{ url = "https://10.0.0.1:8443", http2 = true, server_name = "api.internal" },
            "https://10.0.0.2:8443"]
''')
    tls_h2, tls_h1 = (make_backend(b, 5) for b in config.pools[0].backends)
    assert tls_h2.http2 and tls_h2.tls.alpn == (b"h2",)
    assert not tls_h1.http2 and tls_h1.tls.alpn == (b"http/1.1",)
    with pytest.raises(ConfigError, match="h2://host:port"):
        read('[[reverse]]\nbackends = [{ url = "http://10.0.0.1", http2 = true }]\n')
    assert options("--backend", "h2://127.0.0.1:50051").config.pools[0].backends[0].http2


# ---- twistd options ----------------------------------------------------------------------------


def options(*argv: str) -> ReverseOptions:
    o = ReverseOptions()
    o.parseOptions(list(argv))
    return o


def test_command_line_from_the_issue() -> None:
    c = options("--listen", "tcp:8000", "--backend", "http://127.0.0.1:9001",
                "--backend", "http://127.0.0.1:9002", "--balance", "roundrobin").config
    assert c.listen == ("tcp:8000",)
    assert [b.port for b in c.pools[0].backends] == [9001, 9002]
    assert c.pools[0].balance == "roundrobin"
    assert c.route_table().match("h", b"/").pool == "default"
    assert c.pools[0].health.check == "tcp"


def test_command_line_with_everything() -> None:
    c = options(
        "--tls-listen", "tcp:8443", "--listen", "tcp:8080", "--tls-cert", "a.pem",
        "--tls-cert", "b.crt:b.key", "--tls-dir", "/certs", "--tls-default", "a.test",
        "--backend", "https://10.0.0.5", "--ca-file", "ca.pem", "--balance", "hash:header=X-User",
        "--status-listen", "tcp:8404", "--hsts", "31536000", "--redirect-https",
        "--https-port", "8443", "--health-path", "/ping", "--trust-forwarded", "10.0.0.0/8",
        "--host-header", "backend", "--no-forwarded",
    ).config
    assert c.tls_listen == ("tcp:8443",) and c.listen == ("tcp:8080",)
    assert [(x.cert, x.key) for x in c.tls.certificates] == [("a.pem", None), ("b.crt", "b.key")]
    assert c.tls.directory == "/certs" and c.tls.default == "a.test"
    backend = c.pools[0].backends[0]
    assert backend.scheme == "https" and backend.verify and backend.ca_file == "ca.pem"
    assert c.pools[0].balance == "hash:header=X-User"
    assert c.status_listen == ("tcp:8404",)
    assert c.hsts == b"max-age=31536000"
    assert c.redirect_https and c.https_port == 8443
    assert c.pools[0].health.check == "http" and c.pools[0].health.path == "/ping"
    assert c.forwarded.trusts("10.1.1.1") and not c.forwarded.forwarded
    assert c.routes[0].host_header == "backend"


def test_no_verify_backends_is_explicit() -> None:
    c = options("--backend", "https://h", "--no-verify-backends").config
    assert c.pools[0].backends[0].verify is False
    assert options("--backend", "https://h").config.pools[0].backends[0].verify is True


@pytest.mark.parametrize("argv,message", [
    ((), "give at least one --backend URL, e.g. --backend http://127.0.0.1:9001"),
    (("--backend", "127.0.0.1:9001"), "--backend: backend '127.0.0.1:9001': expected http://"),
    (("--backend", "http://h:1", "--balance", "fastest"), "--balance: unknown balancer 'fastest'"),
    (("--backend", "http://h:1", "--host-header", "x"), "--host-header must be keep or backend"),
    (("--backend", "http://h:1", "--health-check", "icmp"), "--health-check must be tcp, http"),
    (("--backend", "http://h:1", "--health-path", "ping"), "--health-path must start with /"),
    (("--backend", "http://h:1", "--health-interval", "0"), "--health-interval must be more"),
    (("--backend", "http://h:1", "--health-fall", "0"), "--health-fall must be at least 1"),
    (("--backend", "http://h:1", "--hsts", "-1"), "--hsts must not be negative"),
    (("--backend", "http://h:1", "--https-port", "0"), "--https-port must be 1-65535"),
    (("--backend", "http://h:1", "--backend", "http://h:1"), "the same backend is given twice"),
    (("--backend", "http://h:1", "--trust-forwarded", "lan"), "--trust-forwarded: 'lan' is not"),
    (("--backend", "http://h:1", "--tls-listen", "tcp:8443"), "tls_listen needs certificates"),
    (("--backend", "http://h:1", "--tls-dir", "/c"), "no TLS listener; add tls_listen"),
])
def test_bad_options_say_what_to_do(argv, message) -> None:
    with pytest.raises(usage.UsageError) as info:
        options(*argv)
    assert message in str(info.value)
