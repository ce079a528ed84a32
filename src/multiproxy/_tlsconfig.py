"""
Configuring the certificates of TLS listeners: the `TLSConfig` value and
its TOML reader, shared by every proxy that terminates TLS with the
SNI-chosen certificates of `multiproxy._tls.ServerTLS` (``[reverse.tls]``
and ``[tcp.tls]`` read the same keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from multiproxy._tablereader import TableReader
from multiproxy._tls import CertificateFile

__all__ = ["TLSConfig", "tls_from_table"]


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
