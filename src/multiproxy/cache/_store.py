"""
What a store keeps about a response (`StoredResponse`), how it is encoded
on disk, and the helpers both stores share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from zope.interface import implementer

from multiproxy import _memo as memo
from multiproxy.cache._directives import ResponseDirectives
from multiproxy.cache._freshness import age_value, date_value, freshness_lifetime
from multiproxy.cache._interfaces import IBodyReader
from multiproxy.cache._keys import VaryValue, variant_id, vary_names, vary_values
from multiproxy.cache._storable import stored_fields
from multiproxy.http1._dates import format_http_date
from multiproxy.http1._headers import Headers
from multiproxy.pipeline._errors import MultiproxyError

Fields = tuple[tuple[bytes, bytes], ...]


class CorruptEntry(MultiproxyError):
    """A stored entry turned out to be damaged while it was being read."""


def pack_fields(fields) -> bytes:
    """(name, value) pairs as ``name: value`` lines ending in CRLF (values never hold CR or LF)."""
    return b"".join([n + b": " + v + b"\r\n" for n, v in fields])


@memo.cached("cache.unpack-fields", 2048)
def unpack_fields(head: bytes) -> Fields:
    """The inverse of `pack_fields` (memoised: hot responses are unpacked once)."""
    if not head:
        return ()
    return tuple(tuple(line.split(b": ", 1)) for line in head[:-2].split(b"\r\n"))  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """
    The metadata of one stored response.

    ``head`` holds the fields as stored (RFC 9111 3.1: no connection-specific
    fields, no framing, no Age), packed as CRLF-ended ``name: value`` lines
    to keep many small objects cheap; `headers` gives them as pairs.
    ``vary`` holds the normalised values of the request fields the
    response's Vary nominates, from the request that caused it to be stored.
    Times are seconds since the epoch from the cache's clock: ``request_time``
    when the request went upstream, ``response_time`` when the response head
    arrived.  ``date_value`` and ``age_value`` are the parsed Date and Age;
    ``lifetime`` is the freshness lifetime computed when stored.
    ``body_length`` is -1 until committed.
    """

    url: bytes
    status: int
    reason: bytes
    head: bytes
    vary: tuple[VaryValue, ...]
    request_time: float
    response_time: float
    date_value: float
    age_value: int
    lifetime: float
    no_cache: bool = False
    forbids_stale: bool = False
    stale_while_revalidate: int = 0
    stale_if_error: int = 0
    body_length: int = -1

    @property
    def headers(self) -> Fields:
        """The stored fields as (name, value) pairs, in order."""
        return unpack_fields(self.head)

    @property
    def variant(self) -> bytes:
        """The identifier of this response's secondary key (empty without Vary)."""
        return variant_id(self.vary)

    @property
    def vary_names(self) -> tuple[bytes, ...]:
        return tuple(name for name, _ in self.vary)

    def field(self, name: bytes) -> bytes | None:
        """The first stored value of field ``name`` (lower case)."""
        for n, v in unpack_fields(self.head):
            if n.lower() == name:
                return v
        return None

    def header_list(self) -> Headers:
        """A fresh, mutable `Headers` with the stored fields."""
        return Headers(unpack_fields(self.head))

    def with_length(self, length: int) -> StoredResponse:
        # Every stored miss makes one: spelt out rather than dataclasses.replace,
        # whose per-call field introspection costs several microseconds.
        return StoredResponse(
            self.url, self.status, self.reason, self.head, self.vary, self.request_time,
            self.response_time, self.date_value, self.age_value, self.lifetime,
            self.no_cache, self.forbids_stale, self.stale_while_revalidate,
            self.stale_if_error, length,
        )


def describe_response(
    url: bytes,
    status: int,
    reason: bytes,
    headers: Headers,
    cc: ResponseDirectives,
    request_headers: Headers,
    request_time: float,
    response_time: float,
    heuristic_fraction: float = 0.1,
    heuristic_max: float = 86400.0,
) -> StoredResponse:
    """
    The `StoredResponse` for a storable response (see `refusal`): the fields
    to keep, the secondary key, and the freshness facts computed once.
    """
    fields = stored_fields(headers, cc)
    if b"date" not in headers:
        # RFC 9110 6.6.1: a cache adds the Date it received the response at.
        fields = fields + ((b"Date", format_http_date(response_time)),)
    date = date_value(headers, response_time)
    names = vary_names(headers) or ()
    return StoredResponse(
        url=url,
        status=status,
        reason=reason,
        head=pack_fields(fields),
        vary=vary_values(names, request_headers),
        request_time=request_time,
        response_time=response_time,
        date_value=date,
        age_value=age_value(headers),
        lifetime=freshness_lifetime(status, headers, cc, date, heuristic_fraction, heuristic_max),
        no_cache=cc.no_cache,
        forbids_stale=cc.forbids_stale,
        stale_while_revalidate=cc.stale_while_revalidate or 0,
        stale_if_error=cc.stale_if_error or 0,
    )


def meta_size(meta: StoredResponse) -> int:
    """An estimate of the memory a stored response's metadata takes, in bytes."""
    size = 400 + len(meta.url) + len(meta.reason) + len(meta.head)
    for n, v in meta.vary:
        size += 110 + len(n) + (len(v) if v is not None else 0)
    return size


def _s(b: bytes) -> str:
    return b.decode("latin-1")


def _b(s: str) -> bytes:
    return s.encode("latin-1")


def encode_meta(meta: StoredResponse) -> bytes:
    """``meta`` as bytes (for the disk store)."""
    return json.dumps(
        {
            "url": _s(meta.url),
            "status": meta.status,
            "reason": _s(meta.reason),
            "headers": [[_s(n), _s(v)] for n, v in meta.headers],
            "vary": [[_s(n), None if v is None else _s(v)] for n, v in meta.vary],
            "request_time": meta.request_time,
            "response_time": meta.response_time,
            "date_value": meta.date_value,
            "age_value": meta.age_value,
            "lifetime": meta.lifetime,
            "no_cache": meta.no_cache,
            "forbids_stale": meta.forbids_stale,
            "swr": meta.stale_while_revalidate,
            "sie": meta.stale_if_error,
            "body_length": meta.body_length,
        },
        separators=(",", ":"),
    ).encode("ascii")


def decode_meta(data: bytes) -> StoredResponse:
    """The inverse of `encode_meta`; ValueError/KeyError/TypeError if damaged."""
    d = json.loads(data)
    return StoredResponse(
        url=_b(d["url"]),
        status=int(d["status"]),
        reason=_b(d["reason"]),
        head=pack_fields((_b(n), _b(v)) for n, v in d["headers"]),
        vary=tuple((_b(n), None if v is None else _b(v)) for n, v in d["vary"]),
        request_time=float(d["request_time"]),
        response_time=float(d["response_time"]),
        date_value=float(d["date_value"]),
        age_value=int(d["age_value"]),
        lifetime=float(d["lifetime"]),
        no_cache=bool(d["no_cache"]),
        forbids_stale=bool(d["forbids_stale"]),
        stale_while_revalidate=int(d["swr"]),
        stale_if_error=int(d["sie"]),
        body_length=int(d["body_length"]),
    )


@implementer(IBodyReader)
class BytesReader:
    """Reads a byte range of an in-memory body, without copying small bodies."""

    __slots__ = ("_data", "_end", "_pos", "length")

    def __init__(self, data: bytes, start: int = 0, length: int | None = None) -> None:
        end = len(data) if length is None else min(len(data), start + length)
        self._data = data
        self._pos = min(start, end)
        self._end = end
        self.length = end - self._pos

    def read(self, size: int) -> bytes:
        pos, end = self._pos, self._end
        if pos >= end:
            return b""
        if pos == 0 and end == len(self._data) and end <= size:
            self._pos = end
            return self._data
        stop = min(end, pos + size)
        self._pos = stop
        return self._data[pos:stop]

    def close(self) -> None:
        self._pos = self._end
