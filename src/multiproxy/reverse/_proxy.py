"""
The reverse HTTP proxy: clients talk to it as to the web server, and it
routes each request by Host and path to a pool of backends.

`ReverseProxy` is the protocol factory (an `IProxy`); `ReverseProxyProtocol`
is the per-connection protocol, a subclass of the shared
`HTTPServerProtocol` (reading requests, pipelining, timeouts, streaming and
error answers all live there).  Only what a gateway does differently is
here: routing, forwarding headers, failover between backends, WebSocket
upgrades, redirects to HTTPS and HSTS.

Request targets (RFC 9112 3.2):

- origin-form (``/path``): routed by the Host field;
- absolute-form (``http://host/path``): RFC 9112 3.2.2 says the server uses
  the target's authority and ignores Host.  It is routed only when that host
  is one of the configured virtual hosts (the default virtual host does not
  count); for any other host the answer is 421 Misdirected Request.  The
  proxy never connects to a host named by a client, so absolute-form never
  turns it into an open forward proxy;
- ``OPTIONS *`` is answered by the proxy; CONNECT gets 405.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from zope.interface import implementer

from multiproxy.h2._settings import HTTP2Settings
from multiproxy.http._client import ConnectionPool
from multiproxy.http._exchange import IFetcher
from multiproxy.http._failover import BalancingFetcher
from multiproxy.http._server import Exchange, HTTPProxyFactory, HTTPServerProtocol, Timeouts
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import Limits, RequestHead, ResponseHead
from multiproxy.http1._rules import HOP_BY_HOP, end_to_end, via_value
from multiproxy.http1._target import is_origin_form, parse_absolute_target
from multiproxy.pipeline._contract import Pipeline
from multiproxy.pipeline._errors import ProtocolError
from multiproxy.pipeline._interfaces import IPolicy, IProxy, IUpstreamChooser
from multiproxy.pipeline._values import Decision, Intent
from multiproxy.reverse._fetch import ReverseRequest, backend_authority
from multiproxy.reverse._forwarded import ForwardedSettings, apply_forwarded
from multiproxy.reverse._routing import RouteMatch, RouteTable

log = Logger()

# A client must not smuggle an HTTP/2 upgrade's settings past us either.
_REQUEST_HOP_BY_HOP = HOP_BY_HOP | {b"http2-settings"}



@implementer(IUpstreamChooser)
class RouteChooser:
    """
    The reverse proxy's `IUpstreamChooser`: the route for the intent's host
    and target names a pool, whose balancer picks a healthy backend.

    @param pools: `multiproxy.balancing.BackendPool`s by name.
    """

    def __init__(self, routes: RouteTable, pools: Mapping[str, Any]) -> None:
        missing = sorted(routes.pools - set(pools))
        if missing:
            raise ValueError(f"routes name pools that do not exist: {', '.join(missing)}")
        self.routes = routes
        self.pools = dict(pools)

    def match(self, host: str | None, target: bytes) -> RouteMatch | None:
        """The route for ``host`` and origin-form ``target``, or None."""
        return self.routes.match(host, target)

    def choose(self, intent: Intent, excluded=frozenset()) -> Any:
        """
        A backend for ``intent`` from the pool of its route (``intent.route``,
        as the protocol matched it; else matched here from its host and
        target), or None.
        """
        match = intent.route
        if match is None:
            match = self.routes.match(intent.host, _path_of(intent.target))
            if match is None:
                return None
        return self.pools[match.pool].choose(intent, excluded)


def _path_of(target: str) -> bytes:
    raw = target.encode("latin-1")
    if raw.startswith(b"/"):
        return raw
    rest = raw.partition(b"://")[2]
    cut = min([i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0], default=len(rest))
    path = rest[cut:] or b"/"
    return path if path.startswith(b"/") else b"/" + path


class ReverseProxyProtocol(HTTPServerProtocol):
    """
    One client connection to the reverse proxy.

    Override `request_headers` to change what backends receive, or `admit`
    to add checks before the policy is asked.
    """

    factory: ReverseProxy

    def connectionMade(self) -> None:
        super().connectionMade()
        self.secure = ISSLTransport.providedBy(self.transport)

    secure = False
    """Whether this client connection is TLS (decides the scheme, redirects and HSTS)."""

    def handle(self, exchange: Exchange) -> None:
        head = exchange.request
        if head.method == b"CONNECT":
            exchange.record.ended = "denied"
            exchange.respond_error(405, "this is a reverse proxy: CONNECT is not supported",
                                   close=True)
            return
        if head.target == b"*":
            if head.method != b"OPTIONS":
                raise ProtocolError("the asterisk-form target is only for OPTIONS")
            exchange.respond(200, Headers([(b"Allow", self.allowed_methods)]))
            return
        if is_origin_form(head.target):  # the reader refused any fragment ("#")
            host_value = head.headers.get(b"host")
            host = host_value.decode("latin-1") if host_value is not None else None
            path = head.target
        else:
            target = parse_absolute_target(head.target)
            authority = f"[{target.host}]" if ":" in target.host else target.host
            if not self.factory.chooser.routes.knows_host(authority):
                exchange.record.ended = "denied"
                exchange.respond_error(
                    421, f"this server does not serve {target.host}; it is not a forward proxy")
                return
            host, path = authority, target.path
            host_value = authority.encode("ascii") if target.port in (80, 443) else \
                f"{authority}:{target.port}".encode("ascii")
        match = self.factory.chooser.match(host, path)
        if match is None:
            exchange.record.ended = "no-route"
            shown = host or "(no Host)"
            exchange.respond_error(404, f"no route for {shown}{_show_path(path)}")
            return
        exchange.record.extra["route"] = match.route.name
        if self.factory.redirect_https and not self.secure:
            self._redirect_to_https(exchange, match, path)
            return
        intent = self.make_intent(exchange, match, host_value)
        if self.answer_max_forwards(exchange):
            return
        self.admit(exchange, intent, lambda intent: self._forward(exchange, intent, match,
                                                                  host_value))

    # -- deciding --------------------------------------------------------

    def make_intent(self, exchange: Exchange, match: RouteMatch, host_value: bytes | None
                    ) -> Intent:
        """The `Intent` of a routed request (its target is the absolute URL asked for)."""
        head = exchange.request
        scheme = "https" if self.secure else "http"
        default = 443 if self.secure else 80
        port = default
        if host_value is not None:
            _, colon, tail = host_value.rpartition(b":")
            if colon and tail.isdigit() and not host_value.endswith(b"]"):
                port = int(tail)
        host = match.host
        shown = f"[{host}]" if ":" in host else host
        if port != default:
            shown += f":{port}"
        path = head.target if head.target.startswith(b"/") else _path_of(
            head.target.decode("latin-1"))
        # Positional, as in the forward proxy (keywords cost 2.6 % of a
        # request's instructions, docs/performance.md): kind, proxy,
        # client_host, client_port, host, port, method, scheme, target,
        # headers, user, groups, route.
        return Intent(
            "http", self.factory.name, self.client_host, self.client_port, host, port,
            head.method.decode("latin-1"), scheme,
            f"{scheme}://{shown}{path.decode('latin-1')}", head.headers, None, frozenset(),
            match,
        )

    def challenge(self, exchange: Exchange, intent: Intent, decision: Decision | None) -> None:
        """
        A policy that wants credentials gets 403 here: proxy authentication
        is for forward proxies, and a site's own login is its backends' business.
        """
        self.deny(exchange, intent, decision)

    # -- forwarding ------------------------------------------------------

    def request_headers(self, exchange: Exchange, intent: Intent, match: RouteMatch,
                        host_value: bytes | None, backend: Any) -> Headers:
        """
        The header fields sent to ``backend`` (framing fields are added
        later).  ``backend`` is None when the pool has no healthy backend
        and the route's cache may answer: a backend's own Host is then set
        when one is chosen.
        """
        head = exchange.request
        factory = self.factory
        headers = end_to_end(head.headers, _REQUEST_HOP_BY_HOP)
        headers = apply_forwarded(
            headers,
            client_host=self.client_host,
            client_port=self.client_port,
            proto=intent.scheme,
            host=host_value,
            settings=factory.forwarded,
        )
        if match.route.host_header == "backend" or host_value is None:
            # RFC 9112 3.2: an HTTP/1.1 request always has Host, and an
            # HTTP/1.0 client may have sent none.
            if backend is not None:
                headers.set(b"host", backend_authority(backend))
        else:
            headers.set(b"host", host_value)
        if factory.via is not None:
            headers.add(b"Via", via_value(head.version, factory.via))
        if head.version == b"HTTP/1.0":
            # RFC 9110 10.1.1: a 100-continue expectation from an HTTP/1.0
            # client is ignored, so it must not reach an HTTP/1.1 backend.
            headers.remove(b"expect")
        return headers

    def _forward(self, exchange: Exchange, intent: Intent, match: RouteMatch,
                 host_value: bytes | None) -> None:
        chooser = self.factory.chooser
        pool = chooser.pools[match.pool]  # the request fails over within it
        backend = chooser.choose(intent)  # IUpstreamChooser: the one way a backend is chosen
        head = exchange.request
        websocket = _wants_websocket(head) and exchange.body is None
        fetcher = self.factory.fetcher_for(match)
        if backend is None and (websocket or fetcher is self.factory.fetcher):
            self._no_backend(exchange, pool)
            return
        # With the cache on, a request goes on without a backend: a stored
        # response may answer it (a fresh one always, a stale one when the
        # serve-stale rules allow), else the fetcher says no backend is up.
        headers = self.request_headers(exchange, intent, match, host_value, backend)
        if websocket:
            from multiproxy.reverse._upgrade import start_upgrade

            start_upgrade(self, exchange, intent, pool, backend,
                          RequestHead(head.method, match.target, b"HTTP/1.1", headers))
            return
        request = ReverseRequest(
            intent=intent,
            upstream=backend,
            head=RequestHead(head.method, match.target, b"HTTP/1.1", headers),
            body=exchange.body,
            record=exchange.record,
            pool=pool,
            rewrite_host=match.route.host_header == "backend" or host_value is None,
        )
        exchange.forward(request, fetcher)

    def _no_backend(self, exchange: Exchange, pool: Any) -> None:
        exchange.record.ended = "no-backend"
        retry = pool.retry_after()
        body = f"503 Service Unavailable: no healthy backend in pool {pool.name}\n".encode()
        exchange.record.extra.setdefault("reason", f"no healthy backend in pool {pool.name}")
        exchange.respond(503, Headers([
            (b"Content-Type", b"text/plain; charset=utf-8"),
            (b"Cache-Control", b"no-store"),
            (b"Retry-After", b"%d" % retry),
        ]), body)

    def _redirect_to_https(self, exchange: Exchange, match: RouteMatch, path: bytes) -> None:
        port = self.factory.https_port
        host = f"[{match.host}]" if ":" in match.host else match.host
        if not host:
            raise ProtocolError("a Host header is needed to redirect to https")
        authority = host if port == 443 else f"{host}:{port}"
        location = f"https://{authority}".encode("ascii") + path
        exchange.record.ended = "redirect"
        exchange.respond(308, Headers([
            (b"Location", location),
            (b"Content-Type", b"text/plain; charset=utf-8"),
        ]), b"308 Permanent Redirect: " + location + b"\n")

    # -- responses -------------------------------------------------------

    def response_headers(self, exchange: Exchange, response: ResponseHead) -> Headers:
        """End-to-end fields of the backend's response, plus Date if missing and HSTS over TLS."""
        headers = end_to_end(response.headers)
        self.add_date(headers)
        hsts = self.factory.hsts
        if hsts is not None and self.secure and b"strict-transport-security" not in headers:
            headers.add(b"Strict-Transport-Security", hsts)
        return headers


def _wants_websocket(head: RequestHead) -> bool:
    return (head.method == b"GET" and b"upgrade" in head.headers.tokens(b"connection")
            and b"websocket" in head.headers.tokens(b"upgrade"))


def _show_path(path: bytes) -> str:
    text = path.decode("latin-1")
    return text if len(text) <= 80 else text[:77] + "..."


@implementer(IProxy)
class ReverseProxy(HTTPProxyFactory):
    """
    A reverse HTTP proxy: the protocol factory to listen with (plain or TLS).

    @param routes: the `RouteTable`.
    @param pools: `multiproxy.balancing.BackendPool`s by name.
    @param policy: an `IPolicy` (default: allow everything).
    @param fetcher: the `IFetcher` for every route (default: a
        `BalancingFetcher` over ``connection_pool``).
    @param cached_fetcher: the `IFetcher` for routes with ``cache`` set
        (typically the shared cache wrapping ``fetcher``).
    @param via: the pseudonym in the ``Via`` sent to backends, or None.
    @param hsts: the ``Strict-Transport-Security`` value for TLS responses.
    @param redirect_https: plain connections get a 308 to ``https_port``.
    @param http2: where clients may speak HTTP/2 (None: HTTP/1 only); the
        TLS listeners offer ``h2`` by ALPN only when their `ServerTLS` lists it.
    """

    protocol = ReverseProxyProtocol

    def __init__(
        self,
        reactor,
        *,
        routes: RouteTable,
        pools: Mapping[str, Any],
        name: str = "reverse",
        policy: IPolicy | None = None,
        fetcher: IFetcher | None = None,
        cached_fetcher: IFetcher | None = None,
        connection_pool: ConnectionPool | None = None,
        forwarded: ForwardedSettings = ForwardedSettings(),
        via: bytes | None = b"multiproxy",
        hsts: bytes | None = None,
        redirect_https: bool = False,
        https_port: int = 443,
        http2: HTTP2Settings | None = HTTP2Settings(),
        max_attempts: int = 3,
        limits: Limits = Limits(),
        timeouts: Timeouts = Timeouts(),
        reporters: Sequence = (),
    ) -> None:
        self.pool = connection_pool or ConnectionPool.from_timeouts(reactor, limits, timeouts)
        super().__init__(
            reactor,
            name=name,
            fetcher=fetcher or BalancingFetcher(self.pool, max_attempts),
            limits=limits,
            timeouts=timeouts,
            reporters=tuple(reporters),
            # Sent on requests to backends; a gateway MAY also add it to
            # responses (RFC 9110 7.6.3), which ``response_headers`` does not.
            via=via,
        )
        self.pipeline = Pipeline(name, policy=policy, reporters=self.reporters,
                                 choosers={f"backend pool {pool_name}": pool
                                           for pool_name, pool in pools.items()})
        self.policy = self.pipeline.policy
        self.cached_fetcher = cached_fetcher
        self.chooser = RouteChooser(routes, pools)
        self.forwarded = forwarded
        self.hsts = hsts
        self.redirect_https = redirect_https
        self.http2 = http2
        self.https_port = https_port

    def fetcher_for(self, match: RouteMatch) -> IFetcher:
        """The fetcher for a route: the cache in front of it when the route asks for it."""
        if match.route.cache and self.cached_fetcher is not None:
            return self.cached_fetcher
        return self.fetcher
