"""
multiproxy: a Twisted-based multi-protocol proxy framework.

The shared contract (`IProxy`, `IPolicy`, `IUpstreamChooser`, `IUpstream`,
`IBalancer`, `IReporter`), the values that travel through every proxy
(`Intent`, `Decision`, `AccessRecord`), and `AccessLog`, the reporter that
writes the access log.  The proxies themselves live in
`multiproxy.forward`, `multiproxy.reverse` and `multiproxy.tcp`.
"""

__version__ = "0.1.0"

from multiproxy._accesslog import AccessLog, format_record, format_record_json
from multiproxy.pipeline._contract import AllowAll, check
from multiproxy.pipeline._errors import ConfigError, MultiproxyError, ProtocolError, UpstreamError
from multiproxy.pipeline._interfaces import (
    IBalancer,
    IPolicy,
    IProxy,
    IReporter,
    IUpstream,
    IUpstreamChooser,
)
from multiproxy.pipeline._values import ALLOW, AccessRecord, Decision, Intent

__all__ = [
    "ALLOW",
    "AccessLog",
    "AccessRecord",
    "AllowAll",
    "ConfigError",
    "Decision",
    "IBalancer",
    "IPolicy",
    "IProxy",
    "IReporter",
    "IUpstream",
    "IUpstreamChooser",
    "Intent",
    "MultiproxyError",
    "ProtocolError",
    "UpstreamError",
    "__version__",
    "check",
    "format_record",
    "format_record_json",
]
