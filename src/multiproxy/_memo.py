"""
The process-wide memo tables, in one place.

Work on the request path that gives the same answer for the same input
again and again (a header line's name and value, a status line, a host's
parsed form, a Cache-Control value's directives, a client address's
network) is remembered in a table made here: a `Table` (a dict that
empties itself when full), a `Members` (the same as a set: values already
found valid) or a function wrapped by `cached` (an LRU cache).
Each is bounded, so no variety of input, hostile or not, can grow one or
pin it full; `clear` empties them all (tests, and a reload that changes
what an answer depends on), and `sizes` says how full each is.

Not here: per-instance caches (a cache store's entries, the Redis store's
hot keys) and per-connection state, which live and die with their owner.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

__all__ = ["Members", "Table", "cached", "clear", "members", "sizes", "table"]

_F = TypeVar("_F", bound=Callable[..., Any])

_TABLES: dict[str, Table | Members] = {}
_FUNCTIONS: dict[str, Any] = {}


class Table(dict):
    """
    A bounded memo: look it up as a dict (``get``, ``in``, ``[]``, bound
    methods included: nothing is added to a lookup); fill it with
    `remember`, which empties it first when it is full.
    """

    __slots__ = ("name", "limit")

    def __init__(self, name: str, limit: int) -> None:
        super().__init__()
        self.name = name
        self.limit = limit

    def remember(self, key: Any, value: Any) -> Any:
        """Store ``value`` under ``key`` (emptying the table first when full); return it."""
        if len(self) >= self.limit:
            self.clear()
        self[key] = value
        return value


class Members(set):
    """A bounded set of values already found valid: `remember` empties it first when full."""

    __slots__ = ("name", "limit")

    def __init__(self, name: str, limit: int) -> None:
        super().__init__()
        self.name = name
        self.limit = limit

    def remember(self, value: Any) -> None:
        if len(self) >= self.limit:
            self.clear()
        self.add(value)


def _register(name: str, registry: dict, thing: Any) -> None:
    if name in _TABLES or name in _FUNCTIONS:
        raise ValueError(f"a memo table named {name!r} exists already")
    registry[name] = thing


def table(name: str, limit: int) -> Table:
    """A new `Table` of at most ``limit`` entries, registered as ``name``."""
    memo = Table(name, limit)
    _register(name, _TABLES, memo)
    return memo


def members(name: str, limit: int) -> Members:
    """A new `Members` of at most ``limit`` values, registered as ``name``."""
    memo = Members(name, limit)
    _register(name, _TABLES, memo)
    return memo


def cached(name: str, limit: int) -> Callable[[_F], _F]:
    """Decorate a pure function with an LRU cache of ``limit`` entries, registered as ``name``."""

    def wrap(function: _F) -> _F:
        wrapped = lru_cache(maxsize=limit)(function)
        _register(name, _FUNCTIONS, wrapped)
        return wrapped  # type: ignore[return-value]

    return wrap


def clear() -> None:
    """Empty every memo table and cache."""
    for memo in _TABLES.values():
        memo.clear()
    for function in _FUNCTIONS.values():
        function.cache_clear()


def sizes() -> dict[str, tuple[int, int]]:
    """Each table's and cache's (entries, limit), by name."""
    found = {name: (len(memo), memo.limit) for name, memo in _TABLES.items()}
    for name, function in _FUNCTIONS.items():
        info = function.cache_info()
        found[name] = (info.currsize, info.maxsize)
    return found
