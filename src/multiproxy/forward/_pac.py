"""
Proxy auto-config (PAC): the JavaScript file a browser asks which proxy to use.

The forward proxy serves it on its own listeners at `PAC_PATHS`, either
rendered from `PacSettings` by `render_pac` or, if the operator gave one,
their file verbatim.  Everything here is plain values and text: no I/O but
`load_pac_file`, no Twisted.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from multiproxy.policy._hosts import normalise_host, parse_name_pattern

__all__ = ["MAX_PAC_FILE", "PAC_CONTENT_TYPE", "PAC_MAX_AGE", "PAC_PATHS", "DirectHost", "PacSettings",
           "load_pac_file", "pac_path", "parse_direct", "parse_proxy_address", "render_pac"]

PAC_CONTENT_TYPE = b"application/x-ns-proxy-autoconfig"
"""The media type browsers expect for a PAC file (Netscape's, still the one in use)."""
PAC_PATHS = frozenset({b"/proxy.pac", b"/wpad.dat"})
"""Where the PAC file is served; ``/wpad.dat`` is the name WPAD discovery asks for."""
MAX_PAC_FILE = 1024 * 1024
"""Largest operator PAC file accepted, in bytes (every browser downloads it whole)."""
PAC_MAX_AGE = 300
"""Seconds a client may keep the PAC file before asking again."""

DirectKind = Literal["exact", "suffix", "plain", "network"]

_PORT = re.compile(r"[0-9]{1,5}\Z")
_ROUTE = re.compile(r"(DIRECT|(PROXY|HTTPS|SOCKS|SOCKS4|SOCKS5) [^\s;]+)\Z")


@dataclass(frozen=True, slots=True)
class DirectHost:
    """
    One entry of the list of destinations a client reaches without the proxy.

    - ``exact``: ``intranet.example.com`` or an IP address, that host only;
    - ``suffix``: ``.example.com``, that domain and every name under it (as
      the policy's host patterns read it);
    - ``plain``: ``<local>``, host names without a dot (``intranet``), as in
      browsers' own bypass lists (IPv6 addresses are not names);
    - ``network``: ``10.0.0.0/8``, IPv4 addresses in that network when the
      URL names an address (names are not resolved: a lookup per URL would
      stall the browser).
    """

    kind: DirectKind
    value: str
    text: str


def parse_direct(text: str) -> DirectHost:
    """
    Parse one entry of the direct list (see `DirectHost`).

    @raise ValueError: with a message saying what is wrong.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("a direct host must be a non-empty string, e.g. .example.com")
    text = text.strip()
    if text == "<local>":
        return DirectHost("plain", "", text)
    if "/" in text:
        try:
            network = ipaddress.ip_network(text, strict=True)
        except ValueError as e:
            raise ValueError(f"{text!r} is not a network such as 10.0.0.0/8 ({e})") from None
        if network.version != 4:
            raise ValueError(
                f"{text!r}: a PAC file can only test IPv4 networks (isInNet); "
                "list IPv6 addresses one by one"
            )
        return DirectHost("network", f"{network.network_address}/{network.netmask}", text)
    pattern = parse_name_pattern(text, "direct host")  # as the policy reads its hosts
    return DirectHost(pattern.kind, pattern.value, text)


def parse_proxy_address(text: str, default_port: int | None = None) -> str:
    """
    The canonical ``host:port`` (IPv6 in brackets) of a proxy address as
    written in an option or a ``Host`` field; without a port, ``default_port``
    is used, and if that is None the port is required.

    @raise ValueError: the text is not a host and port.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("expected HOST:PORT, e.g. proxy.example.com:3128")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r} is not HOST:PORT ([IPv6]:PORT for IPv6)")
        port_text = rest[1:] if rest else None
    elif text.count(":") > 1:
        raise ValueError(f"{text!r}: put an IPv6 address in brackets, e.g. [::1]:3128")
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r} needs a port (HOST:PORT, e.g. proxy.example.com:3128)")
        port = default_port
    elif _PORT.match(port_text) and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(f"{text!r}: {port_text!r} is not a port number (1-65535)")
    host = normalise_host(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class PacSettings:
    """
    What a forward proxy's PAC file says, or the operator's file it serves.

    Serving is on by default: a browser pointed at ``/proxy.pac`` sends
    everything through the address it reached the proxy at.
    """

    enabled: bool = True
    """Serve `PAC_PATHS`; off, they are origin-form requests like any other (400)."""
    direct: tuple[DirectHost, ...] = ()
    """Destinations clients reach without the proxy."""
    proxy: str | None = None
    """The ``host:port`` handed out; None for the ``Host`` of the PAC request."""
    file: str | None = None
    """The operator's PAC file (its path), served instead of a generated one."""
    body: bytes | None = None
    """That file's content, read at start."""

    @classmethod
    def build(cls, *, enabled: bool = True, direct: Iterable[str] = (), proxy: str | None = None,
              file: str | None = None) -> PacSettings:
        """
        Settings from what an operator writes; the file is read now.

        A file says itself which hosts go direct and which proxy to use:
        callers refuse it together with ``direct`` or ``proxy``, naming
        their own options; here the file wins.

        @raise ValueError: a bad entry or an unusable file.
        """
        if file is not None:
            return cls(enabled, file=file, body=load_pac_file(file))
        return cls(
            enabled,
            tuple(parse_direct(text) for text in direct),
            None if proxy is None else parse_proxy_address(proxy),
        )

    def describe(self) -> str:
        """``pac: ...`` for the start-up line."""
        if not self.enabled:
            return "pac: off"
        if self.file is not None:
            return f"pac: file {self.file}"
        count = len(self.direct)
        hosts = f"{count} direct host{'s' if count != 1 else ''}" if count else "no direct hosts"
        return f"pac: generated, proxy {self.proxy or 'as asked'}, {hosts}"


def pac_path(target: bytes) -> bytes | None:
    """The PAC path an origin-form target asks for (query ignored), or None."""
    path = target.split(b"?", 1)[0]
    return path if path in PAC_PATHS else None


def load_pac_file(path: str) -> bytes:
    """
    Read an operator's PAC file, to be served verbatim.

    @raise ValueError: it cannot be read, is empty or too large, or has no
        ``FindProxyForURL`` (no browser could use it).
    """
    try:
        with open(path, "rb") as f:
            body = f.read(MAX_PAC_FILE + 1)
    except OSError as e:
        raise ValueError(f"cannot read the PAC file {path!r}: {e.strerror or e}") from None
    if len(body) > MAX_PAC_FILE:
        raise ValueError(f"the PAC file {path!r} is larger than {MAX_PAC_FILE} bytes")
    if b"FindProxyForURL" not in body:
        raise ValueError(f"the PAC file {path!r} defines no FindProxyForURL function")
    return body


def _js(value: str) -> str:
    """``value`` as a JavaScript string literal: nothing in it can end the literal."""
    # ensure_ascii escapes quotes, backslashes, controls and U+2028/U+2029 (line
    # ends in older JavaScript); "<" too, should the text land in an HTML page.
    return json.dumps(value, ensure_ascii=True).replace("<", "\\u003c")


def _js_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_js(v) for v in values) + "]"


def render_pac(proxy: str, direct: Sequence[DirectHost] = (),
               fallback: str | None = None, *, tls: bool = False) -> bytes:
    """
    A PAC file (``FindProxyForURL``) sending every URL to ``PROXY proxy``
    (``HTTPS proxy`` with ``tls``: the proxy is reached over TLS) except the
    ``direct`` destinations, which go ``DIRECT``.  ``fallback`` (``"DIRECT"``,
    ``"PROXY other:3128"``) is what a browser tries when the proxy does not
    answer; without one it reports the error, so a client never goes around
    the proxy's policy unnoticed.

    @raise ValueError: ``proxy`` is not HOST:PORT or ``fallback`` is not a
        PAC route.
    """
    routes = [f"{'HTTPS' if tls else 'PROXY'} {parse_proxy_address(proxy)}"]
    if fallback is not None:
        if not _ROUTE.match(fallback):
            raise ValueError(f"{fallback!r} is not a PAC route such as DIRECT or PROXY host:port")
        routes.append(fallback)
    exact = [d.value for d in direct if d.kind == "exact"]
    # Browsers hand IPv6 hosts over without brackets; some older ones with.
    exact += [f"[{value}]" for value in exact if ":" in value]
    suffixes = [d.value for d in direct if d.kind == "suffix"]
    networks = [d.value.split("/") for d in direct if d.kind == "network"]
    lines = [
        "// Proxy auto-config generated by multiproxy.",
        "var PROXY = " + _js("; ".join(routes)) + ";",
        "var DIRECT_HOSTS = " + _js_list(exact) + ";",
        "var DIRECT_DOMAINS = " + _js_list(suffixes) + ";",
        "var DIRECT_NETWORKS = [" + ", ".join(_js_list(n) for n in networks) + "];",
        "",
        "function FindProxyForURL(url, host) {",
        "    var i;",
        "    host = host.toLowerCase();",
    ]
    if any(d.kind == "plain" for d in direct):
        # isPlainHostName, but an IPv6 address (no dot either) is not a name.
        lines.append('    if (host.indexOf(".") < 0 && host.indexOf(":") < 0) return "DIRECT";')
    lines += [
        "    for (i = 0; i < DIRECT_HOSTS.length; i++)",
        '        if (host == DIRECT_HOSTS[i]) return "DIRECT";',
        "    for (i = 0; i < DIRECT_DOMAINS.length; i++)",
        "        if (host == DIRECT_DOMAINS[i] || dnsDomainIs(host, \".\" + DIRECT_DOMAINS[i]))",
        '            return "DIRECT";',
        "    // Only addresses are tested: resolving a name here would stall the browser.",
        "    if (/^[0-9]+\\.[0-9]+\\.[0-9]+\\.[0-9]+$/.test(host))",
        "        for (i = 0; i < DIRECT_NETWORKS.length; i++)",
        "            if (isInNet(host, DIRECT_NETWORKS[i][0], DIRECT_NETWORKS[i][1]))",
        '                return "DIRECT";',
        "    return PROXY;",
        "}",
        "",
    ]
    return "\n".join(lines).encode("ascii")
