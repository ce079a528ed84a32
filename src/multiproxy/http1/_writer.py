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
from collections.abc import Iterable
from operator import itemgetter

from multiproxy import _memo as memo
from multiproxy.http1._headers import Headers
from multiproxy.pipeline._errors import ProtocolError

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
_VERSION_RE = re.compile(rb"HTTP/[0-9]\.[0-9]")
# Controls other than HTAB (CR and LF included).
_CTL_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Deleting these from a value must leave nothing (HTAB, SP, VCHAR, obs-text);
# bytes.translate checks a whole header block several times faster than a
# regular expression search.
_FIELD_BYTES = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_VISIBLE = bytes(range(0x21, 0x7F))
_SEPARATORS = [b"\r\n" * n for n in range(256)]
_name_of = itemgetter(0)
_HTTP11 = b"HTTP/1.1"

_GOOD_TOKENS = memo.members("http1.written-tokens", 1024)
_GOOD_REASONS = memo.members("http1.written-reasons", 1024)  # reason phrases checked ("OK")


def _is_token(value: bytes) -> bool:
    """Whether ``value`` is a token (a field name or a method), remembering good ones."""
    if value in _GOOD_TOKENS:
        return True
    if _TOKEN_RE.fullmatch(value) is None:
        return False
    _GOOD_TOKENS.remember(bytes(value))
    return True


def _check_name(name: bytes) -> None:
    if not _is_token(name):
        raise UnsafeField(f"refusing to write invalid field name {name[:40]!r}")


def _fields(headers: Iterable[tuple[bytes, bytes]], parts: list[bytes]) -> None:
    """Append the ``name: value CRLF`` lines for ``headers`` to ``parts``, checking each."""
    pairs = headers._pairs if type(headers) is Headers else list(headers)
    if not pairs:
        return
    if not _GOOD_TOKENS.issuperset(map(_name_of, pairs)):
        for name, _ in pairs:
            _check_name(name)
    block = b"\r\n".join(map(b": ".join, pairs))
    # What is left after deleting the bytes a value may hold must be exactly
    # the separators put there above: one pass checks every value at once.
    separators = len(pairs) - 1
    rest = block.translate(None, _FIELD_BYTES)
    if rest != (_SEPARATORS[separators] if separators < 256 else b"\r\n" * separators):
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
    version: bytes = _HTTP11,
) -> bytes:
    """The bytes of a request line and header section, ending with the empty line."""
    if not _is_token(method):
        raise UnsafeField(f"refusing to write invalid method {method[:40]!r}")
    if not target or target.translate(None, _VISIBLE):
        raise UnsafeField(f"refusing to write invalid request target {target[:80]!r}")
    if version is not _HTTP11 and _VERSION_RE.fullmatch(version) is None:
        raise UnsafeField(f"refusing to write invalid version {version[:20]!r}")
    parts = [method, b" ", target, b" ", version, b"\r\n"]
    _fields(headers, parts)
    parts.append(b"\r\n")
    return b"".join(parts)


def response_head_bytes(
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    version: bytes = _HTTP11,
) -> bytes:
    """The bytes of a status line and header section, ending with the empty line."""
    if not 100 <= status <= 999:
        raise UnsafeField(f"refusing to write invalid status code {status!r}")
    if reason not in _GOOD_REASONS:
        if reason.translate(None, _FIELD_BYTES):
            raise UnsafeField(f"refusing to write control characters in reason {reason[:40]!r}")
        _GOOD_REASONS.remember(bytes(reason))
    if version is not _HTTP11 and _VERSION_RE.fullmatch(version) is None:
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
