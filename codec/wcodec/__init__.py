"""wcodec: a versioned container format and reference codec for neural-network weights.

    import wcodec
    wcodec.save_file({"w": tensor}, "model.wcodec")
    tensors = wcodec.load_file("model.wcodec")
    with wcodec.safe_open("model.wcodec") as f:
        w = f.get_tensor("w")
"""

from . import errors
from .api import load_file, safe_open, save_file
from .errors import (
    BadMagic,
    ChecksumMismatch,
    CorruptPayload,
    DigestMismatch,
    FormatError,
    InputError,
    LayoutError,
    LimitExceeded,
    MalformedRecord,
    Truncated,
    UnsupportedFeature,
    UnsupportedVersion,
    WcodecError,
)
from .limits import Limits
from .reader import Reader
from .writer import EncodeOptions, Writer
from . import sensitivity  # noqa: E402
from .sensitivity import profile_sensitivity  # noqa: E402  (issue 6, docs/factors.md)

__version__ = "0.1.0"
FORMAT_VERSION = (1, 0)

__all__ = [
    "save_file", "load_file", "safe_open", "Reader", "Writer", "EncodeOptions", "Limits", "errors",
    "WcodecError", "FormatError", "BadMagic", "UnsupportedVersion", "UnsupportedFeature",
    "Truncated", "ChecksumMismatch", "LayoutError", "MalformedRecord", "LimitExceeded",
    "CorruptPayload", "DigestMismatch", "InputError", "__version__", "FORMAT_VERSION",
]
