"""What a record kind provides (spec/container.md §7.2): how a tensor becomes streams (encode) and
streams become the tensor's bytes again (assemble). The container code never looks inside params."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..chain import Chain
from ..dtypes import DType


@dataclass
class StreamPlan:
    """One stream to write: its array (1-D bit patterns of `dtype`), logical shape and chain."""

    dtype: DType
    shape: tuple[int, ...]
    elements: np.ndarray
    chain: Chain
    chunk_elements: int


@dataclass
class EncodedRecord:
    """What a kind's encoder hands the writer. `decoded` is the exact bytes a decoder will produce
    (needed for the SHA-256 of lossy records; None means the input bytes themselves)."""

    params: bytes
    streams: list[StreamPlan]
    lossy: bool = False
    error: dict | None = None
    decoded: np.ndarray | None = None


class DecodeContext:
    """What assemble may ask of the file beyond its own streams (e.g. a reference tensor)."""

    def __init__(self, reader):
        self.reader = reader

    def tensor_bytes(self, name: str) -> np.ndarray:
        return self.reader.read_bytes(name)


class RecordKind:
    kind_id: ClassVar[int]
    name: ClassVar[str]
    # a stream that decodes straight into the output buffer (no copy), or None
    direct_stream: ClassVar[int | None] = None

    @classmethod
    def check(cls, record, name: str) -> None:
        """Validate a parsed TensorRecord against this kind's page; raise MalformedRecord."""
        raise NotImplementedError

    @classmethod
    def streams_needed(cls, record, **options) -> list[int]:
        """Which streams a decode with these options reads (all, unless the kind says otherwise)."""
        return list(range(record.stream_count))

    @classmethod
    def assemble(cls, record, streams: dict[int, np.ndarray], out: np.ndarray,
                 ctx: DecodeContext, **options) -> None:
        """Build the tensor's decoded bytes into `out` from the decoded streams' bytes."""
        raise NotImplementedError

    @classmethod
    def describe(cls, record) -> dict:
        """Kind-specific facts for `inspect` (e.g. per-band sizes)."""
        return {}
