"""setup.py: copies the repository's build/libnanochat.so into the package
when it has been built (`make` at the repository root), so an installed
nanochat_c finds its library beside itself. Without one the package still
installs and looks for $NANOCHAT_LIB at import (nanochat_c/_lib.py)."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
BUILT = os.path.join(HERE, "..", "build", "libnanochat.so")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        if os.path.exists(BUILT):
            dest = os.path.join(self.build_lib, "nanochat_c", "libnanochat.so")
            self.copy_file(BUILT, dest)
            print(f"nanochat_c: bundled {os.path.realpath(BUILT)}")
        else:
            print(f"nanochat_c: no {BUILT}: set NANOCHAT_LIB when using the package")


setup(cmdclass={"build_py": BuildWithLibrary})
