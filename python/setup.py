"""Copies the repo's proto/ into the package at build time, so an installed package
generates its stubs from exactly the protos it was built with (nothing generated is committed).
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_PROTO = os.path.join(HERE, "..", "proto", "steadfast", "v1")


class BuildPy(build_py):
    def run(self):
        super().run()
        if not os.path.isdir(REPO_PROTO):
            # A build from an sdist: the protos are already inside the package.
            return
        dest = os.path.join(self.build_lib, "steadfast_worker", "proto", "steadfast", "v1")
        os.makedirs(dest, exist_ok=True)
        for name in os.listdir(REPO_PROTO):
            if name.endswith(".proto"):
                shutil.copy(os.path.join(REPO_PROTO, name), dest)


setup(cmdclass={"build_py": BuildPy})
