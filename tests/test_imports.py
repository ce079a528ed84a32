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
    "multiproxy.http",
    "multiproxy.policy",
    "multiproxy.reverse",
    "multiproxy.status",
    "multiproxy.tcp",
    "multiproxy.testing",
]


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_first_in_a_fresh_interpreter(package):
    result = subprocess.run(
        [sys.executable, "-c", f"import {package}"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
