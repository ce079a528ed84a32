"""
The reverse HTTP proxy: routing by Host and path to pools of backends, TLS
termination with SNI, forwarding headers and a status page.
"""

from multiproxy.reverse._forwarded import ForwardedSettings, apply_forwarded, effective_client
from multiproxy.reverse._routing import Route, RouteMatch, RouteTable

__all__ = [
    "ForwardedSettings",
    "Route",
    "RouteMatch",
    "RouteTable",
    "apply_forwarded",
    "effective_client",
]
