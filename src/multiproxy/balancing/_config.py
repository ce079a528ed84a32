"""
Configuring the health checks of a pool's backends: the `HealthConfig`
value and its TOML reader, shared by every proxy that balances over
backends (``[reverse.health]``, ``[reverse.pools.NAME.health]``,
``[tcp.health]`` read the same keys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from multiproxy._tablereader import TableReader

__all__ = ["CHECK_KINDS", "CheckKind", "HealthConfig", "health_from_table"]

CheckKind = Literal["http", "tcp", "none"]
CHECK_KINDS: tuple[CheckKind, ...] = ("http", "tcp", "none")
"""The kinds of active health check."""


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """
    Health checks of a pool's backends.

    Active: ``check`` (``tcp``, the default: the connection opens; ``http``:
    ``GET path`` must answer a status in ``expect``, default 2xx/3xx; ``none``)
    every ``interval`` seconds with ``timeout``; down after ``fall`` failures
    in a row, up after ``rise`` successes.  Passive: ``max_failures``
    consecutive failed requests eject a backend for ``backoff`` seconds,
    doubling up to ``max_backoff``.
    """

    check: CheckKind = "tcp"
    path: str = "/"
    host: str | None = None
    expect: tuple[int, ...] = ()
    interval: float = 5.0
    timeout: float = 2.0
    rise: int = 2
    fall: int = 3
    max_failures: int = 3
    backoff: float = 5.0
    max_backoff: float = 300.0


def health_from_table(reader: TableReader) -> HealthConfig:
    """Read one ``health`` table; unknown keys and bad values are refused."""
    d = HealthConfig()
    # Naming a path asks for HTTP checks; without one a TCP connect is the
    # safe default (a backend may well answer 404 on "/").
    default_check = "http" if reader.has("path") else d.check
    check = reader.string("check", default_check, choices=CHECK_KINDS)
    path = reader.string("path", d.path)
    if not path.startswith("/") or any(c in path for c in " \t\r\n"):
        raise reader.error("path", f"must start with / and hold no spaces, got {path!r}")
    expect = reader.raw("expect", [])
    if isinstance(expect, int) and not isinstance(expect, bool):
        expect = [expect]
    if not isinstance(expect, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in expect
    ):
        raise reader.error("expect", f"expected status codes such as [200, 204], got {expect!r}")
    config = HealthConfig(
        check=check,  # type: ignore[arg-type]
        path=path,
        host=reader.string("host", None),
        expect=tuple(expect),
        interval=reader.number("interval", d.interval, minimum=0.01),
        timeout=reader.number("timeout", d.timeout, minimum=0.01),
        rise=reader.integer("rise", d.rise, minimum=1),
        fall=reader.integer("fall", d.fall, minimum=1),
        max_failures=reader.integer("max_failures", d.max_failures, minimum=1),
        backoff=reader.number("backoff", d.backoff, minimum=0.01),
        max_backoff=reader.number("max_backoff", d.max_backoff, minimum=0.01),
    )
    reader.finish()
    return config
