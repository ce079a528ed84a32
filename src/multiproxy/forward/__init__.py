"""The forward HTTP proxy."""

from multiproxy.forward._config import ForwardConfig, ForwardOptions, make_forward_service
from multiproxy.forward._origin import DirectChooser, Origin
from multiproxy.forward._proxy import ForwardProxy, ForwardProxyProtocol, ForwardSettings

__all__ = [
    "DirectChooser",
    "ForwardConfig",
    "ForwardOptions",
    "ForwardProxy",
    "ForwardProxyProtocol",
    "ForwardSettings",
    "Origin",
    "make_forward_service",
]
