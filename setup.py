"""Build script: the pure-Python package is described in pyproject.toml; this file adds
the C++ CPU kernels (csrc/) as a pybind11 extension once they exist."""
from setuptools import setup

setup()
