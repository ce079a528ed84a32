"""
TLS for multiproxy's listeners and upstream connections.

Server side: `ServerTLS` holds several certificates and picks one per
connection by SNI (with a default for clients that send no name), allows
TLS 1.2 and later only with forward-secret AEAD ciphers, offers ALPN
``http/1.1`` and can `reload` its certificates (on SIGHUP) without touching
established connections.  It provides Twisted's
`IOpenSSLServerConnectionCreator`, so it plugs into `SSL4ServerEndpoint`,
``reactor.listenSSL`` or `tls_server_endpoint` around any server endpoint.

Client side: `client_tls` makes the connection creator for an ``https``
backend: verified with service-identity against the system trust store or a
CA file, or, only when asked explicitly, not verified at all.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtensionOID, NameOID
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.endpoints import wrapClientTLS
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.pipeline._errors import ConfigError

log = Logger()

# Mozilla "intermediate" TLS 1.2 suites minus DHE (no dhparams to manage);
# TLS 1.3 suites are OpenSSL's defaults, all AEAD.
MODERN_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    b"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)
ALPN_PROTOCOLS = (b"http/1.1",)
_PEM_SUFFIXES = (".pem", ".crt")


@dataclass(frozen=True, slots=True)
class CertificateFile:
    """
    One certificate to serve: a PEM file with the certificate (and its
    chain), and the private key, in the same file or in ``key``.

    @ivar names: the server names it answers for; empty means the DNS names
        of its subjectAltName (or its CN when it has none).
    """

    cert: str
    key: str | None = None
    names: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Loaded:
    names: tuple[str, ...]
    context: SSL.Context
    source: str


@implementer(IOpenSSLServerConnectionCreator)
class ServerTLS:
    """
    Server TLS with certificates chosen by SNI.

    @param certificates: certificate files listed in the configuration.
    @param directory: a directory of PEM files, each holding a certificate
        chain and its key (or with the key in a sibling ``NAME.key``).
    @param default: the server name whose certificate is served to clients
        that send no SNI or an unknown name; default: the first listed
        certificate, else the first file of the directory in name order.
    @param alpn: the ALPN protocols offered, in preference order.

    Raises `ConfigError` when no certificate can be loaded or one is broken.
    """

    def __init__(
        self,
        certificates: Sequence[CertificateFile] = (),
        directory: str | None = None,
        default: str | None = None,
        alpn: Sequence[bytes] = ALPN_PROTOCOLS,
    ) -> None:
        self.certificates = tuple(certificates)
        self.directory = directory
        self.default = default.lower().rstrip(".") if default else None
        self.alpn = tuple(alpn)
        self._by_name: dict[str, SSL.Context] = {}
        self._default_context: SSL.Context
        self._load()

    @property
    def names(self) -> list[str]:
        """Every server name a certificate is loaded for, sorted."""
        return sorted(self._by_name)

    def reload(self) -> None:
        """
        Read every certificate again.  New handshakes use the new ones;
        connections already established keep theirs.  When anything fails
        to load, the old set stays in force and `ConfigError` says why.
        """
        self._load()
        log.info("TLS certificates reloaded: {names}", names=", ".join(self.names))

    def context_for(self, server_name: str | None) -> SSL.Context:
        """The context whose certificate answers ``server_name`` (or the default)."""
        if server_name:
            name = server_name.lower().rstrip(".")
            context = self._by_name.get(name)
            if context is not None:
                return context
            _, dot, parent = name.partition(".")
            if dot:
                context = self._by_name.get("*." + parent)
                if context is not None:
                    return context
        return self._default_context

    def serverConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        """Twisted's hook: a server-side connection starting on the default context."""
        return SSL.Connection(self._default_context, None)

    def _load(self) -> None:
        loaded = [self._load_one(c) for c in self.certificates]
        if self.directory is not None:
            loaded += self._load_directory(self.directory)
        if not loaded:
            raise ConfigError("TLS: no certificate configured (give certificates or a directory)")
        by_name: dict[str, SSL.Context] = {}
        for item in loaded:
            for name in item.names:
                by_name.setdefault(name, item.context)
        if self.default is None:
            default_context = loaded[0].context
        elif self.default in by_name:
            default_context = by_name[self.default]
        else:
            raise ConfigError(
                f"TLS: default certificate name {self.default!r} is not among the loaded "
                f"names ({', '.join(sorted(by_name))})"
            )
        # Swap both at once so a handshake never sees half of a reload.
        self._by_name, self._default_context = by_name, default_context

    def _load_directory(self, directory: str) -> list[_Loaded]:
        path = Path(directory)
        if not path.is_dir():
            raise ConfigError(f"TLS: certificate directory {directory!r} does not exist")
        loaded = []
        for entry in sorted(path.iterdir()):
            if entry.suffix not in _PEM_SUFFIXES or not entry.is_file():
                continue
            text = entry.read_bytes()
            if b"CERTIFICATE-----" not in text:
                continue
            key = None
            if b"PRIVATE KEY-----" not in text:
                sibling = entry.with_suffix(".key")
                if not sibling.is_file():
                    log.warn("TLS: {path} has no private key (and no {key}); skipped",
                             path=str(entry), key=sibling.name)
                    continue
                key = str(sibling)
            loaded.append(self._load_one(CertificateFile(str(entry), key)))
        return loaded

    def _load_one(self, spec: CertificateFile) -> _Loaded:
        key = spec.key or spec.cert
        try:
            pem = Path(spec.cert).read_bytes()
            chain = x509.load_pem_x509_certificates(pem)
        except OSError as e:
            raise ConfigError(f"TLS: cannot read certificate {spec.cert!r}: {e.strerror}") from None
        except ValueError:
            raise ConfigError(f"TLS: {spec.cert!r} holds no PEM certificate") from None
        names = tuple(n.lower().rstrip(".") for n in spec.names) or certificate_names(chain[0])
        if not names:
            raise ConfigError(
                f"TLS: certificate {spec.cert!r} names no host (no subjectAltName DNS "
                f"name nor CN); give its names in the configuration"
            )
        context = self._new_context()
        try:
            context.use_certificate_chain_file(spec.cert)
            context.use_privatekey_file(key)
            context.check_privatekey()
        except SSL.Error as e:
            raise ConfigError(
                f"TLS: certificate {spec.cert!r} with key {key!r} cannot be used: {_ssl_reason(e)}"
            ) from None
        return _Loaded(names=names, context=context, source=spec.cert)

    def _new_context(self) -> SSL.Context:
        context = server_context(self.alpn)
        context.set_tlsext_servername_callback(self._on_server_name)
        return context

    def _on_server_name(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        if raw:
            wanted = self.context_for(raw.decode("ascii", "replace"))
            if wanted is not connection.get_context():
                connection.set_context(wanted)


def server_context(alpn: Sequence[bytes] = ALPN_PROTOCOLS) -> SSL.Context:
    """A server `SSL.Context` with multiproxy's policy and no certificate yet."""
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.set_min_proto_version(SSL.TLS1_2_VERSION)
    context.set_cipher_list(MODERN_CIPHERS)
    context.set_options(
        SSL.OP_NO_COMPRESSION | SSL.OP_CIPHER_SERVER_PREFERENCE | SSL.OP_NO_RENEGOTIATION
    )
    # One session id context for every certificate, so resumption works
    # whichever context SNI switched to.
    context.set_session_id(b"multiproxy")
    if alpn:
        offered = list(alpn)

        def select(connection: SSL.Connection, protocols: list[bytes]) -> bytes:
            for protocol in offered:
                if protocol in protocols:
                    return protocol
            return SSL.NO_OVERLAPPING_PROTOCOLS

        context.set_alpn_select_callback(select)
    return context


def certificate_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The DNS names a certificate is for: its SAN DNS names, else its CN."""
    try:
        san = certificate.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        names = san.value.get_values_for_type(x509.DNSName)
        if names:
            return tuple(n.lower().rstrip(".") for n in names)
    cns = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return tuple(str(cn.value).lower().rstrip(".") for cn in cns)


def tls_server_endpoint(
    endpoint: IStreamServerEndpoint, tls: IOpenSSLServerConnectionCreator, clock: object = None
) -> IStreamServerEndpoint:
    """Run TLS with ``tls`` over any server endpoint (TCP, UNIX, ``haproxy:``...)."""
    return _TLSServerEndpoint(endpoint, tls, clock)


@implementer(IStreamServerEndpoint)
class _TLSServerEndpoint:
    def __init__(self, endpoint: IStreamServerEndpoint, tls: object, clock: object) -> None:
        self._endpoint = endpoint
        self._tls = tls
        self._clock = clock

    def listen(self, protocolFactory):  # type: ignore[no-untyped-def]
        return self._endpoint.listen(
            TLSMemoryBIOFactory(self._tls, False, protocolFactory, clock=self._clock)
        )


def client_tls(
    hostname: str,
    *,
    verify: bool = True,
    ca_file: str | None = None,
    alpn: Sequence[bytes] = ALPN_PROTOCOLS,
) -> IOpenSSLClientConnectionCreator:
    """
    The TLS connection creator for an ``https`` upstream named ``hostname``.

    @param verify: check the certificate chain and that it names
        ``hostname`` (service-identity).  False only when configured
        explicitly: the connection is then encrypted but not authenticated.
    @param ca_file: a PEM file of CA certificates to trust instead of the
        system store.
    """
    if not verify:
        return _UnverifiedClientTLS(hostname, tuple(alpn))
    trust = platform_or_file_trust(ca_file)
    return ssl.optionsForClientTLS(
        hostname, trustRoot=trust, acceptableProtocols=list(alpn) or None,
        extraCertificateOptions={"raiseMinimumTo": ssl.TLSVersion.TLSv1_2},
    )


def platform_or_file_trust(ca_file: str | None) -> object:
    """`platformTrust()`, or a trust root made from the certificates in ``ca_file``."""
    if ca_file is None:
        return ssl.platformTrust()
    try:
        pems = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    except OSError as e:
        raise ConfigError(f"TLS: cannot read CA file {ca_file!r}: {e.strerror}") from None
    except ValueError:
        raise ConfigError(f"TLS: CA file {ca_file!r} holds no PEM certificate") from None
    return ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in pems]
    )


@implementer(IOpenSSLClientConnectionCreator)
class _UnverifiedClientTLS:
    """Encrypts to an upstream without checking who it is (``verify = false``)."""

    def __init__(self, hostname: str, alpn: tuple[bytes, ...]) -> None:
        self._hostname = hostname
        context = SSL.Context(SSL.TLS_CLIENT_METHOD)
        context.set_min_proto_version(SSL.TLS1_2_VERSION)
        context.set_verify(SSL.VERIFY_NONE, lambda *args: True)
        if alpn:
            context.set_alpn_protos(list(alpn))
        self._context = context

    def clientConnectionForTLS(self, tlsProtocol: object) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        if not _is_ip(self._hostname):
            connection.set_tlsext_host_name(self._hostname.encode("idna"))
        connection.set_connect_state()
        return connection


def tls_client_endpoint(
    endpoint: IStreamClientEndpoint, creator: IOpenSSLClientConnectionCreator
) -> IStreamClientEndpoint:
    """Run TLS from ``creator`` over a plain client endpoint (usually TCP)."""
    return wrapClientTLS(creator, endpoint)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _ssl_reason(error: SSL.Error) -> str:
    parts = []
    for item in error.args[0] if error.args and isinstance(error.args[0], list) else []:
        if isinstance(item, tuple) and len(item) == 3:
            parts.append(str(item[2]))
    return "; ".join(parts) or str(error)


def tls_failure(reason: Failure | None) -> str | None:
    """What went wrong in a TLS handshake that ended the connection, if that is what did."""
    if reason is None:
        return None
    from service_identity import VerificationError

    if reason.check(VerificationError):
        return f"the certificate does not match the upstream's name ({reason.value})"
    if reason.check(SSL.Error):
        message = reason.getErrorMessage()
        if "certificate verify failed" in message:
            return ("the upstream's certificate is not signed by a trusted CA "
                    "(certificate verify failed)")
        return message
    return None
