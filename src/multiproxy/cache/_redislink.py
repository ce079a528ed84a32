"""
One Redis connection with a health state: `RedisLink`.

The cache store on Redis (and anything else that shares state through
Redis) talks through a `RedisLink`.  Every command has a reply timeout; a
command that times out or loses the connection marks the link down, which
is logged once, and from then on commands fail at once (`RedisUnavailable`)
so no client request waits on a Redis that is not answering.  While down,
the link pings Redis every ``probe_interval`` seconds; the first answer
marks it up again, logged once.

The client is ``txredisapi`` (Twisted-native; see docs/architecture.md
"Dependencies" for the measurement that chose it).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.logger import Logger

from multiproxy._errors import ConfigError, MultiproxyError

_log = Logger()


class RedisUnavailable(MultiproxyError):
    """Redis is not answering (down, unreachable or too slow): the caller bypasses it."""


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where Redis listens, from a ``redis://HOST:PORT/DB`` URL."""

    host: str
    port: int
    db: int

    def __str__(self) -> str:
        return f"redis://{self.host}:{self.port}/{self.db}"


def parse_redis_url(url: str) -> RedisAddress:
    """
    ``redis://HOST[:PORT][/DB]`` as a `RedisAddress` (port 6379, db 0 by default).

    @raise ValueError: with a sentence saying what is expected.
    """
    parts = urlsplit(url.strip())
    expected = f"expected redis://HOST:PORT/DB, got {url!r}"
    if parts.scheme != "redis" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(expected)
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(expected) from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(expected)
    return RedisAddress(parts.hostname, port, int(path or 0))


class RedisLink:
    """
    A Redis connection that says when it is usable (``up``) and never lets
    a command wait longer than ``reply_timeout`` seconds.
    """

    def __init__(
        self,
        address: RedisAddress,
        reactor,
        connect_timeout: float = 0.25,
        reply_timeout: float = 0.25,
        probe_interval: float = 1.0,
        purpose: str = "cache",
    ) -> None:
        import txredisapi

        self.address = address
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.probe_interval = probe_interval
        self.purpose = purpose
        self.up = False
        self._announced_down = False
        self._probe_call = None
        self._closed = False
        self._response_error = txredisapi.ResponseError
        self._handler = txredisapi.lazyConnection(
            address.host,
            address.port,
            dbid=address.db,
            reconnect=True,
            charset=None,
            convertNumbers=False,
            connectTimeout=connect_timeout,
            replyTimeout=reply_timeout,
        )
        self._probe()

    # -- commands ------------------------------------------------------------

    def call(self, *command) -> defer.Deferred:
        """
        Run one command; its Deferred fails with `RedisUnavailable` at once
        while the link is down, or after ``reply_timeout`` seconds.  An
        error reply (a wrong type under a key, say) fails with
        ``txredisapi.ResponseError`` and leaves the link up.
        """
        if not self.up or self._closed:
            return defer.fail(RedisUnavailable(f"redis {self.address} is unavailable"))
        return self._send(command)

    def _send(self, command) -> defer.Deferred:
        d = self._handler.execute_command(*command)
        d.addTimeout(self.reply_timeout, self.reactor)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        if failure.check(self._response_error):
            return failure
        self._went_down(failure.getErrorMessage() or failure.type.__name__)
        return defer.fail(RedisUnavailable(f"redis {self.address}: {failure.getErrorMessage()}"))

    # -- health ----------------------------------------------------------------

    def _went_down(self, why: str) -> None:
        if self._closed:
            return
        if self.up or not self._announced_down:
            self._announced_down = True
            _log.warn(
                "redis {address} unavailable ({why}): {purpose} falls back until it answers",
                address=str(self.address),
                why=why or "no reply",
                purpose=self._fallback_text(),
            )
        self.up = False
        self._schedule_probe()

    def _fallback_text(self) -> str:
        return {
            "cache": "the cache is bypassed",
            "limits": "client limits are counted per process",
        }.get(self.purpose, self.purpose)

    def _schedule_probe(self) -> None:
        if self._closed or (self._probe_call is not None and self._probe_call.active()):
            return
        self._probe_call = self.reactor.callLater(self.probe_interval, self._probe)

    def _probe(self) -> None:
        self._probe_call = None
        if self._closed or self.up:
            return
        d = self._handler.execute_command("PING")
        d.addTimeout(max(self.reply_timeout, self.connect_timeout), self.reactor)
        d.addCallbacks(self._answered, self._probe_failed)

    def _answered(self, _reply) -> None:
        if self._closed or self.up:
            return
        self.up = True
        if self._announced_down:
            _log.info(
                "redis {address} answers again: {purpose} shared again",
                address=str(self.address),
                purpose=self.purpose,
            )
        self._announced_down = False

    def _probe_failed(self, failure) -> None:
        self._went_down(failure.getErrorMessage() or failure.type.__name__)

    def close(self) -> defer.Deferred:
        """Stop probing and disconnect."""
        self._closed = True
        self.up = False
        if self._probe_call is not None and self._probe_call.active():
            self._probe_call.cancel()
        d = self._handler.disconnect()
        d.addErrback(lambda _f: None)
        return d


def redis_link(url: str, reactor, connect_timeout: float, reply_timeout: float, purpose: str):
    """A `RedisLink` for ``url``; `ConfigError` naming the URL if it is malformed."""
    try:
        address = parse_redis_url(url)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return RedisLink(address, reactor, connect_timeout, reply_timeout, purpose=purpose)
