"""
Cache configuration: the `CacheConfig` value and how it is read from a TOML
table (``[cache]``) with `TableReader`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from multiproxy._tablereader import TableReader
from multiproxy.pipeline._errors import ConfigError

MiB = 1024 * 1024

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


def parse_size(value: object) -> int:
    """
    A size in bytes from an integer or a string such as ``"64MiB"``,
    ``"512k"``, ``"1.5 GB"`` (KiB/MiB/GiB and K/M/G are powers of 1024,
    KB/MB/GB powers of 1000).

    @raise ValueError: with a message saying what is accepted.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 64MiB or a number of bytes, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m is not None and m.group(2).lower() in _UNITS:
            return int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    raise ValueError(
        f"expected a size such as 64MiB, 512KiB, 2GB or a number of bytes, got {value!r}"
    )


#: The target list of a gateway (reverse proxy) cache by default (RFC 9213 3).
GATEWAY_TARGETS = ("CDN-Cache-Control",)

_FIELD_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def parse_targets(names: object) -> tuple[str, ...]:
    """
    A target list (RFC 9213 2.2): field names, most specific first.

    @raise ValueError: a name that is not a field name, Cache-Control
        itself, or a name given twice.
    """
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise ValueError(f'expected a list of field names, e.g. ["CDN-Cache-Control"], got {names!r}')
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise ValueError(f"{name!r} is not a field name")
        if name.lower() == "cache-control":
            raise ValueError("Cache-Control is what a targeted field replaces, not a target")
        if name.lower() in seen:
            raise ValueError(f"{name} is given twice")
        seen.add(name.lower())
    return tuple(names)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """
    How the shared cache behaves.

    ``size``: byte budget of the store.  ``directory``: when set, the store
    is on disk there and survives restarts; else it is in memory.
    ``max_object_size``: larger responses are relayed but not stored.
    ``heuristic_fraction`` / ``heuristic_max``: heuristic freshness is this
    fraction of the time since Last-Modified, at most this many seconds.
    ``stale_if_unreachable``: how stale (seconds) a stored response may be
    and still be served when the origin cannot be reached and the response
    does not forbid it (0 disables).  ``collapse``: concurrent misses for a
    URL share one upstream fetch; at most ``collapse_waiters`` requests wait
    at most ``collapse_timeout`` seconds for the response head.  ``name``
    identifies this cache in Cache-Status; ``x_cache`` adds the X-Cache field.
    ``redis``: when set (``redis://HOST:PORT/DB``), the store is in that
    Redis, shared by every process using it with the same ``redis_prefix``;
    ``redis_connect_timeout`` / ``redis_timeout`` bound how long a request
    may wait on it before the cache is bypassed.  ``targets``: the targeted
    cache-control fields (RFC 9213) this cache obeys, most specific first
    (a forward cache has none unless given; a reverse proxy's cache
    defaults to `GATEWAY_TARGETS`); ``strip_targets`` removes them from the
    responses it sends, for when nothing downstream uses them.
    """

    enabled: bool = True
    size: int = 64 * MiB
    directory: str | None = None
    max_object_size: int = 8 * MiB
    heuristic_fraction: float = 0.1
    heuristic_max: float = 86400.0
    stale_if_unreachable: float = 0.0
    collapse: bool = True
    collapse_waiters: int = 100
    collapse_timeout: float = 10.0
    name: str = "multiproxy"
    x_cache: bool = True
    redis: str | None = None
    redis_prefix: str = "multiproxy:"
    redis_connect_timeout: float = 0.25
    redis_timeout: float = 0.25
    targets: tuple[str, ...] = ()
    strip_targets: bool = False


def _size(reader: TableReader, name: str, default: int) -> int:
    if not reader.has(name):
        reader.raw(name, None)
        return default
    return reader.convert(name, reader.raw(name), parse_size)


def cache_from_table(reader: TableReader, targets: tuple[str, ...] = ()) -> CacheConfig:
    """
    Read a ``[cache]`` table: ``enabled``, ``size``, ``dir``,
    ``max_object_size``, ``heuristic_fraction``, ``heuristic_max``,
    ``stale_if_unreachable``, ``collapse``, ``collapse_waiters``,
    ``collapse_timeout``, ``name``, ``x_cache``, ``redis``, ``redis_prefix``,
    ``redis_connect_timeout``, ``redis_timeout``, ``targets``,
    ``strip_targets``.  ``targets`` is the target list when the table does
    not give one.  Unknown keys are refused (`TableReader.finish` is called).

    @raise ConfigError: naming the key that is wrong.
    """
    d = CacheConfig(targets=targets)
    enabled = reader.boolean("enabled", d.enabled)
    size = _size(reader, "size", d.size)
    directory = reader.string("dir", "") or None
    max_object_size = _size(reader, "max_object_size", d.max_object_size)
    heuristic_fraction = reader.number(
        "heuristic_fraction", d.heuristic_fraction, minimum=0, maximum=1
    )
    heuristic_max = reader.number("heuristic_max", d.heuristic_max, minimum=0)
    stale_if_unreachable = reader.number("stale_if_unreachable", d.stale_if_unreachable, minimum=0)
    collapse = reader.boolean("collapse", d.collapse)
    collapse_waiters = reader.integer("collapse_waiters", d.collapse_waiters, minimum=0)
    collapse_timeout = reader.number("collapse_timeout", d.collapse_timeout, minimum=0)
    name = reader.string("name", d.name)
    x_cache = reader.boolean("x_cache", d.x_cache)
    redis = reader.string("redis", "") or None
    redis_prefix = reader.string("redis_prefix", d.redis_prefix)
    redis_connect_timeout = reader.number(
        "redis_connect_timeout", d.redis_connect_timeout, minimum=0.001
    )
    redis_timeout = reader.number("redis_timeout", d.redis_timeout, minimum=0.001)
    target_list = reader.convert("targets", reader.raw("targets", list(d.targets)), parse_targets)
    strip_targets = reader.boolean("strip_targets", d.strip_targets)
    reader.finish()
    if redis is not None:
        from multiproxy._redislink import parse_redis_url

        try:
            parse_redis_url(redis)
        except ValueError as e:
            raise reader.error("redis", str(e)) from None
        if directory is not None:
            raise reader.error("redis", "cannot be used together with dir (choose one store)")
    if enabled and size <= 0:
        raise reader.error(
            "size", "must be more than 0 bytes (use enabled = false to switch the cache off)"
        )
    if max_object_size <= 0:
        raise reader.error("max_object_size", "must be more than 0 bytes")
    if not name.strip():
        raise reader.error("name", "must not be empty")
    return CacheConfig(
        enabled=enabled,
        size=size,
        directory=directory,
        max_object_size=max_object_size,
        heuristic_fraction=float(heuristic_fraction),
        heuristic_max=float(heuristic_max),
        stale_if_unreachable=float(stale_if_unreachable),
        collapse=collapse,
        collapse_waiters=collapse_waiters,
        collapse_timeout=float(collapse_timeout),
        name=name,
        x_cache=x_cache,
        redis=redis,
        redis_prefix=redis_prefix,
        redis_connect_timeout=float(redis_connect_timeout),
        redis_timeout=float(redis_timeout),
        targets=target_list,
        strip_targets=strip_targets,
    )


def make_store(config: CacheConfig, reactor=None):
    """
    The `ICacheStore` a config asks for: in Redis when ``redis`` is set (this
    needs ``reactor``), on disk when ``directory`` is set, else in memory.
    """
    if config.redis:
        if reactor is None:
            raise ConfigError("cache.redis: a Redis store needs a reactor")
        from multiproxy._redislink import redis_link
        from multiproxy.cache._redis import RedisStore

        link = redis_link(
            config.redis, reactor, config.redis_connect_timeout, config.redis_timeout, "cache"
        )
        return RedisStore(
            link,
            prefix=config.redis_prefix.encode("utf-8"),
            max_size=config.size,
            max_object_size=config.max_object_size,
            stale_window=config.stale_if_unreachable,
            lock_timeout=min(config.collapse_timeout, 5.0) or 5.0,
        )
    if config.directory:
        from multiproxy.cache._disk import DiskStore

        try:
            return DiskStore(config.directory, config.size, config.max_object_size)
        except OSError as e:
            raise ConfigError(
                f"cache.dir: cannot use {config.directory!r}: {e.strerror or e}"
            ) from None
    from multiproxy.cache._memory import MemoryStore

    return MemoryStore(config.size, config.max_object_size)
