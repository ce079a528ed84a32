"""
Balancers, backends, pools and health checks, shared by the reverse HTTP
proxy and the TCP relay.

- Balancers (`IBalancer`, pure): `RoundRobin`, `WeightedRoundRobin`,
  `LeastConnections`, `PowerOfTwoChoices`, `ConsistentHash`;
  `balancer_from_name` builds one from ``roundrobin``, ``weighted``,
  ``leastconn``, ``p2c``, ``hash:client``, ``hash:header=NAME`` or
  ``hash:cookie=NAME``.
- `Backend` (`IUpstream`): an endpoint string or host and port, optional
  verified TLS origination (`TLSOrigination`), weight, statistics.
- `BackendPool` (`IUpstreamChooser`): choice among healthy backends, passive
  health with growing backoff, `BackendPool.snapshot` for a status page.
- `HealthChecker`: a service running `TCPCheck` or `HTTPCheck` probes;
  `HealthConfig` (read by `health_from_table`) says which and how often.
"""

from multiproxy.balancing._backend import (
    Backend,
    BackendStatus,
    DeadlineEndpoint,
    DirectTCPEndpoint,
    TLSOrigination,
    host_endpoint,
)
from multiproxy.balancing._balancers import (
    BALANCER_NAMES,
    ConsistentHash,
    LeastConnections,
    PowerOfTwoChoices,
    RoundRobin,
    WeightedRoundRobin,
    balancer_from_name,
)
from multiproxy.balancing._config import CHECK_KINDS, HealthConfig, health_from_table
from multiproxy.balancing._health import (
    HealthChecker,
    HealthState,
    HTTPCheck,
    TCPCheck,
    parse_status_line,
)
from multiproxy.balancing._pool import BackendPool
from multiproxy.balancing._ring import HashRing

__all__ = [
    "BALANCER_NAMES",
    "CHECK_KINDS",
    "Backend",
    "BackendPool",
    "BackendStatus",
    "ConsistentHash",
    "DeadlineEndpoint",
    "DirectTCPEndpoint",
    "HTTPCheck",
    "HashRing",
    "HealthChecker",
    "HealthConfig",
    "HealthState",
    "LeastConnections",
    "PowerOfTwoChoices",
    "RoundRobin",
    "TCPCheck",
    "TLSOrigination",
    "WeightedRoundRobin",
    "host_endpoint",
    "balancer_from_name",
    "health_from_table",
    "parse_status_line",
]
