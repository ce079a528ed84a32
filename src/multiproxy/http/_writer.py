"""
Serialising HTTP/1.x heads and chunks.

Every byte written here may have come from a peer (a forwarded header, a
host name, a target), so the writers refuse anything that could split a
header line or start a new one: CR, LF, NUL and the other control characters
in values, non-token field names, spaces in a method or target.  Header
injection can then never reach the wire, whatever the caller passes.
"""

from __future__ import annotations

import re
from operator import itemgetter
from collections.abc import Iterable

from multiproxy._errors import ProtocolError

__all__ = [
    "LAST_CHUNK",
    "UnsafeField",
    "chunk_bytes",
    "request_head_bytes",
    "response_head_bytes",
    "trailers_bytes",
]

LAST_CHUNK = b"0\r\n\r\n"
"""The last chunk of a chunked body, with an empty trailer section."""


class UnsafeField(ProtocolError, ValueError):
    """A head to be written holds bytes that would corrupt the message framing."""

    status = 502
    reason = b"Bad Gateway"


_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")
_VERSION_RE = re.compile(rb"HTTP/[0-9]\.[0-9]")
# Controls other than HTAB (CR and LF included).
_CTL_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The same, but for CR and LF (counted separately in a header block).
_CTL_NO_CRLF_RE = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_name_of = itemgetter(0)

_GOOD_NAMES: set[bytes] = set()
_GOOD_NAMES_MAX = 1024


def _check_name(name: bytes) -> None:
    if name in _GOOD_NAMES:
        return
    if _TOKEN_RE.fullmatch(name) is None:
        raise UnsafeField(f"refusing to write invalid field name {name[:40]!r}")
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(bytes(name))


def _fields(headers: Iterable[tuple[bytes, bytes]], parts: list[bytes]) -> None:
    """Append the ``name: value CRLF`` lines for ``headers`` to ``parts``, checking each."""
    pairs = list(headers)
    if not pairs:
        return
    if not _GOOD_NAMES.issuperset(map(_name_of, pairs)):
        for name, _ in pairs:
            _check_name(name)
    block = b"\r\n".join(map(b": ".join, pairs))
    # The only CR and LF in the block are the separators put there above;
    # one count and one regex pass check every value at once.
    separators = len(pairs) - 1
    if (
        block.count(b"\n") != separators
        or block.count(b"\r") != separators
        or _CTL_NO_CRLF_RE.search(block) is not None
    ):
        for name, value in pairs:
            bad = _CTL_RE.search(value)
            if bad is not None:
                raise UnsafeField(
                    f"refusing to write control character {bad.group()!r} in field {name!r}"
                )
    parts.append(block)
    parts.append(b"\r\n")


def request_head_bytes(
    method: bytes,
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """The bytes of a request line and header section, ending with the empty line."""
    if _TOKEN_RE.fullmatch(method) is None:
        raise UnsafeField(f"refusing to write invalid method {method[:40]!r}")
    if _TARGET_RE.fullmatch(target) is None:
        raise UnsafeField(f"refusing to write invalid request target {target[:80]!r}")
    if _VERSION_RE.fullmatch(version) is None:
        raise UnsafeField(f"refusing to write invalid version {version[:20]!r}")
    parts = [method, b" ", target, b" ", version, b"\r\n"]
    _fields(headers, parts)
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head_bytes(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    version: bytes = b"HTTP/1.1",
) -> bytes:
    """The bytes of a status line and header section, ending with the empty line."""
    if not 100 <= status <= 999:
        raise UnsafeField(f"refusing to write invalid status code {status!r}")
    if _CTL_RE.search(reason) is not None:
        raise UnsafeField(f"refusing to write control characters in reason {reason[:40]!r}")
    if _VERSION_RE.fullmatch(version) is None:
        raise UnsafeField(f"refusing to write invalid version {version[:20]!r}")
    parts = [version, b" %d " % status, reason, b"\r\n"]
    _fields(headers, parts)
    parts.append(b"\r\n")
    return b"".join(parts)


def chunk_bytes(data: bytes) -> bytes:
    """One chunk carrying ``data`` (empty data gives b"": an empty chunk would end the body)."""
    if not data:
        return b""
    return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))


def trailers_bytes(trailers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The last chunk followed by ``trailers`` (use instead of `LAST_CHUNK`)."""
    parts = [b"0\r\n"]
    _fields(trailers, parts)
    parts.append(b"\r\n")
    return b"".join(parts)
