"""
The ordered rule list and its host index.

First match wins.  So that judging a request does not grow with the number
of host rules, rules whose host condition is made of exact names and domain
suffixes (and globs with a literal parent domain, ``*.example.com``) are
filed under those names; a request looks up its host and each parent domain
(one dict lookup per label) to get the positions of the rules that could
match, merges them with the positions of the rules that have no indexable
host condition, and checks candidates in rule order.  The first candidate
whose conditions all hold is the first rule in the list that matches, exactly
as if every rule had been tried in turn.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence

from zope.interface import implementer

from multiproxy.pipeline._interfaces import IPolicy
from multiproxy.pipeline._values import Decision, Intent
from multiproxy.policy._hosts import glob_tail, is_ip_literal
from multiproxy.policy._rules import MatchContext, Rule

__all__ = ["RuleIndex", "RuleSet"]

DEFAULT_RULE = "default"


class RuleIndex:
    """
    Maps a host to the ascending positions of the rules that could match it.

    The answer for a host is remembered (up to ``cache_size`` hosts; the
    memory is dropped wholesale when full), since the same hosts come back
    again and again; a `RuleSet` never changes, so neither do the answers.
    """

    __slots__ = ("_exact", "_suffix", "_unindexed", "_merge_unindexed", "_cache", "_cache_size",
                 "size")

    def __init__(self, rules: Sequence[Rule], cache_size: int = 4096) -> None:
        exact: dict[str, list[int]] = {}
        suffix: dict[str, list[int]] = {}
        unindexed: list[int] = []
        for position, rule in enumerate(rules):
            keys = _index_keys(rule)
            if keys is None:
                unindexed.append(position)
                continue
            for kind, key in keys:
                table = exact if kind == "exact" else suffix
                entries = table.setdefault(key, [])
                if not entries or entries[-1] != position:
                    entries.append(position)
        self._exact = {k: tuple(v) for k, v in exact.items()}
        self._suffix = {k: tuple(v) for k, v in suffix.items()}
        self._unindexed = tuple(unindexed)
        # Few always-tried rules are folded into each host's remembered answer;
        # many are merged in lazily instead, to keep the memory small.
        self._merge_unindexed = len(unindexed) <= 64
        self._cache: dict[str, tuple[int, ...]] = {}
        self._cache_size = cache_size
        self.size = len(rules)

    def candidates(self, host: str) -> Iterable[int]:
        """Positions of rules that may match ``host``, ascending, each once."""
        found = self._cache.get(host)
        if found is None:
            found = self._lookup(host)
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[host] = found
        if self._merge_unindexed or not found:
            return found or self._unindexed
        return _unique(heapq.merge(found, self._unindexed))

    def _lookup(self, host: str) -> tuple[int, ...]:
        if not host:
            return ()
        found = []
        exact = self._exact.get(host)
        if exact:
            found.append(exact)
        if self._suffix and not is_ip_literal(host):
            get = self._suffix.get
            at = -1
            while True:  # the host, then each parent domain
                hit = get(host[at + 1:])
                if hit:
                    found.append(hit)
                at = host.find(".", at + 1)
                if at == -1:
                    break
        if not found:
            return ()
        if self._merge_unindexed and self._unindexed:
            found.append(self._unindexed)
        elif len(found) == 1:
            return found[0]
        return tuple(sorted(set().union(*found)))


def _unique(positions: Iterable[int]) -> Iterator[int]:
    last = -1
    for position in positions:
        if position != last:
            yield position
            last = position


def _index_keys(rule: Rule) -> list[tuple[str, str]] | None:
    """
    Where to file ``rule``: a list of (``exact``|``suffix``, name), or None when
    the rule must be tried for every host.  A glob ``*.example.com`` is filed
    under the suffix ``example.com``: every host it matches lies under it.
    """
    if rule.hosts is None:
        return None
    keys = []
    for pattern in rule.hosts.patterns:
        if pattern.kind in ("exact", "suffix"):
            keys.append((pattern.kind, pattern.value))
        elif pattern.kind == "glob" and (tail := glob_tail(pattern.value)) is not None:
            keys.append(("suffix", tail))
        else:
            return None
    return keys


@implementer(IPolicy)
class RuleSet:
    """
    An `IPolicy`: an ordered list of `Rule`s, first match wins, and a default
    action for intents no rule matches.

    ``clock`` returns the time in seconds since the epoch (``reactor.seconds``;
    ``task.Clock().seconds`` in tests) and is only called when a rule with a
    time window is checked.  ``intent.host`` must come from `normalise_host`.
    ``host_cache_size`` bounds how many hosts' index answers are remembered.
    """

    def __init__(
        self, rules: Iterable[Rule] = (), *, default: str = "allow",
        clock: Callable[[], float], default_message: str | None = None,
        host_cache_size: int = 4096,
    ) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        if default not in ("allow", "deny"):
            raise ValueError(f"the default action must be allow or deny, not {default!r}")
        seen: set[str] = set()
        for rule in self.rules:
            if rule.name in seen:
                raise ValueError(f"two rules are called {rule.name!r}; rule names must differ")
            if rule.name == DEFAULT_RULE:
                raise ValueError(f"{DEFAULT_RULE!r} is reserved for the default action")
            seen.add(rule.name)
        self.default = Decision(default, DEFAULT_RULE, default_message)  # type: ignore[arg-type]
        self.clock = clock
        self._index = RuleIndex(self.rules, host_cache_size)

    def with_clock(self, clock: Callable[[], float]) -> RuleSet:
        """The same rules (and index) reading time from ``clock``."""
        twin = object.__new__(RuleSet)
        twin.__dict__.update(self.__dict__)
        twin.clock = clock
        return twin

    def decide(self, intent: Intent) -> Decision:
        """The decision of the first rule that matches ``intent``, else the default."""
        rules = self.rules
        if not rules:
            return self.default
        context = MatchContext(intent, self.clock)
        for position in self._index.candidates(intent.host):
            rule = rules[position]
            if rule.matches(context):
                return rule.decision
        return self.default

    def sign_in_could_allow(self, intent: Intent) -> bool:
        """
        Whether signing in could turn this anonymous intent's refusal into an
        allow (so the proxy challenges with 407 rather than showing the deny
        page): an ``allow`` rule on ``authenticated``, ``users`` or ``groups``
        earlier than the deciding rule would match once the client is known,
        or the deciding rule itself is ``authenticated = false``.
        """
        if intent.user is not None:
            return False
        rules = self.rules
        context = MatchContext(intent, self.clock)
        for position in self._index.candidates(intent.host):
            rule = rules[position]
            if rule.action == "allow" and rule.matches_once_signed_in(context):
                return True
            if rule.matches(context):
                return rule.authenticated is False and rule.action != "allow"
        return False

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"<RuleSet {len(self.rules)} rules, default {self.default.action}>"
