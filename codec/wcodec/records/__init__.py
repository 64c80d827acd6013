"""Record kinds (spec/container.md §7.2): record_kind -> implementation."""

from __future__ import annotations

from ..errors import UnsupportedFeature
from .base import DecodeContext, EncodedRecord, RecordKind, StreamPlan
from .plain import Plain
from .quantized import Quantized

REGISTRY: dict[int, type[RecordKind]] = {Plain.kind_id: Plain}
REGISTRY[Quantized.kind_id] = Quantized
from .bands import Bands; REGISTRY[Bands.kind_id] = Bands  # noqa: E402,E702
from .predicted import Predicted; REGISTRY[Predicted.kind_id] = Predicted  # noqa: E402,E702
from .factors import Factors; REGISTRY[Factors.kind_id] = Factors  # noqa: E402,E702
RESERVED = {2: "quantized", 3: "bands", 4: "predicted", 5: "factors"}


def record_class(kind_id: int) -> type[RecordKind]:
    try:
        return REGISTRY[kind_id]
    except KeyError:
        what = RESERVED.get(kind_id, "unknown")
        raise UnsupportedFeature(f"record kind {kind_id} ({what}) is not implemented",
                                 rule="REC-03") from None


__all__ = ["REGISTRY", "record_class", "RecordKind", "StreamPlan", "EncodedRecord", "DecodeContext",
           "Plain"]
