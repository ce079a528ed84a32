#!/usr/bin/env python3
"""
A TCP relay terminating TLS in front of a plain-text service.

    python3 examples/tcp_tls_termination.py [--port 9443] [--cert server.pem]
    openssl s_client -connect 127.0.0.1:9443 -servername localhost -quiet

The demo service (started here, on a loopback port) is a plain-text line
echo: it answers each line in upper case.  Clients speak TLS to the relay;
the relay speaks plain text to the service, so the service never sees TLS.
Without ``--cert`` a self-signed certificate for ``localhost`` is made in a
temporary directory (s_client then warns it cannot verify it: pass
``-CAfile`` with the printed path to verify).

The same relay from the command line, with your own certificate:

    twistd -n multiproxy tcp --tls-listen tcp:9443:interface=127.0.0.1 \\
        --tls-cert server.pem --backend tcp:host=127.0.0.1:port=7000
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile

from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver

from multiproxy.balancing import HealthConfig
from multiproxy.tcp import CertificateFile, TCPBackendConfig, TCPConfig, TLSConfig, make_tcp_service


class ShoutingEcho(LineReceiver):
    """The plain-text service: echoes each line in upper case."""

    delimiter = b"\n"

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line.upper())


def self_signed(directory: str, name: str = "localhost") -> str:
    """Write a self-signed certificate and key for ``name``; return the PEM path."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = os.path.join(directory, f"{name}.pem")
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    return path


def build(reactor, port: int, cert: str, reporters=()):
    """
    Start the demo service on a free loopback port and return the relay's
    service (not yet started) listening with TLS on ``port``.
    """
    service_port = reactor.listenTCP(0, Factory.forProtocol(ShoutingEcho),
                                     interface="127.0.0.1")
    config = TCPConfig(
        name="tls-edge",
        tls_listen=(f"tcp:{port}:interface=127.0.0.1",),
        tls=TLSConfig(certificates=(CertificateFile(cert),)),
        backends=(TCPBackendConfig(
            f"tcp:host=127.0.0.1:port={service_port.getHost().port}", name="shouting-echo"),),
        health=HealthConfig(check="tcp", interval=5.0),
    )
    return make_tcp_service(config, reactor, reporters), service_port


def main() -> None:
    parser = argparse.ArgumentParser(description="TCP relay with TLS termination (demo)")
    parser.add_argument("--port", type=int, default=9443)
    parser.add_argument("--cert", help="PEM file with certificate chain and key")
    args = parser.parse_args()
    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from multiproxy import AccessLog

    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)])
    cert = args.cert or self_signed(tempfile.mkdtemp(prefix="tcp-tls-example-"))
    service, _ = build(reactor, args.port, cert, [AccessLog(reactor, "-")])
    service.startService()
    print(f"TLS on 127.0.0.1:{args.port} (certificate {cert}); try:\n"
          f"  openssl s_client -connect 127.0.0.1:{args.port} -servername localhost "
          f"-CAfile {cert} -quiet")
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
