"""
The SOCKS proxy: SOCKS5 (RFC 1928, with RFC 1929 username/password) and
SOCKS4/4a CONNECT, on the same pipeline as the forward proxy's CONNECT.

Per client connection `SocksProxyProtocol` feeds the sans-I/O
`SocksParser`, checks credentials with the policy's authenticator (the
``--htpasswd`` user store of the HTTP proxies), asks the policy about a
``connect`` `Intent` for the destination, connects through the shared
`UpstreamEndpoint` (one deadline, one error vocabulary), answers with the
SOCKS reply for the outcome, relays with the shared `Relay`, and reports
one `AccessRecord`.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from multiproxy.forward._origin import DirectChooser
from multiproxy.pipeline._connect import UpstreamEndpoint
from multiproxy.pipeline._contract import Pipeline
from multiproxy.pipeline._interfaces import IPolicy, IProxy, IUpstreamChooser
from multiproxy.pipeline._values import AccessRecord, Decision, Intent
from multiproxy.policy._admission import IAccessControl, admit, connection_slot
from multiproxy.policy._hosts import normalise_host
from multiproxy.socks._parser import (
    AUTH_NONE,
    AUTH_USERPASS,
    NO_ACCEPTABLE_METHOD,
    REPLY_CONNECTION_REFUSED,
    REPLY_GENERAL_FAILURE,
    REPLY_HOST_UNREACHABLE,
    REPLY_NOT_ALLOWED,
    REPLY_SUCCEEDED,
    REPLY_TTL_EXPIRED,
    ConnectRequest,
    Credentials,
    Greeting,
    SocksError,
    SocksParser,
    socks4_reply,
    socks5_reply,
)
from multiproxy.transport._relay import Relay

__all__ = ["SocksProxy", "SocksProxyProtocol", "SocksSettings"]

_log = Logger()

# What the access log's status column shows for each SOCKS outcome: the HTTP
# status a forward proxy's CONNECT would have answered.
_STATUS = {"ok": 200, "bad-request": 400, "unsupported": 400, "auth-failed": 407,
           "auth-required": 407, "denied": 403, "connection-limit": 429, "rate-limited": 429,
           "handshake-timeout": 408, "connect-failed": 502, "connect-timeout": 504,
           "error": 500, "client-closed": 0}


@dataclass(frozen=True, slots=True)
class SocksSettings:
    """
    Per-connection behaviour of a SOCKS proxy.

    @ivar handshake_timeout: seconds a client has to finish the handshake
        (greeting, authentication and request) before it is answered with
        a failure and closed.
    @ivar connect_timeout: seconds to connect to the destination (name
        lookup included); past it SOCKS5 answers 0x06 (TTL expired).
    @ivar idle_timeout: seconds a tunnel may be idle; None for no limit.
    """

    handshake_timeout: float = 10.0
    connect_timeout: float = 10.0
    idle_timeout: float | None = 600.0


def _connect_reply(failure: Failure) -> int:
    """The SOCKS5 REP code for a failed connect (an `UpstreamError` from `UpstreamEndpoint`)."""
    status = getattr(failure.value, "status", 502)
    if status == 504:
        return REPLY_TTL_EXPIRED
    # _connect.py words each failure one way: "connection refused by ...".
    if "connection refused" in str(failure.value):
        return REPLY_CONNECTION_REFUSED
    return REPLY_HOST_UNREACHABLE


@implementer(IHalfCloseableProtocol)
class SocksProxyProtocol(Protocol):
    """One client connection of a `SocksProxy`."""

    def __init__(self, factory: SocksProxy) -> None:
        self.factory = factory
        self.reactor = factory.reactor
        self.parser = SocksParser()
        self.relay: Relay | None = None
        self.request: ConnectRequest | None = None
        self.intent: Intent | None = None
        self.decision: Decision | None = None
        self.user: Any = None
        self.outcome: str | None = None
        self.upstream: Any = None
        self.started_at = 0.0
        self._client: tuple[str, int] = ("", 0)
        self._timer: Any = None
        self._release_slot: Any = None
        self._over_limit = False
        self._held = b""

    # -- connection events ---------------------------------------------------------

    def connectionMade(self) -> None:
        self.started_at = self.reactor.seconds()
        peer = self.transport.getPeer()
        self._client = (str(getattr(peer, "host", "unix")), int(getattr(peer, "port", 0)))
        self.factory.connections.add(self)
        settings = self.factory.settings
        self.relay = Relay(self.reactor, self.transport, idle_timeout=settings.idle_timeout,
                           on_end=self._relay_ended, splice=True)
        self._release_slot, self._over_limit = connection_slot(
            self.factory.policy, self._client[0])
        self._timer = self.reactor.callLater(settings.handshake_timeout, self._handshake_timeout)

    def dataReceived(self, data: bytes) -> None:
        if self.parser.state == "done":
            assert self.relay is not None
            self.relay.downstream_data(data)
            return
        self._feed(data)

    def readConnectionLost(self) -> None:
        if self.parser.state == "done":
            assert self.relay is not None
            self.relay.downstream_eof()
        else:
            # The client ended its output before the handshake was over.
            self._fail("bad-request", self.parser.failure_reply())

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.relay is not None:
            self.relay.downstream_lost(reason)

    # -- handshake -----------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        try:
            events = self.parser.feed(data)
        except SocksError as e:
            _log.debug("{proxy}: {client}: {why}", proxy=self.factory.name,
                       client=self._client[0], why=str(e))
            self._fail(e.ended, e.reply)
            return
        for event in events:
            if isinstance(event, Greeting):
                if self._greeted(event):
                    self._feed(b"")  # a request sent with the greeting
                    if self.request is None:
                        self._send(b"")  # the client waits for the method before going on
                return
            elif isinstance(event, Credentials):
                self._check_credentials(event)
                return
            elif isinstance(event, ConnectRequest):
                self._requested(event)
                return

    def _greeted(self, greeting: Greeting) -> bool:
        authenticator = self._authenticator()
        if authenticator is not None and AUTH_USERPASS in greeting.methods:
            method = AUTH_USERPASS
        elif AUTH_NONE in greeting.methods:
            method = AUTH_NONE
        else:
            method = NO_ACCEPTABLE_METHOD
        answer = self.parser.choose_method(method)
        if method == NO_ACCEPTABLE_METHOD:
            self._fail("auth-required", answer)
            return False
        # Held until the request's answer when the request came with the
        # greeting (pipelined): one write to the client instead of two.
        self._held = answer
        return True

    def _authenticator(self) -> Any:
        access = IAccessControl(self.factory.policy, None)
        return access.authenticator if access is not None else None

    def _check_credentials(self, credentials: Credentials) -> None:
        authenticator = self._authenticator()
        # The user store speaks Basic credentials: the same check, the same cache.
        header = b"Basic " + base64.b64encode(credentials.username + b":" + credentials.password)
        checked = authenticator.authenticate(header) if authenticator is not None else None
        if checked is None:
            self._authenticated(None)
            return
        checked.addCallback(self._authenticated)
        checked.addErrback(self._auth_error)

    def _auth_error(self, failure: Failure) -> None:
        _log.failure("{proxy}: the password check failed", failure, proxy=self.factory.name)
        self._fail("error", b"\x01\x01")

    def _authenticated(self, user: Any) -> None:
        if self.relay is None or self.relay.ended is not None:
            return  # the client left while its password was checked
        answer = self.parser.authenticated(user is not None)
        if user is None:
            self._fail("auth-failed", answer)
            return
        self.user = user
        self._send(answer)
        self._feed(b"")

    def _requested(self, request: ConnectRequest) -> None:
        self.request = request
        self._stop_timer()
        try:
            host = normalise_host(request.host)
        except ValueError:
            self._refuse(REPLY_HOST_UNREACHABLE, "bad-request")
            return
        target = f"[{host}]:{request.port}" if ":" in host else f"{host}:{request.port}"
        user = self.user
        self.intent = Intent(
            "connect", self.factory.name, self._client[0], self._client[1], host,
            request.port, "CONNECT", "", target, None,
            user.name if user is not None else None,
            user.groups if user is not None else frozenset(),
        )
        policy = self.factory.policy
        if self._over_limit:
            self._refuse(REPLY_NOT_ALLOWED, "connection-limit")
            return
        # The user signed in by SOCKS itself: no credentials to check, never deferred.
        verdict = admit(policy, self.intent)
        self.decision = verdict.decision
        if verdict.action == "error":
            self._refuse(REPLY_GENERAL_FAILURE, "error")
            return
        if verdict.action != "allow":
            self._refuse(REPLY_NOT_ALLOWED, verdict.ended)
            return
        self._connect()

    def _connect(self) -> None:
        assert self.relay is not None and self.intent is not None
        upstream = self.factory.chooser.choose(self.intent)
        if upstream is None:
            self._refuse(REPLY_HOST_UNREACHABLE, "connect-failed")
            return
        self.upstream = upstream
        endpoint = UpstreamEndpoint(self.reactor, upstream, self.factory.settings.connect_timeout)
        self.relay.connect(endpoint).addCallbacks(self._connected, self._connect_failed)

    def _connected(self, relay: Relay) -> None:
        if relay.ended is not None:
            return
        assert self.request is not None
        bound = relay.upstream_transport.getHost()
        host, port = str(getattr(bound, "host", "0.0.0.0")), int(getattr(bound, "port", 0))
        if self.request.version == 5:
            self._send(socks5_reply(REPLY_SUCCEEDED, host, port))
        else:
            self._send(socks4_reply(True, host if ":" not in host else "0.0.0.0", port))
        self.outcome = "ok"
        rest = self.parser.rest
        if rest:
            relay.downstream_data(rest)

    def _connect_failed(self, failure: Failure) -> None:
        assert self.relay is not None
        if self.relay.ended is not None:
            return  # the client left while we were connecting
        _log.info("{proxy}: {target}: {why}", proxy=self.factory.name,
                  target=self.intent.target if self.intent else "-",
                  why=failure.getErrorMessage())
        code = _connect_reply(failure)
        self._refuse(code, "connect-timeout" if code == REPLY_TTL_EXPIRED else "connect-failed")

    # -- endings ---------------------------------------------------------------------

    def _refuse(self, code: int, ended: str) -> None:
        """Answer the request with a failure ``code`` (SOCKS5 REP) and close."""
        if self.request is not None and self.request.version == 4:
            self._fail(ended, socks4_reply(False))
        else:
            self._fail(ended, socks5_reply(code))

    def _fail(self, ended: str, reply: bytes) -> None:
        if self.relay is None or self.relay.ended is not None:
            return
        self.outcome = ended
        self._stop_timer()
        self._send(reply)
        self.relay.end("error", abort=False)

    def _send(self, reply: bytes) -> None:
        """Write ``reply`` to the client, after the method choice if one is held."""
        data, self._held = self._held + reply, b""
        if data:
            self.transport.write(data)

    def _handshake_timeout(self) -> None:
        self._timer = None
        self._fail("handshake-timeout", self.parser.failure_reply())

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _relay_ended(self, relay: Relay, how: str) -> None:
        self._stop_timer()
        self.factory.connections.discard(self)
        release, self._release_slot = self._release_slot, None
        if release is not None:
            release()
        if self.outcome is None:
            # A client that leaves before sending anything (a port probe) did
            # nothing wrong; one that leaves mid-handshake sent a truncated request.
            self.outcome = ("client-closed" if self.parser.state in ("start", "done")
                            else "bad-request")
        ended = how if self.outcome == "ok" else self.outcome
        self._report(relay, ended)

    def _report(self, relay: Relay, ended: str) -> None:
        request = self.request
        if request is None:
            version = "SOCKS5" if self.parser.version == 5 else (
                "SOCKS4" if self.parser.version == 4 else "SOCKS")
        elif request.version == 5:
            version = "SOCKS5"
        else:
            version = "SOCKS4a" if request.address_type == "domain" else "SOCKS4"
        outcome = self.outcome or "error"
        record = AccessRecord(
            kind="connect", proxy=self.factory.name, started=self.started_at,
            client_host=self._client[0], client_port=self._client[1],
            user=self.intent.user if self.intent is not None else None,
            method="CONNECT",
            target=self.intent.target if self.intent is not None else "-",
            version=version,
            status=_STATUS.get(outcome, 500),
            bytes_to_client=relay.bytes_from_upstream,
            bytes_from_client=relay.bytes_from_downstream,
            bytes_to_upstream=relay.bytes_from_downstream,
            bytes_from_upstream=relay.bytes_from_upstream,
            duration=max(0.0, self.reactor.seconds() - self.started_at),
            upstream=self.upstream.name if self.upstream is not None and outcome == "ok"
            else None,
            rule=self.decision.rule if self.decision is not None else None,
            ended=ended,
        )
        self.factory.pipeline.report(record)


@implementer(IProxy)
class SocksProxy(Factory):
    """
    A SOCKS5 / SOCKS4a proxy: listen with it on any Twisted server endpoint.

    @param policy: the `IPolicy` asked per request (default: allow all);
        its authenticator, if any, checks RFC 1929 usernames and passwords.
    @param chooser: the `IUpstreamChooser` (default: the destination named
        by the request, as the forward proxy's CONNECT does).
    """

    noisy = False

    def __init__(
        self,
        reactor: Any,
        *,
        name: str = "socks",
        policy: IPolicy | None = None,
        chooser: IUpstreamChooser | None = None,
        reporters: Sequence[Any] = (),
        settings: SocksSettings = SocksSettings(),
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.chooser = chooser if chooser is not None else DirectChooser(settings.connect_timeout)
        self.pipeline = Pipeline(name, policy=policy, choosers={"chooser": self.chooser},
                                 reporters=reporters)
        self.policy = self.pipeline.policy
        self.reporters = self.pipeline.reporters
        self.settings = settings
        self.connections: set[SocksProxyProtocol] = set()

    def buildProtocol(self, addr: Any) -> SocksProxyProtocol:
        return SocksProxyProtocol(self)

    def close_all(self) -> None:
        """End every connection in progress (after a shutdown deadline)."""
        for protocol in list(self.connections):
            if protocol.relay is not None:
                protocol.relay.end("error")
