"""
Reading the ``[policy]`` section of the TOML configuration, and turning
command-line options into rules.  Every bad value is refused with a
`ConfigError` naming the key (``policy.rules[3].hours: ...``) and the rule.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from twisted.cred.portal import Portal

from multiproxy._tablereader import TableReader
from multiproxy.pipeline._errors import ConfigError
from multiproxy.policy._anonymity import AnonymityOptions
from multiproxy.policy._auth import (
    HashedPasswords,
    ProxyAuthenticator,
    ProxyRealm,
    RunBlocking,
    load_htpasswd,
    parse_group_file,
    parse_htpasswd,
)
from multiproxy.policy._denypage import DEFAULT_DENY_TEMPLATE, load_deny_template
from multiproxy.policy._index import RuleSet
from multiproxy.policy._networks import NetworkSet
from multiproxy.policy._ratelimit import ConnectionLimit, RequestRateLimit
from multiproxy.policy._rules import (
    ACTIONS,
    Rule,
    parse_clients,
    parse_hosts,
    parse_kinds,
    parse_methods,
    parse_ports,
    parse_url_regex,
)
from multiproxy.policy._timewindow import TimeWindow, parse_days, parse_hours, parse_zone

__all__ = [
    "AuthSettings", "LimitSettings", "PolicySettings", "PolicySource", "load_policy_file",
    "policy_from_options",
    "policy_from_table", "rules_from_options", "settings_from_table",
]

Clock = Callable[[], float]
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """The ``[policy.auth]`` table: who the users are and how long checks are remembered."""

    passwords: Mapping[str, str]
    groups: Mapping[str, frozenset[str]] = field(default_factory=dict)
    realm: str = "multiproxy"
    cache_seconds: float = 300.0
    cache_size: int = 10_000
    max_failures: int = 10
    """Failed sign-ins a client address may make per ``failure_window`` before 429."""
    failure_window: float = 60.0

    def authenticator(
        self, *, clock: Clock, run_blocking: RunBlocking | None = None,
    ) -> ProxyAuthenticator:
        """A `ProxyAuthenticator` over these users (a fresh cache)."""
        portal = Portal(ProxyRealm(self.groups), [HashedPasswords(self.passwords, run_blocking)])
        return ProxyAuthenticator(
            portal, clock=clock, realm=self.realm, cache_seconds=self.cache_seconds,
            cache_size=self.cache_size,
        )


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """The ``[policy.limits]`` table; a limit of None is no limit."""

    connections_per_client: int | None = None
    requests_per_second: float | None = None
    burst: float | None = None
    ipv6_prefix: int = 64
    max_clients: int = 100_000
    exempt: NetworkSet | None = None
    redis: str | None = None
    redis_prefix: str = "multiproxy:"
    redis_connect_timeout: float = 0.25
    redis_timeout: float = 0.25

    def connection_limit(self, link=None) -> ConnectionLimit | None:
        """The connection limit; counted across the fleet through ``link`` (a `RedisLink`) if given."""
        if self.connections_per_client is None:
            return None
        if link is not None:
            from multiproxy.policy._sharedlimits import SharedConnectionLimit

            return SharedConnectionLimit(
                self.connections_per_client, link=link, prefix=self.redis_prefix.encode(),
                ipv6_prefix=self.ipv6_prefix, exempt=self.exempt,
            )
        return ConnectionLimit(
            self.connections_per_client, ipv6_prefix=self.ipv6_prefix, exempt=self.exempt,
        )

    def request_rate_limit(self, *, clock: Clock, link=None) -> RequestRateLimit | None:
        """The request rate limit; counted across the fleet through ``link`` if given."""
        if self.requests_per_second is None:
            return None
        if link is not None:
            from multiproxy.policy._sharedlimits import SharedRequestRate

            return SharedRequestRate(
                self.requests_per_second, self.burst, clock=clock, link=link,
                prefix=self.redis_prefix.encode(), ipv6_prefix=self.ipv6_prefix,
                max_clients=self.max_clients, exempt=self.exempt,
            )
        return RequestRateLimit(
            self.requests_per_second, self.burst, clock=clock, ipv6_prefix=self.ipv6_prefix,
            max_clients=self.max_clients, exempt=self.exempt,
        )


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """Everything the ``[policy]`` section configures."""

    rules: RuleSet
    deny_template: str = DEFAULT_DENY_TEMPLATE
    auth: AuthSettings | None = None
    anonymity: AnonymityOptions | None = None
    limits: LimitSettings | None = None
    admin_contact: str | None = None
    """Who to ask about a refusal (an email address or any text), shown on the page."""


def policy_from_table(reader: TableReader, *, clock: Clock = time.time) -> RuleSet:
    """
    The `RuleSet` from the ``default``, ``timezone`` and ``rules`` keys of a
    ``[policy]`` table.  Reads only those keys; the caller calls
    ``reader.finish()`` (or use `settings_from_table`, which reads the rest).
    ``clock`` is what time windows read; a `PolicyHolder` puts its own
    (``reactor.seconds``) in place, so configuration can be read before the
    reactor is at hand.

    @raise ConfigError: naming the rule and key.
    """
    default = reader.string("default", "allow", choices=("allow", "deny"))
    zone_name = reader.string("timezone", "UTC")
    reader.convert("timezone", zone_name, parse_zone)
    rules = []
    for position, table in enumerate(reader.tables("rules")):
        rules.append(_rule_from_table(table, position, zone_name))
    return reader.convert(
        "rules", rules, lambda rs: RuleSet(rs, default=default, clock=clock),
    )


def _rule_from_table(reader: TableReader, position: int, zone_name: str) -> Rule:
    name = reader.string("name", f"rules[{position}]")
    try:
        return _read_rule(reader, name, zone_name)
    except ConfigError as e:
        if reader.has("name"):
            raise ConfigError(f"{e} (in rule {name!r})") from None
        raise


def _read_rule(reader: TableReader, name: str, zone_name: str) -> Rule:
    action = reader.string("action", choices=ACTIONS)
    message = reader.string("message", None)
    authenticated = reader.boolean("authenticated", None)

    def optional(key: str, parse: Callable, read: Callable = reader.strings):
        value = read(key, None)
        if value is None:
            return None
        return reader.convert(key, value, parse)

    hosts = optional("hosts", parse_hosts)
    url_regex = optional("url_regex", parse_url_regex)
    ports = optional("ports", parse_ports, reader.raw)
    methods = optional("methods", parse_methods)
    clients = optional("clients", parse_clients)
    users = optional("users", _non_empty("user"))
    groups = optional("groups", _non_empty("group"))
    kinds = optional("kinds", parse_kinds)
    proxies = optional("proxies", _non_empty("proxy"))
    parents = optional("parents", _parent_urls)
    days = optional("days", parse_days)
    hours = optional("hours", parse_hours)
    window = None
    if reader.has("timezone") and days is None and hours is None:
        raise reader.error("timezone", "has no effect without days or hours")
    if days is not None or hours is not None:
        zone_name = reader.string("timezone", zone_name)
        zone = reader.convert("timezone", zone_name, parse_zone)
        full = TimeWindow.parse()
        window = TimeWindow(days or full.days, hours or full.hours, zone)
    reader.finish()
    return reader.convert("name", name, lambda n: Rule(
        name=n, action=action, message=message, hosts=hosts, url_regex=url_regex, ports=ports,
        methods=methods, clients=clients, users=users, groups=groups,
        authenticated=authenticated, window=window, kinds=kinds, proxies=proxies,
        parents=parents or (),
    ))


def _parent_urls(values: list[str]) -> tuple[str, ...]:
    """Parent proxy URLs of a rule, checked as ``--parent`` checks them."""
    # Imported here: the forward proxy builds on this package.
    from multiproxy.forward._parents import parse_parent_url

    if not values:
        raise ValueError("expected a non-empty list of parent proxy URLs")
    for url in values:
        parse_parent_url(url)  # ValueError says what is wrong
    return tuple(values)


def _non_empty(what: str) -> Callable[[list[str]], frozenset[str]]:
    def parse(values: list[str]) -> frozenset[str]:
        if not values or not all(values):
            raise ValueError(f"expected a non-empty list of {what} names")
        return frozenset(values)
    return parse


def auth_from_table(reader: TableReader) -> AuthSettings:
    """The ``[policy.auth]`` table (reads the password and group files)."""
    passwords: dict[str, str] = {}
    if reader.has("htpasswd"):
        path = reader.string("htpasswd")
        passwords = reader.convert("htpasswd", path, load_htpasswd)
    inline = reader.table_of("users")
    for user in list(inline.table):
        hashed = inline.string(user)
        inline.convert(user, hashed, lambda h: parse_htpasswd(f"{user}:{h}", inline.key(user)))
        if user in passwords:
            raise inline.error(user, "is also in the htpasswd file; list each user once")
        passwords[user] = hashed
    inline.finish()
    if not passwords:
        raise reader.error("htpasswd", "no users: give an htpasswd file or a [users] table")
    groups: dict[str, set[str]] = {}
    if reader.has("group_file"):
        path = reader.string("group_file")
        for user, names in reader.convert("group_file", path, _read_groups).items():
            groups.setdefault(user, set()).update(names)
    table = reader.table_of("groups")
    for group in list(table.table):
        for user in table.strings(group):
            groups.setdefault(user, set()).add(group)
    table.finish()
    settings = AuthSettings(
        passwords=passwords,
        groups={user: frozenset(names) for user, names in groups.items()},
        realm=reader.string("realm", "multiproxy"),
        cache_seconds=reader.number("cache_seconds", 300.0, minimum=0),
        cache_size=reader.integer("cache_size", 10_000, minimum=1),
        max_failures=reader.integer("max_failures", 10, minimum=1),
        failure_window=reader.number("failure_window", 60.0, minimum=1),
    )
    reader.finish()
    return settings


def _read_groups(path: str) -> dict[str, frozenset[str]]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the group file {path!r}: {e}") from None
    return parse_group_file(text, path)


def anonymity_from_table(reader: TableReader) -> AnonymityOptions | None:
    """The ``[policy.anonymity]`` table; None when ``enabled = false``."""
    enabled = reader.boolean("enabled", True)
    user_agent = reader.string("user_agent", "keep")
    reader.convert("user_agent", user_agent, lambda ua: AnonymityOptions(user_agent=ua))
    remove = reader.strings("remove", [])
    names = reader.convert("remove", remove, _field_names)
    options = AnonymityOptions(
        strip_via=reader.boolean("strip_via", True),
        strip_forwarded=reader.boolean("strip_forwarded", True),
        from_=reader.string("from", "remove", choices=("keep", "remove")),
        referer=reader.string("referer", "keep", choices=("keep", "remove", "origin")),
        user_agent=user_agent,
        cookies=reader.string("cookies", "keep", choices=("keep", "remove")),
        remove=names,
    )
    reader.finish()
    return options if enabled else None


def _field_names(values: list[str]) -> frozenset[bytes]:
    out = set()
    for value in values:
        if not _TOKEN.match(value):
            raise ValueError(f"{value!r} is not a header field name")
        out.add(value.lower().encode("ascii"))
    return frozenset(out)


def limits_from_table(reader: TableReader) -> LimitSettings:
    """The ``[policy.limits]`` table."""
    connections = reader.integer("connections_per_client", 0, minimum=0)
    rate = reader.optional_number("requests_per_second")
    burst = reader.number("burst", 0, minimum=0) or None
    if burst is not None and rate is None:
        raise reader.error("burst", "has no effect without requests_per_second")
    if burst is not None and burst < 1:
        raise reader.error("burst", f"must be at least 1, got {burst}")
    exempt = reader.strings("exempt", None)
    redis = reader.string("redis", "") or None
    if redis is not None:
        from multiproxy._redislink import parse_redis_url

        reader.convert("redis", redis, parse_redis_url)
    settings = LimitSettings(
        connections_per_client=connections or None,
        requests_per_second=rate,
        burst=burst,
        ipv6_prefix=reader.integer("ipv6_prefix", 64, minimum=1, maximum=128),
        max_clients=reader.integer("max_clients", 100_000, minimum=1),
        exempt=reader.convert("exempt", exempt, parse_clients) if exempt is not None else None,
        redis=redis,
        redis_prefix=reader.string("redis_prefix", "multiproxy:"),
        redis_connect_timeout=float(reader.number("redis_connect_timeout", 0.25, minimum=0.001)),
        redis_timeout=float(reader.number("redis_timeout", 0.25, minimum=0.001)),
    )
    reader.finish()
    return settings


def settings_from_table(reader: TableReader, *, clock: Clock = time.time) -> PolicySettings:
    """
    Everything in a ``[policy]`` table: rules, ``deny_page``,
    ``admin_contact``, and the ``auth``, ``anonymity`` and ``limits``
    sub-tables.  Calls ``finish``.

    @raise ConfigError: naming the key.
    """
    rules = policy_from_table(reader, clock=clock)
    template = DEFAULT_DENY_TEMPLATE
    if reader.has("deny_page"):
        template = reader.convert("deny_page", reader.string("deny_page"), load_deny_template)
    admin_contact = reader.string("admin_contact", "").strip() or None
    auth = auth_from_table(reader.table_of("auth")) if reader.has("auth") else None
    anonymity = (
        anonymity_from_table(reader.table_of("anonymity")) if reader.has("anonymity") else None
    )
    limits = limits_from_table(reader.table_of("limits")) if reader.has("limits") else None
    reader.finish()
    if auth is None and any(r.action == "authenticate" or r.users or r.groups
                            or r.authenticated is not None for r in rules.rules):
        raise reader.error(
            "auth", "rules use authentication or users/groups, but there is no [policy.auth] "
            "table saying where the users are",
        )
    return PolicySettings(rules, template, auth, anonymity, limits, admin_contact)


def load_policy_file(path: str, *, clock: Clock = time.time) -> PolicySettings:
    """
    Read the ``[policy]`` table of a TOML file (a policy file of its own, or
    the main configuration file).

    @raise ConfigError: the file cannot be read or parsed, or a value is
        wrong; the message starts with the path.
    """
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the policy file: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    if "policy" not in data:
        raise ConfigError(f"{path}: no [policy] table")
    try:
        return settings_from_table(TableReader(data["policy"], "policy"), clock=clock)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def rules_from_options(
    *, deny_hosts: Iterable[str] = (), allow_hosts: Iterable[str] = (),
    deny_networks: Iterable[str] = (), allow_networks: Iterable[str] = (),
    authenticate: bool = False,
) -> list[Rule]:
    """
    Rules for the simple command-line options, in this order: denied hosts
    (``--deny-host``, same pattern syntax as ``hosts``: ``.twitter.com`` for
    the domain and its subdomains), denied client networks
    (``--deny-network``), proxy authentication for everything else when
    ``authenticate`` (``--htpasswd``), then one allow rule: with
    ``--allow-network`` only those clients may use the proxy, with
    ``--allow-host`` only those hosts may be reached, and with both, both
    must hold.

    @raise ConfigError: naming the option and the value.
    """
    deny_hosts, allow_hosts = list(deny_hosts), list(allow_hosts)
    deny_networks, allow_networks = list(deny_networks), list(allow_networks)
    _check_each("--deny-host", deny_hosts, parse_hosts)
    _check_each("--allow-host", allow_hosts, parse_hosts)
    _check_each("--deny-network", deny_networks, parse_clients)
    _check_each("--allow-network", allow_networks, parse_clients)
    rules = []
    if deny_hosts:
        rules.append(Rule.build("cli-deny-host", "deny", hosts=deny_hosts))
    if deny_networks:
        rules.append(Rule.build("cli-deny-network", "deny", clients=deny_networks))
    if authenticate:
        rules.append(Rule.build("cli-authenticate", "authenticate"))
    if allow_hosts or allow_networks:
        rules.append(Rule.build(
            "cli-allow", "allow", hosts=allow_hosts or None, clients=allow_networks or None,
        ))
    return rules


def policy_from_options(
    *, deny_hosts: Iterable[str] = (), allow_hosts: Iterable[str] = (),
    deny_networks: Iterable[str] = (), allow_networks: Iterable[str] = (),
    default: str | None = None, clock: Clock,
) -> RuleSet:
    """
    A `RuleSet` from `rules_from_options`; the default is ``deny`` when an
    allow option was given (only what is allowed passes), else ``allow``.
    """
    allow_hosts, allow_networks = list(allow_hosts), list(allow_networks)
    rules = rules_from_options(
        deny_hosts=deny_hosts, allow_hosts=allow_hosts, deny_networks=deny_networks,
        allow_networks=allow_networks,
    )
    if default is None:
        default = "deny" if allow_hosts or allow_networks else "allow"
    return RuleSet(rules, default=default, clock=clock)


def _check_each(option: str, values: list[str], parse: Callable) -> None:
    for value in values:
        try:
            parse([value])
        except ValueError as e:
            raise ConfigError(f"{option} {value!r}: {e}") from None


@dataclass(frozen=True)
class PolicySource:
    """
    Where a process's policy comes from: the settings read at start-up, the
    file to read again on reload (None: nothing to reload), and rules from
    the command line that go before the file's rules.
    """

    settings: PolicySettings
    path: str | None = None
    before: tuple[Rule, ...] = ()
    limits_redis: str | None = None
    """Where the limits are counted when the policy names no Redis (the
    master's own, for its workers); kept through reloads."""

    @property
    def needs_shared_limits(self) -> bool:
        """Whether it has per-client limits and names no Redis to count them in."""
        limits = self.settings.limits
        return limits is not None and limits.redis is None and bool(
            limits.connections_per_client or limits.requests_per_second)

    def with_limits_redis(self, url: str) -> PolicySource:
        """The same source, counting its limits in the Redis at ``url`` unless it names one."""
        return replace(self, limits_redis=url, settings=self._counted_in(self.settings, url))

    @staticmethod
    def _counted_in(settings: PolicySettings, url: str | None) -> PolicySettings:
        limits = settings.limits
        if url is None or limits is None or limits.redis is not None:
            return settings
        return replace(settings, limits=replace(limits, redis=url))

    @classmethod
    def read(cls, path: str | None = None, before: Iterable[Rule] = (), *,
             default: str = "allow", settings: PolicySettings | None = None) -> PolicySource:
        """
        Read ``path`` (if given) now, so a bad file stops the start-up; with
        no file, ``before`` and ``default`` (or ``settings``) are the policy.

        @raise ConfigError: naming the file, rule and key.
        """
        source = cls(settings or PolicySettings(RuleSet((), default=default, clock=time.time)),
                     path, tuple(before))
        return replace(source, settings=source.load()) if path or before else source

    def load(self) -> PolicySettings:
        """Read the file again (if any) and put the command-line rules first."""
        settings = self.settings
        if self.path is not None:
            settings = self._counted_in(load_policy_file(self.path), self.limits_redis)
        if not self.before:
            return settings
        rules = settings.rules
        try:
            merged = RuleSet(self.before + rules.rules, default=rules.default.action,
                             clock=rules.clock, default_message=rules.default.message)
        except ValueError as e:
            raise ConfigError(f"{self.path or 'policy'}: {e}") from None
        return replace(settings, rules=merged)
