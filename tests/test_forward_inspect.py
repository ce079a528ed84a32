"""
TLS inspection through the forward proxy: the operator's CA made by
``multiproxy ca``, certificates minted per name, and curl trusting that CA
through an inspected tunnel to a real TLS origin (URL rules, the cache and
the access log see ``https://`` URLs), beside tunnels that stay spliced.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import stat
import subprocess
import sys
import tomllib

import pytest
import pytest_twisted
import trustme
from cryptography import x509
from hardening import no_tracebacks  # noqa: F401  (autouse: a logged traceback fails the test)
from loopback import curl, wait_for
from twisted.internet import reactor, ssl, threads
from twisted.web import resource, server

from multiproxy._config import read_configuration
from multiproxy._tablereader import TableReader
from multiproxy.cache import CacheConfig, caching_fetcher_factory
from multiproxy.forward import ForwardSettings
from multiproxy.forward._config import ForwardOptions, inspect_from_table
from multiproxy.forward._inspect import CertificateMint, InspectConfig, Inspector, make_ca
from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy import PolicyHolder, settings_from_table


@pytest.fixture(scope="module")
def operator_ca(tmp_path_factory):
    """The directory of an inspection CA made by the ``multiproxy ca`` command."""
    out = tmp_path_factory.mktemp("inspect-ca")
    result = subprocess.run([sys.executable, "-m", "multiproxy._cli", "ca", "--out", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def origin_ca():
    return trustme.CA()


class _Page(resource.Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[bytes] = []

    def render_GET(self, request):
        self.hits.append(request.uri)
        if request.path.startswith(b"/cached"):
            request.setHeader(b"cache-control", b"max-age=600")
        request.setHeader(b"content-type", b"text/plain")
        return b"origin saw " + request.uri + b" for " + request.getHeader(b"host")


@pytest.fixture
def tls_origin(origin_ca, tmp_path):
    """(port, CA bundle path, resource) of a TLS origin for localhost."""
    cert = origin_ca.issue_cert("localhost")
    pem = b"".join(blob.bytes() for blob in cert.cert_chain_pems) + cert.private_key_pem.bytes()
    page = _Page()
    site = server.Site(page)
    site.log = lambda request: None
    port = reactor.listenSSL(0, site, ssl.PrivateCertificate.loadPEM(pem).options(),
                             interface="127.0.0.1")
    bundle = tmp_path / "origin-ca.pem"
    origin_ca.cert_pem.write_to_path(str(bundle))
    yield port.getHost().port, str(bundle), page
    pytest_twisted.blockon(port.stopListening())


POLICY = """
[policy]
default = "allow"
[[policy.rules]]
name = "no-secret"
action = "deny"
url_regex = "/secret"
message = "Secrets stay inside."
"""


@pytest.fixture
def inspecting(start_forward, operator_ca, tls_origin):
    """A caching forward proxy inspecting localhost with the operator CA; returns (port, origin)."""
    origin_port, bundle, page = tls_origin

    def start(**inspect):
        inspect.setdefault("trust", (bundle,))
        inspector = Inspector(InspectConfig(str(operator_ca), ("localhost",), **inspect))
        policy = PolicyHolder(settings_from_table(
            TableReader(tomllib.loads(POLICY)["policy"], "policy")), clock=reactor.seconds)
        port, factory = start_forward(
            settings=ForwardSettings(connect_ports=frozenset({origin_port})),
            inspector=inspector, policy=policy)
        factory.fetcher = caching_fetcher_factory(CacheConfig(), reactor)(factory.fetcher)
        return port, (origin_port, page)

    return start


def fetch(proxy: int, url: str, ca: str, *args: str):
    return curl("-x", f"http://127.0.0.1:{proxy}", "--cacert", ca, "-D", "-", *args, url)


# -- the CA and the certificates ----------------------------------------------------------


def test_the_ca_command_writes_a_ca_and_a_key_only_its_owner_reads(operator_ca, tmp_path):
    ca = x509.load_pem_x509_certificate((operator_ca / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert stat.S_IMODE(os.stat(operator_ca / "ca.key").st_mode) == 0o600
    again = subprocess.run([sys.executable, "-m", "multiproxy._cli", "ca", "--out",
                            str(operator_ca)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "exists already" in again.stderr


def test_minted_certificates_name_the_host_are_signed_by_the_ca_and_made_once(operator_ca):
    inspector = Inspector(InspectConfig(str(operator_ca), (".example.com",)))
    mint = inspector.mint
    ca = mint.ca_cert
    leaf = mint.certificate_for("www.example.com")
    leaf.verify_directly_issued_by(ca)
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["www.example.com"]
    now = datetime.datetime.now(datetime.timezone.utc)
    assert leaf.not_valid_before_utc < now < leaf.not_valid_after_utc
    assert (leaf.not_valid_after_utc - now).days <= 397
    ip = mint.certificate_for("192.0.2.7")
    assert ip.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("192.0.2.7")]
    before = mint.minted
    first = mint.context_for("a.example.com")
    assert mint.context_for("a.example.com") is first
    assert mint.minted == before + 1


def test_the_mint_keeps_a_bounded_number_of_names(operator_ca):
    inspector = Inspector(InspectConfig(str(operator_ca), (".example.com",)))
    ca, key = inspector.mint.ca_cert, inspector.mint._ca_key
    mint = CertificateMint(ca, key, size=2)
    for name in ("a.test", "b.test", "c.test", "a.test"):
        mint.context_for(name)
    assert mint.minted == 4  # a.test was dropped when c.test came, and made again


def test_never_inspect_wins_over_the_inspected_hosts(operator_ca):
    inspector = Inspector(InspectConfig(str(operator_ca), (".example.com",),
                                        never=("bank.example.com",)))
    assert inspector.wants("www.example.com")
    assert not inspector.wants("bank.example.com") and not inspector.wants("example.org")


def test_a_missing_ca_or_a_bad_pattern_is_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read .*ca.pem.*multiproxy ca --out"):
        Inspector(InspectConfig(str(tmp_path), ("localhost",)))
    make_ca(str(tmp_path))
    with pytest.raises(ConfigError, match=r"inspect trust .*cannot read"):
        Inspector(InspectConfig(str(tmp_path), ("localhost",), trust=(str(tmp_path / "no"),)))


# -- configuration ------------------------------------------------------------------------


def test_inspect_table_and_command_line(tmp_path):
    config = inspect_from_table(TableReader(
        {"ca": "/etc/mp", "hosts": [".example.com"], "never": ["bank.example.com"],
         "trust": ["/etc/extra.pem"]}, "forward[0].inspect"))
    assert config == InspectConfig("/etc/mp", (".example.com",), ("bank.example.com",),
                                   ("/etc/extra.pem",))
    with pytest.raises(ConfigError, match=r"forward\[0\]\.inspect\.hosts"):
        inspect_from_table(TableReader({"ca": "/etc/mp", "hosts": ["a..b"]},
                                       "forward[0].inspect"))
    with pytest.raises(ConfigError, match=r"forward\[0\]\.inspect\.ca"):
        inspect_from_table(TableReader({"hosts": ["x.test"]}, "forward[0].inspect"))
    configuration = read_configuration(tomllib.loads(
        '[[forward]]\n[forward.inspect]\nca = "/etc/mp"\nhosts = ["x.test"]\n'))
    assert configuration.proxies[0][1].inspect.hosts == ("x.test",)

    options = ForwardOptions()
    options.parseOptions(["--inspect-ca", str(tmp_path), "--inspect-host", ".example.com",
                          "--never-inspect", "bank.example.com"])
    assert options.config.inspect == InspectConfig(str(tmp_path), (".example.com",),
                                                   ("bank.example.com",))
    from twisted.python.usage import UsageError

    with pytest.raises(UsageError, match="need --inspect-ca"):
        ForwardOptions().parseOptions(["--inspect-host", "x.test"])
    with pytest.raises(UsageError, match="at least one --inspect-host"):
        ForwardOptions().parseOptions(["--inspect-ca", str(tmp_path)])


# -- through the proxy, with curl --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_curl_trusting_the_operator_ca_reads_through_an_inspected_tunnel(
    inspecting, operator_ca, reporter
):
    proxy, (port, page) = inspecting()
    ca = str(operator_ca / "ca.pem")
    url = f"https://localhost:{port}"
    out, err, code = await fetch(proxy, f"{url}/page?q=1", ca)
    assert code == 0, err
    assert out.endswith(f"origin saw /page?q=1 for localhost:{port}".encode())
    out, err, code = await fetch(proxy, f"{url}/page?q=1", ca, "-H", f"Host: LOCALHOST:{port}")
    assert code == 0 and b" 200 " in out.split(b"\r\n\r\n", 1)[1], err  # any case, port given
    # The URL rule sees the path inside the tunnel: the deny page comes back over TLS.
    out, err, code = await fetch(proxy, f"{url}/secret/plans", ca)
    assert code == 0, err
    assert b" 403 " in out.split(b"\r\n\r\n", 2)[1] and b"Secrets stay inside." in out
    # A cacheable response is a HIT the second time, from the cache, not the origin.
    for _ in range(2):
        out, err, code = await fetch(proxy, f"{url}/cached", ca)
        assert code == 0, err
    assert b"x-cache: hit" in out.lower() and page.hits.count(b"/cached") == 1
    assert b"/secret/plans" not in page.hits
    await wait_for(lambda: sum(r.kind == "connect" for r in reporter.records) == 5)
    requests = [r for r in reporter.records if r.kind == "http"]
    assert [r.target for r in requests] == [f"{url}/page?q=1", f"{url}/page?q=1",
                                            f"{url}/secret/plans", f"{url}/cached",
                                            f"{url}/cached"]
    assert [r.status for r in requests] == [200, 200, 403, 200, 200]
    assert requests[2].rule == "no-secret" and requests[4].cache == "HIT"
    tunnels = [r for r in reporter.records if r.kind == "connect"]
    assert {r.ended for r in tunnels} == {"inspected"}
    assert {r.extra["sni"] for r in tunnels} == {"localhost"}


@pytest_twisted.ensureDeferred
async def test_an_origin_that_does_not_verify_is_a_502_saying_why(inspecting, operator_ca):
    proxy, (port, page) = inspecting(trust=())  # the system store does not know trustme's CA
    out, err, code = await fetch(proxy, f"https://localhost:{port}/page",
                                 str(operator_ca / "ca.pem"))
    assert code == 0, err
    assert b" 502 " in out and b"not signed by a trusted CA" in out
    assert page.hits == []


@pytest_twisted.ensureDeferred
async def test_a_client_not_trusting_the_ca_fails_and_the_log_says_so(
    inspecting, tls_origin, reporter
):
    proxy, (port, page) = inspecting()
    _, bundle, _ = tls_origin
    out, err, code = await fetch(proxy, f"https://localhost:{port}/page", bundle)
    assert code == 60, err  # curl: the peer certificate cannot be authenticated
    await wait_for(lambda: reporter.records)
    assert [r.ended for r in reporter.records] == ["inspect-tls-failed"]
    assert page.hits == []


@pytest_twisted.ensureDeferred
async def test_a_never_inspected_host_is_spliced_with_the_origins_own_certificate(
    inspecting, tls_origin, reporter
):
    proxy, (port, page) = inspecting(never=("localhost",))
    _, bundle, _ = tls_origin
    out, err, code = await fetch(proxy, f"https://localhost:{port}/page", bundle)
    assert code == 0, err  # verified against the origin's own CA: nothing in between
    assert out.endswith(f"origin saw /page for localhost:{port}".encode())
    await wait_for(lambda: reporter.records)
    [tunnel] = reporter.records  # one spliced tunnel, no request read inside it
    assert tunnel.kind == "connect" and tunnel.ended in {"done", "client-closed"}


@pytest_twisted.ensureDeferred
async def test_a_request_for_another_host_inside_the_tunnel_is_421(inspecting, operator_ca):
    proxy, (port, page) = inspecting()
    out, err, code = await fetch(proxy, f"https://localhost:{port}/page",
                                 str(operator_ca / "ca.pem"), "-H", "Host: elsewhere.test")
    assert code == 0, err
    assert b" 421 " in out and b"elsewhere.test" in out
    assert page.hits == []


def test_twistd_check_loads_the_inspection_ca_and_names_what_is_missing(operator_ca, tmp_path):
    from tests.test_twistd_operations import run_twistd

    ok = run_twistd("--check", "forward", "--inspect-ca", str(operator_ca),
                    "--inspect-host", ".example.com", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    missing = run_twistd("--check", "forward", "--inspect-ca", str(tmp_path / "none"),
                         "--inspect-host", ".example.com", cwd=tmp_path)
    assert missing.returncode == 1
    [line] = missing.stderr.strip().splitlines()
    assert "cannot read" in line and "multiproxy ca --out" in line


CHROMIUM = shutil.which("chromium")
CERTUTIL = shutil.which("certutil")


@pytest.mark.skipif(CHROMIUM is None or CERTUTIL is None,
                    reason="needs chromium and certutil (apt-get install chromium libnss3-tools)")
@pytest_twisted.ensureDeferred
async def test_headless_chromium_trusting_the_ca_sees_the_deny_page_over_tls(
    inspecting, operator_ca, tmp_path
):
    proxy, (port, page) = inspecting()
    # A browser profile of its own whose NSS store trusts the operator CA, as an
    # organisation rolls it out to its browsers.
    nssdb = tmp_path / "home" / ".pki" / "nssdb"
    nssdb.mkdir(parents=True)
    for args in (["-N", "--empty-password"],
                 ["-A", "-t", "C,,", "-n", "multiproxy", "-i", str(operator_ca / "ca.pem")]):
        subprocess.run([CERTUTIL, "-d", f"sql:{nssdb}", *args], check=True, timeout=30,
                       capture_output=True)
    url = f"https://localhost:{port}/secret/plans"

    def browse() -> str:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             f"--proxy-server=http://127.0.0.1:{proxy}", "--proxy-bypass-list=<-loopback>",
             f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", url],
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, HOME=str(tmp_path / "home"))).stdout

    dom = await threads.deferToThread(browse)
    assert "Access denied" in dom and "Secrets stay inside." in dom
    assert '<dd class="rule">no-secret</dd>' in dom and url in dom
    assert b"/secret/plans" not in page.hits  # (the browser may ask for /favicon.ico)


@pytest_twisted.ensureDeferred
async def test_behind_a_parent_an_inspected_origin_is_verified_with_the_inspection_trust(
    start_forward, operator_ca, tls_origin, reporter
):
    from multiproxy.forward._config import ForwardConfig, make_forward_proxy
    from multiproxy.forward._parents import parse_parent_url

    origin_port, bundle, page = tls_origin
    ports = ForwardSettings(connect_ports=frozenset({origin_port}))
    parent_port, _ = start_forward(settings=ports)
    config = ForwardConfig(
        settings=ports, parents=(parse_parent_url(f"http://127.0.0.1:{parent_port}"),),
        inspect=InspectConfig(str(operator_ca), ("localhost",), trust=(bundle,)))
    child = make_forward_proxy(config, reactor, reporters=(reporter,))
    listening = reactor.listenTCP(0, child, interface="127.0.0.1")
    try:
        out, err, code = await fetch(listening.getHost().port,
                                     f"https://localhost:{origin_port}/page",
                                     str(operator_ca / "ca.pem"))
    finally:
        await listening.stopListening()
        for conn in list(child.connections):
            conn.transport.abortConnection()
        child.pool.close_idle()
    assert code == 0, err
    # Through the parent's tunnel, verified against trustme's CA (--inspect-trust).
    assert out.endswith(f"origin saw /page for localhost:{origin_port}".encode())
    await wait_for(lambda: any(r.kind == "http" for r in reporter.records))
    inner = [r for r in reporter.records if r.kind == "http" and r.proxy == "forward"]
    assert any(r.upstream == f"parent:127.0.0.1:{parent_port}" for r in inner)


def test_the_installed_multiproxy_command_makes_a_ca(tmp_path):
    import sysconfig

    command = shutil.which("multiproxy") or os.path.join(sysconfig.get_path("scripts"),
                                                          "multiproxy")
    if not os.path.exists(command):
        pytest.skip("multiproxy is not installed, only on the path")
    result = subprocess.run([command, "ca", "--out", str(tmp_path / "ca")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ca.pem" in result.stdout and (tmp_path / "ca" / "ca.key").exists()
    Inspector(InspectConfig(str(tmp_path / "ca"), ("localhost",)))  # loads as shipped
