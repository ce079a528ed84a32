"""
The SOCKS proxy: SOCKS5 (RFC 1928) CONNECT with username/password
authentication (RFC 1929), and SOCKS4/SOCKS4a, on the shared policy, relay
and access log (see docs/socks.md).
"""

from multiproxy.socks._config import (
    SocksConfig,
    SocksOptions,
    make_socks_service,
    socks_config_from_table,
)
from multiproxy.socks._parser import (
    ConnectRequest,
    Credentials,
    Greeting,
    SocksError,
    SocksParser,
    socks4_reply,
    socks5_reply,
)
from multiproxy.socks._proxy import SocksProxy, SocksProxyProtocol, SocksSettings

__all__ = [
    "ConnectRequest",
    "Credentials",
    "Greeting",
    "SocksConfig",
    "SocksError",
    "SocksOptions",
    "SocksParser",
    "SocksProxy",
    "SocksProxyProtocol",
    "SocksSettings",
    "make_socks_service",
    "socks4_reply",
    "socks5_reply",
    "socks_config_from_table",
]
