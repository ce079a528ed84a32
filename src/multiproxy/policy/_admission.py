"""
What an HTTP proxy asks the policy layer for each connection and request:
per-client limits, proxy credentials, the decision, the refusal answers
(429, 407 and 403 pages) and the anonymised request fields.

The proxies call these functions with whatever `IPolicy` they were given.
When it also provides `IAccessControl` (a `PolicyHolder` does), limits,
authentication, anonymity and the configured refusal page apply; with a
plain `IPolicy` only its decision does.  Nothing here owns a transport: a
refusal is a `Refusal` value the proxy writes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import NamedTuple

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Attribute

from multiproxy.http1._headers import Headers
from multiproxy.pipeline._interfaces import IPolicy
from multiproxy.pipeline._values import Decision, Intent
from multiproxy.policy._anonymity import AnonymityOptions, anonymise_headers
from multiproxy.policy._auth import basic_challenge
from multiproxy.policy._denypage import (
    DEFAULT_DENY_TEMPLATE,
    DENY_PAGE_CONTENT_TYPE,
    render_deny_page,
)

_log = Logger()

__all__ = [
    "IAccessControl", "Refusal", "Verdict", "admit", "anonymity_of", "connection_slot",
    "decide", "judge",
    "needs_credential_check", "rate_limited", "sign_in_blocked",
    "refusal", "upstream_fields",
]


class IAccessControl(IPolicy):
    """
    A policy that also carries the rest of the access configuration; its
    attributes are read per connection or request, so swapping them (a
    reload) takes effect at once.
    """

    authenticator = Attribute(
        "A `ProxyAuthenticator` (proxy credentials are checked), or None.")
    connection_limit = Attribute("A `ConnectionLimit`, or None.")
    request_rate_limit = Attribute("A `RequestRateLimit`, or None.")
    anonymity = Attribute("`AnonymityOptions` for forwarded requests, or None.")
    deny_template = Attribute("The refusal page template (str).")
    admin_contact = Attribute("Who to ask about a refusal, shown on its page (str), or None.")
    sign_in_failures = Attribute(
        "A `SignInFailures` counting wrong credentials per client, or None.")

    def sign_in_could_allow(intent):
        """Whether signing in could get this refused anonymous ``intent`` allowed."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A complete answer refusing a request; ``ended`` is for the access log."""

    status: int
    headers: Headers
    body: bytes
    ended: str


def _access(policy: object) -> IAccessControl | None:
    """``policy`` when it carries the access configuration, else None (a plain `IPolicy`)."""
    return policy if IAccessControl.providedBy(policy) else None


def connection_slot(policy: object, client_host: str) -> tuple[Callable[[], None] | None, bool]:
    """
    Count a new client connection against the per-client limit.

    @return: ``(release, refused)``: call ``release`` (if not None) when the
        connection closes; when ``refused``, answer its first request with a
        `refusal` of 429 and close.
    """
    access = _access(policy)
    limit = access.connection_limit if access is not None else None
    if limit is None:
        return None, False
    release = limit.acquire(client_host)
    return release, release is None


def rate_limited(policy: object, client_host: str) -> int | None:
    """None if ``client_host`` may send this request, else the seconds to wait."""
    access = _access(policy)
    limit = access.request_rate_limit if access is not None else None
    if limit is None or limit.allow(client_host):
        return None
    return limit.retry_after(client_host)


def sign_in_blocked(policy: object, client_host: str) -> int | None:
    """
    None if ``client_host`` may have its proxy credentials checked, else the
    seconds to wait: it failed to sign in too often (answer 429 without
    looking at the password).
    """
    access = _access(policy)
    failures = getattr(access, "sign_in_failures", None) if access is not None else None
    if failures is None:
        return None
    return failures.blocked(client_host)


def decide(policy: IPolicy, intent: Intent) -> Decision:
    """
    ``policy.decide(intent)``, except that a refusal which signing in could
    turn into an allow becomes an ``authenticate`` decision (the proxy then
    answers 407 with ``Proxy-Authenticate``, as Squid challenges when the
    deciding ACL needs a user) when the policy checks credentials.
    """
    decision = policy.decide(intent)
    return _challenged(policy, intent, decision) if decision.action == "deny" else decision


def _challenged(policy: IPolicy, intent: Intent, decision: Decision) -> Decision:
    """`decide`'s refusal, or ``authenticate`` when signing in could turn it into an allow."""
    if intent.user is not None:
        return decision
    access = _access(policy)
    if access is None or access.authenticator is None:
        return decision
    could_allow = getattr(access, "sign_in_could_allow", None)
    if could_allow is None or not could_allow(intent):
        return decision
    return Decision("authenticate", decision.rule, decision.message)


def needs_credential_check(policy: object, credentials: bytes | None) -> bool:
    """
    Whether `judge` has credentials to check; when it has not, the caller may
    call ``policy.decide(intent)`` directly (the common, synchronous case).
    """
    if credentials is None:
        return False
    access = _access(policy)
    return access is not None and access.authenticator is not None


def judge(
    policy: IPolicy, intent: Intent, credentials: bytes | None,
) -> Deferred[tuple[Intent, Decision]]:
    """
    Check proxy ``credentials`` (a ``Proxy-Authorization`` value) if the
    policy has an authenticator, then decide.

    @return: a Deferred firing with the intent (with ``user`` and ``groups``
        filled in when the credentials were good) and the decision.
    """
    access = _access(policy)
    authenticator = access.authenticator if access is not None else None
    if authenticator is None or credentials is None:
        return defer.succeed((intent, decide(policy, intent)))

    def checked(user) -> tuple[Intent, Decision]:
        if user is None:
            failures = getattr(access, "sign_in_failures", None)
            if failures is not None:
                failures.record(intent.client_host)
            return intent, decide(policy, intent)
        known = replace(intent, user=user.name, groups=user.groups)
        return known, policy.decide(known)

    return authenticator.authenticate(credentials).addCallback(checked)


class Verdict(NamedTuple):
    """
    What admission made of one request.  ``action`` is the decision's
    ("allow", "deny", "authenticate"), or "rate-limited" (the client's
    request rate or its failed sign-ins: wait ``retry_after`` seconds), or
    "error" (the policy or its credential check raised; logged).  ``intent``
    has ``user`` and ``groups`` filled in when credentials were good;
    ``checked`` says whether credentials were checked at all.
    """

    action: str
    intent: Intent
    decision: Decision | None = None
    retry_after: int | None = None
    checked: bool = False

    @property
    def ended(self) -> str:
        """The access log's ``end=`` for a request this verdict refuses."""
        return _ENDED.get(self.action, "denied")


_ENDED = {"authenticate": "auth-required", "rate-limited": "rate-limited", "error": "error"}


def admit(policy: IPolicy, intent: Intent, credentials: bytes | None = None
          ) -> Verdict | Deferred[Verdict]:
    """
    The one admission path of every proxy: the client's request rate, then,
    when ``credentials`` are given and the policy checks them, the sign-in
    (refused at once after too many failures), then the policy's decision.

    @return: the `Verdict` at once in the common case; a Deferred of it,
        never failing, when credentials have to be checked (a password hash
        runs in a thread).
    """
    access = _access(policy)
    if access is not None:
        limit = access.request_rate_limit
        if limit is not None and not limit.allow(intent.client_host):
            return Verdict("rate-limited", intent, None, limit.retry_after(intent.client_host))
    if credentials is None or access is None or access.authenticator is None:
        try:
            decision = policy.decide(intent)
            if decision.action == "deny":
                decision = _challenged(policy, intent, decision)  # as `decide` does
        except Exception:  # noqa: BLE001 - a plug-in's bug is answered, not raised into the protocol
            _log.failure("{proxy}: the access policy failed", proxy=intent.proxy)
            return Verdict("error", intent)
        return Verdict(decision.action, intent, decision)
    wait = sign_in_blocked(policy, intent.client_host)
    if wait is not None:
        # Too many failed sign-ins from here: the password is not even checked.
        return Verdict("rate-limited", intent, None, wait)

    def judged(result: tuple[Intent, Decision]) -> Verdict:
        known, decision = result
        return Verdict(decision.action, known, decision, checked=True)

    def failed(failure) -> Verdict:
        _log.failure("{proxy}: the access check failed", failure, proxy=intent.proxy)
        return Verdict("error", intent)

    return judge(policy, intent, credentials).addCallbacks(judged, failed)


def refusal(
    policy: object, status: int, intent: Intent | None, decision: Decision | None = None,
    *, now: float, retry_after: int | None = None,
) -> Refusal:
    """
    The answer for a refused request: 403 (the policy denied it), 407 (it
    wants proxy credentials; with ``Proxy-Authenticate``) or 429 (a limit;
    with ``Retry-After``), each with the small HTML page, dated ``now``
    (``reactor.seconds()``).
    """
    access = _access(policy)
    template = access.deny_template if access is not None else DEFAULT_DENY_TEMPLATE
    admin_contact = getattr(access, "admin_contact", None)
    headers = Headers([
        (b"Content-Type", DENY_PAGE_CONTENT_TYPE),
        (b"Cache-Control", b"no-store"),
    ])
    ended = {403: "denied", 407: "auth-required", 429: "rate-limited"}.get(status, "refused")
    if status == 407:
        authenticator = access.authenticator if access is not None else None
        challenge = (authenticator.challenge if authenticator is not None
                     else basic_challenge("multiproxy"))
        headers.add(b"Proxy-Authenticate", challenge)
    if status == 429 and retry_after is not None:
        headers.add(b"Retry-After", b"%d" % retry_after)
    body = render_deny_page(intent, decision, now=now, status=status, template=template,
                            admin_contact=admin_contact)
    return Refusal(status, headers, body, ended)


def anonymity_of(policy: object) -> AnonymityOptions | None:
    """The anonymity options in force, or None (normal forwarding)."""
    access = _access(policy)
    return access.anonymity if access is not None else None


def upstream_fields(policy: object, headers: Headers) -> tuple[Headers, bool, bool]:
    """
    The request fields to send upstream after anonymisation, and whether the
    proxy may add its own ``Via`` and ``X-Forwarded-For``.
    """
    options = anonymity_of(policy)
    if options is None:
        return headers, True, True
    return anonymise_headers(headers, options), not options.strip_via, \
        not options.strip_forwarded

