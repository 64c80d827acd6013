"""The data types of spec/container.md §7.1.

Codecs see every element as an opaque unsigned integer of `itemsize` bytes, so each dtype maps to the
numpy unsigned type of its width; the torch dtype is only needed at the API edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import UnsupportedFeature


@dataclass(frozen=True)
class DType:
    code: int
    name: str
    itemsize: int
    is_float: bool
    numpy_name: str | None  # numpy dtype with this exact layout, None where numpy has none

    @property
    def uint(self) -> np.dtype:
        """Unsigned integer dtype of the same width, used to handle bit patterns."""
        return np.dtype(f"<u{self.itemsize}")


_TABLE = [
    DType(1, "float64", 8, True, "<f8"),
    DType(2, "float32", 4, True, "<f4"),
    DType(3, "float16", 2, True, "<f2"),
    DType(4, "bfloat16", 2, True, None),
    DType(5, "float8_e4m3fn", 1, True, None),
    DType(6, "float8_e5m2", 1, True, None),
    DType(7, "int8", 1, False, "i1"),
    DType(8, "int16", 2, False, "<i2"),
    DType(9, "int32", 4, False, "<i4"),
    DType(10, "int64", 8, False, "<i8"),
    DType(11, "uint8", 1, False, "u1"),
    DType(12, "uint16", 2, False, "<u2"),
    DType(13, "uint32", 4, False, "<u4"),
    DType(14, "uint64", 8, False, "<u8"),
    DType(15, "bool", 1, False, "?"),
]

BY_CODE = {d.code: d for d in _TABLE}
BY_NAME = {d.name: d for d in _TABLE}
ALL = tuple(_TABLE)

# safetensors' dtype strings
SAFETENSORS_NAMES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I8": "int8", "I16": "int16",
    "I32": "int32", "I64": "int64", "U8": "uint8", "U16": "uint16", "U32": "uint32",
    "U64": "uint64", "BOOL": "bool",
}


def by_code(code: int, *, rule: str = "REC-02") -> DType:
    try:
        return BY_CODE[code]
    except KeyError:
        raise UnsupportedFeature(f"unknown dtype code {code}", rule=rule) from None


def by_name(name: str) -> DType:
    try:
        return BY_NAME[name]
    except KeyError:
        raise UnsupportedFeature(f"unknown dtype name {name!r}") from None


def from_numpy(dt: np.dtype) -> DType:
    dt = np.dtype(dt)
    for d in _TABLE:
        if d.numpy_name is not None and np.dtype(d.numpy_name) == dt.newbyteorder("<"):
            return d
    raise UnsupportedFeature(f"numpy dtype {dt} has no wcodec dtype")
