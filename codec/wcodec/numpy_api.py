"""numpy equivalents of the torch API: `wcodec.numpy.save_file / load_file`."""

from __future__ import annotations

import os

import numpy as np

from . import dtypes as D
from .errors import InputError, UnsupportedFeature
from .limits import DEFAULT_LIMITS, Limits
from .metadata import KEY_SOURCE_FORMAT
from .writer import EncodeOptions, Writer


def raw_to_numpy(raw: np.ndarray, dtype: D.DType, shape) -> np.ndarray:
    if dtype.numpy_name is None:
        raise UnsupportedFeature(f"{dtype.name} has no numpy dtype; use the torch API "
                                 "(framework='pt')")
    return raw.view(np.dtype(dtype.numpy_name)).reshape(tuple(shape))


def save_file(arrays: dict, filename: str | os.PathLike, metadata: dict | None = None,
              **options) -> None:
    if not isinstance(arrays, dict):
        raise InputError("save_file takes a dict of name -> numpy.ndarray")
    with Writer(filename, metadata=metadata, system_metadata={KEY_SOURCE_FORMAT: "api"},
                options=EncodeOptions(**options)) as w:
        for name, a in arrays.items():
            if not isinstance(a, np.ndarray):
                raise InputError(f"array {name!r}: expected numpy.ndarray, got {type(a).__name__}")
            dtype = D.from_numpy(a.dtype)
            le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
            w.add(name, dtype, a.shape, le.reshape(-1).view(np.uint8))


def load_file(filename: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS,
              verify_sha256: bool | None = None) -> dict:
    from .api import safe_open
    with safe_open(filename, framework="np", limits=limits, verify_sha256=verify_sha256) as f:
        return {k: f.get_tensor(k) for k in f.keys()}
