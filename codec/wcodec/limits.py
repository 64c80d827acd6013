"""spec/container.md §10. `FORMAT_MAX` are the format's own bounds (a value above is invalid);
`Limits` holds the reference decoder's configurable ones, which may only be tighter."""

from __future__ import annotations

from dataclasses import dataclass, fields

MAX_RANK = 16
MAX_NAME_LENGTH = 1024
MAX_KEY_LENGTH = 256
MAX_STREAMS = 64
MAX_CODECS = 8
MAX_CONFIG_LENGTH = 1024
MAX_PARAMS_LENGTH = 1 << 20
MAX_CHUNK_ELEMENTS = 1 << 26
MAX_ALIGNMENT_LOG2 = 16
MAX_TENSOR_BYTES_FORMAT = 1 << 62


@dataclass(frozen=True)
class Limits:
    max_index_bytes: int = 256 << 20
    max_tensors: int = 1 << 24
    max_blocks: int = 1 << 28
    max_metadata_entries: int = 4096
    max_metadata_value_bytes: int = 1 << 20
    max_tensor_bytes: int = 64 << 30

    def __post_init__(self):
        ceilings = {"max_index_bytes": (1 << 32) - 1, "max_tensors": 1 << 24,
                    "max_blocks": 1 << 28, "max_metadata_entries": 4096,
                    "max_metadata_value_bytes": 1 << 20,
                    "max_tensor_bytes": MAX_TENSOR_BYTES_FORMAT}
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, int) or v < 0 or v > ceilings[f.name]:
                raise ValueError(f"{f.name}={v!r} must be an int in 0..{ceilings[f.name]}")


    @classmethod
    def coerce(cls, limits) -> "Limits":
        """A Limits from None (the defaults), a Limits, or a dict of field -> value (the API's
        `limits=` keyword of Reader, safe_open and load_file takes any of these)."""
        if limits is None:
            return DEFAULT_LIMITS
        if isinstance(limits, cls):
            return limits
        if isinstance(limits, dict):
            unknown = set(limits) - {f.name for f in fields(cls)}
            if unknown:
                raise ValueError(f"unknown limits {sorted(unknown)}; known: "
                                 f"{[f.name for f in fields(cls)]}")
            return cls(**limits)
        raise TypeError(f"limits must be a wcodec.Limits or a dict, not {type(limits).__name__}")


DEFAULT_LIMITS = Limits()
