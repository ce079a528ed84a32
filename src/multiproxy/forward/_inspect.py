"""
TLS inspection, opt-in (Squid's ``ssl_bump``, mitmproxy's default mode):
for the hosts an operator lists, the forward proxy answers a CONNECT itself,
ends the client's TLS with a certificate it signs for the name asked for,
and sends the requests it reads inside on through the normal pipeline (URL
rules, the cache, the access log) to the origin over a TLS connection of
its own, verified against the system trust store plus the operator's.

What is here is the certificate side and the decision: `make_ca` writes
the operator's CA (``multiproxy ca --out DIR``), `CertificateMint` signs
leaf certificates with it (one key for every leaf, each certificate made
once per name and kept in a bounded cache), and `Inspector` says which
hosts are inspected and gives the TLS connection creators for both sides.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
import ssl as stdlib_ssl
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy._hosts import HostMatcher, is_ip_literal, normalise_host, parse_host_pattern
from multiproxy.transport._tls import server_context

__all__ = ["CA_CERT", "CA_KEY", "CertificateMint", "InspectConfig", "Inspector", "make_ca",
           "server_name_of"]

CA_CERT = "ca.pem"
CA_KEY = "ca.key"

_LEAF_DAYS = 397  # the longest a browser accepts for a server certificate (CA/B Forum)
_BACKDATE = datetime.timedelta(days=1)  # clients whose clock runs a little behind


@dataclass(frozen=True)
class InspectConfig:
    """
    ``[forward.inspect]``: the directory of the operator's CA (``ca.pem``,
    ``ca.key``), the host patterns to inspect (policy syntax: ``example.com``,
    ``.example.com``, globs, networks), the ones never to inspect (they win),
    and extra CA certificate files to trust for origins.
    """

    ca: str
    hosts: tuple[str, ...]
    never: tuple[str, ...] = ()
    trust: tuple[str, ...] = ()
    cache_size: int = 1000


def make_ca(directory: str, name: str | None = None, *, force: bool = False) -> tuple[str, str]:
    """
    Create an inspection CA in ``directory``: ``ca.pem`` (give it to the
    clients to trust) and ``ca.key`` (readable by its owner only).  Returns
    both paths.

    @raise ConfigError: the files exist (unless ``force``) or cannot be written.
    """
    out = Path(directory)
    cert_path, key_path = out / CA_CERT, out / CA_KEY
    if not force and (cert_path.exists() or key_path.exists()):
        raise ConfigError(f"{directory}: {CA_CERT} or {CA_KEY} exists already "
                          "(remove them, or pass --force to replace them)")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "multiproxy"),
        x509.NameAttribute(NameOID.COMMON_NAME,
                           name or f"multiproxy inspection CA ({socket.gethostname()})"[:64]),
    ])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        key_bytes = key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = os.open(key_path, flags, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_bytes)
        os.chmod(key_path, 0o600)  # an existing file keeps its mode through O_TRUNC
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    except OSError as e:
        raise ConfigError(f"{directory}: cannot write the CA: {e.strerror or e}") from None
    return str(cert_path), str(key_path)


def _load_ca(directory: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = Path(directory) / CA_CERT, Path(directory) / CA_KEY
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as e:
        raise ConfigError(f"inspect ca {directory!r}: cannot read {e.filename}: "
                          f"{e.strerror} (make one with: multiproxy ca --out {directory})"
                          ) from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"inspect ca {directory!r}: not a PEM certificate and "
                          f"unencrypted key: {e}") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"inspect ca {directory!r}: {CA_CERT} is not a CA certificate")
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ConfigError(f"inspect ca {directory!r}: {CA_KEY} is not the key of {CA_CERT}")
    return cert, key


class CertificateMint:
    """
    Server certificates for any name, signed by the operator's CA: one EC
    key serves every leaf (making a certificate is then one signature), and
    each name's `SSL.Context` is kept in a cache of ``size`` names.
    """

    def __init__(self, ca_cert: x509.Certificate, ca_key, size: int = 1000,
                 sni_allowed=lambda name: True) -> None:
        self.ca_cert = ca_cert
        self._sni_allowed = sni_allowed
        self._ca_key = ca_key
        self._leaf_key = ec.generate_private_key(ec.SECP256R1())
        self._ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
        self._size = size
        self._contexts: OrderedDict[str, SSL.Context] = OrderedDict()
        self.minted = 0
        """Certificates made so far (a cache miss each)."""

    def certificate_for(self, name: str) -> x509.Certificate:
        """A new certificate for ``name`` (a DNS name or an IP literal)."""
        now = datetime.datetime.now(datetime.UTC)
        not_after = min(now + datetime.timedelta(days=_LEAF_DAYS),
                        self.ca_cert.not_valid_after_utc)
        if is_ip_literal(name):
            alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
        else:
            alt = x509.DNSName(name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name[:64])]))
            .issuer_name(self.ca_cert.subject)
            .public_key(self._leaf_key.public_key())
            .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(
                self._ski), critical=False)
        )
        self.minted += 1
        return builder.sign(self._ca_key, hashes.SHA256())

    def context_for(self, name: str) -> SSL.Context:
        """The server context presenting a certificate for ``name`` (made once, then cached)."""
        contexts = self._contexts
        context = contexts.get(name)
        if context is not None:
            contexts.move_to_end(name)
            return context
        context = server_context((b"http/1.1",))
        context.set_tlsext_servername_callback(self._on_server_name)
        context.use_certificate(crypto.X509.from_cryptography(self.certificate_for(name)))
        context.use_privatekey(crypto.PKey.from_cryptography_key(self._leaf_key))
        contexts[name] = context
        if len(contexts) > self._size:
            contexts.popitem(last=False)
        return context

    def _on_server_name(self, connection: SSL.Connection) -> None:
        # The client's SNI: its certificate instead, where that name may be inspected.
        raw = connection.get_servername()
        if not raw:
            return
        name = server_name_of(connection)
        if name and self._sni_allowed(name):
            connection.set_context(self.context_for(name))


def server_name_of(connection: SSL.Connection) -> str | None:
    """The normalised SNI name a TLS connection's client sent, or None."""
    raw = connection.get_servername()
    if not raw:
        return None
    try:
        return normalise_host(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


@implementer(IOpenSSLServerConnectionCreator)
class _MintedServerTLS:
    """One inspected tunnel's server side, starting on the certificate for its CONNECT host."""

    def __init__(self, mint: CertificateMint, default_name: str) -> None:
        self._mint = mint
        self._default = default_name

    def serverConnectionForTLS(self, tlsProtocol) -> SSL.Connection:
        return SSL.Connection(self._mint.context_for(self._default), None)


def _system_plus(extra: Sequence[x509.Certificate]) -> object:
    """
    A trust root of the system's CA certificates and ``extra`` (the system
    store alone when there is nothing extra), through Twisted's public API.
    """
    if not extra:
        return ssl.platformTrust()
    paths = stdlib_ssl.get_default_verify_paths()
    files = [Path(paths.cafile)] if paths.cafile and Path(paths.cafile).is_file() else []
    if paths.capath and Path(paths.capath).is_dir():
        files += sorted(p for p in Path(paths.capath).iterdir() if p.suffix in (".pem", ".crt"))
    system = []
    for path in files:
        try:
            with warnings.catch_warnings():
                # Old roots in the store break RFC 5280 (negative serials); OpenSSL takes them.
                warnings.simplefilter("ignore")
                system += x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError):
            continue  # an unreadable or non-PEM file in the store is not ours to judge
    unique = {c.fingerprint(hashes.SHA256()): c for c in (*system, *extra)}
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM))
         for c in unique.values()])


class Inspector:
    """
    Which CONNECT hosts a forward proxy inspects, and the TLS for both
    sides of an inspected tunnel.

    @raise ConfigError: the CA, a pattern or a trust file is unusable.
    """

    def __init__(self, config: InspectConfig) -> None:
        if not config.hosts:
            raise ConfigError("inspect: no hosts to inspect (give hosts, e.g. [\".example.com\"])")
        self.config = config
        cert, key = _load_ca(config.ca)
        self.mint = CertificateMint(cert, key, config.cache_size, sni_allowed=self.wants)
        self._hosts = _matcher("hosts", config.hosts)
        self._never = _matcher("never", config.never) if config.never else None
        extra = []
        for path in config.trust:
            try:
                extra += x509.load_pem_x509_certificates(Path(path).read_bytes())
            except OSError as e:
                raise ConfigError(f"inspect trust {path!r}: cannot read it: {e.strerror}"
                                  ) from None
            except ValueError:
                raise ConfigError(f"inspect trust {path!r}: holds no PEM certificate") from None
        self._trust = _system_plus(extra)
        self._origin_creators: dict[str, object] = {}  # one TLS context per origin name

    def wants(self, host: str) -> bool:
        """Whether a tunnel to ``host`` (normalised) is inspected."""
        if self._never is not None and self._never.matches(host):
            return False
        return self._hosts.matches(host)

    def server_tls(self, host: str) -> _MintedServerTLS:
        """The server side for a tunnel to ``host``: a certificate for its SNI name, or for ``host``."""
        return _MintedServerTLS(self.mint, host)

    def origin_tls(self, hostname: str):
        """The client side to an origin: verified (service-identity) against the trust in force."""
        creators = self._origin_creators
        creator = creators.get(hostname)
        if creator is None:
            if len(creators) >= self.config.cache_size:
                creators.clear()
            creator = creators[hostname] = ssl.optionsForClientTLS(
                hostname, trustRoot=self._trust, acceptableProtocols=[b"http/1.1"],
                extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
            )
        return creator


def _matcher(key: str, patterns: Sequence[str]) -> HostMatcher:
    try:
        return HostMatcher(parse_host_pattern(p) for p in patterns)
    except ValueError as e:
        raise ConfigError(f"inspect {key}: {e}") from None
