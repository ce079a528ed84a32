"""
The access policy: ordered allow/deny/authenticate rules, proxy
authentication, anonymity and per-client limits, shared by the forward
proxy, the reverse proxy and the TCP relay.

Everything here is sans-I/O: no sockets, no reactor (the clock is injected).
See ``docs/policy.md`` for the configuration and the exact matching rules.
"""

from multiproxy.policy._admission import IAccessControl, Refusal, refusal
from multiproxy.policy._anonymity import FORWARDING_FIELDS, AnonymityOptions, anonymise_headers
from multiproxy.policy._auth import (
    HashedPasswords,
    IProxyUser,
    ProxyAuthenticator,
    ProxyRealm,
    ProxyUser,
    basic_challenge,
    load_htpasswd,
    parse_basic_credentials,
    parse_group_file,
    parse_htpasswd,
    verify_password,
)
from multiproxy.policy._config import (
    AuthSettings,
    LimitSettings,
    PolicySettings,
    PolicySource,
    load_policy_file,
    policy_from_options,
    policy_from_table,
    rules_from_options,
    settings_from_table,
)
from multiproxy.policy._denypage import (
    DEFAULT_DENY_TEMPLATE,
    DENY_PAGE_CONTENT_TYPE,
    check_template,
    load_deny_template,
    render_deny_page,
)
from multiproxy.policy._holder import PolicyHolder
from multiproxy.policy._hosts import HostMatcher, HostPattern, normalise_host, parse_host_pattern
from multiproxy.policy._index import RuleSet
from multiproxy.policy._networks import NetworkSet, client_address, parse_network
from multiproxy.policy._options import ClientPolicyOptions, DenyPageOptions, PolicyOptions
from multiproxy.policy._ratelimit import ConnectionLimit, RequestRateLimit, client_key
from multiproxy.policy._rules import PortSet, Rule
from multiproxy.policy._service import PolicyService, make_policy_holder
from multiproxy.policy._shacrypt import sha_crypt, sha_crypt_verify
from multiproxy.policy._timewindow import TimeWindow

__all__ = [
    "DEFAULT_DENY_TEMPLATE",
    "DENY_PAGE_CONTENT_TYPE",
    "FORWARDING_FIELDS",
    "AnonymityOptions",
    "AuthSettings",
    "ClientPolicyOptions",
    "ConnectionLimit",
    "DenyPageOptions",
    "HashedPasswords",
    "HostMatcher",
    "HostPattern",
    "IAccessControl",
    "IProxyUser",
    "LimitSettings",
    "NetworkSet",
    "PolicyHolder",
    "PolicyOptions",
    "PolicyService",
    "PolicySettings",
    "PolicySource",
    "PortSet",
    "ProxyAuthenticator",
    "ProxyRealm",
    "ProxyUser",
    "Refusal",
    "RequestRateLimit",
    "Rule",
    "RuleSet",
    "TimeWindow",
    "anonymise_headers",
    "basic_challenge",
    "check_template",
    "client_address",
    "client_key",
    "load_deny_template",
    "load_htpasswd",
    "load_policy_file",
    "make_policy_holder",
    "normalise_host",
    "parse_basic_credentials",
    "parse_group_file",
    "parse_host_pattern",
    "parse_htpasswd",
    "parse_network",
    "policy_from_options",
    "policy_from_table",
    "refusal",
    "render_deny_page",
    "rules_from_options",
    "settings_from_table",
    "sha_crypt",
    "sha_crypt_verify",
    "verify_password",
]
