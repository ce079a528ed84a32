"""
The reverse proxy as a running service, built from its configuration: TLS
with two SNI names (openssl s_client, curl --resolve), HSTS and the HTTPS
redirect, backend TLS verification, the status listener (also in headless
Chromium), graceful shutdown, and certificate reload on SIGHUP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tomllib

import pytest
import pytest_twisted
import trustme
from cryptography import x509
from loopback import curl, origin_site, raw_exchange, wait_for
from reverse_peers import NamedBackend
from twisted.internet import defer, error, protocol, reactor, ssl, threads
from twisted.internet.endpoints import TCP4ClientEndpoint

from multiproxy._config import make_services, read_configuration
from multiproxy._tap import Options
from multiproxy.reverse import make_reverse_service

pytestmark = pytest.mark.integration

OPENSSL = shutil.which("openssl")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reverse_config(text: str):
    return read_configuration(tomllib.loads(text)).proxies[0][1]


@pytest.fixture
def backends():
    started = [NamedBackend(f"b{i}") for i in range(2)]
    for b in started:
        b.start()
    yield started
    for b in started:
        pytest_twisted.blockon(b.stop())


@pytest.fixture
def services():
    running = []

    def start(service):
        service.startService()
        running.append(service)
        return service

    yield start
    for service in running:
        if service.running:
            pytest_twisted.blockon(defer.maybeDeferred(service.stopService))


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def certs(tmp_path, ca):
    d = tmp_path / "certs"
    d.mkdir()
    ca.issue_cert("a.test").private_key_and_cert_chain_pem.write_to_path(str(d / "a.pem"))
    ca.issue_cert("b.test").private_key_and_cert_chain_pem.write_to_path(str(d / "b.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return d


def _serial(path) -> int:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].serial_number


# ---- twistd options ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_twistd_reverse_subcommand_serves_requests(backends, services):
    port = free_port()
    options = Options()
    options.parseOptions([
        "--access-log", "none", "reverse", "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--backend", f"http://127.0.0.1:{backends[0].port}",
        "--backend", f"http://127.0.0.1:{backends[1].port}", "--balance", "roundrobin",
    ])
    services(make_services(options.configuration, reactor))
    bodies = []
    for _ in range(4):
        out, err, code = await curl(f"http://127.0.0.1:{port}/who")
        assert code == 0, err
        bodies.append(out)
    assert sorted(bodies) == [b"b0", b"b0", b"b1", b"b1"]


@pytest_twisted.ensureDeferred
async def test_toml_routes_pools_and_status_listener(backends, services):
    port, status_port = free_port(), free_port()
    config = reverse_config(f"""
[log]
access = false

[[reverse]]
name = "site"
listen = "tcp:{port}:interface=127.0.0.1"
status_listen = "tcp:{status_port}:interface=127.0.0.1"

[[reverse.routes]]
hosts = ["api.test"]
pool = "api"
path = "/v1"
strip_prefix = true

[[reverse.routes]]
pool = "web"

[reverse.pools.api]
backends = ["http://127.0.0.1:{backends[0].port}"]
[reverse.pools.api.health]
path = "/who"
interval = 0.2

[reverse.pools.web]
backends = [{{ url = "http://127.0.0.1:{backends[1].port}", name = "web-one" }}]
""")
    services(make_reverse_service(config, reactor))
    out, err, code = await curl("-H", "Host: api.test", f"http://127.0.0.1:{port}/v1/who")
    assert (code, out) == (0, b"b0"), err
    assert backends[0].hits[-1] == b"/who"
    out, err, code = await curl(f"http://127.0.0.1:{port}/who")
    assert out == b"b1"
    await wait_for(lambda: any(h == b"/who" for h in backends[0].hits[:-1]) or
                   len(backends[0].hits) > 2, timeout=5)
    out, err, code = await curl(f"http://127.0.0.1:{status_port}/status.json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["proxy"] == "site"
    pools = {p["name"]: p for p in doc["pools"]}
    assert pools["web"]["backends"][0]["name"] == "web-one"
    assert pools["web"]["backends"][0]["requests"] >= 1
    assert pools["api"]["backends"][0]["state"] == "up"
    assert "HTTP 200" in pools["api"]["backends"][0]["last_check"]
    out, _, _ = await curl(f"http://127.0.0.1:{status_port}/metrics")
    assert b'multiproxy_backend_up{proxy="site",pool="web",backend="web-one"} 1' in out
    # The status page is not reachable through the proxy's own listener.
    out, _, _ = await curl(f"http://127.0.0.1:{port}/status.json")
    assert out.startswith(b"<html>") or b"proxy" not in out


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
@pytest_twisted.ensureDeferred
async def test_status_page_in_headless_chromium_from_the_live_listener(backends, services,
                                                                         tmp_path):
    dead = free_port()
    status_port = free_port()
    config = reverse_config(f"""
[[reverse]]
listen = "tcp:{free_port()}:interface=127.0.0.1"
status_listen = "tcp:{status_port}:interface=127.0.0.1"
backends = ["http://127.0.0.1:{backends[0].port}", "http://127.0.0.1:{dead}"]
[reverse.health]
interval = 0.1
rise = 1
fall = 1
""")
    service = services(make_reverse_service(config, reactor))
    pool = service.pools["default"]
    await wait_for(lambda: not pool.backends[1].checked_up, timeout=5)

    def browse():
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-proxy-server", f"--user-data-dir={tmp_path / 'p'}",
             "--dump-dom", f"http://127.0.0.1:{status_port}/"],
            capture_output=True, text=True, timeout=60)

    result = await threads.deferToThread(browse)
    dom = result.stdout
    assert f'data-backend="http://127.0.0.1:{backends[0].port}"' in dom, result.stderr[-1500:]
    assert '<tr class="up"' in dom and '<tr class="down"' in dom
    assert "1/2 up" in dom


# ---- TLS -------------------------------------------------------------------------------------


def tls_config(certs, backend_port: int, https: int, http: int, extra: str = "") -> str:
    return f"""
[[reverse]]
listen = "tcp:{http}:interface=127.0.0.1"
tls_listen = "tcp:{https}:interface=127.0.0.1"
redirect_https = true
https_port = {https}
hsts = 600
backends = ["http://127.0.0.1:{backend_port}"]
{extra}
[reverse.tls]
dir = "{certs}"
default = "a.test"
"""


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest_twisted.ensureDeferred
async def test_tls_two_sni_names_with_s_client_and_curl(backends, services, certs):
    https, http = free_port(), free_port()
    services(make_reverse_service(
        reverse_config(tls_config(certs, backends[0].port, https, http)), reactor))
    ca = str(certs.parent / "ca.pem")
    for name in ("a.test", "b.test"):
        result = await threads.deferToThread(subprocess.run, [
            OPENSSL, "s_client", "-connect", f"127.0.0.1:{https}", "-servername", name,
            "-verify_hostname", name, "-CAfile", ca, "-verify_return_error", "-alpn", "http/1.1",
        ], input="", capture_output=True, text=True, timeout=20)
        assert "Verify return code: 0 (ok)" in result.stdout, result.stdout + result.stderr
        assert "ALPN protocol: http/1.1" in result.stdout
        out, err, code = await curl("--resolve", f"{name}:{https}:127.0.0.1", "--cacert", ca,
                                    "-D", "-", f"https://{name}:{https}/headers")
        assert code == 0, err
        head, _, body = out.partition(b"\r\n\r\n")
        assert b"strict-transport-security: max-age=600" in head.lower()
        fields = {k.lower(): v for k, v in json.loads(body)["headers"]}
        assert fields["x-forwarded-proto"] == "https"
        assert fields["host"] == f"{name}:{https}"
    # Plain HTTP: redirected to https, without HSTS.
    out, err, code = await curl("-D", "-", "-H", "Host: a.test", f"http://127.0.0.1:{http}/x?y=1")
    assert b" 308 " in out.split(b"\r\n")[0]
    assert f"location: https://a.test:{https}/x?y=1".encode() in out.lower()
    assert b"strict-transport-security" not in out.lower()


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest_twisted.ensureDeferred
async def test_sighup_reloads_certificates_for_new_handshakes(backends, services, certs, ca):
    https, http = free_port(), free_port()
    services(make_reverse_service(
        reverse_config(tls_config(certs, backends[0].port, https, http)), reactor))

    def served_serial() -> int:
        result = subprocess.run(
            [OPENSSL, "s_client", "-connect", f"127.0.0.1:{https}", "-servername", "a.test"],
            input="", capture_output=True, text=True, timeout=20)
        pem = result.stdout[result.stdout.index("-----BEGIN CERTIFICATE-----"):
                            result.stdout.index("-----END CERTIFICATE-----") + 25]
        return x509.load_pem_x509_certificate(pem.encode()).serial_number

    before = await threads.deferToThread(served_serial)
    assert before == _serial(certs / "a.pem")
    ca.issue_cert("a.test").private_key_and_cert_chain_pem.write_to_path(str(certs / "a.pem"))
    os.kill(os.getpid(), signal.SIGHUP)
    await wait_for(lambda: True, timeout=0.2)
    after = await threads.deferToThread(served_serial)
    assert after == _serial(certs / "a.pem") != before


# ---- backend TLS -------------------------------------------------------------------------------


@pytest.fixture
def tls_backend(ca):
    """A twisted.web backend over TLS with a certificate for wrong.test only."""
    leaf = ca.issue_cert("wrong.test")
    pem = leaf.private_key_and_cert_chain_pem.bytes()
    options = ssl.PrivateCertificate.loadPEM(pem).options()
    site = origin_site()
    listening = reactor.listenSSL(0, site, options, interface="127.0.0.1")
    yield listening.getHost().port
    pytest_twisted.blockon(defer.maybeDeferred(listening.stopListening))


@pytest_twisted.ensureDeferred
async def test_backend_tls_verification_fails_on_a_wrong_certificate(tls_backend, services,
                                                                    tmp_path, ca):
    ca_file = tmp_path / "backend-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port()

    def start(extra: str):
        return services(make_reverse_service(reverse_config(f"""
[[reverse]]
listen = "tcp:{port}:interface=127.0.0.1"
backends = [{{ url = "https://127.0.0.1:{tls_backend}", ca_file = "{ca_file}", {extra} }}]
"""), reactor))

    service = start('server_name = "backend.test"')
    out, err, code = await curl("-D", "-", f"http://127.0.0.1:{port}/bytes/5")
    assert out.startswith(b"HTTP/1.1 502 "), out
    assert b"TLS handshake with the upstream failed: the certificate does not match" in out
    assert not out.endswith(b"xxxxx")
    await service.stopService()
    service = start('server_name = "wrong.test"')
    out, err, code = await curl(f"http://127.0.0.1:{port}/bytes/5")
    assert out == b"xxxxx", err
    await service.stopService()
    service = start('server_name = "backend.test", verify = false')
    out, err, code = await curl(f"http://127.0.0.1:{port}/bytes/5")
    assert out == b"xxxxx", err


# ---- shutdown --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_graceful_shutdown_lets_in_flight_requests_finish(backends, services):
    port = free_port()
    service = services(make_reverse_service(reverse_config(f"""
[[reverse]]
listen = "tcp:{port}:interface=127.0.0.1"
shutdown_timeout = 5
backends = ["http://127.0.0.1:{backends[0].port}"]
"""), reactor))
    idle = raw_exchange(port, b"")  # an idle keep-alive client: closed at once
    slow = raw_exchange(port, b"GET /slow/0.5 HTTP/1.1\r\nHost: h\r\n\r\n")
    await wait_for(lambda: len(service.factory.connections) == 2)
    await wait_for(lambda: any(c.exchange is not None for c in service.factory.connections))
    stopping = service.stopService()
    out = await slow
    assert out.startswith(b"HTTP/1.1 200 ")
    assert b"Connection: close" in out and out.endswith(b"slow\n\r\n0\r\n\r\n")
    assert await idle == b""
    await stopping
    with pytest.raises(error.ConnectionRefusedError):
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            protocol.Factory.forProtocol(protocol.Protocol))


@pytest_twisted.ensureDeferred
async def test_shutdown_deadline_cuts_what_is_left(backends, services):
    port = free_port()
    service = services(make_reverse_service(reverse_config(f"""
[[reverse]]
listen = "tcp:{port}:interface=127.0.0.1"
shutdown_timeout = 0.3
backends = ["http://127.0.0.1:{backends[0].port}"]
"""), reactor))
    slow = raw_exchange(port, b"GET /slow/5 HTTP/1.1\r\nHost: h\r\n\r\n")
    await wait_for(lambda: any(c.exchange is not None for c in service.factory.connections))
    started = reactor.seconds()
    await service.stopService()
    assert reactor.seconds() - started < 2
    assert await slow == b""


@pytest_twisted.ensureDeferred
async def test_twistd_reverse_policy_options_apply(backends, services):
    port = free_port()
    options = Options()
    options.parseOptions([
        "--access-log", "none", "reverse", "--listen", f"tcp:{port}:interface=127.0.0.1",
        "--backend", f"http://127.0.0.1:{backends[0].port}", "--deny-network", "127.0.0.0/8",
    ])
    services(make_services(options.configuration, reactor))
    out, err, code = await curl("-D", "-", f"http://127.0.0.1:{port}/who")
    assert out.startswith(b"HTTP/1.1 403 "), out
    assert not backends[0].hits
