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


def check_plugins(
    proxy: str,
    *,
    policy: object,
    choosers: Mapping[str, object],
    reporters: Iterable[object] = (),
) -> None:
    """
    Verify, once, every plug-in a proxy is assembled from: its policy, its
    upstream choosers (by the role each plays, e.g. "chooser" or "backend
    pool web") and its reporters.  Every proxy kind calls this when it is
    built, so a broken plug-in is refused then, with a sentence naming the
    proxy, the plug-in and what it lacks, instead of failing its first request.
    """
    check(IPolicy, policy, f"{proxy}: policy")
    for role, chooser in choosers.items():
        check(IUpstreamChooser, chooser, f"{proxy}: {role}")
    for reporter in reporters:
        check(IReporter, reporter, f"{proxy}: reporter")


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
