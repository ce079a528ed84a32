"""Every proxy kind refuses a plug-in that does not fit when it is built, not at its first request."""

from __future__ import annotations

import pytest
from twisted.internet.testing import MemoryReactorClock

from multiproxy import ConfigError
from multiproxy.forward import ForwardProxy
from multiproxy.reverse import ReverseProxy, RouteTable
from multiproxy.socks import SocksProxy
from multiproxy.tcp import TCPRelayFactory


class NoDecide:
    """A policy whose author forgot ``decide``."""


class NoChoose:
    def pick(self, intent):
        return None


class NoReport:
    def record(self, record):
        pass


class Chooser:
    """Duck-typed: no ``@implementer``, but the method the interface asks for."""

    def choose(self, intent, excluded=frozenset()):
        return None


def build(kind: str, **plugins):
    reactor = MemoryReactorClock()
    if kind == "forward":
        return ForwardProxy(reactor, **plugins)
    if kind == "socks":
        return SocksProxy(reactor, **plugins)
    if kind == "tcp":
        return TCPRelayFactory(reactor, plugins.pop("chooser", Chooser()), **plugins)
    return ReverseProxy(reactor, routes=RouteTable([]), pools={"web": plugins.pop("chooser", Chooser())},
                        **plugins)


KINDS = ["forward", "reverse", "tcp", "socks"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_policy_without_decide_is_refused_naming_the_method(kind):
    with pytest.raises(ConfigError) as raised:
        build(kind, policy=NoDecide())
    message = str(raised.value)
    assert "policy" in message and "NoDecide" in message and "decide" in message


@pytest.mark.parametrize("kind", KINDS)
def test_a_reporter_without_report_is_refused(kind):
    with pytest.raises(ConfigError) as raised:
        build(kind, reporters=[NoReport()])
    assert "reporter" in str(raised.value) and "report" in str(raised.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_chooser_without_choose_is_refused(kind):
    with pytest.raises(ConfigError) as raised:
        build(kind, chooser=NoChoose())
    assert "choose" in str(raised.value)


@pytest.mark.parametrize("kind", KINDS)
def test_duck_typed_plugins_with_the_right_methods_fit(kind):
    class Policy:
        def decide(self, intent):
            raise AssertionError("not asked at build time")

    class Reporter:
        def report(self, record):
            pass

    build(kind, policy=Policy(), reporters=[Reporter()], chooser=Chooser())


@pytest.mark.parametrize("kind", KINDS)
def test_every_proxy_is_assembled_from_one_pipeline(kind):
    class Policy:
        def decide(self, intent):
            raise AssertionError("not asked at build time")

    class Reporter:
        def report(self, record):
            pass

    policy, reporter, chooser = Policy(), Reporter(), Chooser()
    # A generator of reporters is read once and checked like a list.
    proxy = build(kind, policy=policy, reporters=(r for r in [reporter]), chooser=chooser)
    pipeline = proxy.pipeline
    assert pipeline.policy is proxy.policy is policy
    assert pipeline.reporters == (reporter,)
    assert chooser in pipeline.choosers.values()
    with pytest.raises(ConfigError, match="reporter"):
        build(kind, reporters=(r for r in [NoReport()]))
