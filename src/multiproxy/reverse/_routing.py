"""
Routing for the reverse proxy: which backend pool serves a request.

A `RouteTable` maps a request's host (exact virtual hosts, wildcards such as
``*.example.com``, and a default) and path (longest prefix wins) to a named
pool, and says how to rewrite the request target and the Host field on the
way.  It is pure: no sockets, no reactor.

Choice of route, in order:

1. The virtual host: the routes of an exact name are tried first, then those
   of each matching wildcard (longest first), then the default (routes with
   no ``hosts``).
2. Within that group, the route with the longest matching path prefix wins;
   when none of the group's prefixes matches, the next group is tried.

A path prefix matches on whole segments: ``/api`` matches ``/api``,
``/api/`` and ``/api/users`` but not ``/apix``; a trailing ``/`` in the
prefix makes no difference (``/api/`` is the prefix ``/api``).  Paths are compared after
normalisation (RFC 3986 6.2.2: percent-encoded unreserved characters decoded,
dot segments removed), so ``/%61pi/../admin`` is routed as ``/admin``, where
the backend will also see it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from multiproxy.http1._target import normalise_percent

HostHeaderMode = Literal["keep", "backend"]

_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_NAME_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_HOST_CACHE_SIZE = 4096
_MATCH_CACHE_SIZE = 4096
_CACHED_TARGET = 256
_UNSEEN: Any = object()


@dataclass(frozen=True, slots=True)
class Route:
    """
    One routing rule.

    @ivar pool: the name of the backend pool that serves matching requests.
    @ivar hosts: exact names (``example.com``) and wildcards
        (``*.example.com``: any name below example.com, not example.com
        itself); empty means the default virtual host.
    @ivar path: the path prefix (``/`` matches everything).
    @ivar strip_prefix: remove ``path`` from the target before forwarding.
    @ivar replace_prefix: put this in place of ``path`` before forwarding
        (``strip_prefix`` is the same as ``replace_prefix="/"``).
    @ivar host_header: ``keep`` forwards the client's Host; ``backend``
        rewrites it to the chosen backend's ``host[:port]``.
    @ivar cache: whether the shared HTTP cache answers for this route.
    @ivar name: a label for logs (defaults to ``host-or-*`` + path).
    """

    pool: str
    hosts: tuple[str, ...] = ()
    path: str = "/"
    strip_prefix: bool = False
    replace_prefix: str | None = None
    host_header: HostHeaderMode = "keep"
    cache: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        if not self.pool:
            raise ValueError("a route needs a pool name")
        hosts = tuple(normalise_host_pattern(h) for h in self.hosts)
        object.__setattr__(self, "hosts", hosts)
        if not self.path.startswith("/"):
            raise ValueError(f"path prefix must start with '/', got {self.path!r}")
        if "?" in self.path or "#" in self.path:
            raise ValueError(f"path prefix must not contain '?' or '#', got {self.path!r}")
        path = normalise_path(self.path.encode()).decode()
        object.__setattr__(self, "path", path.rstrip("/") or "/")
        if self.strip_prefix and self.replace_prefix is not None:
            raise ValueError("use either strip_prefix or replace_prefix, not both")
        if self.replace_prefix is not None and not self.replace_prefix.startswith("/"):
            raise ValueError(f"replace_prefix must start with '/', got {self.replace_prefix!r}")
        if self.host_header not in ("keep", "backend"):
            raise ValueError(f"host_header must be 'keep' or 'backend', got {self.host_header!r}")
        if not self.name:
            object.__setattr__(self, "name", f"{self.hosts[0] if self.hosts else '*'}{self.path}")

    def matches_path(self, path: bytes) -> bool:
        """Whether normalised ``path`` is under this route's prefix."""
        prefix = self.path
        if prefix == "/":
            return True
        return _prefix_matches(prefix.encode(), path)

    def rewrite(self, path: bytes, query: bytes | None) -> bytes:
        """
        The origin-form target to send to the backend for normalised ``path``
        (which this route matches) and the raw ``query`` (without ``?``).
        """
        replacement = "/" if self.strip_prefix else self.replace_prefix
        assert replacement is not None
        prefix = self.path.rstrip("/").encode()
        rest = path[len(prefix):]
        new = replacement.encode()
        if new.endswith(b"/") and rest.startswith(b"/"):
            new = new[:-1]
        new = (new + rest) or b"/"
        if query is not None:
            new += b"?" + query
        return new

    @property
    def rewrites(self) -> bool:
        return self.strip_prefix or self.replace_prefix is not None


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """
    A routing decision for one request.

    @ivar target: the origin-form request target to send to the backend
        (the client's own target when the route does not rewrite).
    @ivar host: the normalised host the request was routed by.
    """

    route: Route
    target: bytes
    host: str

    @property
    def pool(self) -> str:
        return self.route.pool


@dataclass(frozen=True, slots=True)
class _VirtualHost:
    routes: tuple[Route, ...]  # longest prefix first

    def find(self, path: bytes) -> Route | None:
        for route in self.routes:
            if route.matches_path(path):
                return route
        return None


class RouteTable:
    """
    An immutable set of `Route`s, indexed for matching.

    Raises `ValueError` when two routes claim the same host and path.
    """

    __slots__ = ("_default", "_exact", "_hosts", "_matches", "_wildcards", "routes")

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self._hosts: dict[str, str | None] = {}  # Host value -> normalised (bounded)
        self._matches: dict[tuple[str | None, bytes], RouteMatch | None] = {}  # (bounded)
        groups: dict[str | None, list[Route]] = {}
        for route in self.routes:
            for host in route.hosts or (None,):
                group = groups.setdefault(host, [])
                for other in group:
                    if other.path == route.path:
                        where = host or "the default virtual host"
                        raise ValueError(
                            f"routes {other.name!r} and {route.name!r} both claim "
                            f"path {route.path!r} on {where}"
                        )
                group.append(route)
        vhosts = {
            host: _VirtualHost(tuple(sorted(rs, key=_prefix_length, reverse=True)))
            for host, rs in groups.items()
        }
        self._default: _VirtualHost | None = vhosts.pop(None, None)
        exact = {h: v for h, v in vhosts.items() if h is not None and not h.startswith("*.")}
        wild = sorted(
            ((h[1:], v) for h, v in vhosts.items() if h is not None and h.startswith("*.")),
            key=lambda item: len(item[0]), reverse=True,
        )
        self._exact: dict[str, _VirtualHost] = exact
        self._wildcards: tuple[tuple[str, _VirtualHost], ...] = tuple(wild)

    def __repr__(self) -> str:
        return f"RouteTable({list(self.routes)!r})"

    @property
    def pools(self) -> frozenset[str]:
        """The names of every pool some route sends to."""
        return frozenset(r.pool for r in self.routes)

    @property
    def has_default(self) -> bool:
        """Whether requests for an unknown host have somewhere to go."""
        return self._default is not None

    def knows_host(self, host: str) -> bool:
        """
        Whether ``host`` (a Host field value or URL authority, port allowed)
        names one of the configured virtual hosts, exactly or by wildcard.
        The default virtual host does not count: this is what stops an
        absolute-form request for an arbitrary site from being forwarded.
        """
        name = normalise_host(host)
        return name is not None and next(self._vhosts_for(name, with_default=False), None) is not None

    def match(self, host: str | bytes | None, target: bytes) -> RouteMatch | None:
        """
        Route a request by its Host (or the authority of an absolute-form
        target, which the caller extracts) and origin-form ``target``.

        @return: None when no route applies (answer 404) or when the target
            is not in origin form (``*`` or authority form).
        """
        if isinstance(host, bytes):
            host = host.decode("latin-1")
        key = (host, target)
        found = self._matches.get(key, _UNSEEN)
        if found is not _UNSEEN:
            return found
        found = self._match(host, target)
        if len(target) <= _CACHED_TARGET:
            if len(self._matches) >= _MATCH_CACHE_SIZE:
                self._matches.clear()
            self._matches[key] = found
        return found

    def _match(self, host: str | None, target: bytes) -> RouteMatch | None:
        if host is None:
            name: str | None = ""
        else:
            cache = self._hosts
            name = cache.get(host, _UNSEEN)
            if name is _UNSEEN:
                name = normalise_host(host)
                if len(cache) >= _HOST_CACHE_SIZE:
                    cache.clear()
                cache[host] = name
        if name is None:
            return None
        if not target.startswith(b"/"):
            return None
        path, _, query = target.partition(b"?")
        has_query = b"?" in target
        norm = normalise_path(path)
        for vhost in self._vhosts_for(name, with_default=True):
            route = vhost.find(norm)
            if route is not None:
                break
        else:
            return None
        if route.rewrites:
            out = route.rewrite(norm, query if has_query else None)
        else:
            out = target
        return RouteMatch(route=route, target=out, host=name)

    def _vhosts_for(self, name: str, with_default: bool) -> Iterator[_VirtualHost]:
        if name:
            vhost = self._exact.get(name)
            if vhost is not None:
                yield vhost
            for suffix, vhost in self._wildcards:
                if name.endswith(suffix) and len(name) > len(suffix):
                    yield vhost
        if with_default and self._default is not None:
            yield self._default


def normalise_host_pattern(pattern: str) -> str:
    """
    Check and normalise a route's host: a DNS name or a ``*.`` wildcard, in
    lower case without a trailing dot.  Raises `ValueError` with a reason.
    """
    p = pattern.strip().lower().rstrip(".")
    bare = p[2:] if p.startswith("*.") else p
    if p in ("", "*"):
        raise ValueError(
            f"host {pattern!r}: leave 'hosts' empty for the default virtual host"
        )
    try:
        bare = bare.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"host {pattern!r} is not a valid DNS name") from None
    if "*" in bare or not (_NAME_RE.match(bare) or _is_ip_literal(bare)):
        raise ValueError(
            f"host {pattern!r} must be a name (example.com) or a wildcard (*.example.com)"
        )
    return ("*." + bare) if p.startswith("*.") else bare


def normalise_host(value: str) -> str | None:
    """
    The host part of a Host field value or URL authority, lower case, without
    port, trailing dot or IPv6 brackets; None when it is not a valid host.
    The empty string stays empty (HTTP/1.0 without Host).
    """
    value = value.strip()
    if not value:
        return ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1:]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return host.lower() if _is_ip_literal(host) else None
    host, sep, port = value.rpartition(":")
    if not sep:
        host = port
    elif port and not port.isdigit():
        return None
    host = host.lower().rstrip(".")
    if not host or any(c in host for c in "/@?#\\ \t"):
        return None
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def normalise_path(path: bytes) -> bytes:
    """
    RFC 3986 6.2.2 normalisation of a path: percent-encoded unreserved
    characters decoded, other escapes in upper case, dot segments removed.
    Encoded slashes (``%2F``) stay encoded, so they never split a segment.
    """
    return _remove_dot_segments(normalise_percent(path))


def _remove_dot_segments(path: bytes) -> bytes:
    if b"." not in path:
        return path or b"/"
    segments = path.split(b"/")
    out: list[bytes] = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == b".":
            if last:
                out.append(b"")
        elif seg == b"..":
            if len(out) > 1:
                out.pop()
            if last:
                out.append(b"")
        else:
            out.append(seg)
    result = b"/".join(out)
    if not result.startswith(b"/"):
        result = b"/" + result
    return result


def _prefix_length(route: Route) -> int:
    return 0 if route.path == "/" else len(route.path)


def _prefix_matches(prefix: bytes, path: bytes) -> bool:
    if prefix == b"/":
        return True
    return path == prefix or path.startswith(prefix + b"/")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True

