"""Error classes of spec/container.md §11, each with the CLI exit code the spec gives it.

Every failure caused by the bytes of a file raises a subclass of `FormatError`; conformance compares
the class name, so the names here are the spec's names and must not change.
"""

from __future__ import annotations


class WcodecError(Exception):
    """Base of every error wcodec raises on purpose."""

    exit_code = 1


class FormatError(WcodecError):
    """The file breaks a rule of the format. `block` / `tensor` name where, when known."""

    exit_code = 16

    def __init__(self, message: str, *, rule: str | None = None, block: int | None = None,
                 tensor: str | None = None):
        self.rule = rule
        self.block = block
        self.tensor = tensor
        where = []
        if tensor is not None:
            where.append(f"tensor {tensor!r}")
        if block is not None:
            where.append(f"block {block}")
        prefix = f"[{rule}] " if rule else ""
        suffix = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{prefix}{message}{suffix}")

    @property
    def error_class(self) -> str:
        return type(self).__name__


class BadMagic(FormatError):
    exit_code = 10


class UnsupportedVersion(FormatError):
    exit_code = 11


class UnsupportedFeature(FormatError):
    exit_code = 12


class Truncated(FormatError):
    exit_code = 13


class ChecksumMismatch(FormatError):
    exit_code = 14


class LayoutError(FormatError):
    exit_code = 15


class MalformedRecord(FormatError):
    exit_code = 16


class LimitExceeded(FormatError):
    exit_code = 17


class CorruptPayload(FormatError):
    exit_code = 18


class DigestMismatch(FormatError):
    exit_code = 19


class UnresolvedReference(FormatError):
    """A predicted record's parent file is missing or changed: no candidate has its SHA-256."""

    exit_code = 20


class InputError(WcodecError):
    """The input given to the encoder is not something it can store (exit 4)."""

    exit_code = 4


class UsageError(WcodecError):
    """A call was made with arguments that cannot work (exit 2)."""

    exit_code = 2


FORMAT_ERROR_CLASSES = {
    cls.__name__: cls
    for cls in (BadMagic, UnsupportedVersion, UnsupportedFeature, Truncated, ChecksumMismatch,
                LayoutError, MalformedRecord, LimitExceeded, CorruptPayload, DigestMismatch,
                UnresolvedReference)
}
