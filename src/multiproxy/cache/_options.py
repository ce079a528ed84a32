"""
Command-line options for the cache, for a twistd plugin's ``Options``:
``--cache-size``, ``--cache-dir``, ``--cache-redis``, ``--max-object-size``,
``--cache-target`` (repeatable), ``--cache-strip-targets`` and ``--no-cache``.

Add `CACHE_OPT_PARAMETERS` to the Options' ``optParameters`` and
`CACHE_OPT_FLAGS` to its ``optFlags``, derive the Options from
`CacheTargetOptions`, then call `cache_from_options` in ``postOptions``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from twisted.python import usage

from multiproxy.cache._config import CacheConfig, parse_size, parse_targets

CACHE_OPT_PARAMETERS = [
    ["cache-size", None, None, "Byte budget of the shared HTTP cache, e.g. 64MiB or 2GB."],
    ["cache-dir", None, None, "Keep the HTTP cache on disk in this directory (survives restarts)."],
    ["cache-redis", None, None,
     "Keep the HTTP cache in Redis, shared across hosts: redis://HOST:PORT/DB."],
    ["max-object-size", None, None, "Largest response the HTTP cache stores, e.g. 8MiB."],
]

CACHE_OPT_FLAGS = [
    ["no-cache", None, "Switch the shared HTTP cache off."],
    ["cache-strip-targets", None,
     "Remove the cache's targeted fields (--cache-target) from the responses sent on."],
]


class CacheTargetOptions:
    """The repeatable ``--cache-target`` option, for an ``Options`` class to derive from."""

    def opt_cache_target(self, name: str) -> None:
        """Targeted cache-control field the cache obeys (repeatable, most specific first)."""
        self.setdefault("cache-target", []).append(name)  # type: ignore[attr-defined]


def cache_from_options(options: Mapping, base: CacheConfig | None = None) -> CacheConfig:
    """
    ``base`` (a `CacheConfig` from the config file, or the defaults) with the
    command-line options applied on top.

    @raise usage.UsageError: a size option is not a size.
    """
    config = base if base is not None else CacheConfig()
    changes: dict = {}
    for option, attr in (("cache-size", "size"), ("max-object-size", "max_object_size")):
        value = options.get(option)
        if value is None:
            continue
        try:
            size = parse_size(value)
        except ValueError as e:
            raise usage.UsageError(f"--{option}: {e}") from None
        if size <= 0:
            raise usage.UsageError(f"--{option}: must be more than 0 bytes, got {value!r}")
        changes[attr] = size
    directory = options.get("cache-dir")
    if directory:
        changes["directory"] = directory
    redis = options.get("cache-redis")
    if redis:
        if directory:
            raise usage.UsageError("--cache-redis and --cache-dir: choose one store")
        from multiproxy._redislink import parse_redis_url

        try:
            parse_redis_url(redis)
        except ValueError as e:
            raise usage.UsageError(f"--cache-redis: {e}") from None
        changes["redis"] = redis
        changes["directory"] = None
    targets = options.get("cache-target")
    if targets:
        try:
            changes["targets"] = parse_targets(list(targets))
        except ValueError as e:
            raise usage.UsageError(f"--cache-target: {e}") from None
    if options.get("cache-strip-targets"):
        changes["strip_targets"] = True
    if options.get("no-cache"):
        changes["enabled"] = False
    return replace(config, **changes) if changes else config
