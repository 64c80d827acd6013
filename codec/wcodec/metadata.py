"""Typed, bounded, inert metadata (spec/container.md §6.3)."""

from __future__ import annotations

import math
import struct

from .errors import InputError, LimitExceeded, MalformedRecord
from .limits import MAX_KEY_LENGTH

T_STRING, T_I64, T_F64, T_BOOL, T_BYTES = 1, 2, 3, 4, 5
RESERVED_PREFIX = "wcodec."
KEY_SOURCE_FORMAT = "wcodec.source_format"
KEY_SOURCE_FILE = "wcodec.source_file"


def encode_value(key: str, value) -> tuple[int, bytes]:
    if isinstance(value, bool):
        return T_BOOL, bytes([int(value)])
    if isinstance(value, int):
        if not -(1 << 63) <= value < (1 << 63):
            raise InputError(f"metadata {key!r}: int does not fit in i64")
        return T_I64, struct.pack("<q", value)
    if isinstance(value, float):
        return T_F64, struct.pack("<d", value)
    if isinstance(value, str):
        return T_STRING, value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return T_BYTES, bytes(value)
    raise InputError(f"metadata {key!r}: values are str, int, float, bool or bytes, "
                     f"not {type(value).__name__}")


def decode_value(key: str, value_type: int, value: bytes):
    rule = "META-01"
    if value_type == T_STRING:
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedRecord(f"metadata {key!r}: string is not UTF-8", rule=rule) from None
    if value_type in (T_I64, T_F64):
        if len(value) != 8:
            raise MalformedRecord(f"metadata {key!r}: numbers are 8 bytes", rule=rule)
        return struct.unpack("<q" if value_type == T_I64 else "<d", value)[0]
    if value_type == T_BOOL:
        if value not in (b"\x00", b"\x01"):
            raise MalformedRecord(f"metadata {key!r}: a bool is one byte 0 or 1", rule=rule)
        return value == b"\x01"
    if value_type == T_BYTES:
        return bytes(value)
    raise MalformedRecord(f"metadata {key!r}: unknown value_type {value_type}", rule=rule)


def build_entries(metadata: dict, *, system: dict | None = None, max_value: int = 1 << 20,
                  max_entries: int = 4096) -> list[dict]:
    """Entries for the index; user keys may not use the reserved `wcodec.` prefix (W-META-01)."""
    items = []
    for key, value in (metadata or {}).items():
        if not isinstance(key, str):
            raise InputError(f"metadata keys are str, not {type(key).__name__}")
        if key.startswith(RESERVED_PREFIX):
            raise InputError(f"metadata key {key!r}: the prefix 'wcodec.' is reserved")
        items.append((key, value))
    items.extend((system or {}).items())
    if len(items) > max_entries:
        raise LimitExceeded(f"{len(items)} metadata entries, at most {max_entries}")
    out = []
    for key, value in items:
        kb = key.encode("utf-8")
        if not 1 <= len(kb) <= MAX_KEY_LENGTH:
            raise InputError(f"metadata key {key!r}: 1 to {MAX_KEY_LENGTH} UTF-8 bytes")
        if isinstance(value, float) and math.isnan(value):
            pass  # NaN is a valid f64 value
        vt, vb = encode_value(key, value)
        if len(vb) > max_value:
            raise InputError(f"metadata {key!r}: value of {len(vb)} bytes, at most {max_value}")
        out.append(dict(key_length=len(kb), key=kb, value_type=vt, value_length=len(vb),
                        value=vb))
    return out
