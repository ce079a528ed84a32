"""The memory and disk stores behind ICacheStore."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from zope.interface.verify import verifyObject

from multiproxy.cache import (
    CorruptEntry,
    DiskStore,
    ICacheEntry,
    ICacheStore,
    IEntryWriter,
    MemoryStore,
)
from multiproxy.cache._directives import parse_response_directives
from multiproxy.cache._store import decode_meta, describe_response, encode_meta, pack_fields
from multiproxy.http1._headers import Headers

T0 = 1_700_000_000.0


def meta(url=b"http://h/a", vary=None, req=(), **fields):
    pairs = [(b"Cache-Control", b"max-age=60")] + [(k.encode(), v) for k, v in fields.items()]
    if vary:
        pairs.append((b"Vary", vary))
    h = Headers(pairs)
    return describe_response(
        url, 200, b"OK", h, parse_response_directives(h), Headers(list(req)), T0, T0
    )


def put(store, m, body=b"hello", chunks=None):
    w = store.begin(m, len(body))
    for c in chunks or [body]:
        assert w.write(c)
    return w.commit()


def read_all(entry, start=0, length=None):
    r = entry.open_body(start, length)
    out = []
    while True:
        chunk = r.read(3)
        if not chunk:
            break
        out.append(chunk)
    r.close()
    return b"".join(out)


@pytest.fixture(params=["memory", "disk"])
def make(request, tmp_path):
    def factory(max_size=10**6, max_object_size=10**5):
        if request.param == "memory":
            return MemoryStore(max_size, max_object_size)
        return DiskStore(str(tmp_path / "cache"), max_size, max_object_size)

    return factory


def test_store_and_entries_provide_their_interfaces(make):
    store = make()
    assert verifyObject(ICacheStore, store)
    w = store.begin(meta())
    assert verifyObject(IEntryWriter, w)
    w.write(b"x")
    assert verifyObject(ICacheEntry, w.commit())


def test_streamed_entry_is_invisible_until_commit(make):
    store = make()
    w = store.begin(meta(), None)
    w.write(b"hel")
    assert store.lookup(b"http://h/a") == []
    w.write(b"lo")
    w.commit()
    [entry] = store.lookup(b"http://h/a")
    assert read_all(entry) == b"hello"
    assert entry.meta.body_length == 5 and store.count == 1


def test_body_is_read_in_chunks_and_ranges(make):
    store = make()
    entry = put(store, meta(), b"0123456789")
    assert read_all(entry, 2, 5) == b"23456"
    assert read_all(entry, 8) == b"89"
    assert entry.open_body(3, 4).length == 4


def test_object_larger_than_max_object_size_is_abandoned(make):
    store = make(max_object_size=10)
    assert store.begin(meta(), 11) is None
    w = store.begin(meta(), None)
    assert w.write(b"x" * 6)
    assert not w.write(b"x" * 6)
    assert w.abandoned and w.commit() is None
    assert store.lookup(b"http://h/a") == [] and store.count == 0


def test_truncated_body_is_not_committed(make):
    store = make()
    w = store.begin(meta(), 10)
    w.write(b"short")
    assert w.commit() is None
    assert store.lookup(b"http://h/a") == []


def test_abandoned_writer_stores_nothing(make):
    store = make()
    w = store.begin(meta(), None)
    w.write(b"abc")
    w.abandon()
    assert w.commit() is None and store.lookup(b"http://h/a") == []


def test_same_variant_replaces_and_other_variants_coexist(make):
    store = make()
    put(store, meta(vary=b"Foo", req=[(b"Foo", b"1")]), b"one")
    put(store, meta(vary=b"Foo", req=[(b"Foo", b"2")]), b"two")
    put(store, meta(vary=b"Foo", req=[(b"Foo", b"1")]), b"uno")
    bodies = sorted(read_all(e) for e in store.lookup(b"http://h/a"))
    assert bodies == [b"two", b"uno"] and store.count == 2


def test_changed_vary_drops_older_variants(make):
    store = make()
    put(store, meta(vary=b"Foo", req=[(b"Foo", b"1")]), b"one")
    put(store, meta(vary=b"Bar", req=[(b"Bar", b"1")]), b"bar")
    assert [read_all(e) for e in store.lookup(b"http://h/a")] == [b"bar"]


def test_lru_eviction_keeps_the_store_within_its_budget(make):
    store = make(max_size=6000)
    for i in range(4):
        put(store, meta(url=b"http://h/%d" % i), b"x" * 500)
    assert store.count == 4
    assert store.lookup(b"http://h/0")  # touch: now the most recently used
    i = 4
    while i < 20:
        before = store.count
        put(store, meta(url=b"http://h/%d" % i), b"x" * 500)
        if store.count <= before:
            break
        i += 1
    assert i < 20 and store.size <= 6000
    assert not store.lookup(b"http://h/1")  # the least recently used went first
    assert store.lookup(b"http://h/0")
    assert store.lookup(b"http://h/%d" % i)


def test_update_replaces_metadata_and_keeps_body(make):
    store = make()
    entry = put(store, meta(X=b"old"), b"body!")
    new = replace(entry.meta, head=pack_fields([(b"X", b"new")]))
    updated = store.update(entry, new)
    [again] = store.lookup(b"http://h/a")
    assert again.meta.field(b"x") == b"new" and read_all(again) == b"body!"
    assert read_all(updated) == b"body!" and store.count == 1


def test_remove_and_clear(make):
    store = make()
    put(store, meta(vary=b"Foo", req=[(b"Foo", b"1")]))
    put(store, meta(vary=b"Foo", req=[(b"Foo", b"2")]))
    put(store, meta(url=b"http://h/b"))
    assert store.remove(b"http://h/a") == 2
    assert store.lookup(b"http://h/a") == [] and store.count == 1
    entry = store.lookup(b"http://h/b")[0]
    store.remove_entry(entry)
    assert store.count == 0 and store.size == 0
    put(store, meta())
    store.clear()
    assert store.count == 0 and store.lookup(b"http://h/a") == []


def test_meta_encoding_round_trips():
    m = meta(vary=b"Foo", req=[(b"Foo", b"\xff v")], ETag=b'"e"').with_length(42)
    assert decode_meta(encode_meta(m)) == m


# -- disk specifics ---------------------------------------------------------


def entry_files(root):
    return [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(root, "data")) for f in fs]


def test_disk_store_survives_a_restart(tmp_path):
    root = str(tmp_path / "c")
    store = DiskStore(root)
    put(store, meta(), b"persisted")
    put(store, meta(url=b"http://h/b", vary=b"Foo", req=[(b"Foo", b"1")]), b"varied")
    again = DiskStore(root)
    assert again.count == 2 and again.size == store.size
    assert read_all(again.lookup(b"http://h/a")[0]) == b"persisted"
    assert again.lookup(b"http://h/b")[0].meta.vary == ((b"foo", b"1"),)


def test_disk_store_never_serves_a_torn_entry(tmp_path):
    root = str(tmp_path / "c")
    store = DiskStore(root)
    put(store, meta(), b"0123456789" * 10)
    put(store, meta(url=b"http://h/b"), b"intact")
    [torn] = [p for p in entry_files(root) if b"http://h/a" in open(p, "rb").read()]
    with open(torn, "r+b") as f:
        f.truncate(os.path.getsize(torn) - 7)  # a crash mid-write: no trailer
    assert store.lookup(b"http://h/a") == []
    assert not os.path.exists(torn)
    assert read_all(store.lookup(b"http://h/b")[0]) == b"intact"


def test_disk_store_drops_damaged_files_and_temp_files_at_start(tmp_path):
    root = str(tmp_path / "c")
    store = DiskStore(root)
    put(store, meta(), b"abc")
    [path] = entry_files(root)
    with open(path, "r+b") as f:
        f.seek(-3, os.SEEK_END)
        f.write(b"XXX")  # broken completion marker
    with open(os.path.join(root, "tmp", "half-written"), "wb") as f:
        f.write(b"MPCACHE1 partial")
    again = DiskStore(root)
    assert again.count == 0 and entry_files(root) == []
    assert os.listdir(os.path.join(root, "tmp")) == []


def test_disk_store_detects_a_damaged_body_while_reading(tmp_path):
    root = str(tmp_path / "c")
    store = DiskStore(root)
    put(store, meta(), b"0123456789")
    [path] = entry_files(root)
    with open(path, "r+b") as f:
        f.seek(24 + 3)  # inside the body
        f.write(b"!")
    [entry] = store.lookup(b"http://h/a")
    reader = entry.open_body()
    with pytest.raises(CorruptEntry):
        while reader.read(4):
            pass
    assert store.lookup(b"http://h/a") == []


def test_disk_writer_leaves_no_temp_file_behind(tmp_path):
    root = str(tmp_path / "c")
    store = DiskStore(root, max_object_size=5)
    w = store.begin(meta(), None)
    w.write(b"123456")
    w2 = store.begin(meta(url=b"http://h/b"), None)
    w2.write(b"1")
    w2.commit()
    assert os.listdir(os.path.join(root, "tmp")) == []


def test_with_length_changes_only_the_body_length():
    import dataclasses

    from multiproxy.cache._store import StoredResponse

    meta = StoredResponse(
        b"http://h/", 200, b"OK", b"A: b\r\n", ((b"accept", b"x"),), 1.0, 2.0, 3.0, 4, 5.0,
        no_cache=True, forbids_stale=True, stale_while_revalidate=6, stale_if_error=7,
    )
    assert meta.with_length(42) == dataclasses.replace(meta, body_length=42)
