"""The reverse proxy example, run for real on loopback."""

from __future__ import annotations

import http.client
import importlib.util
import json
import pathlib
import socket
import ssl

import pytest
import pytest_twisted
from loopback import wait_for
from twisted.internet import reactor, threads

from multiproxy._config import load_configuration

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"

pytestmark = pytest.mark.integration


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _https_get(port: int, cafile: str, path: str = "/"):
    context = ssl.create_default_context(cafile=cafile)
    conn = http.client.HTTPSConnection("localhost", port, context=context, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(), \
            conn.sock.version()
    finally:
        conn.close()


def _http_get(port: int, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


@pytest_twisted.ensureDeferred
async def test_example_serves_https_skips_the_failing_backend_and_shows_it(tmp_path):
    example = _load("reverse_proxy")
    http_port, https_port, status_port = _free_port(), _free_port(), _free_port()
    service, backends = example.build(reactor, http_port, https_port, status_port,
                                      str(tmp_path / "certs"))
    service.startService()
    try:
        pool = service.pools["web"]
        gamma = next(b for b in pool.backends if b.name == "gamma")
        await wait_for(lambda: not gamma.checked_up, timeout=10)
        cafile = str(tmp_path / "certs" / "cert.pem")
        bodies = []
        for _ in range(6):
            status, headers, body, version = await threads.deferToThread(
                _https_get, https_port, cafile)
            assert status == 200
            assert headers["strict-transport-security"] == "max-age=300"
            assert version in ("TLSv1.2", "TLSv1.3")
            bodies.append(body)
        assert set(bodies) == {b"hello from alpha\n", b"hello from beta\n"}
        status, headers, _ = await threads.deferToThread(_http_get, http_port, "/x")
        assert status == 308
        assert headers["location"] == f"https://localhost:{https_port}/x"
        status, _, body = await threads.deferToThread(_http_get, status_port, "/status.json")
        states = {b["name"]: b["state"] for b in json.loads(body)["pools"][0]["backends"]}
        assert states == {"alpha": "up", "beta": "up", "gamma": "down"}
    finally:
        await service.stopService()
        for port in backends:
            await port.stopListening()


def test_example_toml_is_a_valid_configuration():
    config = load_configuration(str(EXAMPLES / "reverse_proxy.toml"))
    [(kind, reverse)] = config.proxies
    assert kind.name == "reverse"
    assert [p.name for p in reverse.pools] == ["api", "web"]
    assert reverse.route_table().match("api.example.com", b"/v1/users").target == b"/users"
