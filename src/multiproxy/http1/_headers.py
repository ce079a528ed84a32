"""
An ordered list of header fields.

A proxy must keep field order and repeated fields exactly as they came, so
`Headers` is a list of ``(name, value)`` byte pairs, never a dict.  Names keep
the case they arrived in; every lookup takes a lower-case name and compares
case-insensitively.  The lower-case names are kept beside the pairs (the
parser hands them over, having computed them anyway), so a lookup is one
C-level list search rather than a Python loop lower-casing every name.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Headers:
    """An ordered, case-insensitive, multi-valued list of HTTP header fields."""

    __slots__ = ("_pairs", "_lower")

    def __init__(
        self, pairs: Iterable[tuple[bytes, bytes]] = (), lower: list[bytes] | None = None
    ) -> None:
        """
        @param lower: the lower-case names of ``pairs``, in order, if the
            caller has them already (they are trusted, not checked).
        """
        self._pairs: list[tuple[bytes, bytes]] = list(pairs)
        self._lower: list[bytes] = (
            [n.lower() for n, _ in self._pairs] if lower is None else lower
        )

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, name: bytes) -> bool:
        return name in self._lower

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._pairs == other._pairs

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"

    @property
    def pairs(self) -> list[tuple[bytes, bytes]]:
        """The fields, in order (a copy)."""
        return list(self._pairs)

    def copy(self) -> Headers:
        return Headers(self._pairs, self._lower[:])

    def has_any(self, names: frozenset[bytes]) -> bool:
        """Whether any field is called one of ``names`` (lower case): one C-level pass."""
        return not names.isdisjoint(self._lower)

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of field ``name`` (lower case), or ``default``."""
        lower = self._lower
        if name in lower:  # cheaper than catching index()'s ValueError on a miss
            return self._pairs[lower.index(name)][1]
        return default

    def get_all(self, name: bytes) -> list[bytes]:
        """Every value of field ``name`` (lower case), in order."""
        lower = self._lower
        count = lower.count(name)
        if count == 0:
            return []
        if count == 1:  # the usual case, without a Python-level loop
            return [self._pairs[lower.index(name)][1]]
        return [v for (_, v), n in zip(self._pairs, lower) if n == name]

    def combined(self, name: bytes) -> bytes | None:
        """All values of ``name`` joined with ``", "`` (RFC 9110 5.3), or None."""
        values = self.get_all(name)
        if not values:
            return None
        return b", ".join(values)

    def tokens(self, name: bytes) -> list[bytes]:
        """
        The elements of a comma-separated list field, lower-cased and stripped,
        empty elements dropped (RFC 9110 5.6.1).
        """
        if name not in self._lower:
            return []
        return list_tokens(self.get_all(name))

    def add(self, name: bytes, value: bytes) -> None:
        """Append a field."""
        self._pairs.append((name, value))
        self._lower.append(name.lower())

    def set(self, name: bytes, value: bytes) -> None:
        """
        Replace every field called ``name`` (in any case) with one field:
        the first one keeps its place and spelling and takes ``value``; with
        none, ``name: value`` is appended.
        """
        lname = name.lower()
        lower = self._lower
        if lname not in lower:
            self.add(name, value)
            return
        at = lower.index(lname)
        self._pairs[at] = (self._pairs[at][0], value)
        if lname in lower[at + 1 :]:
            pairs = self._pairs
            keep = [i for i, n in enumerate(lower) if i == at or n != lname]
            self._pairs = [pairs[i] for i in keep]
            self._lower = [lower[i] for i in keep]

    def remove(self, name: bytes) -> None:
        """Drop every field called ``name`` (lower case)."""
        if name in self._lower:
            self.remove_all((name,))

    def remove_all(self, names: Iterable[bytes]) -> None:
        """Drop every field whose lower-case name is in ``names``."""
        lower = self._lower
        keep = [i for i, n in enumerate(lower) if n not in names]
        if len(keep) != len(lower):
            pairs = self._pairs
            self._pairs = [pairs[i] for i in keep]
            self._lower = [lower[i] for i in keep]

    def without(self, names: frozenset[bytes] | set[bytes]) -> Headers:
        """A new `Headers` without the fields whose lower-case name is in ``names``."""
        pairs = self._pairs[:]
        lower = self._lower[:]
        if not names.isdisjoint(lower):
            # Usually one field goes (Connection): find it in C rather
            # than test every field in a Python loop.
            for name in names.intersection(lower):
                while name in lower:
                    at = lower.index(name)
                    del lower[at]
                    del pairs[at]
        return adopt(pairs, lower)


def adopt(pairs: list[tuple[bytes, bytes]], lower: list[bytes]) -> Headers:
    """
    A `Headers` made of these lists themselves, not copies: for a caller
    that has just built them (the reader, `Headers.without`) and lets them
    go.  ``lower`` must hold the lower-case names of ``pairs``, in order.
    """
    headers = _new(Headers)
    headers._pairs = pairs
    headers._lower = lower
    return headers


_new = object.__new__


def list_tokens(values: Iterable[bytes]) -> list[bytes]:
    """
    The elements of comma-separated list field values, lower-cased and
    stripped, empty elements dropped (RFC 9110 5.6.1).
    """
    out = []
    for value in values:
        for item in value.split(b","):
            item = item.strip(b" \t").lower()
            if item:
                out.append(item)
    return out
