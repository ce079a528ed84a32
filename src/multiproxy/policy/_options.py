"""
Command-line options for the access policy, mixed into a proxy's twistd
``Options`` (``--deny-host``, ``--allow-network``, ``--policy FILE``, ...).

`ClientPolicyOptions` holds the options about the client alone (networks and
limits), for a proxy that learns nothing else, the TCP relay;
`PolicyOptions` adds destinations, proxy authentication and anonymity, for
the forward proxy; `DenyPageOptions` the refusal page (``--deny-page``,
``--admin-contact``), for the forward proxy, which shows it to browsers.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.python import usage

from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy._anonymity import AnonymityOptions
from multiproxy.policy._auth import load_htpasswd
from multiproxy.policy._config import (
    AuthSettings,
    LimitSettings,
    PolicySettings,
    PolicySource,
    rules_from_options,
)
from multiproxy.policy._denypage import DEFAULT_DENY_TEMPLATE, load_deny_template
from multiproxy.policy._index import RuleSet

__all__ = ["ClientPolicyOptions", "DenyPageOptions", "PolicyOptions"]

_REPEATED = ("deny-host", "allow-host", "deny-network", "allow-network")


class ClientPolicyOptions:
    """
    A mix-in for a `twisted.python.usage.Options`: the policy options that
    concern the client alone (``--policy``, ``--deny-network``,
    ``--allow-network``, the per-client limits), and `read_policy` to call
    from ``postOptions``.
    """

    optParameters = [
        ["policy", None, None,
         "TOML file whose [policy] table holds the access rules (re-read on SIGHUP)."],
        ["max-client-connections", None, 0,
         "Most concurrent connections per client address (0 = no limit).", int],
        ["max-client-rate", None, 0,
         "Most requests per second per client address (a TCP relay: connections), answered "
         "429 past it (a TCP relay closes the connection; 0 = no limit).", float],
        ["limits-redis", None, None,
         "Count the client limits across hosts in this Redis: redis://HOST:PORT/DB."],
    ]

    def _add(self: Any, key: str, value: str) -> None:
        self.setdefault(key, []).append(value)

    def opt_deny_network(self, network: str) -> None:
        """Refuse clients from this network (repeatable), e.g. 192.0.2.0/24."""
        self._add("deny-network", network)

    def opt_allow_network(self, network: str) -> None:
        """Allow only clients from these networks (repeatable), e.g. 10.0.0.0/8."""
        self._add("allow-network", network)

    def read_policy(self: Any) -> PolicySource | None:
        """
        The policy the options describe, read and checked now; None when no
        policy option was given.

        @raise usage.UsageError: with the option and what is wrong.
        """
        lists = {key: list(self.get(key, [])) for key in _REPEATED}
        path = self["policy"]
        standalone = {
            "--allow-host": lists["allow-host"], "--allow-network": lists["allow-network"],
            "--htpasswd": self.get("htpasswd"), "--anonymous": self.get("anonymous"),
            "--max-client-connections": self["max-client-connections"],
            "--max-client-rate": self["max-client-rate"],
            "--limits-redis": self["limits-redis"],
            "--deny-page": self.get("deny-page"), "--admin-contact": self.get("admin-contact"),
        }
        if path is not None:
            for option, value in standalone.items():
                if value:
                    raise usage.UsageError(
                        f"{option} cannot be combined with --policy: put it in the [policy] "
                        f"table of {path} (see docs/policy.md)"
                    )
        if self["max-client-connections"] < 0 or self["max-client-rate"] < 0:
            raise usage.UsageError("--max-client-connections and --max-client-rate must not be "
                                   "negative (0 means no limit)")
        if self["limits-redis"] and not (
            self["max-client-connections"] or self["max-client-rate"]
        ):
            raise usage.UsageError("--limits-redis needs --max-client-connections or "
                                   "--max-client-rate")
        if self["limits-redis"]:
            from multiproxy._redislink import parse_redis_url

            try:
                parse_redis_url(self["limits-redis"])
            except ValueError as e:
                raise usage.UsageError(f"--limits-redis: {e}") from None
        if path is None and not any(lists.values()) and not any(standalone.values()):
            return None
        try:
            rules = rules_from_options(
                deny_hosts=lists["deny-host"], allow_hosts=lists["allow-host"],
                deny_networks=lists["deny-network"], allow_networks=lists["allow-network"],
                authenticate=self.get("htpasswd") is not None,
            )
            if path is not None:
                return PolicySource.read(path, rules)
            return PolicySource.read(None, rules, settings=self._settings(lists))
        except (ConfigError, ValueError) as e:
            raise usage.UsageError(str(e)) from None

    def _settings(self: Any, lists: dict[str, list[str]]) -> PolicySettings:
        default = "deny" if lists["allow-host"] or lists["allow-network"] else "allow"
        auth = None
        if self.get("htpasswd") is not None:
            try:
                auth = AuthSettings(load_htpasswd(self["htpasswd"]))
            except ValueError as e:
                raise ConfigError(f"--htpasswd: {e}") from None
            if not auth.passwords:
                raise ConfigError(f"--htpasswd: {self['htpasswd']} lists no users")
        limits = None
        if self["max-client-connections"] or self["max-client-rate"]:
            limits = LimitSettings(
                connections_per_client=self["max-client-connections"] or None,
                requests_per_second=self["max-client-rate"] or None,
                redis=self["limits-redis"] or None,
            )
        template = DEFAULT_DENY_TEMPLATE
        if self.get("deny-page"):
            try:
                template = load_deny_template(self["deny-page"])
            except ValueError as e:
                raise ConfigError(f"--deny-page: {e}") from None
        return PolicySettings(
            RuleSet((), default=default, clock=time.time),
            deny_template=template,
            auth=auth,
            anonymity=AnonymityOptions() if self.get("anonymous") else None,
            limits=limits,
            admin_contact=(self.get("admin-contact") or "").strip() or None,
        )


class PolicyOptions(ClientPolicyOptions):
    """
    A mix-in for a forward proxy's `twisted.python.usage.Options`: the client
    options of `ClientPolicyOptions`, plus destinations (``--deny-host``,
    ``--allow-host``), proxy authentication (``--htpasswd``) and anonymous
    forwarding (``--anonymous``).
    """

    optFlags = [
        ["anonymous", None,
         "Anonymous forwarding: no Via or X-Forwarded-For, and no From header."],
    ]
    optParameters = [
        ["htpasswd", None, None,
         "Require proxy authentication, checked against this htpasswd file "
         "(bcrypt or SHA-2 crypt hashes)."],
    ]

    def opt_deny_host(self, pattern: str) -> None:
        """Refuse this destination (repeatable): example.com, .example.com (and subdomains)."""
        self._add("deny-host", pattern)

    def opt_allow_host(self, pattern: str) -> None:
        """Allow only these destinations (repeatable; same patterns as --deny-host)."""
        self._add("allow-host", pattern)


class DenyPageOptions:
    """
    A mix-in for the options of a proxy that answers refusals with an HTML
    page: ``--deny-page FILE`` and ``--admin-contact TEXT``, the
    ``deny_page`` and ``admin_contact`` keys of a ``[policy]`` table.
    `ClientPolicyOptions.read_policy` reads them; like the other settings,
    they cannot be combined with ``--policy`` (the file says them).
    """

    optParameters = [
        ["deny-page", None, None,
         "Template file for the refusal page (403, 407, 429): $placeholders as in "
         "docs/policy.md."],
        ["admin-contact", None, None,
         "Who to ask about a refusal, shown on the refusal page (an email address "
         "becomes a mailto: link)."],
    ]
