"""
The reverse HTTP proxy: routing by Host and path to pools of backends,
failover between backends, WebSocket pass-through, TLS termination with SNI,
forwarding headers, a status page and a graceful shutdown.

Build one from configuration with `make_reverse_service` (a `ReverseConfig`
from `reverse_config_from_table` or `ReverseOptions`), or assemble a
`ReverseProxy` factory by hand from a `RouteTable` and
`multiproxy.balancing.BackendPool`s.
"""

from multiproxy.http._failover import BalancingFetcher
from multiproxy.reverse._config import (
    BackendConfig,
    HealthConfig,
    PoolConfig,
    ReverseConfig,
    ReverseOptions,
    TLSConfig,
    parse_backend_url,
    reverse_config_from_table,
)
from multiproxy.reverse._fetch import ReverseRequest
from multiproxy.reverse._forwarded import ForwardedSettings, apply_forwarded, effective_client
from multiproxy.reverse._proxy import ReverseProxy, ReverseProxyProtocol, RouteChooser
from multiproxy.reverse._routing import Route, RouteMatch, RouteTable
from multiproxy.reverse._service import (
    ReverseService,
    make_reverse_proxy,
    make_reverse_service,
)
from multiproxy.status import PoolStatus, StatusSite, StatusSnapshot, pool_status
from multiproxy.transport._tls import CertificateFile

__all__ = [
    "BackendConfig",
    "BalancingFetcher",
    "CertificateFile",
    "ForwardedSettings",
    "HealthConfig",
    "PoolConfig",
    "PoolStatus",
    "ReverseConfig",
    "ReverseOptions",
    "ReverseProxy",
    "ReverseProxyProtocol",
    "ReverseRequest",
    "ReverseService",
    "Route",
    "RouteChooser",
    "RouteMatch",
    "RouteTable",
    "StatusSite",
    "StatusSnapshot",
    "TLSConfig",
    "apply_forwarded",
    "effective_client",
    "make_reverse_proxy",
    "make_reverse_service",
    "parse_backend_url",
    "pool_status",
    "reverse_config_from_table",
]
