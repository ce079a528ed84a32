"""The custom forward proxy example, run through curl."""

from __future__ import annotations

import importlib.util
import json
import pathlib

import pytest_twisted
from loopback import curl
from twisted.internet import reactor

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "custom_forward_proxy.py"


def _load():
    spec = importlib.util.spec_from_file_location("custom_forward_proxy", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest_twisted.ensureDeferred
async def test_example_tags_requests_and_blocks_ads(origin):
    example = _load()
    factory = example.make_proxy(reactor)
    factory.reporters = ()
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    proxy = f"http://127.0.0.1:{port.getHost().port}"
    try:
        out, err, code = await curl("-x", proxy, f"http://127.0.0.1:{origin}/headers")
        fields = dict((k.lower(), v) for k, v in json.loads(out)["headers"])
        assert fields["x-proxied-by"] == "custom-forward-proxy-example"
        out, err, code = await curl("-x", proxy, "-w", "%{http_code}", "http://ads.example.net/")
        assert out.endswith(b"403")
        assert b"ads.example.net serves ads" in out
    finally:
        await port.stopListening()
        factory.pool.close_idle()
