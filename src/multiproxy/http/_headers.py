"""
An ordered list of header fields.

A proxy must keep field order and repeated fields exactly as they came, so
`Headers` is a list of ``(name, value)`` byte pairs, never a dict.  Names keep
the case they arrived in; every lookup takes a lower-case name and compares
case-insensitively.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


class Headers:
    """An ordered, case-insensitive, multi-valued list of HTTP header fields."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: Iterable[tuple[bytes, bytes]] = ()) -> None:
        self._pairs: list[tuple[bytes, bytes]] = list(pairs)

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        return iter(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, name: bytes) -> bool:
        for n, _ in self._pairs:
            if n.lower() == name:
                return True
        return False

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._pairs == other._pairs

    def __repr__(self) -> str:
        return f"Headers({self._pairs!r})"

    @property
    def pairs(self) -> list[tuple[bytes, bytes]]:
        """The fields, in order (the list itself: mutate with care)."""
        return self._pairs

    def copy(self) -> Headers:
        return Headers(self._pairs)

    def get(self, name: bytes, default: bytes | None = None) -> bytes | None:
        """The first value of field ``name`` (lower case), or ``default``."""
        for n, v in self._pairs:
            if n.lower() == name:
                return v
        return default

    def get_all(self, name: bytes) -> list[bytes]:
        """Every value of field ``name`` (lower case), in order."""
        return [v for n, v in self._pairs if n.lower() == name]

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
        out = []
        for n, v in self._pairs:
            if n.lower() == name:
                for item in v.split(b","):
                    item = item.strip(b" \t").lower()
                    if item:
                        out.append(item)
        return out

    def add(self, name: bytes, value: bytes) -> None:
        """Append a field."""
        self._pairs.append((name, value))

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every field called ``name`` (lower case) with one field."""
        self.remove(name)
        self._pairs.append((name, value))

    def remove(self, name: bytes) -> None:
        """Drop every field called ``name`` (lower case)."""
        self._pairs = [(n, v) for n, v in self._pairs if n.lower() != name]

    def remove_all(self, names: frozenset[bytes] | set[bytes]) -> None:
        """Drop every field whose lower-case name is in ``names``."""
        self._pairs = [(n, v) for n, v in self._pairs if n.lower() not in names]
