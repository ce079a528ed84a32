"""
The forward HTTP proxy: clients send it absolute-form requests and CONNECT.

`ForwardProxy` is the protocol factory (an `IProxy`); `ForwardProxyProtocol`
is the per-connection protocol, and the class to subclass to change how
requests are admitted or rewritten.  Everything it shares with the reverse
proxy (reading requests, streaming, pooling, timeouts, error answers) lives
in `multiproxy.http`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy import _memo as memo
from multiproxy.balancing._backend import note_connect_failed, note_exchanged, note_retried
from multiproxy.forward._bump import InspectedTunnel
from multiproxy.forward._origin import DirectChooser
from multiproxy.forward._pac import (
    PAC_CONTENT_TYPE,
    PAC_MAX_AGE,
    PacSettings,
    pac_path,
    parse_proxy_address,
    render_pac,
)
from multiproxy.forward._parents import ParentChooser, ParentProxy, ParentRequest, parse_parent_url
from multiproxy.forward._peek import HelloGate
from multiproxy.forward._sni import ClientHello, NotTLS
from multiproxy.http._client import ConnectionPool
from multiproxy.http._exchange import ForwardedRequest, IFetcher
from multiproxy.http._failover import BalancingFetcher
from multiproxy.http._server import Exchange, HTTPProxyFactory, HTTPServerProtocol, Timeouts
from multiproxy.http1._headers import Headers
from multiproxy.http1._parser import Limits, RequestHead
from multiproxy.http1._rules import end_to_end, via_value
from multiproxy.http1._target import is_origin_form, parse_absolute_target, parse_authority
from multiproxy.pipeline._attempts import Attempts
from multiproxy.pipeline._connect import UpstreamEndpoint
from multiproxy.pipeline._contract import Pipeline
from multiproxy.pipeline._errors import ProtocolError, UpstreamError
from multiproxy.pipeline._interfaces import IPolicy, IProxy, IUpstreamChooser
from multiproxy.pipeline._values import Intent
from multiproxy.policy._admission import Verdict, upstream_fields
from multiproxy.policy._hosts import normalise_host
from multiproxy.transport._relay import Relay

if TYPE_CHECKING:
    from multiproxy.forward._inspect import Inspector

log = Logger()

XFF_MODES = ("add", "leave", "delete")
NON_TLS_RULES = ("allow", "deny")
_MAX_ATTEMPTS = 8  # tries per request across parents (each is tried once at most)
_MAX_RULE_CHOOSERS = 256


@dataclass(frozen=True, slots=True)
class ForwardSettings:
    """How a forward proxy rewrites what passes through it."""

    via: bytes | None = b"multiproxy"
    """The pseudonym in ``Via`` (RFC 9110 7.6.3); None sends no ``Via``."""
    x_forwarded_for: str = "add"
    """"add" appends the client address, "leave" passes it on, "delete" removes it."""
    connect_ports: frozenset[int] = frozenset({443})
    """Destination ports a CONNECT tunnel may reach."""
    sni_peek: bool = True
    """Read a tunnel's TLS ClientHello and apply the policy to its SNI name too."""
    sni_must_match: bool = False
    """Refuse a tunnel whose SNI name is not the CONNECT host (domain fronting)."""
    non_tls: str = "allow"
    """What happens to a tunnel that does not start with TLS: "allow" or "deny"."""
    hello_timeout: float | None = 10.0
    """Seconds from a tunnel's first byte to a complete ClientHello."""
    pac: PacSettings = PacSettings()
    """The PAC file served at ``/proxy.pac`` and ``/wpad.dat`` (on by default)."""


class ForwardProxyProtocol(HTTPServerProtocol):
    """
    One client connection to the forward proxy.

    Override `request_headers` to rewrite what is sent upstream, or `admit`
    to add checks before the policy is asked.
    """

    factory: ForwardProxy
    allowed_methods = b"GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, CONNECT"

    inspected: InspectedTunnel | None = None
    """Inside an inspected CONNECT tunnel: the tunnel, naming the origin its requests go to."""

    def handle(self, exchange: Exchange) -> None:
        head = exchange.request
        if self.inspected is not None:
            head = self._inspected_request(exchange)
        elif head.method == b"CONNECT":
            self._handle_connect(exchange)
            return
        elif is_origin_form(head.target):
            if self.factory.settings.pac.enabled and pac_path(head.target) is not None:
                self.serve_pac(exchange)
                return
            exchange.respond_error(
                400,
                "this is a forward proxy: the request target must be an absolute URL "
                "(http://host/path); configure your client to use it as a proxy",
            )
            return
        target = parse_absolute_target(head.target)
        path = target.path
        if head.method == b"OPTIONS" and path == b"/" and not head.target.endswith(b"/"):
            # RFC 9112 3.2.4: OPTIONS for a URI with an empty path asks about
            # the server as a whole: the origin-form target is "*".
            path = b"*"
        intent = self.make_intent(exchange, "http", target.scheme, target.host, target.port)
        if self.answer_max_forwards(exchange):
            return
        self.admit(exchange, intent, lambda intent: self._forward(exchange, intent, path))

    def _inspected_request(self, exchange: Exchange) -> RequestHead:
        """
        A request read inside an inspected tunnel, made absolute
        (``https://host[:port]/path``) so that it takes the normal path; a
        request for another origin is refused (421), CONNECT inside is 405.
        """
        head = exchange.request
        tunnel = self.inspected
        assert tunnel is not None
        if head.method == b"CONNECT":
            raise ProtocolError("CONNECT inside an inspected tunnel", 405)
        authority = _host_value("https", tunnel.host, tunnel.port)
        if is_origin_form(head.target):
            path = head.target
        else:
            target = parse_absolute_target(head.target)
            if (target.scheme, target.host, target.port) != ("https", tunnel.host, tunnel.port):
                raise ProtocolError(f"this tunnel reaches only https://{authority.decode()}", 421)
            path = target.path
        host = head.headers.get(b"host")
        explicit = (f"[{tunnel.host}]" if ":" in tunnel.host else tunnel.host).encode() \
            + b":%d" % tunnel.port
        if host is not None and host.lower() not in (authority, explicit):
            # RFC 9110 7.4: the connection cannot serve that authority (domain fronting).
            raise ProtocolError(
                f"Host {host.decode('latin-1')!r} is not this tunnel's {authority.decode()}", 421)
        absolute = b"https://" + authority + path
        exchange.request = head = head._replace(target=absolute)
        exchange.record.target = absolute.decode("latin-1")
        return head

    def serve_pac(self, exchange: Exchange) -> None:
        """
        Answer a request for the PAC file: the operator's, or one generated
        for the address the client reached the proxy at (its ``Host``)
        unless the settings name one.  No policy is asked: a browser fetches
        it before it knows it has a proxy, so without credentials.
        """
        head = exchange.request
        record = exchange.record
        record.ended = "pac"
        if head.method not in (b"GET", b"HEAD"):
            record.extra["reason"] = "the PAC file is read with GET or HEAD"
            exchange.respond(405, Headers([
                (b"Allow", b"GET, HEAD"),
                (b"Content-Type", b"text/plain; charset=utf-8"),
                (b"Cache-Control", b"no-store"),
            ]), b"405 Method Not Allowed: the PAC file is read with GET or HEAD\n")
            return
        pac = self.factory.settings.pac
        body = pac.body
        if body is None:
            tls = ISSLTransport.providedBy(self.transport)
            try:
                proxy = pac.proxy or self._pac_proxy_address(head, tls)
            except ValueError as e:
                record.ended = "bad-request"
                exchange.respond_error(
                    400, f"the PAC file names the proxy by the request's Host field: {e}")
                return
            body = render_pac(proxy, pac.direct, tls=tls and pac.proxy is None)
        exchange.respond(200, Headers([
            (b"Content-Type", PAC_CONTENT_TYPE),
            (b"Cache-Control", b"max-age=%d" % PAC_MAX_AGE),
        ]), body)

    def _pac_proxy_address(self, head: RequestHead, tls: bool) -> str:
        """The address the client reached the proxy at: ``Host``, else the listener's."""
        host = head.headers.get(b"host")
        if host is not None:
            return parse_proxy_address(host.decode("latin-1"), 443 if tls else 80)
        # HTTP/1.0 may leave Host out: the address the connection came in on.
        local = self.transport.getHost()
        if not hasattr(local, "port"):
            raise ValueError("there is none, and the listener has no address to hand out")
        return parse_proxy_address(f"[{local.host}]:{local.port}")

    def make_intent(
        self, exchange: Exchange, kind: str, scheme: str, host: str, port: int
    ) -> Intent:
        """The `Intent` for a request, with the destination host normalised."""
        try:
            host = normalise_host(host)
        except ValueError as e:
            raise ProtocolError(f"invalid host in request target: {e}") from None
        head = exchange.request
        if kind == "connect":
            target = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        else:
            target = head.target.decode("latin-1")
        # Positional (kind, proxy, client_host, client_port, host, port,
        # method, scheme, target, headers): matching ten keywords costs more
        # than building the Intent, on every request.
        return Intent(
            kind, self.factory.name, self.client_host, self.client_port, host, port,
            head.method.decode("latin-1"), scheme, target, head.headers,
        )

    def credentials(self, exchange: Exchange) -> bytes | None:
        """``Proxy-Authorization``: what the policy's authenticator checks."""
        return exchange.request.headers.get(b"proxy-authorization")

    def admitted(self, verdict: Verdict, exchange: Exchange, proceed) -> None:
        """As for any HTTP proxy, and a policy rule may name the parent proxies to use."""
        if verdict.checked and verdict.intent.user is None:
            exchange.record.extra["auth"] = "failed"
        decision = verdict.decision
        if verdict.action == "allow" and decision is not None and decision.parents:
            exchange.chooser = self.factory.chooser_for(decision.parents)
        super().admitted(verdict, exchange, proceed)

    def request_headers(self, exchange: Exchange, intent: Intent, authority: bytes) -> Headers:
        """The header fields sent upstream (framing fields are added later)."""
        head = exchange.request
        # Proxy-Authorization is hop-by-hop: end_to_end never forwards it.
        headers, may_add_via, may_add_xff = upstream_fields(
            self.factory.policy, end_to_end(head.headers)
        )
        # RFC 9112 3.2.2: the target's authority replaces any Host field.
        headers.set(b"host", authority)
        settings = self.factory.settings
        if settings.via is not None and may_add_via:
            headers.add(b"Via", via_value(head.version, settings.via))
        if head.version == b"HTTP/1.0":
            # RFC 9110 10.1.1: a 100-continue expectation from an HTTP/1.0
            # client is ignored, so it must not reach an HTTP/1.1 upstream.
            headers.remove(b"expect")
        mode = settings.x_forwarded_for
        if mode == "add" and may_add_xff:
            headers.add(b"X-Forwarded-For", self.client_host.encode("ascii", "replace"))
        elif mode == "delete":
            headers.remove(b"x-forwarded-for")
        return headers

    def no_upstream(self, exchange: Exchange, intent: Intent) -> None:
        """
        Answer a request the chooser found no upstream for: 502 naming the
        parents when every parent is down, else 503.
        """
        chooser = exchange.chooser or self.factory.chooser
        if isinstance(chooser, ParentChooser):
            exchange.fail(chooser.unavailable(None))
        else:
            exchange.respond_error(503, f"no upstream available for {intent.target}")

    # -- plain requests --------------------------------------------------

    def _forward(self, exchange: Exchange, intent: Intent, path: bytes) -> None:
        chooser = exchange.chooser or self.factory.chooser
        upstream = chooser.choose(intent)
        if upstream is None:
            self.no_upstream(exchange, intent)
            return
        head = exchange.request
        headers = self.request_headers(
            exchange, intent, _host_value(intent.scheme, intent.host, intent.port)
        )
        outgoing = RequestHead(head.method, path, b"HTTP/1.1", headers)
        if isinstance(chooser, ParentChooser):
            # A parent wants the absolute form, with its own credentials.
            request = ParentRequest(
                intent=intent, upstream=None, head=outgoing, body=exchange.body,
                record=exchange.record, pool=chooser, absolute=head.target, path=path,
            ).to(upstream)
        else:
            request = ForwardedRequest(  # intent, upstream, head, body, record
                intent, upstream, outgoing, exchange.body, exchange.record)
        exchange.forward(request)

    # -- CONNECT tunnels ---------------------------------------------------

    def _handle_connect(self, exchange: Exchange) -> None:
        host, port = parse_authority(exchange.request.target)
        intent = self.make_intent(exchange, "connect", "", host, port)
        exchange.record.target = intent.target
        if port not in self.factory.settings.connect_ports:
            exchange.record.ended = "denied"
            allowed = ", ".join(str(p) for p in sorted(self.factory.settings.connect_ports))
            exchange.respond_error(
                403, f"CONNECT to port {port} is not allowed (allowed ports: {allowed})"
            )
            return
        inspector = self.factory.inspector
        if inspector is not None and inspector.wants(intent.host):
            self.admit(exchange, intent, lambda intent: self._inspect_tunnel(exchange, intent))
            return
        self.admit(exchange, intent, lambda intent: self._open_tunnel(exchange, intent))

    def _tunnel_fields(self) -> Headers:
        """The fields of the 200 that opens a tunnel: RFC 9110 6.6.1, the proxy is its origin."""
        return Headers([(b"Date", self.http_date())])

    def _inspect_tunnel(self, exchange: Exchange, intent: Intent) -> None:
        """Answer the CONNECT here and read the requests inside it (see `InspectedTunnel`)."""
        record = exchange.record
        record.kind = "connect"

        def ended(tunnel: InspectedTunnel) -> None:
            record.ended = "inspected" if tunnel.established else "inspect-tls-failed"
            record.extra["sni"] = tunnel.server_name or "-"
            record.bytes_from_client += tunnel.bytes_from_client
            self.report(exchange)

        tunnel = InspectedTunnel(self, intent.host, intent.port, self.factory.inspector, ended)
        early = exchange.become_tunnel(200, b"Connection established", self._tunnel_fields(),
                                       tunnel)
        if early:
            tunnel.downstream_data(early)

    def _open_tunnel(self, exchange: Exchange, intent: Intent) -> None:
        chooser = exchange.chooser or self.factory.chooser
        attempts = Attempts(chooser, intent)
        upstream = attempts.first()
        if upstream is None:
            self.no_upstream(exchange, intent)
            return
        record = exchange.record
        record.kind = "connect"
        timeouts = self.factory.timeouts

        def ended(relay: Relay, how: str, upstream: Any) -> None:
            self.factory.tunnels_open -= 1
            record.ended = how
            record.bytes_from_client += relay.bytes_from_downstream
            record.bytes_to_client += relay.bytes_from_upstream
            record.bytes_to_upstream += relay.bytes_from_downstream
            record.bytes_from_upstream += relay.bytes_from_upstream
            note_exchanged(upstream, 0, relay.bytes_from_downstream, relay.bytes_from_upstream)
            self.report(exchange)

        reactor = self.factory.reactor
        peek = self.factory.settings.sni_peek
        # Bulk tunnel traffic moves by splice(2) where both sides are plain
        # TCP; when peeking, only once the ClientHello has been judged.
        relay = Relay(reactor, self.transport, idle_timeout=timeouts.tunnel_idle, splice=not peek)
        exchange.abort_fetch = lambda: relay.end("client-closed")

        def attempt(upstream: Any) -> None:
            attempts.begin(upstream)
            record.upstream = upstream.name
            upstream.started()
            connecting = relay.connect(UpstreamEndpoint(reactor, upstream, timeouts.connect))
            connecting.addCallbacks(opened, failed, callbackArgs=(upstream, reactor.seconds()),
                                    errbackArgs=(upstream,))

        def opened(_: Relay, upstream: Any, started: float) -> None:
            # The connection (to a parent: and its CONNECT) is what the
            # upstream's health is judged on, not how long the tunnel lasts.
            upstream.finished(True, reactor.seconds() - started)
            if exchange.finished:
                return
            relay.on_end = lambda relay, how: ended(relay, how, upstream)
            self.factory.tunnels_open += 1
            self.factory.tunnels_opened += 1
            early = exchange.become_tunnel(200, b"Connection established", self._tunnel_fields(),
                                           relay)
            if peek:
                self.tunnel = self.hello_gate(exchange, intent, relay)
            if early:
                self.tunnel.downstream_data(early)

        def failed(failure: Failure, upstream: Any) -> None:
            if exchange.finished:
                # The client left while connecting: nothing against the upstream.
                upstream.finished(True, 0.0)
                return
            error = failure.value
            if not isinstance(error, UpstreamError):
                log.failure("unexpected error connecting to {name}", failure, name=upstream.name)
                error = UpstreamError(f"internal error connecting to {upstream.name}", 502)
            if error.kind == "parent-refused":
                # The parent answered (it is up); its answer goes back as 502.
                upstream.finished(True, 0.0)
            else:
                note_connect_failed(upstream)
                following = attempts.after_failure()
                if following is not None:
                    log.info("{name}: {error}; trying {next}", name=upstream.name,
                             error=str(error), next=following.name)
                    note_retried(upstream, following)
                    attempt(following)
                    return
                if isinstance(chooser, ParentChooser):
                    error = chooser.unavailable(error)
            exchange.abort_fetch = None
            exchange.fail(error)

        attempt(upstream)

    def hello_gate(self, exchange: Exchange, intent: Intent, relay: Relay) -> HelloGate:
        """The `HelloGate` that judges a tunnel's first flight before it is relayed."""
        settings = self.factory.settings

        def passed(relay: Relay) -> None:
            if self.tunnel is gate:
                self.tunnel = relay  # the client's bytes go straight to the relay now
            relay.enable_splice()

        gate = HelloGate(
            self.factory.reactor, relay,
            lambda answer: self.judge_hello(exchange, intent, answer),
            passed, timeout=settings.hello_timeout,
        )
        return gate

    def judge_hello(
        self, exchange: Exchange, intent: Intent, answer: ClientHello | NotTLS | None
    ) -> str | None:
        """
        Judge a tunnel's first flight (a `ClientHello`, `NotTLS`, or None when
        the client sent nothing): None lets it through, else the reason it is
        refused.  The policy judges the SNI name as it judged the CONNECT host.
        """
        settings = self.factory.settings
        record = exchange.record
        if not isinstance(answer, ClientHello):
            record.extra["sni"] = "-"
            if settings.non_tls == "deny":
                record.extra["reason"] = "the tunnel does not start with TLS"
                return record.extra["reason"]
            return None
        name = answer.server_name
        record.extra["sni"] = name or "-"
        if answer.alpn:
            record.extra["alpn"] = ",".join(answer.alpn)
        if name is None:
            return None
        try:
            name = normalise_host(name)
        except ValueError as e:
            record.extra["reason"] = f"bad SNI name: {e}"
            return record.extra["reason"]
        if settings.sni_must_match and name != intent.host:
            record.extra["reason"] = f"SNI name {name} is not the CONNECT host {intent.host}"
            return record.extra["reason"]
        if name == intent.host:
            return None  # already judged
        decision = self.factory.policy.decide(
            replace(intent, host=name, target=f"{name}:{intent.port}")
        )
        if decision.action != "allow":
            record.rule = decision.rule
            record.extra["reason"] = f"SNI name {name} is denied by the policy"
            return record.extra["reason"]
        return None


@memo.cached("forward.host-value", 4096)
def _host_value(scheme: str, host: str, port: int) -> bytes:
    """The Host field for an origin: ``host[:port]``, the port only if not the default."""
    if ":" in host:
        host = f"[{host}]"
    default_port = 443 if scheme == "https" else 80
    return (host if port == default_port else f"{host}:{port}").encode("ascii")


@implementer(IProxy)
class ForwardProxy(HTTPProxyFactory):
    """
    A forward HTTP proxy: the protocol factory to listen with.

    Every collaborator is injectable: ``policy`` (an `IPolicy`), ``chooser``
    (an `IUpstreamChooser`; by default the origin named by the request, a
    `ParentChooser` to go through parent proxies) and ``fetcher`` (an
    `IFetcher`, e.g. a cache in front of the pool; by default a
    `BalancingFetcher`, which fails over from parent to parent).
    """

    protocol = ForwardProxyProtocol
    absolute_targets = True

    def __init__(
        self,
        reactor,
        *,
        name: str = "forward",
        policy: IPolicy | None = None,
        chooser: IUpstreamChooser | None = None,
        fetcher: IFetcher | None = None,
        pool: ConnectionPool | None = None,
        settings: ForwardSettings = ForwardSettings(),
        limits: Limits = Limits(),
        timeouts: Timeouts = Timeouts(),
        reporters: Sequence = (),
        inspector: Inspector | None = None,
        parent_fallback: str = "fail",
    ) -> None:
        self.pool = pool or ConnectionPool.from_timeouts(reactor, limits, timeouts)
        self.direct = DirectChooser(
            timeouts.connect, origin_tls=inspector.origin_tls if inspector else None)
        """The chooser of origins reached directly."""
        chooser = chooser or self.direct
        super().__init__(
            reactor,
            name=name,
            # Fails over from parent to parent (the proxy's, or a rule's); a
            # request to an origin has nowhere else to go and is sent as is.
            fetcher=fetcher or BalancingFetcher(self.pool, max_attempts=_MAX_ATTEMPTS),
            limits=limits,
            timeouts=timeouts,
            reporters=tuple(reporters),
            via=settings.via,
        )
        self.pipeline = Pipeline(name, policy=policy, choosers={"chooser": chooser},
                                 reporters=self.reporters)
        self.policy = self.pipeline.policy
        self.chooser = chooser
        self.inspector = inspector
        """The `Inspector` that says which CONNECT hosts are inspected, or None."""
        self.parent_fallback = parent_fallback
        """A rule's parents all down: ``fail`` (502) or ``direct``."""
        self._rule_choosers: dict[tuple[str, ...], ParentChooser] = {}
        self.settings = settings
        self.tunnels_open = 0
        """CONNECT tunnels relaying now."""
        self.tunnels_opened = 0
        """CONNECT tunnels established since start."""

    def chooser_for(self, parents: tuple[str, ...]) -> ParentChooser:
        """
        The chooser for a policy rule's ``parents`` (URLs, checked when the
        rule was read): made once per list, with passive health checks.
        """
        chooser = self._rule_choosers.get(parents)
        if chooser is None:
            if len(self._rule_choosers) >= _MAX_RULE_CHOOSERS:
                self._rule_choosers.clear()  # lists left behind by policy reloads
            connect = self.timeouts.connect
            chooser = self._rule_choosers[parents] = ParentChooser(
                [ParentProxy(parse_parent_url(url), connect) for url in parents],
                self.reactor, fallback=self.parent_fallback, direct=self.direct)
        return chooser
