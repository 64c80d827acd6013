"""The codec chain of a stream (spec/container.md §8): building it from CodecSpecs, checking its
shape (CHN-01) and running one chunk through it in either direction (8.3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .codecs import ARRAY_TO_BYTES, BYTES_TO_BYTES, Codec, codec_class
from .dtypes import DType
from .errors import MalformedRecord
from .limits import MAX_CODECS


@dataclass
class Chain:
    array_to_bytes: Codec
    bytes_to_bytes: Codec | None

    @property
    def codecs(self) -> list[Codec]:
        return [c for c in (self.array_to_bytes, self.bytes_to_bytes) if c is not None]

    def describe(self) -> str:
        return " > ".join(c.describe() for c in self.codecs)

    @classmethod
    def from_specs(cls, specs) -> "Chain":
        """`specs`: parsed CodecSpec containers, in encode order."""
        if not 1 <= len(specs) <= MAX_CODECS:
            raise MalformedRecord(f"a chain holds 1 to {MAX_CODECS} codecs, not {len(specs)}",
                                  rule="CHN-01")
        codecs = [codec_class(s.codec_id).from_config(bytes(s.config)) for s in specs]
        kinds = [c.kind for c in codecs]
        if kinds[0] != ARRAY_TO_BYTES or any(k != BYTES_TO_BYTES for k in kinds[1:]) \
                or len(codecs) > 2:
            raise MalformedRecord(
                "version 1.0 chains are one array->bytes codec and at most one bytes->bytes "
                f"codec, got {[c.name for c in codecs]}", rule="CHN-01")
        return cls(codecs[0], codecs[1] if len(codecs) == 2 else None)

    def to_specs(self) -> list[dict]:
        out = []
        for c in self.codecs:
            cfg = c.config_bytes()
            out.append(dict(codec_id=c.codec_id, config_length=len(cfg), config=cfg))
        return out

    def encode_chunk(self, elements: np.ndarray, dtype: DType) -> bytes:
        from . import fastpath
        fast = fastpath.encode_chunk(self, elements, dtype)  # planes > lanes: one native call
        if fast is not None:
            return fast
        data = self.array_to_bytes.encode(elements, dtype)
        if self.bytes_to_bytes is not None:
            return self.bytes_to_bytes.encode(memoryview(data).cast("B"))
        return bytes(memoryview(data).cast("B"))

    def decode_chunk(self, payload: memoryview, dtype: DType, out: np.ndarray) -> None:
        """Decode one CHUNK payload into `out` (uint8, exactly k × itemsize bytes)."""
        data = payload
        if self.bytes_to_bytes is not None:
            data = self.bytes_to_bytes.decode(payload, out.nbytes)
        self.array_to_bytes.decode_into(memoryview(data), dtype, out)
