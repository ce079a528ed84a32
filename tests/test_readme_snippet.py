"""
The README's library snippet runs as written and its policy decides real
requests; the README's multiproxy.testing snippet passes as written.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def _snippet() -> str:
    (snippet,) = [block for block in _blocks() if "reactor.run()" in block]
    return snippet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ask(port: int, target: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % target.encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


@pytest.mark.integration
def test_readme_library_snippet_runs_and_denies_ads(tmp_path):
    snippet = _snippet()
    assert "from twisted.internet import reactor" in snippet
    assert snippet.rstrip().endswith("reactor.run()")
    port = _free_port()
    # Only the port changes, so that a busy 8080 on the test machine cannot fail the test.
    script = tmp_path / "snippet.py"
    script.write_text(snippet.replace("listenTCP(8080,", f"listenTCP({port},"))
    process = subprocess.Popen([sys.executable, str(script)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.stdout.read().decode()
                assert time.monotonic() < deadline, "snippet never listened"
                time.sleep(0.1)
        denied = _ask(port, "http://ads.example.invalid/banner")
        assert denied.startswith(b"HTTP/1.1 403 ")
        assert b"ads are blocked" in denied
        # Anything else is allowed by the policy and fetched: an unresolvable name is a 502.
        allowed = _ask(port, "http://nowhere.invalid/")
        assert allowed.startswith(b"HTTP/1.1 502 ")
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_readme_testing_snippet_passes_against_the_library_snippets_policy():
    # The testing snippet tests the NoAds policy the library snippet defines:
    # run the library snippet without its last two lines (listen, run), then it.
    library = "\n".join(line for line in _snippet().splitlines()
                         if not line.startswith("reactor."))
    (testing,) = [block for block in _blocks() if "multiproxy.testing" in block]
    namespace: dict = {}
    exec(compile(library, "README library snippet", "exec"), namespace)
    exec(compile(testing, "README testing snippet", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    tests[0]()
