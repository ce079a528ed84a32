"""
The Redis store: stored responses shared by every multiproxy host and
worker that points at the same Redis and key prefix.

Layout under the prefix ``P`` (``h`` is the SHA-1 of the primary key)::

    P m:<h>          hash: variant id -> record (one per secondary key)
    P c:<gen>:<n>    body chunk n >= 1 of the write identified by gen
    P l:<h>          short lock held by the host fetching a miss

A record is ``"MPR1" | gen (16) | body length (u64) | chunk size (u32) |
body crc32 (u32) | expiry (f64) | meta length (u32) | crc32 (u32)``, then
the encoded `StoredResponse` and the body's first chunk; the crc covers
everything before and after it.  A chunk is ``"MPC1" | crc32 | data``.
Chunks are written first and the record last, so a record is only there
once its body is; a record or chunk that does not check out (torn, foreign,
another write's) is ignored and never served.  Every key expires with the
response's freshness lifetime plus its stale window.

Redis is asynchronous and the store contract is synchronous, so the store
loads a key's records in `prepare` (one HGETALL, a Deferred the fetcher
waits for, at most the reply timeout) and `lookup` returns what was loaded.
Bodies stream: a reader holds the first chunk and at most four more it has
asked for ahead, and says "not yet" (`read` returns None, `wait` calls back)
while a chunk is on its way.  When Redis is down the store is empty and
refuses writes: the cache is bypassed.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import zlib
from collections import OrderedDict
from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from multiproxy._redislink import RedisLink
from multiproxy.cache._freshness import current_age
from multiproxy.cache._interfaces import IBodyReader, ICacheEntry, ICacheStore, IEntryWriter
from multiproxy.cache._store import CorruptEntry, StoredResponse, decode_meta, encode_meta

_log = Logger()

_RECORD = struct.Struct(">4s16sQIIdII")
_MAGIC = b"MPR1"
_CHUNK_MAGIC = b"MPC1"
_CHUNK_HEAD = struct.Struct(">4sI")
CHUNK_SIZE = 256 * 1024
_READ_AHEAD = 4
_LOADED_KEYS = 256
_MAX_META = 1024 * 1024
_MEMO_LIMIT = 64 * 1024


def _digest(key: bytes) -> bytes:
    return hashlib.sha1(key).hexdigest().encode("ascii")


def encode_record(meta: StoredResponse, gen: bytes, chunk_size: int, body_crc: int,
                  expires: float, first: bytes) -> bytes:
    """The bytes stored for one response (see the module docstring)."""
    meta_raw = encode_meta(meta)
    head = _RECORD.pack(_MAGIC, gen, meta.body_length, chunk_size, body_crc, expires,
                        len(meta_raw), 0)
    crc = zlib.crc32(first, zlib.crc32(meta_raw, zlib.crc32(head[:-4])))
    return head[:-4] + struct.pack(">I", crc) + meta_raw + first


def decode_record(raw: bytes) -> tuple[StoredResponse, bytes, int, int, float, bytes]:
    """(meta, gen, chunk size, body crc, expiry, first chunk); ValueError if it does not check out."""
    if len(raw) < _RECORD.size:
        raise ValueError("short record")
    magic, gen, body_len, chunk_size, body_crc, expires, meta_len, crc = _RECORD.unpack_from(raw)
    if magic != _MAGIC or meta_len > _MAX_META or chunk_size <= 0:
        raise ValueError("not a multiproxy record")
    meta_raw = raw[_RECORD.size:_RECORD.size + meta_len]
    first = raw[_RECORD.size + meta_len:]
    if len(meta_raw) != meta_len or len(first) != min(body_len, chunk_size):
        raise ValueError("record length does not match its header")
    if zlib.crc32(first, zlib.crc32(meta_raw, zlib.crc32(raw[:_RECORD.size - 4]))) != crc:
        raise ValueError("record checksum")
    try:
        meta = decode_meta(meta_raw)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"record meta: {e}") from None
    if meta.body_length != body_len:
        raise ValueError("body length mismatch")
    return meta, gen, chunk_size, body_crc, expires, first


def _encode_chunk(data: bytes) -> bytes:
    return _CHUNK_HEAD.pack(_CHUNK_MAGIC, zlib.crc32(data)) + data


def _decode_chunk(raw, expected: int) -> bytes:
    if not isinstance(raw, bytes) or len(raw) != _CHUNK_HEAD.size + expected:
        raise ValueError("chunk missing or of the wrong length")
    magic, crc = _CHUNK_HEAD.unpack_from(raw)
    data = raw[_CHUNK_HEAD.size:]
    if magic != _CHUNK_MAGIC or zlib.crc32(data) != crc:
        raise ValueError("chunk checksum")
    return data


@implementer(ICacheEntry)
class RedisEntry:
    """A stored response in Redis, as loaded by `RedisStore.prepare`."""

    __slots__ = ("_store", "body_crc", "chunk_size", "expires", "first", "gen", "meta")

    def __init__(self, store: RedisStore, meta: StoredResponse, gen: bytes, chunk_size: int,
                 body_crc: int, expires: float, first: bytes) -> None:
        self._store = store
        self.meta = meta
        self.gen = gen
        self.chunk_size = chunk_size
        self.body_crc = body_crc
        self.expires = expires
        self.first = first

    @property
    def chunks(self) -> int:
        """How many chunks the body has (the first is in the record)."""
        return max(1, math.ceil(self.meta.body_length / self.chunk_size))

    def open_body(self, start: int = 0, length: int | None = None) -> RedisReader:
        return RedisReader(self._store, self, start, length)


@implementer(IBodyReader)
class RedisReader:
    """
    Streams a byte range of a body from Redis, chunk by chunk, asking for
    at most `_READ_AHEAD` chunks ahead.  `read` returns None while the next
    chunk is on its way; `wait` registers what to call when it is here.
    """

    def __init__(self, store: RedisStore, entry: RedisEntry, start: int, length: int | None):
        total = entry.meta.body_length
        start = min(max(0, start), total)
        end = total if length is None else min(total, start + length)
        self._store = store
        self._entry = entry
        self._pos = start
        self._end = end
        self.length = end - start
        # Every chunk is checked as it arrives (the first with its record), so
        # the whole body needs no second pass: crc32 was a tenth of a 1 MiB hit.
        self._chunks: dict[int, bytes] = {0: entry.first}
        self._asked: dict[int, defer.Deferred] = {}
        self._failed: str | None = None
        self._waiter: Callable[[], None] | None = None
        self._closed = False
        self._ask_ahead()

    def ready(self) -> bool:
        """True when every byte of the range is already here."""
        size = self._entry.chunk_size
        return self._end <= size or self.length == 0

    def read(self, size: int) -> bytes | None:
        if self._failed is not None:
            self._fail_now()
        if self._pos >= self._end or self._closed:
            return b""
        csize = self._entry.chunk_size
        n, offset = divmod(self._pos, csize)
        chunk = self._chunks.get(n)
        if chunk is None:
            self._ask_ahead()
            if self._failed is not None:
                self._fail_now()
            return None
        stop = min(len(chunk), offset + size, self._end - n * csize)
        data = chunk if offset == 0 and stop == len(chunk) else chunk[offset:stop]
        self._pos += len(data)
        if self._pos >= (n + 1) * csize or self._pos >= self._end:
            del self._chunks[n]
        self._ask_ahead()
        return data

    def wait(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the next chunk has arrived (or failed)."""
        self._waiter = callback

    def _fail_now(self):
        why, self._failed = self._failed, None
        self.close()
        self._store._discard(self._entry, why)
        raise CorruptEntry(f"cached body of {self._entry.meta.url!r}: {why}")

    def _ask_ahead(self) -> None:
        if self._closed:
            return
        csize = self._entry.chunk_size
        first = self._pos // csize
        last = min(self._entry.chunks, first + _READ_AHEAD + 1, math.ceil(self._end / csize))
        store, gen = self._store, self._entry.gen
        for n in range(max(1, first), last):
            if n in self._chunks or n in self._asked:
                continue
            hot = store.hot_chunk(gen, n)
            if hot is not None:
                self._chunks[n] = hot  # checked when it arrived, as every chunk is
                continue
            expected = min(csize, self._entry.meta.body_length - n * csize)
            d = self._store._link.call("GET", self._store._chunk_key(self._entry.gen, n))
            self._asked[n] = d
            d.addCallbacks(self._arrived, self._lost, callbackArgs=(n, expected),
                           errbackArgs=(n,))

    def _arrived(self, raw, n: int, expected: int) -> None:
        self._asked.pop(n, None)
        if self._closed:
            return
        try:
            chunk = self._chunks[n] = _decode_chunk(raw, expected)
        except ValueError as e:
            self._failed = f"chunk {n}: {e}"
        else:
            self._store.keep_hot(self._entry.gen, n, chunk)
        self._wake()

    def _lost(self, failure, n: int) -> None:
        self._asked.pop(n, None)
        if not self._closed:
            self._failed = f"chunk {n}: {failure.getErrorMessage()}"
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter()

    def close(self) -> None:
        self._closed = True
        self._chunks = {}
        self._waiter = None


@implementer(IEntryWriter)
class _RedisWriter:
    def __init__(self, store: RedisStore, meta: StoredResponse, expected: int | None) -> None:
        self._store = store
        self._meta = meta
        self._expected = expected
        self._limit = min(store.max_object_size, store.max_size)
        self._gen = os.urandom(8).hex().encode("ascii")
        self._ttl_ms = store._ttl_ms(meta)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._first: bytes | None = None
        self._next = 1
        self._pending: list[defer.Deferred] = []
        self._failed = False
        self._crc = 0
        self.written = 0
        self.abandoned = False

    def write(self, data: bytes) -> bool:
        if self.abandoned:
            return False
        if self._failed:
            self.abandon()
            return False
        self.written += len(data)
        if self.written > self._limit:
            self.abandon()
            return False
        self._crc = zlib.crc32(data, self._crc)
        self._buffer.append(data)
        self._buffered += len(data)
        size = CHUNK_SIZE
        if self._buffered >= size:
            joined = b"".join(self._buffer)
            cut = len(joined) - len(joined) % size
            for i in range(0, cut, size):
                self._emit(joined[i:i + size])
            self._buffer = [joined[cut:]] if cut < len(joined) else []
            self._buffered = len(joined) - cut
        return True

    def _emit(self, chunk: bytes) -> None:
        if self._first is None:
            self._first = chunk
            return
        key = self._store._chunk_key(self._gen, self._next)
        self._next += 1
        d = self._store._link.call("SET", key, _encode_chunk(chunk), "PX", self._ttl_ms)
        d.addErrback(self._chunk_failed)
        self._pending.append(d)

    def _chunk_failed(self, failure) -> None:
        self._failed = True

    def commit(self) -> RedisEntry | None:
        if self.abandoned:
            return None
        if self._failed or (self._expected is not None and self.written != self._expected):
            self.abandon()
            return None
        if self._buffer:
            self._emit(b"".join(self._buffer))
            self._buffer = []
        self.abandoned = True
        meta = self._meta.with_length(self.written)
        store = self._store
        expires = store.clock() + self._ttl_ms / 1000.0
        entry = RedisEntry(store, meta, self._gen, CHUNK_SIZE, self._crc, expires,
                           self._first or b"")
        record = encode_record(meta, self._gen, CHUNK_SIZE, self._crc, expires, entry.first)
        ttl_ms = self._ttl_ms
        failed = lambda: self._failed  # noqa: E731

        def publish(_results) -> None:
            if failed():
                return
            store._publish(meta.url, meta.variant, record, ttl_ms)

        defer.gatherResults(self._pending).addCallback(publish).addErrback(lambda _f: None)
        self._pending = []
        return entry

    def abandon(self) -> None:
        if self.abandoned:
            return
        self.abandoned = True
        self._buffer = []
        self._first = None


@implementer(ICacheStore)
class RedisStore:
    """
    Stored responses in Redis under ``prefix``, shared by every process
    using the same Redis and prefix.  ``max_size`` bounds what this store
    adds: it stores nothing new while Redis reports more than ``max_size``
    bytes of memory in use (Redis's own ``maxmemory`` bounds it for good).
    ``stale_window`` is how long past its freshness an entry is kept for
    stale serving, on top of the response's own stale-while-revalidate and
    stale-if-error.
    """

    def __init__(
        self,
        link: RedisLink,
        prefix: bytes = b"multiproxy:",
        max_size: int = 64 * 1024 * 1024,
        max_object_size: int = 8 * 1024 * 1024,
        stale_window: float = 0.0,
        lock_timeout: float = 5.0,
        memory_poll: float = 5.0,
        hot_size: int = 16 * 1024 * 1024,
    ) -> None:
        self._link = link
        self.prefix = prefix
        self.max_size = max_size
        self.max_object_size = max_object_size
        self.stale_window = stale_window
        self.lock_timeout = lock_timeout
        self.clock = link.reactor.seconds
        self.size = 0
        self.count = 0
        self._loaded: OrderedDict[bytes, list[RedisEntry]] = OrderedDict()
        # record header (its generation and checksum) -> the decoded record:
        # a hot record is decoded once, not on every hit
        self._decoded: OrderedDict[bytes, tuple] = OrderedDict()
        # (write generation, chunk number) -> chunk: body chunks this process
        # read lately.  A generation names one write and its chunks never
        # change, and every hit reads the record first, which says which
        # generation is current: a chunk kept here is never stale, and one
        # of a replaced write just ages out.
        self.hot_size = hot_size
        self._hot: OrderedDict[tuple[bytes, int], bytes] = OrderedDict()
        self._hot_bytes = 0
        self._poll = None
        self._memory_poll = memory_poll
        self._poll_memory()

    def hot_chunk(self, gen: bytes, n: int) -> bytes | None:
        """Chunk ``n`` of write ``gen`` if this process read it lately."""
        chunk = self._hot.get((gen, n))
        if chunk is not None:
            self._hot.move_to_end((gen, n))
        return chunk

    def keep_hot(self, gen: bytes, n: int, chunk: bytes) -> None:
        """Keep a chunk just read (least recently used ones go past ``hot_size``)."""
        if len(chunk) > self.hot_size // 8 or (gen, n) in self._hot:
            return
        self._hot[(gen, n)] = chunk
        self._hot_bytes += len(chunk)
        while self._hot_bytes > self.hot_size:
            _, old = self._hot.popitem(last=False)
            self._hot_bytes -= len(old)

    @property
    def available(self) -> bool:
        """True while Redis answers (else the cache is bypassed)."""
        return self._link.up

    # -- keys ------------------------------------------------------------------

    def _meta_key(self, key: bytes) -> bytes:
        return self.prefix + b"m:" + _digest(key)

    def _chunk_key(self, gen: bytes, n: int) -> bytes:
        return self.prefix + b"c:" + gen + b":" + str(n).encode("ascii")

    def _lock_key(self, key: bytes) -> bytes:
        return self.prefix + b"l:" + _digest(key)

    def _ttl_ms(self, meta: StoredResponse) -> int:
        now = self.clock()
        age = current_age(meta.age_value, meta.date_value, meta.request_time,
                          meta.response_time, now)
        window = max(self.stale_window, meta.stale_while_revalidate, meta.stale_if_error)
        return max(1000, int((meta.lifetime - age + window) * 1000))

    # -- the asynchronous part ---------------------------------------------------

    def prepare(self, key: bytes) -> defer.Deferred | None:
        """
        Load the stored responses for ``key`` so `lookup` can return them;
        None when there is nothing to wait for (Redis is down: a miss).
        The Deferred never fails and fires within the reply timeout.
        """
        if not self._link.up:
            self._loaded.pop(key, None)
            return None
        d = self._link.call("HGETALL", self._meta_key(key))
        d.addCallbacks(self._loaded_records, self._load_failed, callbackArgs=(key,),
                       errbackArgs=(key,))
        return d

    def _loaded_records(self, reply, key: bytes) -> None:
        entries = []
        if isinstance(reply, list):
            reply = dict(zip(reply[0::2], reply[1::2]))
        if isinstance(reply, dict):
            now = self.clock()
            for variant, raw in reply.items():
                try:
                    meta, gen, csize, crc, expires, first = self._decode(raw)
                except ValueError as e:
                    _log.info("cache: ignoring a value under {key} in redis: {error}",
                              key=self._meta_key(key), error=e)
                    continue
                if meta.url != key or meta.variant != variant or expires <= now:
                    continue
                entries.append(RedisEntry(self, meta, gen, csize, crc, expires, first))
        if len(entries) > 1:
            # Only variants with the newest response's Vary are current.
            newest = max(entries, key=lambda e: e.meta.response_time)
            entries = [e for e in entries if e.meta.vary_names == newest.meta.vary_names]
        self._remember(key, entries)

    def _decode(self, raw: bytes) -> tuple:
        head = raw[:_RECORD.size]
        memo = self._decoded.get(head)
        if memo is not None and memo[0] == len(raw):
            return memo[1]
        record = decode_record(raw)
        if len(raw) > _MEMO_LIMIT:
            return record
        self._decoded[head] = (len(raw), record)
        while len(self._decoded) > _LOADED_KEYS:
            self._decoded.popitem(last=False)
        return record

    def _load_failed(self, failure, key: bytes) -> None:
        self._loaded.pop(key, None)

    def _remember(self, key: bytes, entries: list[RedisEntry]) -> None:
        self._loaded.pop(key, None)
        self._loaded[key] = entries
        while len(self._loaded) > _LOADED_KEYS:
            self._loaded.popitem(last=False)

    def lock(self, key: bytes) -> defer.Deferred:
        """
        Try to become the one host fetching ``key`` (SET NX PX): a Deferred
        True when this process should fetch (it holds the lock, or Redis
        cannot arbitrate), False when another holds it.
        """
        if not self._link.up:
            return defer.succeed(True)
        d = self._link.call("SET", self._lock_key(key), b"1", "NX", "PX",
                            int(self.lock_timeout * 1000))
        d.addCallbacks(lambda reply: reply is not None, lambda _f: True)
        return d

    def unlock(self, key: bytes) -> None:
        """Give up the fetch lock for ``key``."""
        self._fire("DEL", self._lock_key(key))

    def _publish(self, key: bytes, variant: bytes, record: bytes, ttl_ms: int) -> None:
        mkey = self._meta_key(key)
        self._fire("HSET", mkey, variant, record)
        self._fire("PEXPIRE", mkey, ttl_ms)
        self.count += 1

    def _fire(self, *command) -> None:
        self._link.call(*command).addErrback(lambda _f: None)

    def _poll_memory(self) -> None:
        self._poll = None
        if self._link.closed:
            return
        if self._link.up:
            self._link.call("INFO", "memory").addCallbacks(self._memory, lambda _f: None)
        self._poll = self._link.reactor.callLater(self._memory_poll, self._poll_memory)

    def _memory(self, reply) -> None:
        for line in bytes(reply).splitlines():
            if line.startswith(b"used_memory:"):
                self.size = int(line.split(b":", 1)[1])

    # -- ICacheStore ---------------------------------------------------------------

    def lookup(self, key: bytes) -> list[RedisEntry]:
        entries = self._loaded.get(key)
        if not entries:
            return []
        now = self.clock()
        return [e for e in entries if e.expires > now]

    def begin(self, meta: StoredResponse, expected_length: int | None = None):
        if not self._link.up or self.size > self.max_size:
            return None
        if expected_length is not None and expected_length > min(
            self.max_object_size, self.max_size
        ):
            return None
        return _RedisWriter(self, meta, expected_length)

    def update(self, entry: RedisEntry, meta: StoredResponse) -> RedisEntry | None:
        if not self._link.up:
            return None
        meta = meta.with_length(entry.meta.body_length)
        ttl_ms = self._ttl_ms(meta)
        expires = self.clock() + ttl_ms / 1000.0
        for n in range(1, entry.chunks):
            self._fire("PEXPIRE", self._chunk_key(entry.gen, n), ttl_ms)
        record = encode_record(meta, entry.gen, entry.chunk_size, entry.body_crc, expires,
                               entry.first)
        self._publish(meta.url, meta.variant, record, ttl_ms)
        new = RedisEntry(self, meta, entry.gen, entry.chunk_size, entry.body_crc, expires,
                         entry.first)
        loaded = self._loaded.get(meta.url)
        if loaded is not None:
            self._loaded[meta.url] = [e for e in loaded if e.meta.variant != meta.variant] + [new]
        return new

    def remove(self, key: bytes) -> int:
        entries = self._loaded.pop(key, [])
        self._fire("DEL", self._meta_key(key))
        for entry in entries:
            self._drop_chunks(entry)
        return len(entries)

    def remove_entry(self, entry: RedisEntry) -> None:
        key = entry.meta.url
        loaded = self._loaded.get(key)
        if loaded is not None:
            self._loaded[key] = [e for e in loaded if e is not entry]
        self._fire("HDEL", self._meta_key(key), entry.meta.variant)
        self._drop_chunks(entry)

    def _drop_chunks(self, entry: RedisEntry) -> None:
        if entry.chunks > 1:
            self._fire("DEL", *[self._chunk_key(entry.gen, n) for n in range(1, entry.chunks)])

    def _discard(self, entry: RedisEntry, why: str) -> None:
        _log.warn("cache: dropping damaged entry for {url} in redis: {why}",
                  url=entry.meta.url, why=why)
        self.remove_entry(entry)

    def clear(self) -> None:
        """Forget what this process loaded (other hosts' entries stay in Redis)."""
        self._loaded.clear()
        self._hot.clear()
        self._hot_bytes = 0

    def close(self) -> None:
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None
        self._loaded.clear()
        self._link.close()
