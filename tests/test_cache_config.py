"""Cache configuration: sizes, the [cache] table, command-line options, wiring, status values."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock
from twisted.python import usage

from multiproxy._tablereader import TableReader
from multiproxy.cache import (
    CACHE_OPT_FLAGS,
    CACHE_OPT_PARAMETERS,
    CacheConfig,
    CacheOutcome,
    DiskStore,
    MemoryStore,
    cache_from_options,
    cache_from_table,
    make_store,
    parse_size,
)
from multiproxy.cache._fetcher import CachingFetcher, caching_fetcher_factory
from multiproxy.pipeline._errors import ConfigError


@pytest.mark.parametrize(
    "value,expected",
    [
        (1024, 1024),
        ("64MiB", 64 << 20),
        ("512k", 512 << 10),
        ("512 KiB", 512 << 10),
        ("2GB", 2_000_000_000),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("100", 100),
        ("7b", 7),
    ],
)
def test_parse_size_accepts_units(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["lots", "64 parsecs", "-5MiB", True, 1.5, ""])
def test_parse_size_refuses_nonsense_with_a_hint(value):
    with pytest.raises(ValueError, match="64MiB"):
        parse_size(value)


def test_negative_integer_size_is_refused():
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)


def read(table: dict, where: str = "forward[0].cache") -> CacheConfig:
    return cache_from_table(TableReader(table, where))


def test_table_defaults_and_values():
    assert read({}) == CacheConfig()
    config = read(
        {
            "size": "1GiB",
            "dir": "/var/cache/mp",
            "max_object_size": 1048576,
            "enabled": False,
            "stale_if_unreachable": 600,
            "collapse": False,
            "heuristic_fraction": 0.2,
            "name": "edge-1",
            "x_cache": False,
        }
    )
    assert config.size == 1 << 30 and config.directory == "/var/cache/mp"
    assert config.max_object_size == 1 << 20 and not config.enabled
    assert config.stale_if_unreachable == 600 and not config.collapse
    assert config.heuristic_fraction == 0.2 and config.name == "edge-1" and not config.x_cache


@pytest.mark.parametrize(
    "table,key",
    [
        ({"size": "huge"}, "forward[0].cache.size"),
        ({"size": 0}, "forward[0].cache.size"),
        ({"max_object_size": "1 parsec"}, "forward[0].cache.max_object_size"),
        ({"enabled": "yes"}, "forward[0].cache.enabled"),
        ({"heuristic_fraction": 2}, "forward[0].cache.heuristic_fraction"),
        ({"colapse": True}, "forward[0].cache.colapse"),
    ],
)
def test_bad_values_name_the_key(table, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        read(table)


def test_make_store_memory_or_disk(tmp_path):
    assert isinstance(make_store(CacheConfig()), MemoryStore)
    disk = make_store(CacheConfig(directory=str(tmp_path / "c")))
    assert isinstance(disk, DiskStore)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cache.dir"):
        make_store(CacheConfig(directory=str(blocker / "sub")))


class Opts(usage.Options):
    optFlags = CACHE_OPT_FLAGS
    optParameters = CACHE_OPT_PARAMETERS


def options(*argv: str) -> CacheConfig:
    o = Opts()
    o.parseOptions(list(argv))
    return cache_from_options(o)


def test_command_line_options():
    assert options() == CacheConfig()
    config = options("--cache-size", "128MiB", "--cache-dir", "/tmp/x", "--max-object-size", "1m")
    assert (config.size, config.directory, config.max_object_size) == (128 << 20, "/tmp/x", 1 << 20)
    assert not options("--no-cache").enabled
    base = CacheConfig(size=5 << 20, stale_if_unreachable=60)
    assert cache_from_options(Opts(), base) is base


def test_bad_command_line_size_is_a_usage_error():
    with pytest.raises(usage.UsageError, match="--cache-size"):
        options("--cache-size", "big")
    with pytest.raises(usage.UsageError, match="--max-object-size"):
        options("--max-object-size", "0")


def test_factory_wraps_fetchers_with_one_shared_store():
    class Inner:
        def fetch(self, request, sink):
            return lambda: None

    clock = Clock()
    assert caching_fetcher_factory(CacheConfig(enabled=False), clock) is None
    wrap = caching_fetcher_factory(CacheConfig(), clock)
    a, b = wrap(Inner()), wrap(Inner())
    assert isinstance(a, CachingFetcher) and a.cache is b.cache and a.collapsing is b.collapsing
    assert caching_fetcher_factory(CacheConfig(collapse=False), clock)(Inner()).collapsing is None


def test_forward_proxy_config_carries_the_cache():
    from multiproxy.forward._config import (
        ForwardOptions,
        forward_config_from_table,
        make_forward_proxy,
    )

    config = forward_config_from_table(TableReader({"cache": {"size": "32MiB"}}, "forward[0]"))
    assert config.cache.size == 32 << 20
    factory = make_forward_proxy(config, Clock())
    assert isinstance(factory.fetcher, CachingFetcher)
    off = forward_config_from_table(TableReader({"cache": {"enabled": False}}, "forward[0]"))
    assert not isinstance(make_forward_proxy(off, Clock()).fetcher, CachingFetcher)
    o = ForwardOptions()
    o.parseOptions(["--no-cache"])
    assert not o.config.cache.enabled
    o = ForwardOptions()
    o.parseOptions(["--cache-size", "16MiB"])
    assert o.config.cache.size == 16 << 20


def test_cache_status_and_x_cache_values():
    assert CacheOutcome(hit=True, ttl=30).cache_status() == b"multiproxy; hit; ttl=30"
    assert CacheOutcome(hit=True, ttl=30).x_cache == "HIT"
    stored = CacheOutcome(fwd="uri-miss", fwd_status=200, stored=True)
    assert stored.cache_status("edge") == b"edge; fwd=uri-miss; fwd-status=200; stored"
    assert stored.x_cache == "MISS"
    assert CacheOutcome(fwd="stale", fwd_status=304).x_cache == "REVALIDATED"
    assert CacheOutcome(hit=True, ttl=-3, stale=True).x_cache == "STALE"
    assert CacheOutcome(fwd="uri-miss", collapsed=True).x_cache == "HIT"
    assert CacheOutcome(detail="stale if error").cache_status("my cache") == (
        b'"my cache"; detail="stale if error"'
    )
