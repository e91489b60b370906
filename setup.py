"""Build script: the pure-Python package is described in pyproject.toml; this file adds
the C++ CPU kernels (csrc/) as the pybind11 extension ``lowbit._C_cpu``.

The extension does not link libtorch (Python passes raw data pointers), so it builds
against any installed torch. ISA-specific code is compiled per function/file with target
attributes and chosen at run time, so one x86-64 build runs on any x86-64 CPU. Set
LOWBIT_NO_CPU_EXT=1 to skip it (the reference backend then serves the CPU).
"""
import glob
import os

from setuptools import setup

ext_modules = []
if os.environ.get("LOWBIT_NO_CPU_EXT", "0") != "1":
    from pybind11.setup_helpers import ParallelCompile, Pybind11Extension

    # compile the translation units in parallel (LOWBIT_BUILD_JOBS overrides; 0 = all cores)
    ParallelCompile("LOWBIT_BUILD_JOBS", default=2).install()

    sources = sorted(glob.glob("csrc/kernels/*.cpp") + glob.glob("csrc/operator/*.cpp") + glob.glob("csrc/binding/*.cpp"))
    ext_modules.append(
        Pybind11Extension(
            "lowbit._C_cpu",
            sources,
            cxx_std=17,
            # -ffp-contract=off: no fused multiply-add anywhere, the int8 path is bit-exact
            extra_compile_args=["-O3", "-ffp-contract=off", "-fno-math-errno"],
            extra_link_args=["-pthread", "-ldl"],  # dl: finding the OpenMP runtime torch loaded
        )
    )

setup(ext_modules=ext_modules)
