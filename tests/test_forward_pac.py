"""
The PAC file renderer and its settings, without a reactor: direct-list
entries, proxy addresses (options and ``Host`` fields), the operator's file
checks, string escaping, and the generated ``FindProxyForURL`` evaluated by
node (when installed) with the standard PAC helper functions.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from multiproxy.forward._pac import (
    MAX_PAC_FILE,
    DirectHost,
    PacSettings,
    load_pac_file,
    pac_path,
    parse_direct,
    parse_proxy_address,
    render_pac,
)

# The PAC helpers a browser provides, as the PAC specification describes them
# (isInNet for address literals only, as the generated file calls it).
PAC_HELPERS = r"""
function dnsDomainIs(host, domain) {
    return host.length >= domain.length &&
        host.substring(host.length - domain.length) == domain;
}
function _ip(text) {
    return text.split(".").reduce(function (n, part) { return n * 256 + Number(part); }, 0);
}
function isInNet(host, pattern, mask) {
    var m = _ip(mask);
    return (_ip(host) & m) >>> 0 == (_ip(pattern) & m) >>> 0;
}
"""


def evaluate(pac: bytes, hosts: list[str]) -> dict[str, str]:
    """What ``FindProxyForURL`` answers for each host, run by node."""
    script = PAC_HELPERS + pac.decode("ascii") + (
        "\nvar hosts = " + json.dumps(hosts) + ", answers = {};\n"
        "hosts.forEach(function (h) { answers[h] = FindProxyForURL('http://' + h + '/', h); });\n"
        "console.log(JSON.stringify(answers));\n"
    )
    result = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


needs_node = pytest.mark.skipif(not shutil.which("node"), reason="needs node to run the PAC file")


# -- the direct list ----------------------------------------------------------

@pytest.mark.parametrize("text, kind, value", [
    ("intranet.example.com", "exact", "intranet.example.com"),
    ("Intranet.Example.COM.", "exact", "intranet.example.com"),
    ("intranet", "exact", "intranet"),
    ("10.1.2.3", "exact", "10.1.2.3"),
    ("[::1]", "exact", "::1"),
    (".example.com", "suffix", "example.com"),
    (".bücher.example", "suffix", "xn--bcher-kva.example"),
    ("<local>", "plain", ""),
    ("10.0.0.0/8", "network", "10.0.0.0/255.0.0.0"),
    ("192.168.0.0/16", "network", "192.168.0.0/255.255.0.0"),
])
def test_direct_entries_are_read_in_canonical_form(text, kind, value):
    assert parse_direct(text) == DirectHost(kind, value, text)


@pytest.mark.parametrize("text, message", [
    ("", "non-empty"),
    ("..example.com", "two dots"),
    (".10.0.0.1", "cannot be an IP address"),
    ("10.0.0.1/8", "not a network"),
    ("fd00::/8", "IPv4 networks"),
    ('evil"name', "may only hold"),
    ("a b", "forbidden character"),
])
def test_bad_direct_entries_are_refused_with_the_reason(text, message):
    with pytest.raises(ValueError, match=message):
        parse_direct(text)


# -- proxy addresses ----------------------------------------------------------

@pytest.mark.parametrize("text, default_port, expected", [
    ("proxy.example.com:3128", None, "proxy.example.com:3128"),
    ("PROXY.example.com:3128", None, "proxy.example.com:3128"),
    ("127.0.0.1:8080", None, "127.0.0.1:8080"),
    ("[::1]:8080", None, "[::1]:8080"),
    ("proxy.example.com", 80, "proxy.example.com:80"),
    ("[::1]", 80, "[::1]:80"),
])
def test_proxy_addresses_are_canonical_host_and_port(text, default_port, expected):
    assert parse_proxy_address(text, default_port) == expected


@pytest.mark.parametrize("text, default_port, message", [
    ("proxy.example.com", None, "needs a port"),
    ("proxy:0", None, "not a port number"),
    ("proxy:65536", None, "not a port number"),
    ("proxy:http", None, "not a port number"),
    ("::1:8080", None, "in brackets"),
    ("[::1", 80, "not HOST:PORT"),
    ("[::1]8080", 80, "not HOST:PORT"),
    (":8080", None, "empty"),
    ('evil";alert(1);"x:80', None, "may only hold"),
    ("user@proxy:80", None, "forbidden character"),
])
def test_bad_proxy_addresses_are_refused(text, default_port, message):
    with pytest.raises(ValueError, match=message):
        parse_proxy_address(text, default_port)


# -- the rendered text -------------------------------------------------------

def test_without_direct_hosts_everything_goes_to_the_proxy_with_no_fallback():
    pac = render_pac("proxy.example.com:3128").decode()
    assert "function FindProxyForURL(url, host) {" in pac
    assert 'var PROXY = "PROXY proxy.example.com:3128";' in pac
    assert "DIRECT_HOSTS = [];" in pac and "indexOf" not in pac


def test_a_proxy_reached_over_tls_is_an_https_route():
    assert b'var PROXY = "HTTPS proxy.example.com:8443";' in render_pac(
        "proxy.example.com:8443", tls=True)


def test_a_fallback_route_follows_the_proxy():
    pac = render_pac("p:3128", fallback="DIRECT").decode()
    assert 'var PROXY = "PROXY p:3128; DIRECT";' in pac
    with pytest.raises(ValueError, match="not a PAC route"):
        render_pac("p:3128", fallback="DIRECT; PROXY x")


def test_every_string_in_the_javascript_is_escaped():
    hostile = [
        DirectHost("exact", '"; return "DIRECT"; //', "x"),
        DirectHost("suffix", "a\\\"b\n</script>\u2028c", "x"),
        DirectHost("network", '1.2.3.4"]/255.0.0.0', "x"),
    ]
    pac = render_pac("p:3128", hostile).decode("ascii")
    assert '["\\"; return \\"DIRECT\\"; //"]' in pac
    assert '"a\\\\\\"b\\n\\u003c/script>\\u2028c"' in pac
    assert '[["1.2.3.4\\"]", "255.0.0.0"]]' in pac
    assert "\u2028" not in pac and "</script>" not in pac


def test_a_hostile_proxy_address_never_reaches_the_file():
    with pytest.raises(ValueError):
        render_pac('p:3128"; x="')


@needs_node
def test_hostile_strings_stay_strings_when_the_file_runs():
    hostile = [DirectHost("exact", '"; return "hacked"; //', "x"),
               DirectHost("suffix", "x\\\"\n\u2028 ", "x")]
    pac = render_pac("p:3128", hostile)
    answers = evaluate(pac, ["example.com", '"; return "hacked"; //'])
    assert answers == {"example.com": "PROXY p:3128", '"; return "hacked"; //': "DIRECT"}


@needs_node
def test_the_file_sends_direct_hosts_direct_and_the_rest_to_the_proxy():
    settings = PacSettings.build(
        direct=["intranet.example.com", ".corp.example", "<local>", "10.0.0.0/8",
                "127.0.0.0/8", "localhost", "::1"],
        proxy="proxy.example.com:3128",
    )
    pac = render_pac(settings.proxy, settings.direct)
    hosts = {
        "intranet.example.com": "DIRECT",
        "INTRANET.example.com": "DIRECT",  # a host handed over in capitals
        "www.example.com": "PROXY proxy.example.com:3128",
        "corp.example": "DIRECT",
        "a.b.corp.example": "DIRECT",
        "badcorp.example": "PROXY proxy.example.com:3128",
        "intranet": "DIRECT",
        "localhost": "DIRECT",
        "10.20.30.40": "DIRECT",
        "127.0.0.1": "DIRECT",
        "11.0.0.1": "PROXY proxy.example.com:3128",
        "10.example.com": "PROXY proxy.example.com:3128",
        "::1": "DIRECT",
        "[::1]": "DIRECT",
        "::2": "PROXY proxy.example.com:3128",
    }
    assert evaluate(pac, list(hosts)) == hosts


@needs_node
def test_plain_names_go_through_the_proxy_unless_asked():
    answers = evaluate(render_pac("p:1"), ["intranet", "127.0.0.1"])
    assert answers == {"intranet": "PROXY p:1", "127.0.0.1": "PROXY p:1"}


# -- paths and settings -------------------------------------------------------

@pytest.mark.parametrize("target, path", [
    (b"/proxy.pac", b"/proxy.pac"),
    (b"/wpad.dat", b"/wpad.dat"),
    (b"/proxy.pac?v=2", b"/proxy.pac"),
    (b"/proxy.pac/", None),
    (b"/PROXY.PAC", None),
    (b"/", None),
    (b"/x/proxy.pac", None),
])
def test_pac_paths_are_matched_exactly_with_any_query(target, path):
    assert pac_path(target) == path


def test_settings_describe_themselves_for_the_start_up_line(tmp_path):
    assert PacSettings().describe() == "pac: generated, proxy as asked, no direct hosts"
    assert PacSettings(enabled=False).describe() == "pac: off"
    settings = PacSettings.build(direct=[".corp.example"], proxy="p:3128")
    assert settings.describe() == "pac: generated, proxy p:3128, 1 direct host"
    path = tmp_path / "proxy.pac"
    path.write_text("function FindProxyForURL(url, host) { return 'DIRECT'; }")
    assert PacSettings.build(file=str(path)).describe() == f"pac: file {path}"


def test_an_operator_file_is_read_verbatim(tmp_path):
    text = b"// ours\r\nfunction FindProxyForURL(url, host) { return \"DIRECT\"; }\n"
    path = tmp_path / "proxy.pac"
    path.write_bytes(text)
    assert load_pac_file(str(path)) == text
    assert PacSettings.build(file=str(path)).body == text


@pytest.mark.parametrize("content, message", [
    (None, "cannot read the PAC file"),
    (b"", "defines no FindProxyForURL"),
    (b"<html>not a pac file</html>", "defines no FindProxyForURL"),
    (b"function FindProxyForURL(u, h) {}" + b" " * MAX_PAC_FILE, "larger than"),
])
def test_an_unusable_operator_file_is_refused(tmp_path, content, message):
    path = tmp_path / "proxy.pac"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_pac_file(str(path))
