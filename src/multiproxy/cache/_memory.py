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

    __slots__ = ("body", "cost", "meta", "variant")

    def __init__(self, meta: StoredResponse, body: bytes) -> None:
        self.meta = meta
        self.body = body
        self.cost = len(body) + meta_size(meta)
        self.variant = meta.variant

    def open_body(self, start: int = 0, length: int | None = None) -> BytesReader:
        return BytesReader(self.body, start, length)


@implementer(IEntryWriter)
class _MemoryWriter:
    __slots__ = ("_chunks", "_expected", "_limit", "_meta", "_store", "abandoned", "written")

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

    def __init__(
        self, max_size: int = 64 * 1024 * 1024, max_object_size: int = 8 * 1024 * 1024
    ) -> None:
        self.max_size = max_size
        self.max_object_size = max_object_size
        self.size = 0
        self.count = 0
        # primary key -> its entry, or {variant id -> entry} when the URL has
        # several (most have one: no dict for them), least recently used first
        self._entries: OrderedDict[bytes, MemoryEntry | dict[bytes, MemoryEntry]] = OrderedDict()

    def _variants(self, key: bytes) -> dict[bytes, MemoryEntry]:
        slot = self._entries.get(key)
        if slot is None:
            return {}
        if type(slot) is MemoryEntry:
            return {slot.variant: slot}
        return slot  # type: ignore[return-value]

    def _set_variants(self, key: bytes, variants: dict[bytes, MemoryEntry]) -> None:
        if not variants:
            self._entries.pop(key, None)
        elif len(variants) == 1:
            self._entries[key] = next(iter(variants.values()))
        else:
            self._entries[key] = variants

    def lookup(self, key: bytes) -> list[MemoryEntry]:
        slot = self._entries.get(key)
        if slot is None:
            return []
        self._entries.move_to_end(key)
        if type(slot) is MemoryEntry:
            return [slot]
        return list(slot.values())  # type: ignore[union-attr]

    def begin(
        self, meta: StoredResponse, expected_length: int | None = None
    ) -> _MemoryWriter | None:
        if expected_length is not None and expected_length > min(
            self.max_object_size, self.max_size
        ):
            return None
        return _MemoryWriter(self, meta, expected_length)

    def update(self, entry: MemoryEntry, meta: StoredResponse) -> MemoryEntry | None:
        if self._variants(entry.meta.url).get(entry.variant) is not entry:
            return None
        return self._insert(MemoryEntry(meta.with_length(len(entry.body)), entry.body))

    def _insert(self, entry: MemoryEntry) -> MemoryEntry:
        key = entry.meta.url
        variants = self._variants(key)
        if variants:
            names = entry.meta.vary_names
            for vid, old in list(variants.items()):
                # Same secondary key: replaced.  Different Vary: the resource
                # changed what it varies on, so older variants are obsolete.
                if vid == entry.variant or old.meta.vary_names != names:
                    del variants[vid]
                    self.size -= old.cost
                    self.count -= 1
        variants[entry.variant] = entry
        self._set_variants(key, variants)
        self._entries.move_to_end(key)
        self.size += entry.cost
        self.count += 1
        self._evict()
        return entry

    def _evict(self) -> None:
        while self.size > self.max_size and self._entries:
            key = next(iter(self._entries))
            self.remove(key)

    def remove(self, key: bytes) -> int:
        variants = self._variants(key)
        if not variants:
            return 0
        del self._entries[key]
        for old in variants.values():
            self.size -= old.cost
            self.count -= 1
        return len(variants)

    def remove_entry(self, entry: MemoryEntry) -> None:
        key = entry.meta.url
        variants = self._variants(key)
        if variants.get(entry.variant) is not entry:
            return
        del variants[entry.variant]
        self.size -= entry.cost
        self.count -= 1
        self._set_variants(key, variants)

    def clear(self) -> None:
        self._entries.clear()
        self.size = 0
        self.count = 0

    def close(self) -> None:
        self.clear()
