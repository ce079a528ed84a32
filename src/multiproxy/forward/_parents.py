"""
Forwarding through parent proxies (Squid's ``cache_peer ... parent``).

A forward proxy with parents sends what its clients ask for to another HTTP
proxy instead of the origin: a plain ``http://`` request in absolute form
(``GET http://host/path HTTP/1.1``) with the parent's own
``Proxy-Authorization``, anything else (CONNECT, ``https://``) through a
tunnel the parent opens with ``CONNECT host:port``.

- `ParentConfig` and `parse_parent_url` (pure): one configured parent,
  ``http://[user:password@]host[:port]``.
- `ParentProxy`: a parent as a `multiproxy.balancing.Backend`, so it is
  health-checked (`HealthChecker`, TCP checks) and ejected after failures
  (`BackendPool`) like any backend.
- `ParentTunnel`: an origin reached through a parent's CONNECT tunnel, an
  `IUpstream` whose health and counts are its parent's.
- `ParentChooser`: the `IUpstreamChooser`: the first parent that is up, in
  configuration order; when none is, the origin itself (fallback
  ``direct``) or nothing (``fail``: the client gets 502).
- `ParentRequest`: a request that fails over from parent to parent (see
  `multiproxy.http._failover`), aimed at each in the form it needs.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from twisted.internet.endpoints import wrapClientTLS
from zope.interface import implementer

from multiproxy.balancing import Backend, BackendPool
from multiproxy.forward._origin import DirectChooser, origin_tls_for
from multiproxy.forward._tunnel import ParentTunnelEndpoint
from multiproxy.http._exchange import ForwardedRequest
from multiproxy.http1._parser import RequestHead
from multiproxy.pipeline._errors import ParentsUnavailable, UpstreamError
from multiproxy.pipeline._interfaces import IBalancer, IUpstream, IUpstreamChooser
from multiproxy.pipeline._values import Intent

__all__ = [
    "DEFAULT_PARENT_PORT",
    "PARENT_FALLBACKS",
    "ParentChooser",
    "ParentConfig",
    "ParentProxy",
    "ParentRequest",
    "ParentTunnel",
    "parse_parent_url",
]

PARENT_FALLBACKS = ("fail", "direct")
"""What happens when every parent is down: answer 502, or go to the origin directly."""

DEFAULT_PARENT_PORT = 3128
"""The port of a parent URL that names none (Squid's)."""


@dataclass(frozen=True, slots=True)
class ParentConfig:
    """One configured parent proxy: where it is and the credentials it wants."""

    host: str
    port: int = DEFAULT_PARENT_PORT
    user: str | None = None
    password: str | None = None

    @property
    def address(self) -> str:
        """``host:port`` (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The parent's URL with its password masked, for logs and the start-up line."""
        userinfo = "" if self.user is None else f"{quote(self.user, safe='')}:***@"
        return f"http://{userinfo}{self.address}"

    def proxy_authorization(self) -> bytes | None:
        """The ``Proxy-Authorization`` value for this parent (Basic, RFC 7617), or None."""
        if self.user is None:
            return None
        pair = f"{self.user}:{self.password or ''}".encode()
        return b"Basic " + base64.b64encode(pair)


def parse_parent_url(text: str) -> ParentConfig:
    """
    The `ParentConfig` of ``http://[user:password@]host[:port][/]``; the
    user and password may be percent-encoded.

    @raise ValueError: saying what is wrong, in words for the operator (the
        URL quoted with its password masked).
    """
    example = "e.g. http://user:password@proxy.example:3128"
    if not isinstance(text, str) or "://" not in text:
        raise ValueError(f"{_masked(text)!r} is not a URL; {example}")
    shown = repr(_masked(text))
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        # Not urlsplit's words: they may quote a piece of the password.
        raise ValueError(f"{shown} is not a valid URL (its port or IPv6 address is wrong, or "
                         "its password holds a '/' or '@' not percent-encoded)") from None
    if parts.scheme.lower() != "http":
        raise ValueError(
            f"{shown}: a parent proxy is reached over plain http://, not {parts.scheme}://; "
            f"{example}")
    if not parts.hostname:
        raise ValueError(f"{shown} names no host; {example}")
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{shown}: the port must be 1-65535")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{shown}: a parent proxy URL has no path, query or fragment")
    if any(c in parts.hostname for c in " \t\r\n/\\@"):
        raise ValueError(f"{shown}: bad host name {parts.hostname!r}")
    user = password = None
    if parts.username is not None:
        user = unquote(parts.username)
        password = unquote(parts.password or "")
        if not user or ":" in user:
            raise ValueError(f"{shown}: the user name must be non-empty and hold no ':'")
        if any(ord(c) < 32 or ord(c) == 127 for c in user + password):
            raise ValueError(f"{shown}: control characters in the credentials")
    return ParentConfig(parts.hostname, port or DEFAULT_PARENT_PORT, user, password)


def _masked(text: object) -> object:
    """``text`` with the password of its userinfo, if any, replaced by ``***``."""
    if not isinstance(text, str):
        return text
    return _PASSWORD.sub(r"\1***@", text)


_PASSWORD = re.compile(r"((?:^|//)[^:@/]*:)[^/]*@")


class ParentProxy(Backend):
    """
    A parent proxy, as a `Backend`: health-checked, counted and ejected like
    one.  Plain ``http://`` requests go to it in absolute form with
    `proxy_authorization`; tunnels through it are `ParentTunnel`s.
    """

    def __init__(self, config: ParentConfig, connect_timeout: float | None = None) -> None:
        super().__init__(f"parent:{config.address}", host=config.host, port=config.port,
                         connect_timeout=connect_timeout)
        self.config = config
        self.proxy_authorization = config.proxy_authorization()
        """The ``Proxy-Authorization`` value sent to it, or None."""


@implementer(IUpstream)
class ParentTunnel:
    """
    An origin reached through a tunnel a parent opens with CONNECT (over TLS
    to the origin when ``tls``, for an ``https://`` request).  It is logged
    under its parent's name, and its parent hears how each use went.
    """

    __slots__ = ("parent", "host", "port", "tls", "origin_tls", "name", "key")

    def __init__(self, parent: ParentProxy, host: str, port: int, tls: bool = False,
                 origin_tls: Callable[[str], object] | None = None) -> None:
        self.parent = parent
        self.host = host
        self.port = port
        self.tls = tls
        self.origin_tls = origin_tls
        """Makes the TLS creator to the origin, as `Origin` does (default: system trust)."""
        self.name = parent.name
        self.key = ("tunnel", parent.key, host, port, tls)
        """Connections are pooled per parent and origin (each is one tunnel)."""

    def __repr__(self) -> str:
        return f"<ParentTunnel {self.host}:{self.port} via {self.parent.name}>"

    def endpoint(self, reactor: Any) -> Any:
        host = f"[{self.host}]" if ":" in self.host else self.host
        endpoint = ParentTunnelEndpoint(
            self.parent.endpoint(reactor), f"{host}:{self.port}".encode("ascii"),
            self.parent.proxy_authorization, self.parent.name,
        )
        if self.tls:
            endpoint = wrapClientTLS(origin_tls_for(self.host, self.origin_tls), endpoint)
        return endpoint

    def started(self) -> None:
        self.parent.started()

    def finished(self, ok: bool, elapsed: float) -> None:
        self.parent.finished(ok, elapsed)

    def connect_failed(self) -> None:
        self.parent.connect_failed()

    def exchanged(self, status: int, sent: int, received: int) -> None:
        self.parent.exchanged(status, sent, received)

    def retried(self, elsewhere: bool) -> None:
        self.parent.retried(elsewhere)


@implementer(IBalancer)
class _InOrder:
    """The first candidate: parents are tried in configuration order."""

    name = "first"

    def pick(self, candidates: Sequence[Any], intent: Intent | None = None) -> Any:
        return candidates[0]


@implementer(IUpstreamChooser)
class ParentChooser:
    """
    The forward proxy's chooser when it has parents: the first parent that
    is up (active checks and passive ejection, as a `BackendPool`), for
    tunnels a `ParentTunnel` through it; when none is, with ``fallback``
    ``direct`` the origin (``direct``, a `DirectChooser`), with ``fail``
    nothing.

    @param clock: an ``IReactorTime``, injected for tests.
    """

    def __init__(
        self,
        parents: Sequence[ParentProxy],
        clock: Any,
        *,
        fallback: str = "fail",
        direct: DirectChooser | None = None,
        max_failures: int = 3,
        backoff: float = 5.0,
        max_backoff: float = 300.0,
    ) -> None:
        if fallback not in PARENT_FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(PARENT_FALLBACKS)}, "
                             f"not {fallback!r}")
        self.pool = BackendPool("parents", parents, _InOrder(), clock,
                                max_failures=max_failures, backoff=backoff,
                                max_backoff=max_backoff)
        """The parents as a `BackendPool` (their health, for the status page)."""
        self.fallback = fallback
        self.direct = direct or DirectChooser()

    @property
    def parents(self) -> list[ParentProxy]:
        """The parents, in the order they are tried."""
        return self.pool.backends

    def choose(self, intent: Intent, excluded: Collection[Any] = frozenset()) -> Any:
        tunnel = intent.kind == "connect" or intent.scheme == "https"
        for parent in self.pool.healthy():
            upstream = parent
            if tunnel:
                upstream = ParentTunnel(parent, intent.host, intent.port,
                                        tls=intent.kind != "connect",
                                        origin_tls=self.direct.origin_tls)
            if upstream.key not in excluded:
                return upstream
        if self.fallback == "direct":
            return self.direct.choose(intent, excluded)
        return None

    def unavailable(self, last: UpstreamError | None) -> UpstreamError:
        """The 502 for a request no parent could take (``last``: the last parent's failure)."""
        if last is None:
            names = ", ".join(p.name for p in self.parents)
            return ParentsUnavailable(
                f"every parent proxy is down ({names}) and the fallback is fail",
                "no-parent", "no-parent")
        if self.fallback == "direct":
            return last  # the origin itself was the last one tried
        return ParentsUnavailable(f"no parent proxy could be reached (last: {last})",
                                  last.kind, "connect-failed")


_PROXY_AUTHORIZATION = b"proxy-authorization"


@dataclass(frozen=True, slots=True)
class ParentRequest(ForwardedRequest):
    """
    A `ForwardedRequest` that may go to any parent of ``pool`` (a
    `ParentChooser`), or to the origin: `to` aims it at each in the form it
    needs, ``absolute`` (with the parent's credentials) for a `ParentProxy`,
    ``path`` (origin form) for anything else.
    """

    pool: Any = None
    absolute: bytes = b""
    """The absolute-form target, for a parent."""
    path: bytes = b""
    """The origin-form target, for an origin (directly or through a tunnel)."""

    def to(self, upstream: Any) -> ParentRequest:
        if upstream is self.upstream:
            return self
        head = self.head
        headers = head.headers
        if isinstance(upstream, ParentProxy):
            target = self.absolute
            headers = headers.copy()
            if upstream.proxy_authorization is not None:
                headers.set(b"Proxy-Authorization", upstream.proxy_authorization)
            else:
                headers.remove(_PROXY_AUTHORIZATION)
        else:
            target = self.path
            if _PROXY_AUTHORIZATION in headers:
                headers = headers.copy()
                headers.remove(_PROXY_AUTHORIZATION)
        return replace(self, upstream=upstream,
                       head=RequestHead(head.method, target, head.version, headers))

    def unavailable(self, last: UpstreamError | None) -> UpstreamError:
        if self.pool is None:
            return ForwardedRequest.unavailable(self, last)
        return self.pool.unavailable(last)
