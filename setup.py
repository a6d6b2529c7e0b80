"""The optional native ingest core (gateway/native/): built when a C compiler and
the Python headers are present, skipped otherwise; the pure-Python path then
runs (README.md, "Native hot path"). GATEWAY_REQUIRE_NATIVE=1 makes a failed
build an error instead (CI sets it). GATEWAY_NATIVE=0 leaves the extension out
altogether: a pure-Python wheel for any architecture (`make wheel`, the image).

Everything else about the package is in pyproject.toml.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BLAKE3 = "gateway/native/blake3/"
# The portable BLAKE3 only: entries are one 1 KiB chunk or a few, where the
# SIMD variants gain little (bench/RESULTS.md), and one C file set builds on
# every architecture the appliance runs on.
BLAKE3_PORTABLE = [
    ("BLAKE3_NO_SSE2", None),
    ("BLAKE3_NO_SSE41", None),
    ("BLAKE3_NO_AVX2", None),
    ("BLAKE3_NO_AVX512", None),
    ("BLAKE3_USE_NEON", "0"),
]


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: the Python path runs
            self._skipped(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self._skipped(exc)

    def _skipped(self, exc):
        if os.environ.get("GATEWAY_REQUIRE_NATIVE") == "1":
            raise
        print(
            f"warning: native ingest core not built ({exc}); using the Python path", file=sys.stderr
        )


NATIVE = [
    Extension(
        "gateway._native",
        sources=[
            "gateway/native/module.c",
            "gateway/native/gwcore.c",
            BLAKE3 + "blake3.c",
            BLAKE3 + "blake3_dispatch.c",
            BLAKE3 + "blake3_portable.c",
        ],
        define_macros=BLAKE3_PORTABLE,
        extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Wno-unused-parameter"],
    )
]

setup(
    ext_modules=[] if os.environ.get("GATEWAY_NATIVE") == "0" else NATIVE,
    cmdclass={"build_ext": OptionalBuildExt},
)
