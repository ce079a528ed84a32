"""
Configuring what an HTTP proxy bounds: its parser `Limits` and its
`Timeouts`, read the same way from a ``[[forward]]`` or ``[[reverse]]``
table, and the twistd options the two proxies share word for word.
"""

from __future__ import annotations

from multiproxy._tablereader import TableReader
from multiproxy.http._server import Timeouts
from multiproxy.http1._parser import Limits

__all__ = [
    "HTTP_CLIENT_OPT_PARAMETERS",
    "limits_from_table",
    "timeouts_from_table",
    "via_from_table",
]

_LIMITS = Limits()
_TIMEOUTS = Timeouts()

HTTP_CLIENT_OPT_PARAMETERS = [
    ["header-timeout", None, _TIMEOUTS.header,
     "Seconds a client may take to send a request head (408 after).", float],
    ["keepalive-timeout", None, _TIMEOUTS.keepalive,
     "Seconds an idle client connection is kept open.", float],
    ["max-body-size", None, 0, "Largest request body in bytes (413 past it); 0 = no limit.",
     int],
]
"""twistd ``optParameters`` about an HTTP proxy's client connections, for any proxy's ``Options``."""


def via_from_table(reader: TableReader) -> bytes | None:
    """
    The pseudonym a proxy writes in ``Via`` (RFC 9110 7.6.3) from the
    ``via`` key: true (the default) for ``multiproxy``, false for no
    ``Via`` at all, or a pseudonym of visible ASCII without spaces.
    """
    via = reader.raw("via", True)
    if isinstance(via, bool):
        return b"multiproxy" if via else None
    if isinstance(via, str) and via and all(0x20 < ord(c) < 0x7F for c in via):
        return via.encode("ascii")
    raise reader.error("via", "expected true, false or a pseudonym without spaces")


def limits_from_table(reader: TableReader) -> Limits:
    """
    The `Limits` of a proxy table: ``max_head_size``, ``max_request_line``,
    ``max_header_fields`` and ``max_body_size`` (0 or absent: no limit).
    """
    return Limits(
        max_head=reader.integer("max_head_size", _LIMITS.max_head, minimum=1024),
        max_request_line=reader.integer("max_request_line", _LIMITS.max_request_line, minimum=256),
        max_fields=reader.integer("max_header_fields", _LIMITS.max_fields, minimum=8),
        max_body=reader.integer("max_body_size", 0, minimum=0) or None,
    )


def timeouts_from_table(reader: TableReader) -> Timeouts:
    """
    The `Timeouts` of a proxy table: ``header_timeout``,
    ``keepalive_timeout``, ``idle_timeout``, ``response_timeout``,
    ``upstream_idle_timeout`` and ``tunnel_idle_timeout`` (each a number of
    seconds, 0 for none; the default when absent) and
    ``connect_timeout`` (always a number).
    """
    d = _TIMEOUTS

    def optional(key: str, default: float | None) -> float | None:
        return reader.optional_number(key) if reader.has(key) else default

    return Timeouts(
        header=optional("header_timeout", d.header),
        keepalive=optional("keepalive_timeout", d.keepalive),
        client_idle=optional("idle_timeout", d.client_idle),
        connect=reader.number("connect_timeout", d.connect, minimum=0.001),
        response=optional("response_timeout", d.response),
        upstream_idle=optional("upstream_idle_timeout", d.upstream_idle),
        tunnel_idle=optional("tunnel_idle_timeout", d.tunnel_idle),
    )
