"""
The one admission path every proxy takes (`multiproxy.policy._admission.admit`):
request rate, then proxy credentials when there are some to check, then the
policy; synchronous unless a credential check has to run.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer

from multiproxy.pipeline._values import ALLOW, Decision, Intent
from multiproxy.policy import IAccessControl, RequestRateLimit
from multiproxy.policy._admission import Verdict, admit


def intent(user: str | None = None) -> Intent:
    return Intent("http", "p", "10.0.0.1", 4000, "example.com", 80, "GET", "http",
                  "http://example.com/", None, user)


class User:
    name = "alice"
    groups = frozenset({"staff"})


class Authenticator:
    challenge = b'Basic realm="t"'

    def __init__(self) -> None:
        self.pending: list[defer.Deferred] = []

    def authenticate(self, credentials: bytes) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d


@implementer(IAccessControl)
class Access:
    connection_limit = None
    anonymity = None
    deny_template = "$reason"
    admin_contact = None
    sign_in_failures = None

    def __init__(self, *, authenticator=None, rate: RequestRateLimit | None = None,
                 raises: bool = False) -> None:
        self.authenticator = authenticator
        self.request_rate_limit = rate
        self.raises = raises

    def decide(self, intent: Intent) -> Decision:
        if self.raises:
            raise RuntimeError("a broken plug-in")
        if intent.user == "alice":
            return ALLOW
        return Decision("deny", "staff-only", "staff only")

    def sign_in_could_allow(self, intent: Intent) -> bool:
        return True


def test_an_allowed_request_is_judged_at_once() -> None:
    class Open:
        def decide(self, intent: Intent) -> Decision:
            return ALLOW

    verdict = admit(Open(), intent())
    assert verdict == Verdict("allow", intent(), ALLOW)


def test_over_the_request_rate_is_rate_limited_before_the_policy_is_asked() -> None:
    clock = Clock()
    policy = Access(rate=RequestRateLimit(1, 1, clock=clock.seconds), raises=True)
    assert admit(policy, intent()).action == "error"  # the first request reaches the policy
    limited = admit(policy, intent())
    assert (limited.action, limited.ended) == ("rate-limited", "rate-limited")
    assert limited.retry_after >= 1 and limited.decision is None


def test_a_policy_that_raises_is_an_error_verdict_not_an_exception() -> None:
    verdict = admit(Access(raises=True), intent())
    assert (verdict.action, verdict.ended) == ("error", "error")


def test_an_anonymous_refusal_that_signing_in_could_lift_asks_for_credentials() -> None:
    verdict = admit(Access(authenticator=Authenticator()), intent())
    assert (verdict.action, verdict.ended, verdict.checked) == (
        "authenticate", "auth-required", False)


def test_credentials_are_checked_asynchronously_and_fill_in_the_user() -> None:
    authenticator = Authenticator()
    policy = Access(authenticator=authenticator)
    pending = admit(policy, intent(), b"Basic YWxpY2U6cHc=")
    assert isinstance(pending, defer.Deferred) and not pending.called
    authenticator.pending[0].callback(User())
    verdict = pending.result
    assert (verdict.action, verdict.checked) == ("allow", True)
    assert (verdict.intent.user, verdict.intent.groups) == ("alice", frozenset({"staff"}))


def test_wrong_credentials_leave_the_request_anonymous() -> None:
    authenticator = Authenticator()
    pending = admit(Access(authenticator=authenticator), intent(), b"Basic Ym9iOng=")
    authenticator.pending[0].callback(None)
    verdict = pending.result
    assert (verdict.action, verdict.checked, verdict.intent.user) == (
        "authenticate", True, None)


def test_a_credential_check_that_fails_is_an_error_verdict() -> None:
    authenticator = Authenticator()
    pending = admit(Access(authenticator=authenticator), intent(), b"Basic eDp4")
    authenticator.pending[0].errback(RuntimeError("the password database is gone"))
    assert pending.result.action == "error"  # logged, and answered 500 by an HTTP proxy


def test_no_credentials_to_check_without_an_authenticator() -> None:
    assert admit(Access(), intent(), b"Basic eDp4").action == "deny"
