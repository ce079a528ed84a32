"""
Command-line options for health checks, mixed into the twistd ``Options``
of every proxy that balances over backends (the reverse proxy, the TCP
relay).
"""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from multiproxy.balancing._config import HealthConfig

__all__ = ["HealthOptions"]

_HEALTH = HealthConfig()


class HealthOptions:
    """
    A mix-in for a `twisted.python.usage.Options`: the health-check options
    that read and mean the same in every balancing proxy (``--no-health``,
    ``--health-interval``, ``--health-timeout``, ``--health-rise``,
    ``--health-fall``), and `health_config` to call from ``postOptions``.

    The proxy declares ``--health-check`` (default None), ``--health-path``
    and ``--max-failures`` itself, in its own words (failed requests or
    failed connections); `health_config` settles the kind of check the same
    way for every proxy.
    """

    optFlags = [
        ["no-health", None, "No active health checks (failing backends are still ejected)."],
    ]
    optParameters = [
        ["health-interval", None, _HEALTH.interval, "Seconds between health checks.", float],
        ["health-timeout", None, _HEALTH.timeout, "Seconds a health check may take.", float],
        ["health-rise", None, _HEALTH.rise, "Good checks in a row that bring a backend up.", int],
        ["health-fall", None, _HEALTH.fall,
         "Failed checks in a row that take a backend down.", int],
    ]

    def health_config(self: Any) -> HealthConfig:
        """
        The `HealthConfig` these options describe.  The kind of check is
        ``--health-check`` if given, else http when ``--health-path`` is
        given, else tcp; ``--no-health`` overrides both.

        @raise usage.UsageError: for an unknown kind of check, a path that
            is not ``/...``, an interval or timeout that is not more than 0,
            or a count (``--max-failures`` included) below 1.
        """
        check = self["health-check"] or ("http" if self["health-path"] else "tcp")
        if check not in ("http", "tcp", "none"):
            raise usage.UsageError(f"--health-check must be tcp, http or none, not {check!r}")
        if self["no-health"]:
            check = "none"
        path = self["health-path"] or "/"
        if not path.startswith("/") or " " in path:
            raise usage.UsageError(
                f"--health-path must start with / and hold no spaces, got {path!r}")
        for key in ("health-interval", "health-timeout"):
            if self[key] <= 0:
                raise usage.UsageError(f"--{key} must be more than 0")
        for key in ("health-rise", "health-fall", "max-failures"):
            if self[key] < 1:
                raise usage.UsageError(f"--{key} must be at least 1")
        return HealthConfig(
            check=check,  # type: ignore[arg-type]
            path=path,
            interval=self["health-interval"],
            timeout=self["health-timeout"],
            rise=self["health-rise"],
            fall=self["health-fall"],
            max_failures=self["max-failures"],
        )
