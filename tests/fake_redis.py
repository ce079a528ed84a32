"""An in-memory stand-in for `RedisLink`: the hash commands the worker state uses, synchronous."""

from __future__ import annotations

from twisted.internet import defer

from multiproxy._redislink import RedisUnavailable


class FakeRedisLink:
    """Answers HSET, HGETALL, HINCRBY, HDEL and PEXPIRE at once; ``up = False`` fails them all."""

    def __init__(self, data: dict | None = None) -> None:
        self.data: dict[bytes, dict[bytes, bytes]] = {} if data is None else data
        self.up = True
        self.calls: list[tuple] = []

    def call(self, *command) -> defer.Deferred:
        if not self.up:
            return defer.fail(RedisUnavailable("fake redis is down"))
        name, *args = command
        args = [a.encode() if isinstance(a, str) else (b"%d" % a if isinstance(a, int) else a)
                for a in args]
        self.calls.append((name, *args))
        return defer.succeed(getattr(self, "_" + name.lower())(*args))

    def _hash(self, key: bytes) -> dict[bytes, bytes]:
        return self.data.setdefault(key, {})

    def _hset(self, key, *pairs):
        h = self._hash(key)
        for field, value in zip(pairs[::2], pairs[1::2]):
            h[field] = value
        return len(pairs) // 2

    def _hgetall(self, key):
        return [x for pair in self.data.get(key, {}).items() for x in pair]

    def _hincrby(self, key, field, by):
        h = self._hash(key)
        h[field] = b"%d" % (int(h.get(field, b"0")) + int(by))
        return int(h[field])

    def _hdel(self, key, *fields):
        h = self._hash(key)
        return sum(1 for f in fields if h.pop(f, None) is not None)

    def _pexpire(self, key, ms):
        return 1


def linked(count: int) -> list[FakeRedisLink]:
    """``count`` links onto one store, as the workers of a host share one Redis."""
    data: dict = {}
    return [FakeRedisLink(data) for _ in range(count)]
