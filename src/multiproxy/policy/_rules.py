"""
One access rule: a set of conditions, all of which must hold, and an action.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from multiproxy.pipeline._values import Action, Decision
from multiproxy.policy._hosts import HostMatcher, parse_host_pattern
from multiproxy.policy._networks import IPAddress, NetworkSet, client_address, parse_network
from multiproxy.policy._timewindow import TimeWindow

if TYPE_CHECKING:
    from multiproxy.pipeline._values import Intent

__all__ = ["ACTIONS", "KINDS", "PortSet", "Rule", "parse_ports"]

ACTIONS: tuple[Action, ...] = ("allow", "deny", "authenticate")
KINDS = ("http", "connect", "tcp")
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


class PortSet:
    """Destination ports: single ports and inclusive ranges (``8000-8999``)."""

    __slots__ = ("ports", "ranges")

    def __init__(self, ports: Iterable[int] = (), ranges: Iterable[tuple[int, int]] = ()) -> None:
        self.ports = frozenset(ports)
        self.ranges = tuple(ranges)

    def __contains__(self, port: object) -> bool:
        if port in self.ports:
            return True
        return any(low <= port <= high for low, high in self.ranges)  # type: ignore[operator]

    def __repr__(self) -> str:
        items = [str(p) for p in sorted(self.ports)] + [f"{a}-{b}" for a, b in self.ranges]
        return f"PortSet({', '.join(items)})"


def parse_ports(values: int | str | Iterable[int | str]) -> PortSet:
    """
    Ports from ``443``, ``"8000-8999"`` or a list of these.

    @raise ValueError: a port outside 1-65535 or a range that is not one.
    """
    if not isinstance(values, (list, tuple, set, frozenset)):
        values = [values]
    ports, ranges = [], []
    for value in values:
        if isinstance(value, bool):
            raise ValueError(f"expected a port number, got {value!r}")
        if isinstance(value, int):
            ports.append(_port(value))
            continue
        if not isinstance(value, str):
            raise ValueError(f"expected a port number or a range like '8000-8999', got {value!r}")
        low, dash, high = value.partition("-")
        try:
            if dash:
                a, b = _port(int(low)), _port(int(high))
                if a > b:
                    raise ValueError(f"port range {value!r} runs backwards")
                ranges.append((a, b))
            else:
                ports.append(_port(int(value)))
        except ValueError as e:
            if "port" in str(e):
                raise
            raise ValueError(f"{value!r} is not a port or a range like '8000-8999'") from None
    if not ports and not ranges:
        raise ValueError("no ports given")
    return PortSet(ports, ranges)


def _port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is outside 1-65535")
    return value


class MatchContext:
    """
    What a rule list learns about one intent while judging it, computed at
    most once: the time (from the injected clock) and the client address.
    """

    __slots__ = ("intent", "_clock", "_now", "_client", "_client_done")

    def __init__(self, intent: Intent, clock: Callable[[], float]) -> None:
        self.intent = intent
        self._clock = clock
        self._now: float | None = None
        self._client: IPAddress | None = None
        self._client_done = False

    @property
    def now(self) -> float:
        if self._now is None:
            self._now = self._clock()
        return self._now

    @property
    def client(self) -> IPAddress | None:
        if not self._client_done:
            self._client = client_address(self.intent.client_host)
            self._client_done = True
        return self._client


@dataclass(frozen=True, slots=True, eq=False)
class Rule:
    """
    An access rule.  Every condition given must hold (a condition left as
    None is not checked); the rule then decides ``action``.

    An ``authenticate`` rule means "these requests need a known user": it
    matches only intents without an authenticated user, so once the client
    has logged in, later rules decide (the proxy answers 407 for it).
    """

    name: str
    action: Action
    message: str | None = None
    hosts: HostMatcher | None = None
    url_regex: tuple[re.Pattern[str], ...] | None = None
    ports: PortSet | None = None
    methods: frozenset[str] | None = None
    clients: NetworkSet | None = None
    users: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    authenticated: bool | None = None
    window: TimeWindow | None = None
    kinds: frozenset[str] | None = None
    proxies: frozenset[str] | None = None
    parents: tuple[str, ...] = ()
    """Parent proxy URLs a forward proxy sends the requests this rule allows through."""
    decision: Decision = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}; got {self.action!r}")
        if not self.name:
            raise ValueError("a rule needs a name")
        if self.parents and self.action != "allow":
            raise ValueError("parents apply to the requests a rule allows (action = \"allow\")")
        object.__setattr__(self, "decision",
                           Decision(self.action, self.name, self.message, self.parents))

    @classmethod
    def build(
        cls, name: str, action: Action, *, message: str | None = None,
        hosts: Iterable[str] | None = None, url_regex: Iterable[str] | None = None,
        ports: int | str | Iterable[int | str] | None = None,
        methods: Iterable[str] | None = None, clients: Iterable[str] | None = None,
        users: Iterable[str] | None = None, groups: Iterable[str] | None = None,
        authenticated: bool | None = None, days: str | list[str] | None = None,
        hours: str | list[str] | None = None, timezone: str = "UTC",
        kinds: Iterable[str] | None = None, proxies: Iterable[str] | None = None,
        parents: Iterable[str] = (),
    ) -> Rule:
        """
        A rule from the values a person writes (host patterns, CIDR strings,
        ``"Mon-Fri"``...), as in the ``[[policy.rules]]`` TOML tables.

        @raise ValueError: a value is not understood (the message says which).
        """
        window = None
        if days is not None or hours is not None:
            window = TimeWindow.parse(days, hours, timezone)
        return cls(
            name=name, action=action, message=message,
            hosts=parse_hosts(hosts) if hosts is not None else None,
            url_regex=parse_url_regex(url_regex) if url_regex is not None else None,
            ports=parse_ports(ports) if ports is not None else None,
            methods=parse_methods(methods) if methods is not None else None,
            clients=parse_clients(clients) if clients is not None else None,
            users=_names(users, "user") if users is not None else None,
            groups=_names(groups, "group") if groups is not None else None,
            authenticated=authenticated, window=window,
            kinds=parse_kinds(kinds) if kinds is not None else None,
            proxies=_names(proxies, "proxy") if proxies is not None else None,
            parents=tuple(parents),
        )

    @property
    def needs_user(self) -> bool:
        """Whether this rule only matches a signed-in user (``authenticated``, ``users``, ``groups``)."""
        return bool(self.authenticated) or self.users is not None or self.groups is not None

    def matches_once_signed_in(self, context: MatchContext) -> bool:
        """
        Whether this rule would match the anonymous intent in ``context`` if
        the client signed in as some user it names: every condition but the
        user ones holds.  Only meaningful for rules that `needs_user`.
        """
        if not self.needs_user or self.action == "authenticate":
            return False
        intent = context.intent
        if self.kinds is not None and intent.kind not in self.kinds:
            return False
        if self.proxies is not None and intent.proxy not in self.proxies:
            return False
        if self.methods is not None and intent.method.upper() not in self.methods:
            return False
        if self.ports is not None and intent.port not in self.ports:
            return False
        if self.clients is not None and context.client not in self.clients:
            return False
        if self.hosts is not None and not self.hosts.matches(intent.host):
            return False
        if self.url_regex is not None and not any(
            u.search(intent.target) for u in self.url_regex
        ):
            return False
        if self.window is not None and not self.window.contains(context.now):
            return False
        return True

    def matches(self, context: MatchContext) -> bool:
        """Whether every condition of this rule holds for the intent in ``context``."""
        intent = context.intent
        if self.action == "authenticate" and intent.user is not None:
            return False
        if self.kinds is not None and intent.kind not in self.kinds:
            return False
        if self.proxies is not None and intent.proxy not in self.proxies:
            return False
        if self.methods is not None and intent.method.upper() not in self.methods:
            return False
        if self.ports is not None and intent.port not in self.ports:
            return False
        if self.authenticated is not None and (intent.user is not None) != self.authenticated:
            return False
        if self.users is not None and intent.user not in self.users:
            return False
        if self.groups is not None and self.groups.isdisjoint(intent.groups):
            return False
        if self.clients is not None and context.client not in self.clients:
            return False
        if self.hosts is not None and not self.hosts.matches(intent.host):
            return False
        if self.url_regex is not None and not any(
            u.search(intent.target) for u in self.url_regex
        ):
            return False
        if self.window is not None and not self.window.contains(context.now):
            return False
        return True


def parse_hosts(values: str | Iterable[str]) -> HostMatcher:
    """A host condition from patterns (see `HostPattern`)."""
    if isinstance(values, str):
        values = [values]
    return HostMatcher(parse_host_pattern(v) for v in values)


def parse_url_regex(values: str | Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """URL regular expressions, searched (not anchored) in ``intent.target``."""
    if isinstance(values, str):
        values = [values]
    out = []
    for value in values:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected a regular expression, got {value!r}")
        try:
            out.append(re.compile(value))
        except re.error as e:
            raise ValueError(f"{value!r} is not a valid regular expression ({e})") from None
    if not out:
        raise ValueError("no URL patterns given")
    return tuple(out)


def parse_methods(values: str | Iterable[str]) -> frozenset[str]:
    """
    Request methods, upper-cased: matching ignores case, so a rule on
    ``DELETE`` is not dodged by sending ``delete``.
    """
    if isinstance(values, str):
        values = [values]
    out = set()
    for value in values:
        if not isinstance(value, str) or not _METHOD.match(value):
            raise ValueError(f"{value!r} is not a request method such as GET or CONNECT")
        out.add(value.upper())
    if not out:
        raise ValueError("no methods given")
    return frozenset(out)


def parse_clients(values: str | Iterable[str]) -> NetworkSet:
    """Client networks from CIDR strings or bare addresses."""
    if isinstance(values, str):
        values = [values]
    networks = [parse_network(v) for v in values]
    if not networks:
        raise ValueError("no client networks given")
    return NetworkSet(networks)


def parse_kinds(values: str | Iterable[str]) -> frozenset[str]:
    """Intent kinds: ``http``, ``connect`` and/or ``tcp``."""
    if isinstance(values, str):
        values = [values]
    out = set()
    for value in values:
        if value not in KINDS:
            raise ValueError(f"{value!r} is not a kind; use {', '.join(KINDS)}")
        out.add(value)
    if not out:
        raise ValueError("no kinds given")
    return frozenset(out)


def _names(values: str | Iterable[str], what: str) -> frozenset[str]:
    if isinstance(values, str):
        values = [values]
    out = set()
    for value in values:
        if not isinstance(value, str) or not value:
            raise ValueError(f"expected {what} names, got {value!r}")
        out.add(value)
    if not out:
        raise ValueError(f"no {what} names given")
    return frozenset(out)
