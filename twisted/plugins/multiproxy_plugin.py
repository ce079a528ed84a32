"""
twistd plugin: ``twistd multiproxy``.

This file is found by Twisted's plugin system (``twisted.plugin.getPlugins``);
the folder it lives in must not have an ``__init__.py``.
"""

from twisted.application.service import ServiceMaker

multiproxy = ServiceMaker(
    "multiproxy",
    "multiproxy._tap",
    "A multi-protocol proxy: forward HTTP, reverse HTTP and raw TCP relay.",
    "multiproxy",
)
