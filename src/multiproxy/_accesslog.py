"""
Access logs, one line per finished request, tunnel or connection.

The ``combined`` format is Apache/nginx "combined" (so existing tools parse
it), followed by multiproxy's own fields as ``key=value`` pairs: duration in
seconds, the upstream, the cache outcome, the policy rule that decided, how
the exchange ended and why a refused request was refused; a CONNECT tunnel
adds the bytes it read and, when its first flight was peeked at, the TLS
``sni=`` name and ``alpn=`` protocols.  The ``json`` format writes the same
fields as one JSON object per line, for log pipelines that parse JSON.

Lines are buffered and flushed at least once a second.  `AccessLog.reopen`
(on SIGUSR1 under twistd) opens the file again by name, so logrotate can
move it away.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO

from zope.interface import implementer

from multiproxy.pipeline._interfaces import IReporter
from multiproxy.pipeline._values import AccessRecord

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
    if "reason" in extra:
        line += f" reason={_quote(extra['reason'])}"
    return line


def format_record_json(record: AccessRecord) -> str:
    """The fields of `format_record` as one JSON object (without the newline)."""
    fields: dict[str, object] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.started))
        + f".{int(record.started % 1 * 1000):03d}Z",
        "proxy": record.proxy,
        "kind": record.kind,
        "client": record.client_host,
        "client_port": record.client_port,
        "user": record.user,
        "method": record.method if record.kind != "tcp" else None,
        "target": record.target,
        "version": record.version if record.kind != "tcp" else None,
        "status": record.status or None,
        "bytes_sent": record.bytes_to_client,
        "bytes_received": record.bytes_from_client,
        "referer": record.referer,
        "user_agent": record.user_agent,
        "duration": round(record.duration, 6),
        "upstream": record.upstream,
        "upstream_bytes_sent": record.bytes_to_upstream,
        "upstream_bytes_received": record.bytes_from_upstream,
        "cache": record.cache,
        "rule": record.rule,
        "end": record.ended,
    }
    fields.update(record.extra)
    # ensure_ascii: control characters and non-ASCII are escaped, never raw.
    return json.dumps(fields, separators=(",", ":"))


FORMATS = {"combined": format_record, "json": format_record_json}
"""The access-log formats, by the name ``--access-log-format`` takes."""


@implementer(IReporter)
class AccessLog:
    """
    An `IReporter` writing one line per record to a file or stdout ("-").

    ``format`` is a name of `FORMATS`: ``combined`` (the default) or ``json``.
    """

    def __init__(self, reactor, path: str = "-", flush_interval: float = 1.0,
                 format: str = "combined") -> None:
        self.reactor = reactor
        self.path = path
        self._format = FORMATS[format]
        # stdout is looked up once: twistd later replaces sys.stdout with its
        # logging file, and the real stdout is not ours to close.
        self._file: IO[str] = sys.stdout if path == "-" else self._open()
        self._flush_interval = flush_interval
        self._flush_call = None

    def _open(self) -> IO[str]:
        return open(self.path, "a", buffering=65536)

    def report(self, record: AccessRecord) -> None:
        try:
            self._file.write(self._format(record) + "\n")
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

    def reopen(self) -> None:
        """
        Open the log file again by its name (after logrotate moved it).

        Lines written so far go to the old file; if the file cannot be
        opened, logging goes on into the old one and the error is raised.
        """
        if self.path == "-":
            return
        new = self._open()
        self.flush()
        old, self._file = self._file, new
        old.close()

    def close(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self.flush()
        if self.path != "-":
            self._file.close()


class AccessLogOptions:
    """
    A mix-in for a `twisted.python.usage.Options`: ``--access-log`` and
    ``--access-log-format``, taken before the subcommand or after it (a
    value after it wins).  Unset here, they are None.
    """

    optParameters = [
        ["access-log", None, None,
         "Access log file ('-' = stdout, the default; 'none' = off)."],
        ["access-log-format", None, None,
         f"Access log format: {' or '.join(FORMATS)} (default combined)."],
    ]

    def check_access_log_format(self) -> None:
        """
        Refuse an unknown ``--access-log-format``, given here or after the
        subcommand, with the names allowed.
        """
        from twisted.python.usage import UsageError

        for options in (self, getattr(self, "subOptions", None)):
            chosen = None if options is None else options.get("access-log-format")
            if chosen is not None and chosen not in FORMATS:
                raise UsageError(
                    f"--access-log-format must be {' or '.join(FORMATS)}, not {chosen!r}")
