"""The optional C kernels of lane method `rans` (codec/wcodec/codecs/_crans.c).

Everything else is in pyproject.toml. The extension is optional: without a C compiler the install
still succeeds and wcodec uses its numba kernels (same bytes, slower)."""
import os

from setuptools import Extension, setup

setup(ext_modules=[Extension("wcodec.codecs._crans", ["codec/wcodec/codecs/_crans.c"],
                             extra_compile_args=["-O3", "-std=c11"], optional=True,
                             # log2 in the encoder's scale search
                             libraries=[] if os.name == "nt" else ["m"])])
