"""What every codec provides (spec/container.md §8-9): an id, a name, a configuration that round
trips through bytes, and encode/decode of one chunk."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..dtypes import DType

ARRAY_TO_BYTES = "array->bytes"
BYTES_TO_BYTES = "bytes->bytes"
ARRAY_TO_ARRAY = "array->array"


class Codec:
    codec_id: ClassVar[int]
    name: ClassVar[str]
    kind: ClassVar[str]

    @classmethod
    def from_config(cls, config: bytes) -> "Codec":
        """Build from the stored `config` bytes; raise MalformedRecord if they do not fit."""
        raise NotImplementedError

    def config_bytes(self) -> bytes:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class ArrayToBytesCodec(Codec):
    kind = ARRAY_TO_BYTES

    def encode(self, elements: np.ndarray, dtype: DType) -> bytes | np.ndarray:
        """`elements` is a 1-D array of `dtype.uint` (bit patterns). Returns the encoded bytes."""
        raise NotImplementedError

    def decode_into(self, data: memoryview, dtype: DType, out: np.ndarray) -> None:
        """Decode `data` into `out`, a writable 1-D uint8 array of k × itemsize bytes."""
        raise NotImplementedError


class BytesToBytesCodec(Codec):
    kind = BYTES_TO_BYTES

    def encode(self, data: memoryview) -> bytes:
        raise NotImplementedError

    def decode(self, data: memoryview, expected_length: int) -> bytes | memoryview:
        """Decode to exactly `expected_length` bytes or raise CorruptPayload (CHN-02)."""
        raise NotImplementedError
