"""
The TCP relay: a layer-4 proxy with balancing, health checks, TLS at the
edge and the PROXY protocol (see docs/tcp.md).
"""

from multiproxy.tcp._config import (
    TCPBackendConfig,
    TCPConfig,
    TCPOptions,
    TCPService,
    make_tcp_service,
    server_endpoint,
    tcp_config_from_table,
)
from multiproxy.tcp._haproxy import ProxyHeaderWrapper, proxy_header_endpoint
from multiproxy.tcp._proxy import TCPRelayFactory, TCPRelayProtocol, TCPSettings
from multiproxy.tcp._proxyheader import proxy_header, proxy_header_v1, proxy_header_v2
from multiproxy.transport._tls import CertificateFile
from multiproxy.transport._tlsconfig import TLSConfig

__all__ = [
    "ProxyHeaderWrapper",
    "TCPBackendConfig",
    "TCPConfig",
    "TCPOptions",
    "TCPRelayFactory",
    "TCPRelayProtocol",
    "TCPService",
    "TCPSettings",
    "CertificateFile",
    "TLSConfig",
    "make_tcp_service",
    "proxy_header",
    "proxy_header_endpoint",
    "proxy_header_v1",
    "proxy_header_v2",
    "server_endpoint",
    "tcp_config_from_table",
]
