"""The forward HTTP proxy, directly or through parent proxies."""

from multiproxy.forward._config import ForwardConfig, ForwardOptions, make_forward_service
from multiproxy.forward._origin import DirectChooser, Origin
from multiproxy.forward._parents import ParentChooser, ParentConfig, ParentProxy, parse_parent_url
from multiproxy.forward._proxy import ForwardProxy, ForwardProxyProtocol, ForwardSettings

__all__ = [
    "DirectChooser",
    "ForwardConfig",
    "ForwardOptions",
    "ForwardProxy",
    "ForwardProxyProtocol",
    "ForwardSettings",
    "Origin",
    "ParentChooser",
    "ParentConfig",
    "ParentProxy",
    "make_forward_service",
    "parse_parent_url",
]
