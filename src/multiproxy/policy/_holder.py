"""
The policy a running proxy consults, swappable at run time (SIGHUP reload).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from twisted.logger import Logger
from zope.interface import implementer

from multiproxy.pipeline._errors import ConfigError
from multiproxy.pipeline._values import Decision, Intent
from multiproxy.policy._admission import IAccessControl
from multiproxy.policy._anonymity import AnonymityOptions
from multiproxy.policy._auth import ProxyAuthenticator, RunBlocking
from multiproxy.policy._config import PolicySettings, load_policy_file
from multiproxy.policy._ratelimit import ConnectionLimit, RequestRateLimit, SignInFailures

__all__ = ["PolicyHolder"]


def _parse(url: str):
    from multiproxy._redislink import parse_redis_url

    return parse_redis_url(url)


@implementer(IAccessControl)
class PolicyHolder:
    """
    An `IAccessControl` (so an `IPolicy`) that delegates to the current
    `PolicySettings` and the objects built from them (authenticator, limits),
    all swapped together.

    Proxies keep a reference to the holder, never to what it holds, so a
    reload takes effect on the next decision; connections already open are
    left alone.  ``load`` re-reads the configuration (for `reload`);
    ``clock`` is ``reactor.seconds``; ``run_blocking`` sends password hash
    checks off the reactor thread (see `HashedPasswords`).
    """

    log = Logger(namespace="multiproxy.policy")

    def __init__(
        self, settings: PolicySettings, *, clock: Callable[[], float],
        load: Callable[[], PolicySettings] | None = None,
        run_blocking: RunBlocking | None = None, source: str = "the configuration",
        reactor=None,
    ) -> None:
        self._clock = clock
        self._reactor = reactor
        self._limits_link = None
        self._load = load
        self._run_blocking = run_blocking
        self.source = source
        self.connection_limit: ConnectionLimit | None = None
        self.request_rate_limit: RequestRateLimit | None = None
        self.authenticator: ProxyAuthenticator | None = None
        self.sign_in_failures: SignInFailures | None = None
        self.swap(settings)

    @classmethod
    def from_file(
        cls, path: str, *, clock: Callable[[], float], run_blocking: RunBlocking | None = None,
    ) -> PolicyHolder:
        """
        A holder for the ``[policy]`` table of a TOML file, reloadable from it.

        @raise ConfigError: the file is wrong (at start-up, refuse to start).
        """
        def load() -> PolicySettings:
            return load_policy_file(path, clock=clock)

        return cls(load(), clock=clock, load=load, run_blocking=run_blocking, source=path)

    @property
    def reloadable(self) -> bool:
        """Whether `reload` has somewhere to read the policy from."""
        return self._load is not None

    @property
    def settings(self) -> PolicySettings:
        """The settings in force."""
        return self._settings

    @property
    def anonymity(self) -> AnonymityOptions | None:
        """The anonymity options in force (None: normal forwarding)."""
        return self._settings.anonymity

    @property
    def deny_template(self) -> str:
        """The refusal page template in force."""
        return self._settings.deny_template

    @property
    def admin_contact(self) -> str | None:
        """Who to ask about a refusal, shown on the refusal page (None: no line)."""
        return self._settings.admin_contact

    def decide(self, intent: Intent) -> Decision:
        return self._settings.rules.decide(intent)

    def sign_in_could_allow(self, intent: Intent) -> bool:
        """Whether signing in could get this refused anonymous intent allowed (see `RuleSet`)."""
        return self._settings.rules.sign_in_could_allow(intent)

    def swap(self, settings: PolicySettings) -> None:
        """
        Put ``settings`` in force.  The authenticator is rebuilt (so its cache
        of checked passwords is dropped); connection counts carry over when the
        way clients are counted did not change.
        """
        if settings.rules.clock is not self._clock:
            settings = replace(settings, rules=settings.rules.with_clock(self._clock))
        auth = settings.auth
        authenticator = (
            auth.authenticator(clock=self._clock, run_blocking=self._run_blocking)
            if auth is not None else None
        )
        limits = settings.limits
        link = self._link_for(limits)
        connection_limit = limits.connection_limit(link) if limits is not None else None
        old = self.connection_limit
        if (connection_limit is not None and old is not None
                and type(old) is type(connection_limit)
                and getattr(old, "link", None) is link
                and old.ipv6_prefix == connection_limit.ipv6_prefix):
            old.per_client = connection_limit.per_client
            old.exempt = connection_limit.exempt
            connection_limit = old
        rate_limit = (
            limits.request_rate_limit(clock=self._clock, link=link)
            if limits is not None else None
        )
        old_rate = self.request_rate_limit
        if rate_limit is not None and old_rate is not None and type(old_rate) is type(
            rate_limit
        ) and getattr(old_rate, "link", None) is link and (
            (old_rate.rate, old_rate.burst, old_rate.ipv6_prefix, old_rate.max_clients)
            == (rate_limit.rate, rate_limit.burst, rate_limit.ipv6_prefix, rate_limit.max_clients)
        ):
            old_rate.exempt = rate_limit.exempt
            rate_limit = old_rate
        failures = None
        if auth is not None:
            failures = self.sign_in_failures
            if failures is None or (failures.limit, failures.window) != (
                auth.max_failures, auth.failure_window
            ):
                failures = SignInFailures(
                    auth.max_failures, auth.failure_window, clock=self._clock,
                )
        self._settings = settings
        self.authenticator = authenticator
        self.sign_in_failures = failures
        self.connection_limit = connection_limit
        self.request_rate_limit = rate_limit

    def _link_for(self, limits):
        """The `RedisLink` the limits share their counts through (None: per process)."""
        url = limits.redis if limits is not None else None
        old = self._limits_link
        if old is not None and (url is None or str(old.address) != str(
            _parse(url)
        )):
            old.close()
            self._limits_link = old = None
        if url is None or self._reactor is None:
            return None
        if old is None:
            from multiproxy._redislink import redis_link

            self._limits_link = redis_link(
                url, self._reactor, limits.redis_connect_timeout, limits.redis_timeout, "limits"
            )
        return self._limits_link

    def reload(self) -> bool:
        """
        Re-read the configuration and swap it in.  If it is wrong, log why
        (naming the file, rule and key) and keep the rules in force.

        @return: whether the new configuration is in force.
        """
        if self._load is None:
            self.log.warn("Policy reload asked for, but the policy was not read from a file")
            return False
        try:
            settings = self._load()
        except ConfigError as e:
            self.log.error(
                "Policy reload refused, the previous rules stay in force. Fix this and "
                "reload again: {problem}", problem=str(e),
            )
            return False
        except Exception:
            self.log.failure("Policy reload failed unexpectedly; the previous rules stay in force")
            return False
        self.swap(settings)
        self.log.info(
            "Policy reloaded from {source}: {count} rules, default {default}",
            source=self.source, count=len(settings.rules), default=settings.rules.default.action,
        )
        return True
