"""
The in-memory store: least recently used eviction under a byte budget.

This is the default store.  Bodies are kept as single ``bytes`` objects
(joined once, on commit) so a hit serves them without copying.
"""

from __future__ import annotations

from collections import OrderedDict

from zope.interface import implementer

from multiproxy.cache._interfaces import ICacheEntry, ICacheStore, IEntryWriter
from multiproxy.cache._store import BytesReader, StoredResponse, meta_size


@implementer(ICacheEntry)
class MemoryEntry:
    """A stored response held in memory."""

    __slots__ = ("meta", "body", "cost")

    def __init__(self, meta: StoredResponse, body: bytes) -> None:
        self.meta = meta
        self.body = body
        self.cost = len(body) + meta_size(meta)

    def open_body(self, start: int = 0, length: int | None = None) -> BytesReader:
        return BytesReader(self.body, start, length)


@implementer(IEntryWriter)
class _MemoryWriter:
    __slots__ = ("_store", "_meta", "_expected", "_chunks", "written", "abandoned", "_limit")

    def __init__(self, store: MemoryStore, meta: StoredResponse, expected: int | None) -> None:
        self._store = store
        self._meta = meta
        self._expected = expected
        self._chunks: list[bytes] = []
        self._limit = min(store.max_object_size, store.max_size)
        self.written = 0
        self.abandoned = False

    def write(self, data: bytes) -> bool:
        if self.abandoned:
            return False
        self.written += len(data)
        if self.written > self._limit:
            self.abandon()
            return False
        self._chunks.append(data)
        return True

    def commit(self) -> MemoryEntry | None:
        if self.abandoned:
            return None
        if self._expected is not None and self.written != self._expected:
            self.abandon()
            return None
        chunks, self._chunks = self._chunks, []
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.abandoned = True  # nothing more may be written
        return self._store._insert(MemoryEntry(self._meta.with_length(len(body)), body))

    def abandon(self) -> None:
        self.abandoned = True
        self._chunks = []


@implementer(ICacheStore)
class MemoryStore:
    """
    Stored responses in memory, bounded by ``max_size`` bytes (bodies plus
    an estimate of the metadata), evicting the least recently used URL.
    """

    def __init__(self, max_size: int = 64 * 1024 * 1024, max_object_size: int = 8 * 1024 * 1024) -> None:
        self.max_size = max_size
        self.max_object_size = max_object_size
        self.size = 0
        self.count = 0
        # primary key -> {variant id -> entry}, in least-recently-used order
        self._entries: OrderedDict[bytes, dict[bytes, MemoryEntry]] = OrderedDict()

    def lookup(self, key: bytes) -> list[MemoryEntry]:
        variants = self._entries.get(key)
        if variants is None:
            return []
        self._entries.move_to_end(key)
        return list(variants.values())

    def begin(self, meta: StoredResponse, expected_length: int | None = None) -> _MemoryWriter | None:
        if expected_length is not None and expected_length > min(self.max_object_size, self.max_size):
            return None
        return _MemoryWriter(self, meta, expected_length)

    def update(self, entry: MemoryEntry, meta: StoredResponse) -> MemoryEntry | None:
        variants = self._entries.get(entry.meta.url)
        if variants is None or variants.get(entry.meta.variant) is not entry:
            return None
        return self._insert(MemoryEntry(meta.with_length(len(entry.body)), entry.body))

    def _insert(self, entry: MemoryEntry) -> MemoryEntry:
        meta = entry.meta
        key = meta.url
        variants = self._entries.get(key)
        if variants is None:
            variants = self._entries[key] = {}
        else:
            self._entries.move_to_end(key)
            names = meta.vary_names
            for vid, old in list(variants.items()):
                # Same secondary key: replaced.  Different Vary: the resource
                # changed what it varies on, so older variants are obsolete.
                if vid == meta.variant or old.meta.vary_names != names:
                    del variants[vid]
                    self.size -= old.cost
                    self.count -= 1
        variants[meta.variant] = entry
        self.size += entry.cost
        self.count += 1
        self._evict()
        return entry

    def _evict(self) -> None:
        while self.size > self.max_size and self._entries:
            _, variants = self._entries.popitem(last=False)
            for old in variants.values():
                self.size -= old.cost
                self.count -= 1

    def remove(self, key: bytes) -> int:
        variants = self._entries.pop(key, None)
        if not variants:
            return 0
        for old in variants.values():
            self.size -= old.cost
            self.count -= 1
        return len(variants)

    def remove_entry(self, entry: MemoryEntry) -> None:
        variants = self._entries.get(entry.meta.url)
        if variants is None or variants.get(entry.meta.variant) is not entry:
            return
        del variants[entry.meta.variant]
        self.size -= entry.cost
        self.count -= 1
        if not variants:
            del self._entries[entry.meta.url]

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0
        self.count = 0

    def close(self) -> None:
        self.clear()
