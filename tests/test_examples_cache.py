"""The caching forward proxy example: run as a program, and its pieces in-process."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import pytest_twisted
from twisted.internet import reactor

EXAMPLE = pathlib.Path(__file__).parent.parent / "examples" / "caching_forward_proxy.py"


def _load():
    spec = importlib.util.spec_from_file_location("caching_forward_proxy", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_demo_shows_hits_and_revalidation():
    out = subprocess.run(
        [sys.executable, str(EXAMPLE), "--demo"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    fresh = [line for line in lines if line.startswith("GET /fresh")]
    validated = [line for line in lines if line.startswith("GET /validated")]
    assert ["MISS" in fresh[0], "HIT" in fresh[1], "HIT" in fresh[2]] == [True] * 3
    assert "MISS" in validated[0]
    assert all("REVALIDATED" in line and "fwd-status=304" in line for line in validated[1:])
    assert "origin saw /fresh: 1 request(s), 0 conditional" in lines
    assert "origin saw /validated: 3 request(s), 2 conditional" in lines


@pytest_twisted.ensureDeferred
async def test_example_with_a_disk_cache_keeps_pages_across_proxies(tmp_path):
    example = _load()
    origin_port, origin = example.make_origin(reactor)
    o = origin_port.getHost().port
    factories, ports = [], []
    try:
        for _ in range(2):  # the second proxy starts after the first stopped: a restart
            factories.append(example.make_proxy(reactor, str(tmp_path / "cache")))
            ports.append(reactor.listenTCP(0, factories[-1], interface="127.0.0.1"))
            lines = await example.demo(reactor, ports[-1].getHost().port, o, origin)
            await ports[-1].stopListening()
        # The restarted proxy found /fresh on disk: the origin still saw it only once.
        assert lines[0].split()[3:5] == ["X-Cache:", "HIT"]
        assert [p for p, _ in origin.requests].count("/fresh") == 1
    finally:
        for factory in factories:
            factory.pool.close_idle()
        await origin_port.stopListening()
