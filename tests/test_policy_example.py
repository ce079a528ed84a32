"""The work-hours example (examples/work_hours.toml and work_hours_proxy.py), run through curl."""

from __future__ import annotations

import importlib.util
import json
import pathlib
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest_twisted
from loopback import curl
from twisted.internet import reactor
from twisted.internet.task import Clock
from zope.interface import implementer

from multiproxy import IUpstreamChooser
from multiproxy._config import load_configuration
from multiproxy.forward import Origin

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def _load():
    path = EXAMPLES / "work_hours_proxy.py"
    spec = importlib.util.spec_from_file_location("work_hours_proxy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@implementer(IUpstreamChooser)
class LoopbackChooser:
    """Sends every request to the local test origin, whatever host it names."""

    def __init__(self, port: int) -> None:
        self.port = port

    def choose(self, intent, excluded=frozenset()):
        return Origin("http", "127.0.0.1", self.port)


@pytest_twisted.ensureDeferred
async def test_example_blocks_social_sites_in_work_hours_except_for_signed_in_staff(origin):
    example = _load()
    clock = Clock()
    clock.advance(datetime(2026, 3, 4, 11, 0, tzinfo=ZoneInfo("Europe/Berlin")).timestamp())
    policy = example.make_policy(reactor, clock=clock.seconds)
    factory = example.make_proxy(reactor, policy, chooser=LoopbackChooser(origin))
    factory.reporters = ()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    proxy = f"http://127.0.0.1:{port.getHost().port}"
    try:
        out, err, code = await curl("-x", proxy, "-w", " %{http_code}",
                                    "http://www.facebook.com/headers")
        assert out.endswith(b" 407")
        assert b"Social media is blocked during work hours" in out

        out, err, code = await curl("-x", proxy, "-U", "alice:wonderland",
                                    "http://www.facebook.com/headers")
        assert json.loads(out)["method"] == "GET", err

        program = "http://downloads.example.com/bytes/3?file=setup.exe"
        out, err, code = await curl("-x", proxy, "-U", "alice:wonderland", "-w",
                                    " %{http_code}", program)
        assert out.endswith(b" 403") and b"Program downloads are for the IT team" in out
        out, err, code = await curl("-x", proxy, "-U", "bob:builder", program)
        assert out == b"xxx"

        clock.advance(7 * 3600)  # 18:00, after work
        out, err, code = await curl("-x", proxy, "http://www.facebook.com/bytes/2")
        assert out == b"xx"
    finally:
        await port.stopListening()
        factory.pool.close_idle()


def test_example_configuration_file_is_valid_for_twistd():
    configuration = load_configuration(str(EXAMPLES / "work_hours.toml"))
    settings = configuration.policy.settings
    assert [r.name for r in settings.rules.rules] == ["staff-exempt", "no-social-at-work"]
    assert settings.auth.groups == {"bob": frozenset({"it"})}
    assert [kind.name for kind, _ in configuration.proxies] == ["forward"]
