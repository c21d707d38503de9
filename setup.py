"""Everything is in pyproject.toml; this only puts .streamlit/config.toml into the wheel beside app.py.

Streamlit reads `.streamlit/config.toml` from the folder of the script it runs (and from the working directory),
so an installed `exemplar serve` (site-packages/app.py) needs it at site-packages/.streamlit/config.toml, a folder
that is no package and so cannot be package data.
"""
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIG = Path(".streamlit") / "config.toml"


class BuildWithStreamlitConfig(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):  # an editable install serves the checkout's own file
            target = Path(self.build_lib) / CONFIG
            self.mkpath(str(target.parent))
            self.copy_file(str(CONFIG), str(target))


setup(cmdclass={"build_py": BuildWithStreamlitConfig})
