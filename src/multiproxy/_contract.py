"""
Checking plug-ins against the shared contract, and its trivial defaults.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.logger import Logger
from zope.interface import Interface, implementer
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from multiproxy._errors import ConfigError
from multiproxy._interfaces import IPolicy, IReporter
from multiproxy._values import ALLOW, AccessRecord, Decision, Intent

_log = Logger()


def check(interface: type[Interface], obj: object, role: str) -> object:
    """
    Verify that ``obj`` provides ``interface`` (methods and attributes), so a
    plug-in that does not fit fails at start-up with a readable message.
    """
    try:
        verifyObject(interface, obj)
    except Invalid as e:
        raise ConfigError(
            f"{role}: {obj!r} does not provide {interface.__name__}: {e}"
        ) from None
    return obj


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
