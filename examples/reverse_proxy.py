#!/usr/bin/env python3
"""
A reverse proxy with TLS on the front, in front of three demo web servers,
one of which is failing.

    python3 examples/reverse_proxy.py [--http 8080] [--https 8443] [--status 8404]
    curl --cacert /tmp/multiproxy-demo/cert.pem https://localhost:8443/
    curl -i http://localhost:8080/          # 308 to https
    open http://127.0.0.1:8404/             # the status page

Three demo backends are started here on loopback ports: "alpha", "beta" and
"gamma".  Each answers ``/`` with its name.  gamma is failing: its health
endpoint ``/healthz`` answers 500, so the HTTP health checks take it out of
rotation after two checks and every request goes to alpha or beta.  Plain
HTTP is redirected to HTTPS, which sends HSTS; the certificate (for
``localhost``) is made at start-up in the given directory.  The status page
shows gamma in red.

The same proxy from a configuration file (with your own backends and
certificates): ``twistd -n multiproxy --config examples/reverse_proxy.toml``.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.web import resource, server

from multiproxy.reverse import (
    BackendConfig,
    HealthConfig,
    PoolConfig,
    ReverseConfig,
    Route,
    TLSConfig,
    make_reverse_service,
)

NAMES = ("alpha", "beta", "gamma")
FAILING = "gamma"


class DemoPage(resource.Resource):
    """A demo backend: ``/`` says its name; ``/healthz`` is 200, or 500 when failing."""

    isLeaf = True

    def __init__(self, name: str, failing: bool) -> None:
        super().__init__()
        self.name = name
        self.failing = failing

    def render_GET(self, request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        if request.path == b"/healthz":
            if self.failing:
                request.setResponseCode(500)
                return b"database unreachable\n"
            return b"ok\n"
        return f"hello from {self.name}\n".encode()


def self_signed(directory: str, name: str = "localhost") -> str:
    """Write a self-signed certificate and key for ``name`` to DIR/cert.pem; return its path."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "cert.pem")
    with open(path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return path


def start_backends(reactor) -> list:
    """Start the demo backends on loopback; returns their listening ports."""
    ports = []
    for name in NAMES:
        site = server.Site(DemoPage(name, failing=name == FAILING), reactor=reactor)
        site.log = lambda request: None
        ports.append(reactor.listenTCP(0, site, interface="127.0.0.1"))
    return ports


def build(reactor, http: int, https: int, status: int, cert_dir: str, reporters=()):
    """
    Start the demo backends and return (the proxy's service, not started
    yet; the backends' listening ports).
    """
    listening = start_backends(reactor)
    cert = self_signed(cert_dir)
    backends = tuple(
        BackendConfig(url=f"http://127.0.0.1:{p.getHost().port}", scheme="http",
                      host="127.0.0.1", port=p.getHost().port, name=name)
        for name, p in zip(NAMES, listening)
    )
    config = ReverseConfig(
        name="demo",
        listen=(f"tcp:{http}:interface=127.0.0.1",),
        tls_listen=(f"tcp:{https}:interface=127.0.0.1",),
        tls=TLSConfig(directory=os.path.dirname(cert)),
        routes=(Route("web"),),
        pools=(PoolConfig("web", backends, "roundrobin", HealthConfig(
            check="http", path="/healthz", interval=0.5, timeout=1.0, rise=2, fall=2)),),
        redirect_https=True,
        https_port=https,
        hsts=b"max-age=300",
        status_listen=(f"tcp:{status}:interface=127.0.0.1",),
        shutdown_timeout=5.0,
    )
    return make_reverse_service(config, reactor, reporters), listening


def main() -> None:
    parser = argparse.ArgumentParser(description="Reverse proxy with TLS over demo backends")
    parser.add_argument("--http", type=int, default=8080)
    parser.add_argument("--https", type=int, default=8443)
    parser.add_argument("--status", type=int, default=8404)
    parser.add_argument("--cert-dir", default=os.path.join(tempfile.gettempdir(),
                                                           "multiproxy-demo"))
    args = parser.parse_args()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from multiproxy import AccessLog

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    service, _ = build(reactor, args.http, args.https, args.status, args.cert_dir,
                       [AccessLog(reactor, "-")])
    service.startService()
    print(f"https://localhost:{args.https}/ (certificate: {args.cert_dir}/cert.pem), "
          f"http://localhost:{args.http}/ redirects, status on http://127.0.0.1:{args.status}/")
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
