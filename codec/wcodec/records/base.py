"""What a record kind provides: how a tensor becomes streams (encode) and streams become the
tensor's bytes again (decode)."""

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
    params: bytes
    streams: list[StreamPlan]
    lossy: bool = False
    error: dict | None = None


class RecordKind:
    kind_id: ClassVar[int]
    name: ClassVar[str]

    @classmethod
    def check(cls, record, name: str) -> None:
        """Validate a parsed TensorRecord against this kind's page; raise MalformedRecord."""
        raise NotImplementedError

    @classmethod
    def assemble(cls, record, streams: list[np.ndarray], out: np.ndarray) -> None:
        """Build the tensor's decoded bytes into `out` from the decoded streams' bytes."""
        raise NotImplementedError
