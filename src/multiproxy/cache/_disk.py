"""
The on-disk store: a directory that survives a restart.

Each stored response is one file, ``data/<2 hex>/<hash>``, laid out as::

    header  "MPCACHE1" | body length (u64) | meta length (u32) | meta crc32 (u32)
    body    the response body
    meta    the encoded `StoredResponse`
    trailer body crc32 (u32) | "MPEND!\\r\\n"

The header has a fixed size and is written last (its lengths are only
known once the body is complete).

A response is written to ``tmp/`` while it streams in and moved into place
with ``os.replace`` only once complete, so a reader sees either the old
file or the whole new one.  Before serving, a file must have exactly the
size its header announces, a valid trailer and an intact meta checksum;
anything else (a crash or power loss mid-write) is deleted, never served.
The body checksum is checked as a full read finishes; a mismatch raises
`CorruptEntry` so the response is aborted rather than completed wrongly.

Only the index (key, variant, file name, size) stays in memory; metadata
is read from the file on lookup.  Files are read and written synchronously:
they are local, and reads come in bounded chunks.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections import OrderedDict

from twisted.logger import Logger
from zope.interface import implementer

from multiproxy.cache._interfaces import IBodyReader, ICacheEntry, ICacheStore, IEntryWriter
from multiproxy.cache._store import CorruptEntry, StoredResponse, decode_meta, encode_meta

_MAGIC = b"MPCACHE1"
_END = b"MPEND!\r\n"
_HEADER = struct.Struct(">8sQII")
_TRAILER = struct.Struct(">I8s")
_MAX_META = 1024 * 1024

_log = Logger()


def _file_name(key: bytes, variant: bytes) -> str:
    return hashlib.sha256(key + b"\n" + variant).hexdigest()


class _Record:
    __slots__ = ("path", "size")

    def __init__(self, path: str, size: int) -> None:
        self.path = path
        self.size = size


def _read_head(f, file_size: int) -> tuple[StoredResponse, int]:
    """Validate an open entry file; return (meta, body crc).  The body is at `_HEADER.size`."""
    raw = f.read(_HEADER.size)
    if len(raw) != _HEADER.size:
        raise ValueError("short header")
    magic, body_len, meta_len, meta_crc = _HEADER.unpack(raw)
    if magic != _MAGIC or meta_len > _MAX_META:
        raise ValueError("bad header")
    if file_size != _HEADER.size + body_len + meta_len + _TRAILER.size:
        raise ValueError("size does not match header")
    f.seek(_HEADER.size + body_len)
    meta_raw = f.read(meta_len)
    if len(meta_raw) != meta_len or zlib.crc32(meta_raw) != meta_crc:
        raise ValueError("meta checksum")
    body_crc, end = _TRAILER.unpack(f.read(_TRAILER.size))
    if end != _END:
        raise ValueError("no completion marker")
    meta = decode_meta(meta_raw)
    if meta.body_length != body_len:
        raise ValueError("body length mismatch")
    return meta, body_crc


def _finish(f, meta: StoredResponse, body_crc: int) -> None:
    """Append meta and trailer to a file holding header placeholder + body, then fix the header."""
    meta_raw = encode_meta(meta)
    f.write(meta_raw)
    f.write(_TRAILER.pack(body_crc, _END))
    f.seek(0)
    f.write(_HEADER.pack(_MAGIC, meta.body_length, len(meta_raw), zlib.crc32(meta_raw)))
    f.close()


@implementer(IBodyReader)
class _FileReader:
    def __init__(self, store: DiskStore, entry: DiskEntry, start: int, length: int | None) -> None:
        total = entry.meta.body_length
        start = min(max(0, start), total)
        end = total if length is None else min(total, start + length)
        self._store = store
        self._entry = entry
        self._file = open(entry.path, "rb")
        self._file.seek(_HEADER.size + start)
        self._left = end - start
        self.length = self._left
        self._check = start == 0 and end == total
        self._crc = 0

    def read(self, size: int) -> bytes:
        if self._left <= 0 or self._file is None:
            return b""
        data = self._file.read(min(size, self._left))
        if not data:
            self.close()
            self._store._discard(self._entry, "body shorter than announced")
            raise CorruptEntry(f"cached body of {self._entry.meta.url!r} is truncated")
        self._left -= len(data)
        if self._check:
            self._crc = zlib.crc32(data, self._crc)
            if self._left == 0 and self._crc != self._entry.body_crc:
                self.close()
                self._store._discard(self._entry, "body checksum mismatch")
                raise CorruptEntry(f"cached body of {self._entry.meta.url!r} is damaged")
        return data

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@implementer(ICacheEntry)
class DiskEntry:
    """A stored response in a file."""

    def __init__(self, store: DiskStore, meta: StoredResponse, path: str, body_crc: int) -> None:
        self._store = store
        self.meta = meta
        self.path = path
        self.body_crc = body_crc

    def open_body(self, start: int = 0, length: int | None = None) -> _FileReader:
        return _FileReader(self._store, self, start, length)


@implementer(IEntryWriter)
class _DiskWriter:
    def __init__(self, store: DiskStore, meta: StoredResponse, expected: int | None) -> None:
        self._store = store
        self._meta = meta
        self._expected = expected
        self._limit = min(store.max_object_size, store.max_size)
        self.written = 0
        self.abandoned = False
        self._crc = 0
        fd, self._tmp = store._temp_file()
        self._file = os.fdopen(fd, "wb")
        try:
            # Placeholder header; rewritten with the real lengths on commit.
            self._file.write(_HEADER.pack(_MAGIC, 0, 0, 0))
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        _log.warn("cache: cannot write {path}: {error}", path=self._tmp, error=e)
        self.abandon()

    def write(self, data: bytes) -> bool:
        if self.abandoned:
            return False
        self.written += len(data)
        if self.written > self._limit:
            self.abandon()
            return False
        try:
            self._file.write(data)
        except OSError as e:
            self._fail(e)
            return False
        self._crc = zlib.crc32(data, self._crc)
        return True

    def commit(self) -> DiskEntry | None:
        if self.abandoned:
            return None
        if self._expected is not None and self.written != self._expected:
            self.abandon()
            return None
        meta = self._meta.with_length(self.written)
        try:
            _finish(self._file, meta, self._crc)
            entry = self._store._place(self._tmp, meta, self._crc)
        except OSError as e:
            self._fail(e)
            return None
        self.abandoned = True
        return entry

    def abandon(self) -> None:
        if self.abandoned:
            return
        self.abandoned = True
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self._tmp)
        except OSError:
            pass


@implementer(ICacheStore)
class DiskStore:
    """
    Stored responses in files under ``directory``, bounded by ``max_size``
    bytes on disk, evicting the least recently used URL.  The index is
    rebuilt from the directory when the store is created; damaged or
    half-written files found then are deleted.
    """

    def __init__(
        self,
        directory: str,
        max_size: int = 1024 * 1024 * 1024,
        max_object_size: int = 64 * 1024 * 1024,
    ) -> None:
        self.directory = directory
        self.max_size = max_size
        self.max_object_size = max_object_size
        self.size = 0
        self.count = 0
        self._index: OrderedDict[bytes, dict[bytes, _Record]] = OrderedDict()
        self._tmp_dir = os.path.join(directory, "tmp")
        self._data_dir = os.path.join(directory, "data")
        os.makedirs(self._tmp_dir, exist_ok=True)
        os.makedirs(self._data_dir, exist_ok=True)
        self._serial = 0
        self._load()

    # -- start-up ----------------------------------------------------------

    def _load(self) -> None:
        for name in os.listdir(self._tmp_dir):
            try:
                os.unlink(os.path.join(self._tmp_dir, name))
            except OSError:
                pass
        found: list[tuple[float, bytes, bytes, _Record]] = []
        for sub in os.listdir(self._data_dir):
            subdir = os.path.join(self._data_dir, sub)
            if not os.path.isdir(subdir):
                continue
            for name in os.listdir(subdir):
                path = os.path.join(subdir, name)
                try:
                    st = os.stat(path)
                    with open(path, "rb") as f:
                        meta, _ = _read_head(f, st.st_size)
                except (OSError, ValueError, KeyError, TypeError) as e:
                    _log.info("cache: dropping damaged entry {path}: {error}", path=path, error=e)
                    self._unlink(path)
                    continue
                found.append((st.st_mtime, meta.url, meta.variant, _Record(path, st.st_size)))
        found.sort(key=lambda item: item[0])
        for _, key, variant, record in found:
            self._index.setdefault(key, {})[variant] = record
            self._index.move_to_end(key)
            self.size += record.size
            self.count += 1
        self._evict()

    # -- ICacheStore -------------------------------------------------------

    def lookup(self, key: bytes) -> list[DiskEntry]:
        variants = self._index.get(key)
        if variants is None:
            return []
        self._index.move_to_end(key)
        out = []
        for variant, record in list(variants.items()):
            entry = self._open(record)
            if entry is None or entry.meta.url != key:
                self._drop_record(key, variant)
                continue
            out.append(entry)
        return out

    def _open(self, record: _Record) -> DiskEntry | None:
        try:
            with open(record.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                meta, crc = _read_head(f, size)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            _log.info("cache: dropping damaged entry {path}: {error}", path=record.path, error=e)
            self._unlink(record.path)
            return None
        return DiskEntry(self, meta, record.path, crc)

    def begin(self, meta: StoredResponse, expected_length: int | None = None) -> _DiskWriter | None:
        if expected_length is not None and expected_length > min(
            self.max_object_size, self.max_size
        ):
            return None
        return _DiskWriter(self, meta, expected_length)

    def update(self, entry: DiskEntry, meta: StoredResponse) -> DiskEntry | None:
        meta = meta.with_length(entry.meta.body_length)
        tmp = None
        try:
            fd, tmp = self._temp_file()
            with os.fdopen(fd, "wb") as out, open(entry.path, "rb") as src:
                out.write(_HEADER.pack(_MAGIC, 0, 0, 0))
                src.seek(_HEADER.size)
                left = meta.body_length
                while left > 0:
                    chunk = src.read(min(left, 1 << 16))
                    if not chunk:
                        raise OSError("stored body is truncated")
                    out.write(chunk)
                    left -= len(chunk)
                _finish(out, meta, entry.body_crc)
            return self._place(tmp, meta, entry.body_crc)
        except OSError as e:
            _log.warn("cache: cannot update {path}: {error}", path=entry.path, error=e)
            if tmp is not None:
                self._unlink(tmp)
            return None

    def remove(self, key: bytes) -> int:
        variants = self._index.pop(key, None)
        if not variants:
            return 0
        for record in variants.values():
            self._forget(record)
        return len(variants)

    def remove_entry(self, entry: DiskEntry) -> None:
        self._drop_record(entry.meta.url, entry.meta.variant, entry.path)

    def clear(self) -> None:
        for key in list(self._index):
            self.remove(key)

    def close(self) -> None:
        pass

    # -- internals -----------------------------------------------------------

    def _temp_file(self) -> tuple[int, str]:
        self._serial += 1
        path = os.path.join(self._tmp_dir, f"{os.getpid()}-{self._serial}-{os.urandom(4).hex()}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return fd, path

    def _place(self, tmp: str, meta: StoredResponse, body_crc: int) -> DiskEntry:
        key, variant = meta.url, meta.variant
        name = _file_name(key, variant)
        subdir = os.path.join(self._data_dir, name[:2])
        os.makedirs(subdir, exist_ok=True)
        path = os.path.join(subdir, name)
        os.replace(tmp, path)
        size = os.stat(path).st_size
        variants = self._index.get(key)
        if variants is not None:
            names = meta.vary_names
            for vid in list(variants):
                if vid == variant:
                    # Same file name: os.replace already swapped the file.
                    old = variants.pop(vid)
                    self.size -= old.size
                    self.count -= 1
                    continue
                other = self._open(variants[vid])
                if other is None or other.meta.vary_names != names:
                    self._drop_record(key, vid)
        variants = self._index.setdefault(key, {})
        self._index.move_to_end(key)
        variants[variant] = _Record(path, size)
        self.size += size
        self.count += 1
        self._evict(keep=key)
        return DiskEntry(self, meta, path, body_crc)

    def _evict(self, keep: bytes | None = None) -> None:
        while self.size > self.max_size and self._index:
            key = next(iter(self._index))
            if key == keep and len(self._index) == 1:
                break
            self.remove(key)

    def _drop_record(self, key: bytes, variant: bytes, path: str | None = None) -> None:
        variants = self._index.get(key)
        if not variants or variant not in variants:
            return
        if path is not None and variants[variant].path != path:
            return
        self._forget(variants.pop(variant))
        if not variants:
            del self._index[key]

    def _forget(self, record: _Record) -> None:
        self.size -= record.size
        self.count -= 1
        self._unlink(record.path)

    def _discard(self, entry: DiskEntry, why: str) -> None:
        _log.warn("cache: dropping damaged entry {path}: {why}", path=entry.path, why=why)
        self._drop_record(entry.meta.url, entry.meta.variant, entry.path)

    @staticmethod
    def _unlink(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass
