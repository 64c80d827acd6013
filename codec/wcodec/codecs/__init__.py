"""Codec registry: codec_id -> class (spec/container.md §9)."""

from __future__ import annotations

from ..errors import UnsupportedFeature
from .base import ARRAY_TO_ARRAY, ARRAY_TO_BYTES, BYTES_TO_BYTES, Codec
from .bytes_codec import BytesCodec
from .lanes import LanesCodec
from .planes import PlanesCodec

REGISTRY: dict[int, type[Codec]] = {c.codec_id: c for c in (BytesCodec, PlanesCodec, LanesCodec)}


def codec_class(codec_id: int) -> type[Codec]:
    try:
        return REGISTRY[codec_id]
    except KeyError:
        raise UnsupportedFeature(f"unknown codec id {codec_id}", rule="CHN-01") from None


__all__ = ["REGISTRY", "codec_class", "Codec", "ARRAY_TO_ARRAY", "ARRAY_TO_BYTES",
           "BYTES_TO_BYTES", "BytesCodec", "PlanesCodec", "LanesCodec"]
