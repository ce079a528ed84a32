"""
Configuring the certificates of TLS listeners: the `TLSConfig` value, its
TOML reader and its twistd options, shared by every proxy that terminates
TLS with the SNI-chosen certificates of `multiproxy.transport._tls.ServerTLS`
(``[reverse.tls]`` and ``[tcp.tls]`` read the same keys; ``--tls-cert``,
``--tls-dir`` and ``--tls-default`` mean the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from multiproxy._tablereader import TableReader
from multiproxy.transport._tls import CertificateFile

__all__ = ["TLSCertificateOptions", "TLSConfig", "tls_from_table"]


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """Certificates for the TLS listeners (a list, a directory, or both)."""

    certificates: tuple[CertificateFile, ...] = ()
    directory: str | None = None
    default: str | None = None


def tls_from_table(reader: TableReader) -> TLSConfig:
    """Read one ``tls`` table (``certs``, ``dir``, ``default``); unknown keys are refused."""
    certs = []
    for entry in reader.tables("certs"):
        certs.append(CertificateFile(
            cert=entry.string("cert"),
            key=entry.string("key", None),
            names=tuple(entry.strings("names", [])),
        ))
        entry.finish()
    directory = reader.string("dir", None)
    if not certs and directory is None:
        raise reader.error("certs", "give certs = [{cert = ..., key = ...}] or dir = \"...\"")
    config = TLSConfig(tuple(certs), directory, reader.string("default", None))
    reader.finish()
    return config


class TLSCertificateOptions:
    """
    A mix-in for a `twisted.python.usage.Options`: the certificates of the
    TLS listeners (``--tls-cert``, ``--tls-dir``, ``--tls-default``), and
    `tls_config` to call from ``postOptions``.  The proxy declares its own
    ``--tls-listen`` (whose help names what it serves).
    """

    optParameters = [
        ["tls-dir", None, None,
         "Directory of PEM files (certificate chain + key) chosen by SNI on --tls-listen."],
        ["tls-default", None, None,
         "Server name whose certificate clients without SNI get (default: the first)."],
    ]

    def opt_tls_cert(self: Any, spec: str) -> None:
        """Certificate for --tls-listen (repeatable): FILE.pem with the key in it, or CERT:KEY."""
        self.setdefault("tls-cert", []).append(spec)

    def tls_config(self: Any) -> TLSConfig | None:
        """The `TLSConfig` of these options; None when no certificate was given."""
        specs = self.get("tls-cert", [])
        if not specs and not self["tls-dir"]:
            return None
        certs = []
        for spec in specs:
            cert, _, key = spec.partition(":")
            certs.append(CertificateFile(cert, key or None))
        return TLSConfig(tuple(certs), self["tls-dir"], self["tls-default"])
