"""
Checking plug-ins against the shared contract, and its trivial defaults.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from twisted.logger import Logger
from zope.interface import Interface, implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from multiproxy.pipeline._errors import ConfigError
from multiproxy.pipeline._interfaces import IPolicy, IReporter, IUpstreamChooser
from multiproxy.pipeline._values import ALLOW, AccessRecord, Decision, Intent

_log = Logger()


def check(interface: type[Interface], obj: object, role: str) -> object:
    """
    Verify that ``obj`` has what ``interface`` asks (methods with fitting
    signatures, attributes), so a plug-in that does not fit fails at
    start-up with a readable message.  Declaring the interface with
    ``@implementer`` is good practice but not required: an object with the
    right methods fits.
    """
    try:
        verifyObject(interface, obj, tentative=True)
    except Invalid as e:
        raise ConfigError(
            f"{role}: {obj!r} does not provide {interface.__name__}: {e}"
        ) from None
    return obj


class Pipeline:
    """
    What one proxy is assembled from, verified once when the proxy is built:
    its policy (`AllowAll` when none is given), its upstream choosers by the
    role each plays ("chooser", "backend pool web", ...) and its reporters.
    Every proxy kind builds one, so a broken plug-in is refused then, with a
    sentence naming the proxy, the plug-in and what it lacks, instead of
    failing its first request.  Upstreams are reached through the one
    connect path (`UpstreamEndpoint`), admission is
    `multiproxy.policy._admission.admit`, and `report` ends every request.
    """

    __slots__ = ("name", "policy", "choosers", "reporters")

    def __init__(self, name: str, *, policy: object | None = None,
                 choosers: Mapping[str, object] | None = None,
                 reporters: Iterable[object] = ()) -> None:
        self.name = name
        self.policy = policy if policy is not None else AllowAll()
        self.choosers = dict(choosers or {})
        self.reporters = tuple(reporters)
        check(IPolicy, self.policy, f"{name}: policy")
        for role, chooser in self.choosers.items():
            check(IUpstreamChooser, chooser, f"{name}: {role}")
        for reporter in self.reporters:
            check(IReporter, reporter, f"{name}: reporter")

    def report(self, record: AccessRecord) -> None:
        report_all(self.reporters, record)


def report_all(reporters: Iterable[IReporter], record: AccessRecord) -> None:
    """Give ``record`` to every reporter; one that raises is logged, never lets the others miss it."""
    for reporter in reporters:
        try:
            reporter.report(record)
        except Exception:
            _log.failure("reporter {reporter!r} failed", reporter=reporter)


@implementer(IPolicy)
class AllowAll:
    """The policy of a proxy with no rules: everything is allowed."""

    def decide(self, intent: Intent) -> Decision:
        return ALLOW

    def __repr__(self) -> str:
        return "AllowAll()"
