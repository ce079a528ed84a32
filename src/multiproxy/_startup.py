"""
What each proxy says when it starts: one line an operator reads to see
that the process runs the configuration they meant (its name, kind, every
listener, the policy, the cache and the backends), as HAProxy and Squid
log at start.

Pure functions over configuration values; `ProxyService` logs the line
when it starts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "describe_cache", "describe_parents", "describe_policy", "describe_pool", "listening",
    "startup_summary",
]

_USERINFO = re.compile(r"//[^@/]*@")


def startup_summary(name: str, kind: str, parts: Iterable[str]) -> str:
    """``name (kind): part; part; ...``."""
    return f"{name} ({kind}): " + "; ".join(p for p in parts if p)


def listening(label: str, descriptions: Sequence[str]) -> str:
    """``label ENDPOINT, ENDPOINT`` or nothing when there are none."""
    return f"{label} {', '.join(descriptions)}" if descriptions else ""


def describe_policy(policy: Any) -> str:
    """The rules in force (count and default action), authentication and limits."""
    if policy is None:
        return "policy: none (everything allowed)"
    settings = getattr(policy, "settings", None)
    if settings is None:  # a plug-in policy of the library's user
        return f"policy: {type(policy).__name__}"
    rules = settings.rules
    count = len(rules.rules)
    text = f"policy: {count} rule{'s' if count != 1 else ''}, default {rules.default.action}"
    if settings.auth is not None:
        text += ", proxy authentication"
    limits = settings.limits
    if limits is not None:
        if limits.connections_per_client:
            text += f", at most {limits.connections_per_client} connections per client"
        if limits.requests_per_second:
            text += f", {limits.requests_per_second:g} requests/s per client"
    if settings.anonymity is not None:
        text += ", anonymising"
    return text


def describe_cache(config: Any) -> str:
    """``cache: off``, or the store, its size and the largest object stored."""
    if config is None or not config.enabled:
        return "cache: off"
    if config.redis:
        store = f"redis {_USERINFO.sub('//***@', config.redis)}"
    elif config.directory:
        store = f"disk {config.directory}, {_size(config.size)}"
    else:
        store = f"memory, {_size(config.size)}"
    return f"cache: {store}, objects up to {_size(config.max_object_size)}"


def describe_pool(name: str, balance: str, backends: Sequence[str], health: Any) -> str:
    """``pool NAME (BALANCE, CHECK): backend, backend``."""
    return f"pool {name} ({balance}, {_checked(health)}): {', '.join(backends) or 'no backends'}"


def describe_parents(urls: Sequence[str], fallback: str, health: Any) -> str:
    """
    ``parents in order (CHECK; all down: FALLBACK): url, url`` or nothing
    without parents; ``urls`` with their passwords masked (`ParentConfig.url`).
    """
    if not urls:
        return ""
    return f"parents in order ({_checked(health)}; all down: {fallback}): {', '.join(urls)}"


def _checked(health: Any) -> str:
    """How a pool's backends are checked: ``tcp check every 5 s``, ``no active checks``."""
    if health.check == "none":
        return "no active checks"
    what = f"http {health.path}" if health.check == "http" else health.check
    return f"{what} check every {health.interval:g} s"


def _size(count: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift and count % (1 << shift) == 0:
            return f"{count >> shift} {unit}"
    return f"{count} bytes"
