"""
Each public package imports on its own, first thing in a fresh interpreter
(an import cycle hidden by the order the test suite happens to import in
would break a user's ``import multiproxy.policy``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PACKAGES = [
    "multiproxy",
    "multiproxy.balancing",
    "multiproxy.cache",
    "multiproxy.forward",
    "multiproxy.h2",
    "multiproxy.http",
    "multiproxy.http1",
    "multiproxy.pipeline",
    "multiproxy.policy",
    "multiproxy.reverse",
    "multiproxy.socks",
    "multiproxy.status",
    "multiproxy.tcp",
    "multiproxy.testing",
    "multiproxy.transport",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_first_in_a_fresh_interpreter(package):
    result = subprocess.run(
        [sys.executable, "-c", f"import {package}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_the_http1_package_needs_no_reactor():
    """HTTP/1.x parsing and writing import nothing from twisted.internet (STYLE: sans-I/O)."""
    modules = ["_parser", "_writer", "_headers", "_target", "_rules", "_dates", "_structured"]
    code = ("import sys\n" + "".join(f"import multiproxy.http1.{m}\n" for m in modules)
            + "print(sorted(m for m in sys.modules if m.startswith('twisted.internet')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
