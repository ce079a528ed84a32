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

from multiproxy._interfaces import IPolicy
from multiproxy._values import Decision, Intent
from multiproxy.policy._hosts import glob_tail, host_suffixes, is_ip_literal
from multiproxy.policy._rules import MatchContext, Rule

__all__ = ["RuleIndex", "RuleSet"]

DEFAULT_RULE = "default"


class RuleIndex:
    """Maps a host to the ascending positions of the rules that could match it."""

    __slots__ = ("_exact", "_suffix", "_unindexed", "size")

    def __init__(self, rules: Sequence[Rule]) -> None:
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
        self.size = len(rules)

    def candidates(self, host: str) -> Iterator[int]:
        """Positions of rules that may match ``host``, ascending, each once."""
        lists = []
        if host:
            found = self._exact.get(host)
            if found:
                lists.append(found)
            if self._suffix and not is_ip_literal(host):
                get = self._suffix.get
                for parent in host_suffixes(host):
                    found = get(parent)
                    if found:
                        lists.append(found)
        if not lists:
            return iter(self._unindexed)
        if self._unindexed:
            lists.append(self._unindexed)
        if len(lists) == 1:
            return iter(lists[0])
        return _unique(heapq.merge(*lists))


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
    """

    def __init__(
        self, rules: Iterable[Rule] = (), *, default: str = "allow",
        clock: Callable[[], float], default_message: str | None = None,
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
        self._index = RuleIndex(self.rules)

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

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"<RuleSet {len(self.rules)} rules, default {self.default.action}>"
