"""
A consistent-hash ring with virtual nodes (pure: no reactor, no I/O).

Each member is placed on the ring at ``vnodes * weight`` points; a key maps
to the first point clockwise from its own hash.  When a member joins or
leaves, only the keys between its points and their predecessors move, about
``1/n`` of them, and every other key keeps its member.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Hashable, Sequence
from typing import Generic, TypeVar

__all__ = ["HashRing", "ring_hash"]

M = TypeVar("M")


def ring_hash(data: bytes) -> int:
    """A stable 64-bit hash (the same across processes and runs, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


class HashRing(Generic[M]):
    """
    Maps keys to members so that membership changes remap few keys.

    @param members: the members, with their identity (``str(identity)``
        places the member's points, so it must be stable across restarts:
        a backend's configured address, not its position).
    @param vnodes: points per unit of weight; more points spread load more
        evenly (160 gives a few percent of imbalance).
    """

    def __init__(
        self,
        members: Sequence[tuple[Hashable, M, int]],
        vnodes: int = 160,
    ) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be at least 1")
        points: list[tuple[int, int]] = []
        self._members: list[M] = []
        for index, (identity, member, weight) in enumerate(members):
            self._members.append(member)
            label = str(identity).encode("utf-8", "surrogateescape")
            for replica in range(max(1, weight) * vnodes):
                points.append((ring_hash(label + b"#" + str(replica).encode()), index))
        points.sort()
        self._hashes = [h for h, _ in points]
        self._owners = [i for _, i in points]

    def __len__(self) -> int:
        return len(self._members)

    def lookup(self, key: bytes) -> M:
        """The member that owns ``key``."""
        if not self._hashes:
            raise LookupError("the ring has no members")
        position = bisect_right(self._hashes, ring_hash(key))
        if position == len(self._hashes):
            position = 0
        return self._members[self._owners[position]]
