"""
Access logs in Combined Log Format.

Each line is Apache/nginx "combined" (so existing tools parse it), followed
by multiproxy's own fields as ``key=value`` pairs: duration in seconds, the
upstream, the cache outcome, the policy rule that decided, and how the
exchange ended; a CONNECT tunnel adds the bytes it read and, when its first
flight was peeked at, the TLS ``sni=`` name and ``alpn=`` protocols.  Lines are buffered and flushed at least once a second.
"""

from __future__ import annotations

import sys
import time
from typing import IO

from zope.interface import implementer

from multiproxy._interfaces import IReporter
from multiproxy._values import AccessRecord

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _quote(value: str | None) -> str:
    if not value:
        return '"-"'
    # Escape as nginx does: control bytes and quotes never reach the log raw.
    out = []
    for ch in value:
        o = ord(ch)
        if ch == '"' or ch == "\\" or o < 0x20 or o >= 0x7F:
            out.append(f"\\x{o:02X}" if o < 0x100 else ch.encode("unicode_escape").decode())
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _token(value: str | None) -> str:
    if not value:
        return "-"
    return "".join(c if 0x20 < ord(c) < 0x7F and c != '"' else "_" for c in value)


def format_record(record: AccessRecord) -> str:
    """One Combined Log Format line (without the newline) for ``record``."""
    t = time.gmtime(record.started)
    stamp = (
        f"[{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000]"
    )
    if record.kind == "tcp":
        request = f"TCP {record.target} -"
    else:
        request = f"{record.method} {record.target} {record.version}"
    status = record.status or "-"
    size = record.bytes_to_client or ("0" if record.status else "-")
    line = (
        f"{_token(record.client_host)} - {_token(record.user)} {stamp} {_quote(request)} "
        f"{status} {size} {_quote(record.referer)} {_quote(record.user_agent)} "
        f"rt={record.duration:.6f} up={_token(record.upstream)} "
        f"cache={_token(record.cache)} rule={_token(record.rule)} end={_token(record.ended)}"
    )
    if record.kind != "http":
        line += f" in={record.bytes_from_client}"
    extra = record.extra
    if "sni" in extra:
        # A CONNECT tunnel's TLS server name and ALPN, as its ClientHello gave them.
        line += f" sni={_token(extra['sni'])}"
        if "alpn" in extra:
            line += f" alpn={_token(extra['alpn'])}"
    return line


@implementer(IReporter)
class AccessLog:
    """An `IReporter` writing Combined Log Format lines to a file or stdout ("-")."""

    def __init__(self, reactor, path: str = "-", flush_interval: float = 1.0) -> None:
        self.reactor = reactor
        self.path = path
        self._file: IO[str] = sys.stdout if path == "-" else open(path, "a", buffering=65536)
        self._flush_interval = flush_interval
        self._flush_call = None

    def report(self, record: AccessRecord) -> None:
        try:
            self._file.write(format_record(record) + "\n")
        except (OSError, ValueError):
            return
        if self._flush_call is None:
            self._flush_call = self.reactor.callLater(self._flush_interval, self.flush)

    def flush(self) -> None:
        self._flush_call = None
        try:
            self._file.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self.flush()
        if self._file is not sys.stdout:
            self._file.close()
