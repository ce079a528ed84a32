"""
The storage contract of the HTTP cache.

A store holds stored responses under their primary key (the normalised
URL), several per key when the responses vary (one per secondary key).
Writing streams: `ICacheStore.begin` returns an `IEntryWriter` that takes
body chunks as they arrive and makes the entry visible only on `commit`,
so a half-written response is never served.  Reading streams too:
`ICacheEntry.open_body` returns an `IBodyReader` that yields the body in
chunks.  Every call is synchronous and quick; nothing here needs a reactor.

A store on the network (Redis) keeps that contract with two additions the
fetcher looks for: ``prepare(key)`` returns a Deferred (or None) that fires
once ``lookup(key)`` can answer from what it loaded, and its body readers
may return None from ``read`` ("not yet") and then call back whatever was
given to ``wait(callback)`` when the next chunk has arrived; ``ready()``
says whether the whole range is already at hand.  ``lock(key)`` /
``unlock(key)`` let the hosts sharing it collapse misses.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IBodyReader(Interface):
    """Reads one stored body (or a byte range of it) in chunks."""

    length = Attribute("How many bytes this reader will yield in all (int).")

    def read(size):
        """
        Up to ``size`` more bytes; b"" once everything has been read.

        @raise CorruptEntry: the stored body turned out to be damaged (the
            entry has been removed; the response must be aborted).
        """

    def close():
        """Release the reader (idempotent)."""


class ICacheEntry(Interface):
    """One stored response: its metadata and its body."""

    meta = Attribute("The `StoredResponse` (head, vary values, times, lifetime).")

    def open_body(start=0, length=None):
        """
        An `IBodyReader` for ``length`` bytes from offset ``start``
        (to the end when ``length`` is None).
        """


class IEntryWriter(Interface):
    """A response being stored while it streams; invisible until `commit`."""

    written = Attribute("Body bytes accepted so far (int).")
    abandoned = Attribute("True once the entry has been given up (bool).")

    def write(data):
        """
        Append a body chunk.

        @return: False once the entry is abandoned (it grew past the maximum
            object size, or storage failed); later chunks are ignored.  The
            response is still relayed to the client, it is just not stored.
        """

    def commit():
        """
        The body is complete: make the entry visible, replacing any entry
        with the same key and secondary key.

        @return: the new `ICacheEntry`, or None if the entry was abandoned
            or the body did not have the announced length.
        """

    def abandon():
        """Give the entry up (the response was truncated or is unwanted)."""


class ICacheStore(Interface):
    """Where stored responses live, bounded in bytes, evicting least recently used."""

    max_size = Attribute("The byte budget (int).")
    max_object_size = Attribute("The largest body stored (int).")
    size = Attribute("Bytes in use (int).")
    count = Attribute("Number of stored responses (int).")

    def lookup(key):
        """
        Every stored response for primary key ``key`` (a list of
        `ICacheEntry`, possibly empty); marks them recently used.
        """

    def begin(meta, expected_length=None):
        """
        Start storing a response described by ``meta`` (a `StoredResponse`).

        @param expected_length: the announced body length (Content-Length)
            if any; a body of another length is not committed.
        @return: an `IEntryWriter`, or None when the response cannot be
            stored (``expected_length`` exceeds the maximum object size).
        """

    def update(entry, meta):
        """
        Replace the metadata of a stored ``entry`` (after a 304 or a HEAD),
        keeping its body.

        @return: the updated `ICacheEntry`, or None if it is gone.
        """

    def remove(key):
        """Remove every stored response for ``key``; returns how many."""

    def remove_entry(entry):
        """Remove one stored response."""

    def clear():
        """Remove everything."""

    def close():
        """Release resources (open files); the store is not used afterwards."""
