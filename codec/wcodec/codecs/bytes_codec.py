"""Codec `bytes` (id 1, array->bytes): spec/codecs/bytes.md."""

from __future__ import annotations

import numpy as np

from ..errors import CorruptPayload, MalformedRecord
from .base import ArrayToBytesCodec


class BytesCodec(ArrayToBytesCodec):
    codec_id = 1
    name = "bytes"

    @classmethod
    def from_config(cls, config: bytes) -> "BytesCodec":
        if len(config) != 0:
            raise MalformedRecord("codec 'bytes' takes no configuration", rule="CHN-01")
        return cls()

    def config_bytes(self) -> bytes:
        return b""

    def encode(self, elements, dtype):
        return elements.view(np.uint8)

    def decode_into(self, data, dtype, out):
        if len(data) != out.nbytes:
            raise CorruptPayload(f"'bytes' got {len(data)} bytes, expected {out.nbytes}",
                                 rule="BYT-01")
        out[:] = np.frombuffer(data, dtype=np.uint8)
