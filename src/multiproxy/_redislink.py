"""
One Redis connection with a health state: `RedisLink`, and the small
RESP2 client under it (`RespProtocol`, replies parsed by ``hiredis``).

The cache store on Redis (and the shared client limits) talk through a
`RedisLink`.  Every command has a reply timeout; a command that times out
or loses the connection marks the link down, which is logged once, and
from then on commands fail at once (`RedisUnavailable`) so no client
request waits on a Redis that is not answering.  While down, the link
tries to connect and ping every ``probe_interval`` seconds, quietly; the
first answer marks it up again, logged once.

Why not ``txredisapi``: measured in bench/redis_client_bench.py (see
docs/architecture.md "Dependencies"), and its reconnecting ClientService
logs a line on every retry, where this must log one line per outage.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from multiproxy.pipeline._errors import ConfigError, MultiproxyError

_log = Logger()


class RedisUnavailable(MultiproxyError):
    """Redis is not answering (down, unreachable or too slow): the caller bypasses it."""


class RedisReplyError(MultiproxyError):
    """Redis answered a command with an error (a wrong type under a key, say)."""
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


def encode_command(args) -> bytes:
    """One command as a RESP2 array of bulk strings (str as UTF-8, int as decimal)."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode("utf-8")
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n" % len(a))
        out.append(a)
        out.append(b"\r\n")
    return b"".join(out)


class RespProtocol(Protocol):
    """
    A pipelining RESP2 client: each command's Deferred fires, in order, with
    its reply (bytes, int, list or None), or fails with `RedisReplyError`;
    every command still waiting fails with `RedisUnavailable` when the
    connection is lost.
    """

    def __init__(self) -> None:
        import hiredis

        self._reader = hiredis.Reader()
        self._reply_error = hiredis.ReplyError
        self._waiting: deque[defer.Deferred] = deque()
        self.lost = False
        self.on_lost = None

    def execute(self, *args) -> defer.Deferred:
        """Send one command; its reply comes in the Deferred."""
        d: defer.Deferred = defer.Deferred()
        if self.lost:
            d.errback(RedisUnavailable("the connection to redis is closed"))
            return d
        self._waiting.append(d)
        self.transport.write(encode_command(args))
        return d

    def dataReceived(self, data: bytes) -> None:
        reader = self._reader
        try:
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is False:
                    return
                if not self._waiting:
                    raise ValueError("a reply nobody asked for")
                d = self._waiting.popleft()
                if d.called:  # timed out already
                    continue
                if isinstance(reply, self._reply_error):
                    d.errback(RedisReplyError(str(reply)))
                else:
                    d.callback(reply)
        except Exception:  # a protocol error from hiredis, or the above
            self.transport.abortConnection()

    def connectionLost(self, reason=None) -> None:
        self.lost = True
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost(self)
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            if not d.called:
                d.errback(RedisUnavailable("the connection to redis was lost"))


class _RespFactory(Factory):
    noisy = False  # a probe every second while Redis is down must not log
    protocol = RespProtocol


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
        self.address = address
        self.reactor = reactor
        self.connect_timeout = connect_timeout
        self.reply_timeout = reply_timeout
        self.probe_interval = probe_interval
        self.purpose = purpose
        self.up = False
        self._protocol: RespProtocol | None = None
        self._announced_down = False
        self._probe_call = None
        self._connecting: defer.Deferred | None = None
        self._closed = False
        self._probe()

    # -- commands ------------------------------------------------------------

    def call(self, *command) -> defer.Deferred:
        """
        Run one command; its Deferred fails with `RedisUnavailable` at once
        while the link is down, or after ``reply_timeout`` seconds.  An
        error reply fails with `RedisReplyError` and leaves the link up.
        """
        protocol = self._protocol
        if not self.up or protocol is None or protocol.lost:
            return defer.fail(RedisUnavailable(f"redis {self.address} is unavailable"))
        d = protocol.execute(*command)
        d.addTimeout(self.reply_timeout, self.reactor)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure):
        if failure.check(RedisReplyError):
            return failure
        why = "no reply in time" if failure.check(defer.TimeoutError) else (
            failure.getErrorMessage() or failure.type.__name__)
        self._went_down(why)
        return defer.fail(RedisUnavailable(f"redis {self.address}: {why}"))

    # -- health ----------------------------------------------------------------

    def _went_down(self, why: str) -> None:
        if self._closed:
            return
        if self.up or not self._announced_down:
            self._announced_down = True
            _log.warn(
                "redis {address} unavailable ({why}): {fallback} until it answers",
                address=str(self.address),
                why=why,
                fallback=self._fallback_text(),
            )
        self.up = False
        protocol, self._protocol = self._protocol, None
        if protocol is not None and not protocol.lost:
            protocol.transport.abortConnection()
        self._schedule_probe()

    def _lost(self, protocol: RespProtocol) -> None:
        if protocol is self._protocol:
            self._went_down("connection lost")

    def _fallback_text(self) -> str:
        return {
            "cache": "the cache is bypassed",
            "limits": "client limits are counted per process",
        }.get(self.purpose, self.purpose + " falls back")

    def _schedule_probe(self) -> None:
        if self._closed or (self._probe_call is not None and self._probe_call.active()):
            return
        self._probe_call = self.reactor.callLater(self.probe_interval, self._probe)

    @defer.inlineCallbacks
    def _probe(self):
        self._probe_call = None
        if self._closed or self.up or self._connecting is not None:
            return
        endpoint = HostnameEndpoint(
            self.reactor, self.address.host, self.address.port, timeout=self.connect_timeout
        )
        protocol = None
        try:
            self._connecting = endpoint.connect(_RespFactory())
            self._connecting.addTimeout(self.connect_timeout, self.reactor)
            protocol = yield self._connecting
            self._connecting = None
            timeout = max(self.reply_timeout, self.connect_timeout)
            if self.address.db:
                yield protocol.execute("SELECT", self.address.db).addTimeout(
                    timeout, self.reactor)
            yield protocol.execute("PING").addTimeout(timeout, self.reactor)
        except Exception as e:
            self._connecting = None
            if protocol is not None and not protocol.lost:
                protocol.transport.abortConnection()
            self._went_down(str(e) or type(e).__name__)
            return
        if self._closed:
            protocol.transport.abortConnection()
            return
        self._protocol = protocol
        protocol.on_lost = self._lost
        self.up = True
        if self._announced_down:
            _log.info(
                "redis {address} answers again: {purpose} shared again",
                address=str(self.address),
                purpose=self.purpose,
            )
        self._announced_down = False

    @property
    def closed(self) -> bool:
        """True once `close` has been called."""
        return self._closed

    def close(self) -> None:
        """Stop probing and disconnect."""
        self._closed = True
        self.up = False
        if self._probe_call is not None and self._probe_call.active():
            self._probe_call.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        protocol, self._protocol = self._protocol, None
        if protocol is not None and not protocol.lost:
            protocol.transport.loseConnection()


def redis_link(url: str, reactor, connect_timeout: float, reply_timeout: float, purpose: str):
    """A `RedisLink` for ``url``; `ConfigError` naming the URL if it is malformed."""
    try:
        address = parse_redis_url(url)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        import hiredis  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{url}: sharing through Redis needs hiredis (pip install 'multiproxy[redis]')"
        ) from None
    return RedisLink(address, reactor, connect_timeout, reply_timeout, purpose=purpose)
