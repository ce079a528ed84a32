"""
Anonymous forwarding: removing or replacing request header fields that say
who the client is or which proxies the request went through.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from multiproxy.http1._headers import Headers

__all__ = ["AnonymityOptions", "anonymise_headers"]

#: Fields by which proxies (including this one, in normal mode) tell the
#: origin about the client or the proxy chain.
FORWARDING_FIELDS = frozenset({
    b"x-forwarded-for", b"forwarded", b"x-real-ip", b"client-ip", b"true-client-ip",
    b"x-client-ip", b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port",
    b"x-forwarded-server", b"x-originating-ip", b"x-proxyuser-ip",
})

FieldAction = Literal["keep", "remove"]
RefererAction = Literal["keep", "remove", "origin"]


@dataclass(frozen=True, slots=True)
class AnonymityOptions:
    """
    What anonymous mode does to a request's fields.

    - ``strip_via``: remove incoming ``Via`` fields, and the proxy must not add
      its own;
    - ``strip_forwarded``: remove ``X-Forwarded-For``, ``Forwarded`` and their
      relatives (`FORWARDING_FIELDS`), and the proxy must not add its own;
    - ``from_``: ``remove`` (default) or ``keep`` the ``From`` field (an e-mail
      address);
    - ``referer``: ``keep`` (default), ``remove``, or ``origin`` (cut to
      ``scheme://host[:port]/``, as the ``strict-origin`` referrer policy does);
    - ``user_agent``: ``keep`` (default), ``remove``, or any other string,
      which replaces every ``User-Agent``;
    - ``cookies``: ``keep`` (default) or ``remove`` (``Cookie`` fields);
    - ``remove``: further field names (lower-case bytes) to remove.
    """

    strip_via: bool = True
    strip_forwarded: bool = True
    from_: FieldAction = "remove"
    referer: RefererAction = "keep"
    user_agent: str = "keep"
    cookies: FieldAction = "keep"
    remove: frozenset[bytes] = frozenset()

    def __post_init__(self) -> None:
        if self.from_ not in ("keep", "remove"):
            raise ValueError(f"from must be keep or remove, not {self.from_!r}")
        if self.referer not in ("keep", "remove", "origin"):
            raise ValueError(f"referer must be keep, remove or origin, not {self.referer!r}")
        if self.cookies not in ("keep", "remove"):
            raise ValueError(f"cookies must be keep or remove, not {self.cookies!r}")
        if not self.user_agent or not all(" " <= c <= "~" or c == "\t"
                                          for c in self.user_agent):
            raise ValueError("user_agent must be keep, remove, or a replacement value in "
                             "printable ASCII on one line")
        for name in self.remove:
            if name != name.lower() or not name or b":" in name:
                raise ValueError(f"field names to remove must be lower-case tokens: {name!r}")

    @property
    def removed_fields(self) -> frozenset[bytes]:
        """Every field name this configuration removes outright."""
        names = set(self.remove)
        if self.strip_via:
            names.add(b"via")
        if self.strip_forwarded:
            names |= FORWARDING_FIELDS
        if self.from_ == "remove":
            names.add(b"from")
        if self.referer == "remove":
            names.add(b"referer")
        if self.user_agent == "remove":
            names.add(b"user-agent")
        if self.cookies == "remove":
            names.add(b"cookie")
        return frozenset(names)


def anonymise_headers(headers: Headers, options: AnonymityOptions) -> Headers:
    """
    A copy of the request ``headers`` with identifying fields removed or
    replaced as ``options`` say; the order of the other fields is kept.
    """
    removed = options.removed_fields
    out = Headers()
    replaced_agent = options.user_agent not in ("keep", "remove")
    agent_done = False
    for name, value in headers:
        lower = name.lower()
        if lower in removed:
            continue
        if lower == b"user-agent" and replaced_agent:
            if agent_done:
                continue
            value = options.user_agent.encode("ascii")
            agent_done = True
        elif lower == b"referer" and options.referer == "origin":
            value = _origin(value)
            if value is None:
                continue
        out.add(name, value)
    return out


def _origin(referer: bytes) -> bytes | None:
    try:
        parts = urlsplit(referer.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{netloc}/".encode("ascii")
