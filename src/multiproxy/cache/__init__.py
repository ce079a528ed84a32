"""
A shared HTTP cache (RFC 9111) for the forward and reverse proxies.

The decisions (may this be stored? is it fresh? what goes upstream? what is
answered?) are pure functions over values, gathered in `SharedCache`; the
stores (`MemoryStore`, `DiskStore`, `RedisStore`) implement `ICacheStore`; concurrent
misses are collapsed by `CollapsedForwarding`.  `CachingFetcher` puts a
cache in front of a proxy's `IFetcher`; `caching_fetcher_factory` makes
the wrapper from a `CacheConfig`.  See docs/cache.md.
"""

from multiproxy.cache._cache import Action, Answer, Plan, Reply, SharedCache
from multiproxy.cache._collapse import CollapsedForwarding, Flight, Waiter
from multiproxy.cache._config import (
    GATEWAY_TARGETS,
    CacheConfig,
    cache_from_table,
    make_store,
    parse_size,
    parse_targets,
)
from multiproxy.cache._directives import (
    RequestDirectives,
    ResponseDirectives,
    parse_request_directives,
    parse_response_directives,
)
from multiproxy.cache._disk import DiskStore
from multiproxy.cache._fetcher import CachingFetcher, caching_fetcher_factory
from multiproxy.cache._freshness import Judgement, Reuse, current_age, freshness_lifetime, judge
from multiproxy.cache._interfaces import IBodyReader, ICacheEntry, ICacheStore, IEntryWriter
from multiproxy.cache._keys import cache_key, effective_url
from multiproxy.cache._memory import MemoryStore
from multiproxy.cache._options import (
    CACHE_OPT_FLAGS,
    CACHE_OPT_PARAMETERS,
    CacheTargetOptions,
    cache_from_options,
)
from multiproxy.cache._redis import RedisStore
from multiproxy.cache._status import CacheOutcome
from multiproxy.cache._store import CorruptEntry, StoredResponse

__all__ = [
    "CACHE_OPT_FLAGS",
    "CACHE_OPT_PARAMETERS",
    "GATEWAY_TARGETS",
    "Action",
    "Answer",
    "CacheConfig",
    "CacheOutcome",
    "CachingFetcher",
    "CacheTargetOptions",
    "CollapsedForwarding",
    "CorruptEntry",
    "DiskStore",
    "Flight",
    "IBodyReader",
    "ICacheEntry",
    "ICacheStore",
    "IEntryWriter",
    "Judgement",
    "MemoryStore",
    "Plan",
    "RedisStore",
    "Reply",
    "RequestDirectives",
    "ResponseDirectives",
    "Reuse",
    "SharedCache",
    "StoredResponse",
    "Waiter",
    "cache_from_options",
    "cache_from_table",
    "cache_key",
    "caching_fetcher_factory",
    "current_age",
    "effective_url",
    "freshness_lifetime",
    "judge",
    "make_store",
    "parse_request_directives",
    "parse_response_directives",
    "parse_size",
    "parse_targets",
]
