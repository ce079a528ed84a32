"""
Packaging glue that setup.cfg cannot express: the twistd plugin.

Twisted finds plugins in every ``twisted/plugins`` folder on ``sys.path``.
A regular install copies ``twisted/plugins/multiproxy_plugin.py`` into
site-packages' ``twisted/plugins``; an editable install instead puts this
checkout's root on ``sys.path`` (via a ``.pth`` file) so the same folder is
found where it is.  The ``twisted.plugins`` package itself is never shadowed:
this repository's ``twisted/`` folder has no ``__init__.py``.
"""

import os

from setuptools import find_packages, setup
from setuptools.command.editable_wheel import editable_wheel

HERE = os.path.dirname(os.path.abspath(__file__))


class EditableWithPlugins(editable_wheel):
    """Editable install that also exposes ``twisted/plugins`` from this checkout."""

    def _create_wheel_file(self, bdist_wheel):
        path = super()._create_wheel_file(bdist_wheel)
        import zipfile

        with zipfile.ZipFile(path, "a") as wheel:
            wheel.writestr("multiproxy_twisted_plugins.pth", HERE + "\n")
        return path


setup(
    package_dir={"": "src", "twisted.plugins": "twisted/plugins"},
    packages=find_packages("src") + ["twisted.plugins"],
    cmdclass={"editable_wheel": EditableWithPlugins},
)
