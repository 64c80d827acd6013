"""Codec `planes` (id 2, array->bytes): spec/codecs/planes.md.

Floats are rotated left by one bit so that the sign leaves the top byte and the exponent sits whole in
plane 0 (for float32, bfloat16, float16); plane j holds byte (itemsize-1-j) of every element.
"""

from __future__ import annotations

import numpy as np

from ..dtypes import DType
from ..errors import CorruptPayload, MalformedRecord
from .base import ArrayToBytesCodec


def to_words(elements: np.ndarray, dtype: DType) -> np.ndarray:
    """Forward word transform t(w); returns a new array, never a view of the input."""
    if dtype.is_float and dtype.itemsize > 1:
        bits = 8 * dtype.itemsize
        u = elements.view(dtype.uint)
        return (u << dtype.uint.type(1)) | (u >> dtype.uint.type(bits - 1))
    return elements.view(dtype.uint).copy()


def from_words(t: np.ndarray, dtype: DType) -> np.ndarray:
    """Inverse transform w(t), in place on `t`."""
    if dtype.is_float and dtype.itemsize > 1:
        bits = 8 * dtype.itemsize
        one = dtype.uint.type(1)
        low = t & one
        t >>= one
        low <<= dtype.uint.type(bits - 1)
        t |= low
    return t


_NATIVE_MIN = 4096  # below this the numpy path is as fast as a call into the native loop


def _kernels():
    """The C kernels when built (no numba import on the lossless decode path), else numba's."""
    from . import rans
    return rans.native if rans.native is not None else rans.kernels()


class PlanesCodec(ArrayToBytesCodec):
    codec_id = 2
    name = "planes"

    @classmethod
    def from_config(cls, config: bytes) -> "PlanesCodec":
        if len(config) != 0:
            raise MalformedRecord("codec 'planes' takes no configuration", rule="CHN-01")
        return cls()

    def config_bytes(self) -> bytes:
        return b""

    def encode(self, elements, dtype):
        k, size = elements.shape[0], dtype.itemsize
        if size in (2, 4) and k >= _NATIVE_MIN:
            out = np.empty(k * size, np.uint8)
            _kernels().planes_encode(elements, size, dtype.is_float, out)
            return out
        t = to_words(elements, dtype)
        if size == 1:
            return t.view(np.uint8)
        # little-endian bytes of t, most significant first, then one plane per row
        return np.ascontiguousarray(t.view(np.uint8).reshape(k, size)[:, ::-1].T)

    def decode_into(self, data, dtype, out):
        size = dtype.itemsize
        if len(data) != out.nbytes:
            raise CorruptPayload(f"'planes' got {len(data)} bytes, expected {out.nbytes}",
                                 rule="PLN2-01")
        k = out.nbytes // size
        planes = np.frombuffer(data, dtype=np.uint8)
        if size in (2, 4) and k >= _NATIVE_MIN:
            _kernels().planes_decode(planes, size, dtype.is_float, out.view(dtype.uint))
            return
        if size == 1:
            out[:] = planes
            return
        out.reshape(k, size)[:, ::-1] = planes.reshape(size, k).T
        from_words(out.view(dtype.uint), dtype)
