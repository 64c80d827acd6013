#!/usr/bin/env python3
"""Educational decoder for the wcodec weight-container format, version 1.

Written from spec/ alone (README.md, container.md, quantization.md, records/*.md, codecs/*.md),
without the reference implementation, to show that the spec is enough to decode the format. It
follows the spec in order: conventions (§1), file header (§3), blocks (§4), footer and layout (§5),
index (§6, with the tables of §7.1 and §9 it needs), chunks and the codec chain (§8), the codecs,
then the record kinds (§7.2), one section per spec page. Field names are the
spec's; every rule that binds decoders is cited by its id, e.g. [HDR-01].

    python conformance/edu_decoder.py INPUT.wcodec OUTPUT.safetensors

On success it writes every tensor to OUTPUT as safetensors and exits 0. On a format error it writes
nothing, prints one line `ClassName: message` (a class of spec §11) on stderr and exits 1.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass, field

import crc32c
import numpy as np
import zstandard


# ================================================================ §11 error classes
class WcodecError(Exception):
    """Base of the ten error classes of spec §11 (conformance compares the class name only)."""


class BadMagic(WcodecError): """the file does not start with `magic`"""
class UnsupportedVersion(WcodecError): """`version_major` != 1"""
class UnsupportedFeature(WcodecError): """unknown required feature bit, block type, record kind, dtype, codec, lane method"""
class Truncated(WcodecError): """the file or a structure ends before its declared end; no valid footer"""
class ChecksumMismatch(WcodecError): """a CRC32C disagrees"""
class LayoutError(WcodecError): """offsets, holes, overlaps, non-zero padding, block headers that disagree with the index"""
class MalformedRecord(WcodecError): """a field has a value the specification forbids"""
class LimitExceeded(WcodecError): """a count, length or size exceeds §10"""
class CorruptPayload(WcodecError): """a codec cannot decode a chunk, or it decodes to the wrong length"""
class DigestMismatch(WcodecError): """a decoded tensor's SHA-256 or chunk's CRC32C disagrees with its record"""


# ================================================================ §10 limits (format maximum column)
MAX_INDEX_PAYLOAD = 2**32 - 1   # INDEX payload bytes
MAX_TENSOR_COUNT = 2**24
MAX_BLOCK_COUNT = 2**28
MAX_METADATA_COUNT = 4096
MAX_VALUE_LENGTH = 1 << 20      # metadata value_length
MAX_NAME_LENGTH = 1024
MAX_RANK = 16                   # rank, stream_rank
MAX_TENSOR_BYTES = 2**62        # bytes of one tensor (elements x itemsize)
MAX_CHUNK_ELEMENTS = 2**26
MAX_STREAM_COUNT = 64
MAX_CODEC_COUNT = 8
MAX_CONFIG_LENGTH = 1024
MAX_PARAMS_LENGTH = 1 << 20
MAX_ALIGNMENT_LOG2 = 16


# ================================================================ §1 conventions
def CRC32C(data) -> int:
    """§1.2: CRC-32C (Castagnoli), init 0xFFFFFFFF, final XOR 0xFFFFFFFF."""
    return crc32c.crc32c(data)


assert CRC32C(b"123456789") == 0xE3069283  # the check value of §1.2


def align_up(x: int, A: int) -> int:
    """§1.3: the smallest multiple of A that is >= x."""
    return -(-x // A) * A


def utf8(raw, what: str, error=MalformedRecord) -> str:
    """[STR-01] a string field that is not valid UTF-8 is rejected (MalformedRecord)."""
    try:
        return bytes(raw).decode("utf-8")  # strict: rejects overlongs, surrogates, truncated sequences
    except UnicodeDecodeError:
        raise error(f"[STR-01] {what} is not valid UTF-8") from None


class Reader:
    """Bounds-checked little-endian reads (§1.1) over buf[pos:end].

    Every read is checked against the bytes that remain [LIM-01]; running past `end` raises
    `error` (Truncated for file structures, CorruptPayload inside a codec's payload).
    """

    def __init__(self, buf, pos: int, end: int, what: str, error=Truncated, rule: str = "LIM-01"):
        self.buf, self.pos, self.end, self.what, self.error = buf, pos, end, what, error
        self.rule = rule

    def remaining(self) -> int:
        return self.end - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.remaining():
            raise self.error(f"[{self.rule}] {self.what}: {what} needs {n} bytes, "
                             f"only {self.remaining()} remain")

    def bytes(self, n: int, what: str = "field"):
        self.need(n, what)
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def _int(self, fmt: str, n: int, what: str) -> int:
        return struct.unpack(fmt, self.bytes(n, what))[0]

    def u8(self, what="u8"): return self._int("<B", 1, what)
    def u16(self, what="u16"): return self._int("<H", 2, what)
    def u32(self, what="u32"): return self._int("<I", 4, what)
    def u64(self, what="u64"): return self._int("<Q", 8, what)
    def f64(self, what="f64"): return self._int("<d", 8, what)


def check_limit(value: int, maximum: int, what: str, rule: str = "LIM-02") -> None:
    """[LIM-02] a value above the format maximum of §10 is LimitExceeded (checked before use)."""
    if value > maximum:
        raise LimitExceeded(f"[{rule}] {what} = {value} exceeds the limit {maximum}")


# ================================================================ §3 file header
MAGIC = b"\x89WCD\r\n\x1a\n"
HEADER_SIZE = 32
FOOTER_SIZE = 32


@dataclass
class FileHeader:
    # | 0 | 8 | magic | bytes[8] | 89 57 43 44 0D 0A 1A 0A |
    # | 8 | 2 | version_major | u16 | 1 |
    # | 10 | 2 | version_minor | u16 | 0 |
    # | 12 | 4 | required_features | u32 | bit set; none defined in 1.0 |
    # | 16 | 4 | optional_features | u32 | bit set; none defined in 1.0 |
    # | 20 | 1 | alignment_log2 | u8 | 0 to 16 |
    # | 21 | 7 | reserved | bytes[7] | zero |
    # | 28 | 4 | header_crc32c | u32 | CRC32C of bytes 0 to 27 |
    version_major: int
    version_minor: int
    required_features: int
    optional_features: int
    alignment_log2: int


REQUIRED_FEATURES_IMPLEMENTED = 0   # version 1.0 defines no required feature bits


def read_file_header(buf) -> FileHeader:
    file_size = len(buf)
    # [HDR-01] The first 8 bytes must be `magic`. We compare whatever prefix exists first, so that a
    # file shorter than 8 bytes that is not a prefix of magic is BadMagic (one that is, is Truncated).
    n = min(file_size, 8)
    if bytes(buf[:n]) != MAGIC[:n]:
        raise BadMagic("[HDR-01] not a wcodec file (bad magic)")
    # [HDR-02] A file shorter than 64 bytes (header and footer) is Truncated.
    if file_size < HEADER_SIZE + FOOTER_SIZE:
        raise Truncated(f"[HDR-02] file of {file_size} bytes cannot hold a header and a footer")
    r = Reader(buf, 0, HEADER_SIZE, "FileHeader")
    r.bytes(8, "magic")
    version_major = r.u16()
    version_minor = r.u16()
    required_features = r.u32()
    optional_features = r.u32()
    alignment_log2 = r.u8()
    reserved = r.bytes(7)
    header_crc32c = r.u32()
    # Checks in the order of §3: HDR-01, HDR-02 (both done), HDR-03, HDR-04, HDR-05, HDR-07, RSV-01.
    if header_crc32c != CRC32C(buf[0:28]):                                       # [HDR-03]
        raise ChecksumMismatch("[HDR-03] file header CRC32C mismatch")
    if version_major != 1:                                                       # [HDR-04]
        raise UnsupportedVersion(f"[HDR-04] version_major {version_major} (this decoder reads 1)")
    # any version_minor is accepted [HDR-04]
    unknown = required_features & ~REQUIRED_FEATURES_IMPLEMENTED                 # [HDR-05]
    if unknown:
        bit = (unknown & -unknown).bit_length() - 1
        raise UnsupportedFeature(f"[HDR-05] required feature bit {bit} is not implemented")
    # [HDR-06] bits of optional_features that we do not implement (all of them) are ignored.
    if alignment_log2 > MAX_ALIGNMENT_LOG2:                                      # [HDR-07]
        raise MalformedRecord(f"[HDR-07] alignment_log2 {alignment_log2} > 16")
    if any(reserved):                                                            # [RSV-01]
        raise MalformedRecord("[RSV-01] FileHeader.reserved is not zero")
    return FileHeader(version_major, version_minor, required_features, optional_features,
                      alignment_log2)


# ================================================================ §4 blocks
BLOCK_HEADER_SIZE = 24
BLOCK_TRAILER_SIZE = 4
BLOCK_OVERHEAD = BLOCK_HEADER_SIZE + BLOCK_TRAILER_SIZE   # total size = 28 + payload_length
NO_ID = 0xFFFFFFFF

# | value | name | required | meaning |
# | 0x8001 | CHUNK | yes | one chunk of one stream of one tensor record (§8) |
# | 0x8002 | INDEX | yes | the index (§6); appears exactly once, located by the footer |
# | 0x0000-0x7FFF | - | no | reserved for optional blocks; none defined in 1.0 |
# | other values with bit 15 set | - | yes | reserved |
CHUNK = 0x8001
INDEX = 0x8002
REQUIRED_BIT = 0x8000


@dataclass
class BlockHeader:
    # | 0 | 2 | block_type | u16 | bit 15 set = required |
    # | 2 | 2 | block_flags | u16 | reserved, zero |
    # | 4 | 4 | tensor_id | u32 | CHUNK: index of the tensor record; else 0xFFFFFFFF |
    # | 8 | 4 | stream_id | u32 | CHUNK: index of the stream in that record; else 0xFFFFFFFF |
    # | 12 | 4 | chunk_id | u32 | CHUNK: index of the chunk in that stream; else 0xFFFFFFFF |
    # | 16 | 8 | payload_length | u64 | bytes of payload that follow |
    block_type: int
    block_flags: int
    tensor_id: int
    stream_id: int
    chunk_id: int
    payload_length: int


def read_block_header(buf, offset: int, what: str) -> BlockHeader:
    r = Reader(buf, offset, len(buf), what)
    return BlockHeader(r.u16(), r.u16(), r.u32(), r.u32(), r.u32(), r.u64())


def read_block_trailer(buf, offset: int, payload_length: int, what: str) -> int:
    """BlockTrailer: | 0 | 4 | block_crc32c | u32 | CRC32C of the BlockHeader and the payload |"""
    r = Reader(buf, offset + BLOCK_HEADER_SIZE + payload_length, len(buf), what)
    return r.u32("block_crc32c")


def check_block_crc(buf, offset: int, payload_length: int, what: str) -> int:
    """[BLK-01] block_crc32c must equal CRC32C(header + payload). Returns the trailer value."""
    end = offset + BLOCK_HEADER_SIZE + payload_length
    stored = read_block_trailer(buf, offset, payload_length, what)
    if stored != CRC32C(buf[offset:end]):
        raise ChecksumMismatch(f"[BLK-01] {what} CRC32C mismatch")
    return stored


# ================================================================ §5.1 footer
@dataclass
class Footer:
    # | 0 | 8 | index_offset | u64 | file offset of the INDEX block |
    # | 8 | 8 | index_block_size | u64 | total size of the INDEX block, 28 + payload_length |
    # | 16 | 8 | footer_magic | bytes[8] | WCDINDEX |
    # | 24 | 4 | reserved | u32 | zero |
    # | 28 | 4 | footer_crc32c | u32 | CRC32C of footer bytes 0 to 23 |
    index_offset: int
    index_block_size: int


FOOTER_MAGIC = b"WCDINDEX"


def read_footer(buf, A: int) -> Footer:
    file_size = len(buf)
    start = file_size - FOOTER_SIZE
    r = Reader(buf, start, file_size, "Footer")
    index_offset = r.u64()
    index_block_size = r.u64()
    footer_magic = bytes(r.bytes(8))
    reserved = r.u32()
    footer_crc32c = r.u32()
    if footer_magic != FOOTER_MAGIC:                                             # [FTR-01]
        raise Truncated("[FTR-01] no footer magic at the end of the file (cut short or unfinished)")
    if footer_crc32c != CRC32C(buf[start:start + 24]):                            # [FTR-02]
        raise ChecksumMismatch("[FTR-02] footer CRC32C mismatch")
    if reserved != 0:                                                            # [RSV-01]
        raise MalformedRecord("[RSV-01] Footer.reserved is not zero")
    if index_offset + index_block_size != file_size - FOOTER_SIZE:               # [FTR-03]
        raise LayoutError("[FTR-03] index_offset + index_block_size != file_size - 32")
    if index_offset % A != 0:
        raise LayoutError(f"[FTR-03] index_offset {index_offset} is not a multiple of {A}")
    if index_block_size < BLOCK_OVERHEAD:
        raise LayoutError(f"[FTR-03] index_block_size {index_block_size} < 28")
    # Consequence of [LAY-02] (index_offset = align_up(e_n, A) with e_n >= 32), checked now so that
    # the INDEX block header never overlaps the file header.
    if index_offset < align_up(HEADER_SIZE, A):
        raise LayoutError(f"[LAY-02] index_offset {index_offset} lies inside the file header")
    return Footer(index_offset, index_block_size)


# ================================================================ §5.2 the INDEX block
def read_index_block(buf, footer: Footer):
    payload_length = footer.index_block_size - BLOCK_OVERHEAD
    check_limit(payload_length, MAX_INDEX_PAYLOAD, "INDEX payload bytes")           # §10
    off = footer.index_offset
    h = read_block_header(buf, off, "INDEX block")
    # [IDX-01] type INDEX, ids 0xFFFFFFFF, payload_length = index_block_size - 28 (LayoutError).
    if h.block_type != INDEX:
        raise LayoutError(f"[IDX-01] block at index_offset has block_type {h.block_type:#06x}, not INDEX")
    if (h.tensor_id, h.stream_id, h.chunk_id) != (NO_ID, NO_ID, NO_ID):
        raise LayoutError("[IDX-01] INDEX block tensor_id/stream_id/chunk_id are not 0xFFFFFFFF")
    if h.payload_length != payload_length:
        raise LayoutError("[IDX-01] INDEX payload_length disagrees with the footer's index_block_size")
    # [IDX-02] the CRC is checked before the payload is parsed.
    try:
        check_block_crc(buf, off, payload_length, "INDEX block")
    except ChecksumMismatch as e:
        raise ChecksumMismatch(str(e).replace("[BLK-01]", "[IDX-02]")) from None
    if h.block_flags != 0:                                                       # [BLK-04] [RSV-01]
        raise MalformedRecord("[BLK-04] INDEX block_flags is not zero")
    start = off + BLOCK_HEADER_SIZE
    return buf[start:start + payload_length]


# ================================================================ §7.1 data types (needed by §6)
@dataclass(frozen=True)
class DType:
    name: str
    itemsize: int
    safetensors: str   # the dtype string of the safetensors output


# | value | name | itemsize | notes |
DTYPES = {
    1: DType("float64", 8, "F64"),          # IEEE binary64
    2: DType("float32", 4, "F32"),          # IEEE binary32
    3: DType("float16", 2, "F16"),          # IEEE binary16
    4: DType("bfloat16", 2, "BF16"),        # upper 16 bits of binary32
    5: DType("float8_e4m3fn", 1, "F8_E4M3"),  # OCP FP8 E4M3, no infinities
    6: DType("float8_e5m2", 1, "F8_E5M2"),  # OCP FP8 E5M2
    7: DType("int8", 1, "I8"),              # two's complement
    8: DType("int16", 2, "I16"),
    9: DType("int32", 4, "I32"),
    10: DType("int64", 8, "I64"),
    11: DType("uint8", 1, "U8"),
    12: DType("uint16", 2, "U16"),
    13: DType("uint32", 4, "U32"),
    14: DType("uint64", 8, "U64"),
    15: DType("bool", 1, "BOOL"),           # one byte per element, stored as given
}
# Codecs treat every element as an opaque unsigned integer of itemsize bytes (its bit pattern).


def dtype_of(value: int, what: str) -> DType:
    if value not in DTYPES:                                                      # [REC-02]
        raise UnsupportedFeature(f"[REC-02] unknown {what} {value}")
    return DTYPES[value]


def shape_size(shape, itemsize: int, what: str) -> int:
    """[REC-04] elements = product of dims (1 for rank 0); bytes = elements x itemsize <= 2^62.
    The product is exact (Python integers do not overflow), so a shape with a zero dimension is
    empty however large its other dimensions are."""
    if 0 in shape:
        return 0
    elements = 1
    for d in shape:
        elements *= d
        if elements * itemsize > MAX_TENSOR_BYTES:     # stop early: the product only grows
            break
    if elements * itemsize > MAX_TENSOR_BYTES:
        raise LimitExceeded(f"[REC-04] {what} shape {list(shape)} is more than 2^62 bytes")
    return elements


# ================================================================ §9 codecs (needed to parse §6.4)
# | id | name | kind |
# | 1 | bytes | array->bytes |
# | 2 | planes | array->bytes |
# | 256 | lanes | bytes->bytes |
# Ids 1-255 are array->bytes codecs, 256-511 bytes->bytes codecs, 512-767 array->array codecs.
CODEC_BYTES, CODEC_PLANES, CODEC_LANES = 1, 2, 256
CODEC_NAMES = {CODEC_BYTES: "bytes", CODEC_PLANES: "planes", CODEC_LANES: "lanes"}
ARRAY_TO_BYTES, BYTES_TO_BYTES = "array->bytes", "bytes->bytes"
CODEC_KIND = {CODEC_BYTES: ARRAY_TO_BYTES, CODEC_PLANES: ARRAY_TO_BYTES, CODEC_LANES: BYTES_TO_BYTES}


@dataclass
class CodecSpec:
    # | codec_id | u16 | §9 |
    # | config_length | u16 | <= 1024 |
    # | config | bytes[config_length] | the codec page's configuration layout |
    codec_id: int
    config: bytes
    lane_count: int = 0   # lanes only


def check_codec_config(c: CodecSpec) -> None:
    """[CHN-01] a config that does not match the codec page's layout exactly is MalformedRecord."""
    if c.codec_id in (CODEC_BYTES, CODEC_PLANES):
        if len(c.config) != 0:                       # bytes.md / planes.md: config_length is 0
            raise MalformedRecord(f"[CHN-01] codec {CODEC_NAMES[c.codec_id]} config_length must be 0")
    elif c.codec_id == CODEC_LANES:
        # lanes.md: | 0 | 1 | lane_count | u8 | 1 to 16 |
        if len(c.config) != 1:                                                   # [LAN-01]
            raise MalformedRecord("[LAN-01] lanes config_length must be 1")
        c.lane_count = c.config[0]
        if not 1 <= c.lane_count <= 16:
            raise MalformedRecord(f"[LAN-01] lanes lane_count {c.lane_count} is not 1 to 16")


def check_chain(codecs: list[CodecSpec], what: str) -> None:
    """[CHN-01] the chain, in encode order, is: array->array*, one array->bytes, bytes->bytes*.
    Version 1.0 allows no array->array codec and at most one bytes->bytes codec."""
    for c in codecs:
        if c.codec_id not in CODEC_KIND:
            raise UnsupportedFeature(f"[CHN-01] unknown codec_id {c.codec_id} in {what}")
    kinds = [CODEC_KIND[c.codec_id] for c in codecs]
    if kinds not in ([ARRAY_TO_BYTES], [ARRAY_TO_BYTES, BYTES_TO_BYTES]):
        raise MalformedRecord(f"[CHN-01] codec chain {[CODEC_NAMES[c.codec_id] for c in codecs]} "
                              f"of {what} is not one array->bytes codec and at most one bytes->bytes codec")
    for c in codecs:
        check_codec_config(c)


# ================================================================ §6 index payload
@dataclass
class BlockEntry:
    # | 0 | 8 | offset | u64 | file offset of the block |
    # | 8 | 8 | payload_length | u64 | the block's payload_length |
    # | 16 | 2 | block_type | u16 | the block's block_type |
    # | 18 | 2 | reserved | u16 | zero |
    # | 20 | 4 | block_crc32c | u32 | the block's block_crc32c |
    offset: int
    payload_length: int
    block_type: int
    block_crc32c: int


@dataclass
class MetadataEntry:
    # | key_length | u16 | 1 to 256 |
    # | key | bytes[key_length] | UTF-8 |
    # | value_type | u8 | 1 string (UTF-8), 2 i64 (signed), 3 f64, 4 bool (0 or 1), 5 bytes |
    # | value_length | u32 | bytes of value; 8 for i64 and f64, 1 for bool |
    # | value | bytes[value_length] | |
    key: str
    value_type: int
    value: object


@dataclass
class Stream:
    # | stream_dtype | u8 | §7.1 |
    # | stream_rank | u8 | 0 to 16 |
    # | stream_shape | u64[stream_rank] | |
    # | chunk_elements | u64 | 1 to 2^26 |
    # | codec_count | u8 | 1 to 8 |
    # | codecs | CodecSpec[codec_count] | in encode order |
    # | chunk_count | u32 | |
    # | chunk_blocks | u32[chunk_count] | block table index of each chunk's CHUNK block |
    # | chunk_crc32c | u32[chunk_count] | present only when the record's has_chunk_crc32c is set |
    stream_dtype: int
    stream_shape: tuple
    chunk_elements: int
    codecs: list
    chunk_blocks: list
    elements: int = 0
    chunk_crc32c: list | None = None


@dataclass
class TensorRecord:
    # | name_length | u16 | 1 to 1024 |
    # | name | bytes[name_length] | UTF-8 |
    # | dtype | u8 | §7.1 |
    # | record_kind | u8 | §7.2 |
    # | record_flags | u8 | bit 0 has_sha256, bit 1 lossy, bit 3 has_chunk_crc32c; other bits reserved |
    # | rank | u8 | 0 to 16 |
    # | shape | u64[rank] | |
    # | sha256 | bytes[32] | present only when has_sha256 |
    # | error | ErrorStats | present only when lossy |
    # | params_length | u32 | <= 1 MiB |
    # | params | bytes[params_length] | record-kind parameters (its page) |
    # | stream_count | u8 | 1 to 64 |
    # | streams | Stream[stream_count] | |
    name: str
    dtype: int
    record_kind: int
    record_flags: int
    shape: tuple
    sha256: bytes | None
    error: tuple | None      # ErrorStats: (max_abs_error, mean_squared_error, signal_power), f64 each
    params: bytes
    streams: list = field(default_factory=list)
    elements: int = 0


HAS_SHA256, LOSSY, HAS_CHUNK_CRC32C = 0x01, 0x02, 0x08


@dataclass
class Index:
    blocks: list
    metadata: list
    tensors: list


def parse_index(payload) -> Index:
    """§6: IndexHeader, block_count BlockEntry, metadata_count MetadataEntry, tensor_count
    TensorRecord, nothing aligned. [IDX-03] must parse exactly: Truncated when a structure runs
    past the end of the payload (the Reader does that), MalformedRecord for bytes left over."""
    r = Reader(payload, 0, len(payload), "INDEX payload", rule="IDX-03")
    # §6.1 IndexHeader: | 0 tensor_count u32 | 4 block_count u32 | 8 metadata_count u32 | 12 reserved u32 |
    tensor_count = r.u32("tensor_count")
    block_count = r.u32("block_count")
    metadata_count = r.u32("metadata_count")
    if r.u32("reserved") != 0:                                                   # [RSV-01]
        raise MalformedRecord("[RSV-01] IndexHeader.reserved is not zero")
    # [IDX-04] counts against §10 (LimitExceeded) and against the bytes that remain, using the
    # smallest size of one entry: 24 per BlockEntry, 8 per MetadataEntry, 8 per TensorRecord.
    check_limit(block_count, MAX_BLOCK_COUNT, "block_count", "IDX-04")
    check_limit(metadata_count, MAX_METADATA_COUNT, "metadata_count", "IDX-04")
    check_limit(tensor_count, MAX_TENSOR_COUNT, "tensor_count", "IDX-04")
    if block_count * 24 + metadata_count * 8 + tensor_count * 8 > r.remaining():
        raise Truncated(f"[IDX-04] {block_count} blocks, {metadata_count} metadata entries and "
                        f"{tensor_count} tensors cannot fit in the {r.remaining()} bytes that remain")

    # §6.2 the block table
    blocks = []
    for k in range(block_count):
        offset, payload_length, block_type = r.u64(), r.u64(), r.u16()
        reserved, block_crc32c = r.u16(), r.u32()
        if reserved != 0:                                                        # [RSV-01]
            raise MalformedRecord(f"[RSV-01] BlockEntry {k} reserved is not zero")
        if block_type == INDEX:                                                  # [IDX-05]
            raise MalformedRecord(f"[IDX-05] block table entry {k} lists an INDEX block")
        if block_type & REQUIRED_BIT and block_type != CHUNK:                   # [BLK-02]
            raise UnsupportedFeature(f"[BLK-02] required block type {block_type:#06x} (entry {k}) "
                                     f"is not implemented")
        # [BLK-03] optional block types (bit 15 clear) are ignored, but keep their place in the layout.
        blocks.append(BlockEntry(offset, payload_length, block_type, block_crc32c))

    # §6.3 metadata
    metadata, keys = [], set()
    for i in range(metadata_count):
        key_length = r.u16("key_length")
        if not 1 <= key_length <= 256:
            raise MalformedRecord(f"[META-01] metadata entry {i}: key_length {key_length} is not 1 to 256")
        key = utf8(r.bytes(key_length, "key"), f"metadata key {i}")               # [META-01] [STR-01]
        if key in keys:
            raise MalformedRecord(f"[META-01] duplicate metadata key {key!r}")
        keys.add(key)
        value_type = r.u8("value_type")
        if not 1 <= value_type <= 5:
            raise MalformedRecord(f"[META-01] metadata {key!r}: value_type {value_type} is not 1 to 5")
        value_length = r.u32("value_length")
        check_limit(value_length, MAX_VALUE_LENGTH, f"metadata {key!r} value_length")
        if value_type in (2, 3) and value_length != 8:
            raise MalformedRecord(f"[META-01] metadata {key!r}: i64/f64 value_length {value_length} != 8")
        if value_type == 4 and value_length != 1:
            raise MalformedRecord(f"[META-01] metadata {key!r}: bool value_length {value_length} != 1")
        raw = bytes(r.bytes(value_length, "value"))
        if value_type == 1:
            value = utf8(raw, f"metadata {key!r} string value")
        elif value_type == 2:
            value = struct.unpack("<q", raw)[0]
        elif value_type == 3:
            value = struct.unpack("<d", raw)[0]
        elif value_type == 4:
            if raw[0] not in (0, 1):
                raise MalformedRecord(f"[META-01] metadata {key!r}: bool byte {raw[0]} is not 0 or 1")
            value = bool(raw[0])
        else:
            value = raw
        # [META-02] metadata is inert: it is only carried to the output, never executed, evaluated,
        # resolved, or used to choose how tensors are decoded.
        metadata.append(MetadataEntry(key, value_type, value))

    # §6.4 tensor records
    tensors, names = [], set()
    chunk_owner = {}   # block table index -> (t, s, c), for [REC-07]
    for t in range(tensor_count):
        rec = parse_tensor_record(r, t, blocks, chunk_owner)
        if rec.name in names:                                                    # [REC-01]
            raise MalformedRecord(f"[REC-01] duplicate tensor name {rec.name!r}")
        names.add(rec.name)
        tensors.append(rec)

    if r.remaining() != 0:                                                       # [IDX-03]
        raise MalformedRecord(f"[IDX-03] {r.remaining()} bytes left over after the last tensor record")
    # [REC-07] every CHUNK block of the table is named by exactly one chunk (duplicates were caught
    # while parsing; here: none left unnamed).
    for k, b in enumerate(blocks):
        if b.block_type == CHUNK and k not in chunk_owner:
            raise LayoutError(f"[REC-07] CHUNK block {k} is not named by any chunk")
    return Index(blocks, metadata, tensors)


def parse_tensor_record(r: Reader, t: int, blocks: list, chunk_owner: dict) -> TensorRecord:
    name_length = r.u16("name_length")
    if name_length == 0:                                                         # [REC-01]
        raise MalformedRecord(f"[REC-01] tensor {t}: empty name")
    check_limit(name_length, MAX_NAME_LENGTH, f"tensor {t} name_length")         # §10
    name = utf8(r.bytes(name_length, "name"), f"tensor {t} name")                # [REC-01] [STR-01]
    # [REC-01] the name is an opaque key: it is never used as a file path.
    dtype = r.u8("dtype")
    dt = dtype_of(dtype, f"dtype of tensor {name!r}")                            # [REC-02]
    record_kind = r.u8("record_kind")
    if record_kind not in RECORD_KINDS:                                          # [REC-03]
        raise UnsupportedFeature(f"[REC-03] tensor {name!r}: record_kind {record_kind} "
                                 f"({RESERVED_KINDS.get(record_kind, 'unknown')}) is not implemented")
    record_flags = r.u8("record_flags")
    if record_flags & ~(HAS_SHA256 | LOSSY | HAS_CHUNK_CRC32C):                  # [REC-10] [RSV-01]
        raise MalformedRecord(f"[REC-10] tensor {name!r}: reserved record_flags bits {record_flags:#04x}")
    rank = r.u8("rank")
    check_limit(rank, MAX_RANK, f"tensor {name!r} rank", "REC-05")               # [REC-05]
    shape = tuple(r.u64("shape") for _ in range(rank))
    elements = shape_size(shape, dt.itemsize, f"tensor {name!r}")                 # [REC-04]
    sha256 = bytes(r.bytes(32, "sha256")) if record_flags & HAS_SHA256 else None
    error = (r.f64(), r.f64(), r.f64()) if record_flags & LOSSY else None         # ErrorStats, 24 bytes
    params_length = r.u32("params_length")
    check_limit(params_length, MAX_PARAMS_LENGTH, f"tensor {name!r} params_length", "REC-05")
    params = bytes(r.bytes(params_length, "params"))
    stream_count = r.u8("stream_count")
    if not 1 <= stream_count <= MAX_STREAM_COUNT:                                # [REC-05]
        raise LimitExceeded(f"[REC-05] tensor {name!r}: stream_count {stream_count} is not 1 to 64")
    rec = TensorRecord(name, dtype, record_kind, record_flags, shape, sha256, error, params,
                       elements=elements)
    for s in range(stream_count):
        rec.streams.append(parse_stream(r, t, s, name, blocks, chunk_owner,
                                        bool(record_flags & HAS_CHUNK_CRC32C)))
    RECORD_KINDS[record_kind].check(rec)   # the record kind's own rules, e.g. [PLN-01]
    return rec


def parse_stream(r: Reader, t: int, s: int, name: str, blocks: list, chunk_owner: dict,
                 has_chunk_crc32c: bool) -> Stream:
    what = f"stream {s} of tensor {name!r}"
    stream_dtype = r.u8("stream_dtype")
    dt = dtype_of(stream_dtype, f"stream_dtype of {what}")                      # [REC-02]
    stream_rank = r.u8("stream_rank")
    check_limit(stream_rank, MAX_RANK, f"{what} stream_rank", "REC-05")         # [REC-05]
    stream_shape = tuple(r.u64("stream_shape") for _ in range(stream_rank))
    n = shape_size(stream_shape, dt.itemsize, what)                             # [REC-04]
    chunk_elements = r.u64("chunk_elements")
    if not 1 <= chunk_elements <= MAX_CHUNK_ELEMENTS:                           # [REC-05]
        raise LimitExceeded(f"[REC-05] {what}: chunk_elements {chunk_elements} is not 1 to 2^26")
    codec_count = r.u8("codec_count")
    if not 1 <= codec_count <= MAX_CODEC_COUNT:                                  # [REC-05]
        raise LimitExceeded(f"[REC-05] {what}: codec_count {codec_count} is not 1 to 8")
    codecs = []
    for _ in range(codec_count):
        codec_id = r.u16("codec_id")
        config_length = r.u16("config_length")
        check_limit(config_length, MAX_CONFIG_LENGTH, f"{what} config_length", "REC-05")
        codecs.append(CodecSpec(codec_id, bytes(r.bytes(config_length, "config"))))
    check_chain(codecs, what)                                                    # [CHN-01]
    chunk_count = r.u32("chunk_count")
    expected = -(-n // chunk_elements)          # ceil(n / chunk_elements), 0 when n = 0
    if chunk_count != expected:                                                  # [REC-06]
        raise MalformedRecord(f"[REC-06] {what}: chunk_count {chunk_count}, expected {expected}")
    r.need(4 * chunk_count, "chunk_blocks")                                      # [LIM-01]
    chunk_blocks = []
    for c in range(chunk_count):
        k = r.u32("chunk_blocks")
        # [REC-07] < block_count, names a CHUNK block, and no block is named twice.
        if k >= len(blocks):
            raise LayoutError(f"[REC-07] {what} chunk {c}: block {k} >= block_count {len(blocks)}")
        if blocks[k].block_type != CHUNK:
            raise LayoutError(f"[REC-07] {what} chunk {c}: block {k} is not a CHUNK block")
        if k in chunk_owner:
            raise LayoutError(f"[REC-07] CHUNK block {k} is named by more than one chunk")
        chunk_owner[k] = (t, s, c)
        chunk_blocks.append(k)
    crcs = None
    if has_chunk_crc32c:
        r.need(4 * chunk_count, "chunk_crc32c")                                  # [LIM-01]
        crcs = [r.u32("chunk_crc32c") for _ in range(chunk_count)]
    return Stream(stream_dtype, stream_shape, chunk_elements, codecs, chunk_blocks, elements=n,
                  chunk_crc32c=crcs)


# ================================================================ §5.3 every byte accounted for
def check_layout(buf, A: int, index_offset: int, blocks: list) -> None:
    e = HEADER_SIZE                                      # e_0 = 32
    for k, b in enumerate(blocks):
        if b.offset != align_up(e, A):                                           # [LAY-01]
            raise LayoutError(f"[LAY-01] block {k} at offset {b.offset}, expected {align_up(e, A)}")
        e = b.offset + BLOCK_OVERHEAD + b.payload_length  # e_{k+1}
        if e > index_offset:                                                     # [LAY-04]
            raise LayoutError(f"[LAY-04] block {k} runs past the INDEX block")
    if index_offset != align_up(e, A):                                           # [LAY-02]
        raise LayoutError(f"[LAY-02] index_offset {index_offset}, expected {align_up(e, A)}")
    # [LAY-03] the padding that follows the header is checked when the file is opened.
    first = blocks[0].offset if blocks else index_offset
    check_padding(buf, HEADER_SIZE, first, "the file header")


def check_padding(buf, start: int, end: int, after: str) -> None:
    """[LAY-03] every padding byte is zero."""
    if any(buf[start:end]):
        raise LayoutError(f"[LAY-03] non-zero padding after {after}")


def padding_end(blocks: list, k: int, index_offset: int) -> int:
    return blocks[k + 1].offset if k + 1 < len(blocks) else index_offset


# ================================================================ opening a file (§3 - §6)
@dataclass
class WcodecFile:
    buf: object
    header: FileHeader
    footer: Footer
    index: Index
    A: int


def open_wcodec(buf) -> WcodecFile:
    header = read_file_header(buf)                       # §3
    A = 1 << header.alignment_log2
    footer = read_footer(buf, A)                         # §5.1
    payload = read_index_block(buf, footer)              # §5.2
    index = parse_index(payload)                         # §6
    check_layout(buf, A, footer.index_offset, index.blocks)   # §5.3
    return WcodecFile(buf, header, footer, index, A)


# ================================================================ §8 streams, chunks and the codec chain
def read_chunk_block(f: WcodecFile, k: int, t: int, s: int, c: int):
    """Read CHUNK block k, which holds chunk c of stream s of tensor t; returns its payload."""
    b = f.index.blocks[k]
    what = f"block {k}"
    h = read_block_header(f.buf, b.offset, what)
    # [LAY-05] the header agrees with the table entry (type, length: LayoutError; CRC: ChecksumMismatch)
    if h.block_type != b.block_type or h.payload_length != b.payload_length:
        raise LayoutError(f"[LAY-05] {what}: block header type/payload_length disagree with the block table")
    stored = check_block_crc(f.buf, b.offset, b.payload_length, what)           # [BLK-01]
    if stored != b.block_crc32c:
        raise ChecksumMismatch(f"[LAY-05] {what}: block_crc32c disagrees with the block table")
    if h.block_flags != 0:                                                       # [BLK-04] [RSV-01]
        raise MalformedRecord(f"[BLK-04] {what}: block_flags is not zero")
    if (h.tensor_id, h.stream_id, h.chunk_id) != (t, s, c):                      # [REC-08]
        raise LayoutError(f"[REC-08] {what}: holds tensor/stream/chunk ({h.tensor_id}, {h.stream_id}, "
                          f"{h.chunk_id}), expected ({t}, {s}, {c})")
    end = b.offset + BLOCK_OVERHEAD + b.payload_length
    check_padding(f.buf, end, padding_end(f.index.blocks, k, f.footer.index_offset), what)  # [LAY-03]
    start = b.offset + BLOCK_HEADER_SIZE
    return f.buf[start:start + b.payload_length]


def decode_stream(f: WcodecFile, t: int, s: int, stream: Stream) -> bytearray:
    """8.1: chunk c holds elements c*chunk_elements up to min((c+1)*chunk_elements, n).
    8.4: each chunk's decoded elements are placed at their positions in the stream."""
    dt = DTYPES[stream.stream_dtype]
    n = stream.elements
    out = bytearray(n * dt.itemsize)    # size checked by [REC-04]; the chunk blocks exist ([REC-07])
    for c, k in enumerate(stream.chunk_blocks):
        first = c * stream.chunk_elements
        count = min((c + 1) * stream.chunk_elements, n) - first
        payload = read_chunk_block(f, k, t, s, c)
        data = decode_chunk(payload, count, stream, f"chunk {c} (block {k})")
        # 8.5: the CRC32C of the chunk's decoded bytes
        if stream.chunk_crc32c is not None and CRC32C(data) != stream.chunk_crc32c[c]:  # [REC-11]
            raise DigestMismatch(f"[REC-11] chunk {c} (block {k}): CRC32C of the decoded bytes "
                                 "disagrees")
        out[first * dt.itemsize:(first + count) * dt.itemsize] = data
    return out


def decode_chunk(payload, k: int, stream: Stream, what: str) -> bytes:
    """8.3: L = k x itemsize(stream_dtype). The bytes->bytes codec (if any) decodes the payload,
    told L; the array->bytes codec then decodes the result into k elements. [CHN-02]: any other
    length, produced or declared, is CorruptPayload, before allocating more than L."""
    L = k * DTYPES[stream.stream_dtype].itemsize
    array_to_bytes, *bytes_to_bytes = stream.codecs      # shape checked by [CHN-01]
    data = payload
    for codec in reversed(bytes_to_bytes):               # at most one in 1.0 (lanes)
        data = lanes_decode(data, L, codec.lane_count, what)
    if array_to_bytes.codec_id == CODEC_BYTES:
        return bytes_decode(data, k, stream.stream_dtype, what)
    return planes_decode(data, k, stream.stream_dtype, what)


# ================================================================ codec `bytes` (id 1, codecs/bytes.md)
def bytes_decode(data, k: int, stream_dtype: int, what: str) -> bytes:
    """Elements as itemsize little-endian bytes, in order: the identity on the tensor bytes."""
    L = k * DTYPES[stream_dtype].itemsize
    if len(data) != L:                                                           # [BYT-01]
        raise CorruptPayload(f"[BYT-01] {what}: bytes codec input is {len(data)} bytes, expected {L}")
    return bytes(data)


# ================================================================ codec `planes` (id 2, codecs/planes.md)
# | dtype | w from t (decode) |
# | float64, float32, float16, bfloat16 | w = (t >> 1) | ((t & 1) << (B - 1))  (rotate right by one) |
# | every other dtype | w = t |
ROTATED = {1, 2, 3, 4}


def planes_decode(data, k: int, stream_dtype: int, what: str) -> bytes:
    itemsize = DTYPES[stream_dtype].itemsize
    L = k * itemsize
    if len(data) != L:                                                           # [PLN2-01]
        raise CorruptPayload(f"[PLN2-01] {what}: planes input is {len(data)} bytes, expected {L}")
    # Plane j is bytes j*k .. (j+1)*k - 1; byte i of plane j is byte (itemsize - 1 - j) of t_i
    # (byte 0 = t & 0xFF). So the little-endian bytes of t_i are byte i of planes itemsize-1, ..., 0.
    planes = np.frombuffer(data, dtype=np.uint8).reshape(itemsize, k)
    t = np.ascontiguousarray(planes[::-1].T).view(f"<u{itemsize}").reshape(k)
    if stream_dtype in ROTATED:
        B = 8 * itemsize
        w = (t >> 1) | ((t & 1) << (B - 1))
    else:
        w = t
    return w.astype(f"<u{itemsize}", copy=False).tobytes()   # w_i as itemsize little-endian bytes


# ================================================================ codec `lanes` (id 256, codecs/lanes.md)
# LaneHeader: | 0 | 1 | method | u8 | 0 raw, 1 zstd, 2 fill; others reserved |
#             | 1 | 4 | coded_length | u32 | bytes of this lane's data |
# | method | data | decoded lane |
# | 0 raw  | D bytes | the data itself |
# | 1 zstd | exactly one Zstandard frame (RFC 8878) | the frame's content, D bytes |
# | 2 fill | 1 byte b | D copies of b |
# | 4 rans | a static order-0 rANS stream (codecs/rans.md) | D bytes |   (3 is never assigned)
# | 6 rans_split | low bits, then a rans stream of the top bits (codecs/rans_split.md) | D bytes | (5 neither)
RAW, ZSTD, FILL, RANS, RANS_SPLIT = 0, 1, 2, 4, 6
ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"   # 0xFD2FB528 little-endian (skippable: 0x184D2A50..5F)


def lanes_decode(data, L: int, lane_count: int, what: str) -> bytes:
    # [LAN-01] (config_length 1, lane_count 1 to 16) was checked with the chain, see check_codec_config.
    if L % lane_count != 0:                                                      # [LAN-02]
        raise CorruptPayload(f"[LAN-02] {what}: L = {L} is not a multiple of lane_count {lane_count}")
    D = L // lane_count
    r = Reader(data, 0, len(data), f"lanes {what}", error=CorruptPayload, rule="LAN-03")
    headers = [(r.u8("method"), r.u32("coded_length")) for _ in range(lane_count)]
    total = sum(coded_length for _, coded_length in headers)
    if total != r.remaining():                                                   # [LAN-03]
        raise CorruptPayload(f"[LAN-03] {what}: lanes hold {total} bytes of data but "
                             f"{r.remaining()} follow the headers")
    lanes = []
    for i, (method, coded_length) in enumerate(headers):
        lane = r.bytes(coded_length)
        if method == RAW:
            if coded_length != D:                                                # [LAN-05]
                raise CorruptPayload(f"[LAN-05] {what} lane {i}: raw coded_length {coded_length} != D = {D}")
            lanes.append(bytes(lane))
        elif method == ZSTD:
            lanes.append(zstd_lane(lane, D, f"{what} lane {i}"))                 # [LAN-06]
        elif method == FILL:
            if coded_length != 1:                                                # [LAN-05]
                raise CorruptPayload(f"[LAN-05] {what} lane {i}: fill coded_length {coded_length} != 1")
            lanes.append(bytes(lane) * D)
        elif method == RANS:                                                     # codecs/rans.md
            lanes.append(rans_lane(lane, D, f"{what} lane {i}"))
        elif method == RANS_SPLIT:                                               # codecs/rans_split.md
            lanes.append(rans_split_lane(lane, D, f"{what} lane {i}"))
        else:                                                                    # [LAN-04]
            raise UnsupportedFeature(f"[LAN-04] {what} lane {i}: lane method {method} is not implemented")
    return b"".join(lanes)      # lane 0, lane 1, ... concatenated: L bytes


def zstd_lane(frame, D: int, what: str) -> bytes:
    """[LAN-06] exactly one complete frame, no bytes after it; a declared content size must equal D
    (checked before decompressing); never more than D bytes out; no skippable frames, no dictionary."""
    frame = bytes(frame)
    if frame[:4] != ZSTD_FRAME_MAGIC:
        raise CorruptPayload(f"[LAN-06] {what}: not a Zstandard frame (skippable frames are not allowed)")
    try:
        params = zstandard.get_frame_parameters(frame)
        declared = zstandard.frame_content_size(frame)   # -1 when the header declares no size
    except zstandard.ZstdError as e:
        raise CorruptPayload(f"[LAN-06] {what}: bad Zstandard frame header ({e})") from None
    if params.dict_id != 0:
        raise CorruptPayload(f"[LAN-06] {what}: Zstandard frame needs dictionary {params.dict_id}")
    # python-zstandard ignores max_output_size when the header declares a size, hence this check.
    if declared != -1 and declared != D:
        raise CorruptPayload(f"[LAN-06] {what}: frame declares {declared} bytes, expected D = {D}")
    try:
        out = zstandard.ZstdDecompressor().decompress(frame, max_output_size=D, allow_extra_data=False)
    except zstandard.ZstdError as e:   # corrupt, incomplete, longer than D, or bytes after the frame
        raise CorruptPayload(f"[LAN-06] {what}: {e}") from None
    if len(out) != D:
        raise CorruptPayload(f"[LAN-06] {what}: frame holds {len(out)} bytes, expected D = {D}")
    return out


# ================================================================ codecs/rans.md: lane method 4 `rans`
# | offset | size | field         | type |
# | 0      | 1    | scale_log2    | u8   | R, 1 to 15; frequencies sum to M = 2^R
# | 1      | 1    | state_count   | u8   | N, 1 to 32
# | 2      | 1    | first_symbol  | u8   | a
# | 3      | 1    | last_symbol   | u8   | b >= a
# | 4      | 1    | freq_bits     | u8   | w, 1 to 16
# | 5      | 2    | freq_base     | u16  |
# | 7      | T    | freq_table    | T = ceil((b - a + 1) * w / 8), values packed LSB first
# | 7 + T  | 4N   | states        | u32[N]
# | ...    | 2W   | words         | u16[W], the rest of the lane data
RANS_L = 1 << 16


def rans_lane(data, D: int, what: str) -> bytes:
    r = Reader(data, 0, len(data), f"rans {what}", error=CorruptPayload, rule="RNS-01")
    R, N, a, b, w = (r.u8(n) for n in ("scale_log2", "state_count", "first_symbol",
                                        "last_symbol", "freq_bits"))
    freq_base = r.u16("freq_base")
    if not (1 <= R <= 15 and 1 <= N <= 32 and a <= b and 1 <= w <= 16):           # [RNS-01]
        raise CorruptPayload(f"[RNS-01] {what}: header out of range (R={R} N={N} a={a} b={b} w={w})")
    nbits = (b - a + 1) * w
    T = (nbits + 7) // 8
    if r.remaining() < T + 4 * N or (r.remaining() - T - 4 * N) % 2:              # [RNS-03]
        raise CorruptPayload(f"[RNS-03] {what}: no room for table and states, or odd word bytes")
    table = int.from_bytes(r.bytes(T), "little")       # bit k of the table = bit k of this integer
    if table >> nbits:                                                           # [RNS-02]
        raise CorruptPayload(f"[RNS-02] {what}: table padding bits are not zero")
    f = [0] * 256
    for s in range(a, b + 1):
        f[s] = freq_base + ((table >> ((s - a) * w)) & ((1 << w) - 1))
    M = 1 << R
    if sum(f) != M:                                                              # [RNS-02]
        raise CorruptPayload(f"[RNS-02] {what}: frequencies sum to {sum(f)}, not 2^{R}")
    C = [0] * 256                                      # C_s = f_0 + ... + f_{s-1}
    for s in range(1, 256):
        C[s] = C[s - 1] + f[s - 1]
    symbol_of_slot = [s for s in range(256) for _ in range(f[s])]   # slot -> s with C_s <= slot < C_s + f_s
    x = [r.u32("state") for _ in range(N)]
    if any(xj < RANS_L for xj in x):                                             # [RNS-04]
        raise CorruptPayload(f"[RNS-04] {what}: an initial state is below 2^16")
    W = r.remaining() // 2
    words = [r.u16("word") for _ in range(W)]
    out = bytearray(D)
    p = 0
    for i in range(D):
        j = i % N
        slot = x[j] & (M - 1)
        s = symbol_of_slot[slot]
        out[i] = s
        x[j] = f[s] * (x[j] >> R) + slot - C[s]
        if x[j] < RANS_L:
            if p == W:                                                           # [RNS-05]
                raise CorruptPayload(f"[RNS-05] {what}: stream ends after {i + 1} of {D} bytes")
            x[j] = (x[j] << 16) | words[p]
            p += 1
    if p != W or any(xj != RANS_L for xj in x):                                  # [RNS-06]
        raise CorruptPayload(f"[RNS-06] {what}: stream does not end in the initial state "
                             f"({W - p} words unread, states {x})")
    return bytes(out)


# ================================================================ codecs/rans_split.md: lane method 6
# | offset | size | field     | type     |
# | 0      | 1    | top_bits  | u8       | k: 1, 2 or 4; n = 8 / k bytes per symbol
# | 1      | B    | low_bits  | bytes[B] | B = ceil(D (8 - k) / 8): the low 8 - k bits of each byte, LSB first
# | 1 + B  | rest | symbols   | a rans lane (above) of G = ceil(D / n) bytes
# byte i = top_i << (8 - k) | lo_i, top_i = (sym[i // n] >> (k (i mod n))) & (2^k - 1),
# lo_i = bits i (8 - k) .. (i + 1)(8 - k) - 1 of low_bits.
def rans_split_lane(data, D: int, what: str) -> bytes:
    data = bytes(data)
    if len(data) < 1 or data[0] not in (1, 2, 4):                                # [RSP-01]
        raise CorruptPayload(f"[RSP-01] {what}: empty, or top_bits not 1, 2 or 4")
    k = data[0]
    n = 8 // k
    B = (D * (8 - k) + 7) // 8
    G = (D + n - 1) // n
    if len(data) < 1 + B:                                                        # [RSP-02]
        raise CorruptPayload(f"[RSP-02] {what}: {len(data)} bytes cannot hold {B} bytes of low bits")
    low = data[1:1 + B] + b"\x00"      # bit b of low_bits is bit b % 8 of byte b // 8
    sym = rans_lane(data[1 + B:], G, f"{what} symbols")                          # RNS-01..06
    if G and D % n and sym[-1] >> (k * (D - (G - 1) * n)):                       # [RSP-03]
        raise CorruptPayload(f"[RSP-03] {what}: the last symbol has bits set past the lane")
    if (D * (8 - k)) % 8 and low[B - 1] >> ((D * (8 - k)) % 8):                 # [RSP-03]
        raise CorruptPayload(f"[RSP-03] {what}: low_bits padding bits are not zero")
    wl = 8 - k
    out = bytearray(D)
    for i in range(D):
        top = (sym[i // n] >> (k * (i % n))) & ((1 << k) - 1)
        bit = i * wl                                   # lo_i may straddle two bytes
        lo = ((low[bit // 8] | low[bit // 8 + 1] << 8) >> (bit % 8)) & ((1 << wl) - 1)
        out[i] = top << wl | lo
    return bytes(out)


# ================================================================ §7.2 record kinds
# | value | name |: 1 plain, 2 quantized, 3 bands, 4 predicted, 5 factors. Each kind this decoder
# implements has a section below and an entry in RECORD_KINDS; any other is rejected [REC-03].
RESERVED_KINDS = {2: "quantized", 3: "bands", 4: "predicted", 5: "factors"}   # names for messages


class PlainRecord:
    """Record kind 1, `plain` (records/plain.md): the tensor stored losslessly as one stream.
    | record_kind | 1 | params_length | 0 | stream_count | 1 |
    | stream 0 | stream_dtype = dtype, stream_shape = shape | lossy flag | clear |"""

    @staticmethod
    def check(rec: TensorRecord) -> None:
        s0 = rec.streams[0]
        if len(rec.params) != 0:                                                 # [PLN-01]
            raise MalformedRecord(f"[PLN-01] plain tensor {rec.name!r}: params_length must be 0")
        if len(rec.streams) != 1:
            raise MalformedRecord(f"[PLN-01] plain tensor {rec.name!r}: stream_count must be 1")
        if rec.record_flags & LOSSY:
            raise MalformedRecord(f"[PLN-01] plain tensor {rec.name!r}: lossy flag is set")
        if s0.stream_dtype != rec.dtype or s0.stream_shape != rec.shape:
            raise MalformedRecord(f"[PLN-01] plain tensor {rec.name!r}: stream 0 dtype/rank/shape "
                                  f"differ from the record's")

    @staticmethod
    def decode(f: WcodecFile, t: int, rec: TensorRecord) -> bytearray:
        # 1. decode every chunk of stream 0 into its place; 2. those bytes are the tensor bytes.
        return decode_stream(f, t, 0, rec.streams[0])


RECORD_KINDS = {1: PlainRecord}


# ================================================================ record kind 2 `quantized` (records/quantized.md)
# Levels (zigzag, one stream per row class) x binary32 scales; y = float64(m) x float64(s), one
# binary64 multiplication, then one rounding to the tensor's dtype (quantization.md §4.2).
# | quantizer u8 | scale_mode u8 | class_count u8 | reserved u8 | group_size u32 | scale f32 | reserved u32 |
QNT_FLOAT_DTYPES = {1: "float64", 2: "float32", 3: "float16", 4: "bfloat16"}
QNT_LEVEL_DTYPES = {11: np.uint8, 12: np.uint16, 13: np.uint32}     # uint8, uint16, uint32
QNT_UINT8, QNT_FLOAT32 = 11, 2


def qnt_matrix_view(shape) -> tuple:
    """quantization.md §1.1: rows = shape[0] for rank >= 2 and shape[0] > 0, else one row."""
    n = 1
    for d in shape:
        n *= d
    return (shape[0], n // shape[0]) if len(shape) >= 2 and shape[0] > 0 else (1, n)


def qnt_round(y: np.ndarray, dtype: str) -> bytes:
    """quantization.md §4.2: one rounding from binary64 to nearest, ties to even; magnitudes beyond
    the largest finite value saturate to it. numpy's casts to float32/float16 are one IEEE rounding
    (only overflow to inf needs fixing); bfloat16 is rounded directly from binary64 here."""
    if dtype == "float64":
        return y.astype("<f8").tobytes()
    if dtype in ("float32", "float16"):
        np_t = {"float32": "<f4", "float16": "<f2"}[dtype]
        with np.errstate(over="ignore"):
            v = y.astype(np_t)
        big = np.finfo(np_t).max
        v = np.where(np.isinf(v), np.copysign(big, y), v).astype(np_t)
        return v.tobytes()
    # bfloat16: 8 significant bits, exponent range of binary32
    a = np.abs(y)
    _, e = np.frexp(a)                               # a = f * 2^e with 0.5 <= f < 1
    q = np.maximum(e - 1, -126) - 7                  # exponent of one unit in the last place
    r = np.ldexp(np.rint(np.ldexp(a, -q)), q)        # exact scaling, rint = ties to even
    r = np.minimum(r, float.fromhex("0x1.fep127"))   # saturate
    r = np.copysign(r, y)                            # zero keeps its sign
    bits = r.astype("<f4").view("<u4") >> 16         # r is a bfloat16 value: the cast is exact
    return bits.astype("<u2").tobytes()


class QuantizedRecord:
    """Record kind 2, `quantized`. Streams: C level streams, a class map when C > 1, a float32
    scale stream for scale_mode 1 (channel) and 2 (group)."""

    @staticmethod
    def params(rec: TensorRecord) -> dict:
        if len(rec.params) != 16:                                                # [QNT-01]
            raise MalformedRecord(f"[QNT-01] {rec.name!r}: params are {len(rec.params)} bytes, not 16")
        quantizer, scale_mode, C, r0, group_size = struct.unpack_from("<BBBBI", rec.params, 0)
        scale, r1 = struct.unpack_from("<fI", rec.params, 8)
        if r0 or r1:                                                             # [RSV-01]
            raise MalformedRecord(f"[RSV-01] {rec.name!r}: reserved field of the quantized params")
        if quantizer not in (0, 1) or scale_mode not in (0, 1, 2) or not 1 <= C <= 16:
            raise MalformedRecord(f"[QNT-01] {rec.name!r}: quantizer {quantizer}, scale_mode "
                                  f"{scale_mode}, class_count {C}")
        if (scale_mode == 2 and not 1 <= group_size <= 1 << 24) or (scale_mode != 2 and group_size):
            raise MalformedRecord(f"[QNT-01] {rec.name!r}: group_size {group_size} with scale_mode {scale_mode}")
        if scale_mode == 0 and not (np.isfinite(scale) and scale > 0):
            raise MalformedRecord(f"[QNT-01] {rec.name!r}: the tensor scale is not finite and > 0")
        if scale_mode != 0 and rec.params[8:12] != b"\0\0\0\0":
            raise MalformedRecord(f"[QNT-01] {rec.name!r}: scale must be all zero bits unless scale_mode is 0")
        return dict(quantizer=quantizer, scale_mode=scale_mode, C=C, group_size=group_size, scale=scale)

    @staticmethod
    def check(rec: TensorRecord) -> None:
        p = QuantizedRecord.params(rec)
        if rec.dtype not in QNT_FLOAT_DTYPES or not rec.record_flags & LOSSY:   # [QNT-02]
            raise MalformedRecord(f"[QNT-02] {rec.name!r}: dtype {rec.dtype} / lossy flag clear")
        rows, cols = qnt_matrix_view(rec.shape)
        if p["scale_mode"] == 2 and p["group_size"] > max(cols, 1):             # [QNT-03]
            raise MalformedRecord(f"[QNT-03] {rec.name!r}: group_size {p['group_size']} > row length {cols}")
        C = p["C"]
        nscales = {0: 0, 1: rows, 2: rows * -(-cols // max(p["group_size"], 1))}[p["scale_mode"]]
        want = C + (1 if C > 1 else 0) + (1 if p["scale_mode"] else 0)
        s = rec.streams
        bad = len(s) != want                                                     # [QNT-04]
        if not bad:
            levels = s[:C]
            bad = any(x.stream_dtype not in QNT_LEVEL_DTYPES or len(x.stream_shape) != 1
                      or (cols and x.stream_shape[0] % cols) for x in levels)
            bad = bad or sum(x.stream_shape[0] for x in levels if len(x.stream_shape) == 1) != rows * cols
            if C > 1:
                bad = bad or s[C].stream_dtype != QNT_UINT8 or s[C].stream_shape != (rows,)
            if p["scale_mode"]:
                bad = bad or s[-1].stream_dtype != QNT_FLOAT32 or s[-1].stream_shape != (nscales,)
        if bad:
            raise MalformedRecord(f"[QNT-04] {rec.name!r}: streams do not match the params")

    @staticmethod
    def decode(f: WcodecFile, t: int, rec: TensorRecord) -> bytes:
        p = QuantizedRecord.params(rec)
        rows, cols = qnt_matrix_view(rec.shape)
        C = p["C"]
        # 2. levels: zigzag-decode each class stream; k = (z >> 1) XOR -(z AND 1)
        per_class = []
        for c in range(C):
            z = np.frombuffer(decode_stream(f, t, c, rec.streams[c]),
                              QNT_LEVEL_DTYPES[rec.streams[c].stream_dtype]).astype(np.int64)
            per_class.append((z >> 1) ^ -(z & 1))
        if C > 1:
            cmap = np.frombuffer(decode_stream(f, t, C, rec.streams[C]), np.uint8)
            if cmap.size and int(cmap.max()) >= C:                               # [QNT-05]
                raise CorruptPayload(f"[QNT-05] {rec.name!r}: class map names a class >= {C}")
            k = np.zeros((rows, cols), np.int64)
            for c in range(C):
                mine = np.flatnonzero(cmap == c)          # rows of class c, in increasing order
                if mine.size * cols != per_class[c].size:                        # [QNT-05]
                    raise CorruptPayload(f"[QNT-05] {rec.name!r}: class {c} has {mine.size} rows "
                                         f"but {per_class[c].size} levels")
                k[mine] = per_class[c].reshape(mine.size, cols)
        else:
            k = per_class[0].reshape(rows, cols)
        if k.size and int(np.abs(k).max()) > 1 << 28:                            # [QNT-06]
            raise CorruptPayload(f"[QNT-06] {rec.name!r}: a level exceeds 2^28 in magnitude")
        # 3. scales: S of element (r, c), binary64 (exact from binary32)
        if p["scale_mode"] == 0:
            S = np.full((rows, cols), float(np.float32(p["scale"])))
        else:
            s = np.frombuffer(decode_stream(f, t, len(rec.streams) - 1, rec.streams[-1]), "<f4")
            if not np.all(np.isfinite(s) & (s > 0)):                             # [QNT-07]
                raise CorruptPayload(f"[QNT-07] {rec.name!r}: a scale is not finite and > 0")
            s = s.astype(np.float64)
            if p["scale_mode"] == 1:
                S = np.repeat(s.reshape(rows, 1), cols, axis=1)
            else:
                per_row = -(-cols // p["group_size"])
                col_group = np.arange(cols) // p["group_size"]
                S = s.reshape(rows, per_row)[:, col_group]
        # 4. multipliers: uniform m = k; dependent: the 4-state machine, state 0 at each row's start
        if p["quantizer"] == 0:
            m = k
        else:
            m = np.zeros_like(k)
            state = np.zeros(rows, np.int64)          # all rows at once, column by column
            for j in range(cols):
                a, b = state >> 1, state & 1
                m[:, j] = 2 * k[:, j] - a * np.sign(k[:, j])
                state = ((b ^ (k[:, j] & 1)) << 1) | a
        # 5. [QNT-08] y = float64(m) x S (one multiplication), one rounding to the dtype
        y = m.astype(np.float64) * S
        return qnt_round(y.reshape(-1), QNT_FLOAT_DTYPES[rec.dtype])


RECORD_KINDS[2] = QuantizedRecord


# ================================================================ record kind 3 `bands` (records/bands.md)
# N bands (2 to 8). Bands 1..Q hold levels (Q = N - 1 with a remainder band, else N). Prefix k:
# A_1 = multipliers of band 1's levels (quantization.md §3), A_j = A_(j-1) x 2^(b_j) + q_j,
# y = float64(A_a) x (S x 2^-c_a) with a = min(k, Q) and c_a = b_2 + ... + b_a, one binary64
# multiplication, then one rounding to the dtype (quantization.md §4.2). With a remainder band the
# full decode (k = N) applies it to the bit patterns of prefix N - 1 and gives the original bytes.
# | BandHeader | band_count u8 | quantizer u8 | scale_mode u8 | flags u8 (bit 0 has_remainder, bit 1
#   has_prefix_digests) | remainder_shift u8 | reserved[3] | group_size u32 | scale f32 |
# | BandEntry x N | refine_bits u8 | reserved[3] | prefix_error ErrorStats | prefix_sha256[32] (bit 1) |
BND_PREFIX = None   # `--bands K` on the command line: decode only the first K bands of band records
# dtype code -> (name, mantissa bits M, exponent bits E)
BND_FLOATS = {1: ("float64", 52, 11), 2: ("float32", 23, 8), 3: ("float16", 10, 5),
              4: ("bfloat16", 7, 8), 5: ("float8_e4m3fn", 3, 4), 6: ("float8_e5m2", 2, 5)}
BND_UINT = {8: 11, 16: 12, 32: 13, 64: 14}          # width -> uint dtype code of that width


class BndPrefix(bytes):
    """The bytes of a prefix k < N: its digest is prefix_sha256, not the record's sha256."""


def bnd_round(y: np.ndarray, code: int) -> bytes:
    """quantization.md §4.2 for every float dtype: the four of kind 2 as qnt_round does; the two
    float8 formats by the same exact scaling as bfloat16 there, then their bit fields."""
    name, M, E = BND_FLOATS[code]
    if code <= 4:
        return qnt_round(y, name)
    bias = (1 << (E - 1)) - 1
    emin = 1 - bias
    maxf = 448.0 if name == "float8_e4m3fn" else (2 - 2.0 ** -M) * 2.0 ** bias
    a = np.abs(y)
    _, e = np.frexp(a)                                  # a = f x 2^e, 0.5 <= f < 1
    q = np.maximum(e - 1, emin) - M                     # exponent of one unit in the last place
    r = np.minimum(np.ldexp(np.rint(np.ldexp(a, -q)), q), maxf)   # rint: ties to even; saturate
    _, e2 = np.frexp(r)
    normal = r >= 2.0 ** emin
    field_e = np.where(normal, e2 - 1 + bias, 0)
    mant = np.where(normal, np.ldexp(r, M - (e2 - 1)) - 2 ** M, np.ldexp(r, M - emin))
    bits = (np.signbit(y).astype(np.int64) << (E + M)) | (field_e.astype(np.int64) << M) \
        | mant.astype(np.int64)
    return bits.astype(np.uint8).tobytes()


def bnd_order_map(p: np.ndarray, w: int) -> np.ndarray:
    """o(p) = p XOR (sign x (2^(w-1) - 1)) on w-bit patterns (uint64): the order of the floats."""
    sign = p >> np.uint64(w - 1)
    return p ^ (sign * np.uint64((1 << (w - 1)) - 1))


class BandsRecord:
    @staticmethod
    def params(rec: TensorRecord) -> dict:
        P = rec.params
        if len(P) < 16:                                                          # [BND-01]
            raise MalformedRecord(f"[BND-01] {rec.name!r}: band params shorter than 16 bytes")
        N, quantizer, scale_mode, flags, z = P[0], P[1], P[2], P[3], P[4]
        group_size, scale = struct.unpack_from("<If", P, 8)
        if flags & ~3 or any(P[5:8]):                                            # [RSV-01]
            raise MalformedRecord(f"[RSV-01] {rec.name!r}: reserved bits of the band params")
        digests = bool(flags & 2)
        entry = 28 + (32 if digests else 0)
        if not 2 <= N <= 8 or len(P) != 16 + N * entry or quantizer > 1 or scale_mode > 2:
            raise MalformedRecord(f"[BND-01] {rec.name!r}: band_count {N}, quantizer {quantizer}, "
                                  f"scale_mode {scale_mode}, {len(P)} bytes of params")
        if (scale_mode == 2) != (group_size != 0) or group_size > 1 << 24:
            raise MalformedRecord(f"[BND-01] {rec.name!r}: group_size {group_size} with scale_mode {scale_mode}")
        if scale_mode == 0 and not (np.isfinite(scale) and scale > 0):
            raise MalformedRecord(f"[BND-01] {rec.name!r}: the tensor scale is not finite and > 0")
        if scale_mode != 0 and P[12:16] != b"\0\0\0\0":
            raise MalformedRecord(f"[BND-01] {rec.name!r}: scale is not all zero bits")
        remainder = bool(flags & 1)
        Q = N - 1 if remainder else N
        bits, sha = [], []
        for j in range(N):
            e = 16 + j * entry
            if any(P[e + 1:e + 4]):                                              # [RSV-01]
                raise MalformedRecord(f"[RSV-01] {rec.name!r}: reserved bytes of band entry {j + 1}")
            bits.append(P[e])
            sha.append(bytes(P[e + 28:e + 60]) if digests else None)
        if bits[0] != 0 or (remainder and bits[-1] != 0) \
                or any(not 1 <= b <= 24 for b in bits[1:Q]) or sum(bits) > 28:  # [BND-01]
            raise MalformedRecord(f"[BND-01] {rec.name!r}: refine_bits {bits}")
        if not remainder and z != 0:
            raise MalformedRecord(f"[BND-01] {rec.name!r}: remainder_shift without a remainder band")
        return dict(N=N, Q=Q, quantizer=quantizer, scale_mode=scale_mode, group_size=group_size,
                    scale=scale, remainder=remainder, z=z, bits=bits, sha=sha, digests=digests)

    @staticmethod
    def check(rec: TensorRecord) -> None:
        p = BandsRecord.params(rec)
        if rec.dtype not in BND_FLOATS:                                          # [BND-02]
            raise MalformedRecord(f"[BND-02] {rec.name!r}: a band record of dtype {rec.dtype}")
        w = 8 * DTYPES[rec.dtype].itemsize
        if p["z"] >= w:
            raise MalformedRecord(f"[BND-02] {rec.name!r}: remainder_shift {p['z']} >= {w}")
        rows, cols = qnt_matrix_view(rec.shape)
        n = rows * cols
        nscales = {0: 0, 1: rows, 2: rows * -(-cols // max(p["group_size"], 1))}[p["scale_mode"]]
        s = rec.streams                                                          # [BND-03]
        ok = len(s) == p["N"] + (1 if p["scale_mode"] else 0)
        ok = ok and all(x.stream_dtype in QNT_LEVEL_DTYPES and x.stream_shape == (n,) for x in s[:p["Q"]])
        if ok and p["remainder"]:
            ok = s[p["Q"]].stream_dtype == BND_UINT[w] and s[p["Q"]].stream_shape == (n,)
        if ok and p["scale_mode"]:
            ok = s[-1].stream_dtype == QNT_FLOAT32 and s[-1].stream_shape == (nscales,)
        if not ok:
            raise MalformedRecord(f"[BND-03] {rec.name!r}: streams do not match the band params")
        if bool(rec.record_flags & LOSSY) == p["remainder"]:                      # [BND-04]
            raise MalformedRecord(f"[BND-04] {rec.name!r}: lossy flag and has_remainder disagree")
        if p["digests"] and rec.sha256 is not None and p["sha"][-1] != rec.sha256:   # [BND-08]
            raise MalformedRecord(f"[BND-08] {rec.name!r}: band N's prefix_sha256 is not the sha256")

    @staticmethod
    def decode(f: WcodecFile, t: int, rec: TensorRecord) -> bytes:
        p = BandsRecord.params(rec)
        N, Q = p["N"], p["Q"]
        k = N if BND_PREFIX is None else min(BND_PREFIX, N)
        a = min(k, Q)
        rows, cols = qnt_matrix_view(rec.shape)
        # 1. levels of bands 1..a, zigzag-decoded; [BND-05] their range
        A = None
        for j in range(a):
            z = np.frombuffer(decode_stream(f, t, j, rec.streams[j]),
                              QNT_LEVEL_DTYPES[rec.streams[j].stream_dtype]).astype(np.int64)
            q = ((z >> 1) ^ -(z & 1)).reshape(rows, cols)
            limit = 1 << 23 if j == 0 else 1 << (p["bits"][j] + 1)
            if q.size and int(np.abs(q).max()) > limit:
                raise CorruptPayload(f"[BND-05] {rec.name!r}: a band {j + 1} level exceeds {limit}")
            if j == 0:   # 2. multipliers of the base quantizer (the 4-state machine of §3.2)
                A = q.copy()
                if p["quantizer"] == 1:
                    state = np.zeros(rows, np.int64)
                    for c in range(cols):
                        sa, sb = state >> 1, state & 1
                        A[:, c] = 2 * q[:, c] - sa * np.sign(q[:, c])
                        state = ((sb ^ (q[:, c] & 1)) << 1) | sa
            else:        # 3. A_j = A_(j-1) x 2^(b_j) + q_j, exact in int64 (|A| < 2^53)
                A = A * (1 << p["bits"][j]) + q
        # scales S of each element, binary64; [BND-06]
        if p["scale_mode"] == 0:
            S = np.full((rows, cols), float(np.float32(p["scale"])))
        else:
            s = np.frombuffer(decode_stream(f, t, len(rec.streams) - 1, rec.streams[-1]), "<f4")
            if not np.all(np.isfinite(s) & (s > 0)):
                raise CorruptPayload(f"[BND-06] {rec.name!r}: a stored scale is not finite and > 0")
            s = s.astype(np.float64)
            if p["scale_mode"] == 1:
                S = np.repeat(s.reshape(rows, 1), cols, axis=1)
            else:
                per_row = -(-cols // p["group_size"])
                S = s.reshape(rows, per_row)[:, np.arange(cols) // p["group_size"]]
        # 4. y = float64(A_a) x (S x 2^-c_a): ldexp is exact, then one multiplication; round
        y = A.astype(np.float64) * np.ldexp(S, -sum(p["bits"][1:a]))
        out = bnd_round(y.reshape(-1), rec.dtype)
        if k == N and p["remainder"]:
            out = BandsRecord.apply_remainder(f, t, rec, p, out)
        elif k < N and p["digests"] and hashlib.sha256(out).digest() != p["sha"][k - 1]:
            raise DigestMismatch(f"[BND-07] {rec.name!r}: SHA-256 of the {k}-band prefix disagrees")
        return out if k == N else BndPrefix(out)

    @staticmethod
    def apply_remainder(f, t, rec, p, prefix: bytes) -> bytes:
        """5. The remainder band: x = o^-1((o(c >> z) + d) mod 2^w') << z for each element, with
        c its prefix-(N-1) pattern and d the zigzag-decoded remainder, listed in remainder order."""
        name, M, E = BND_FLOATS[rec.dtype]
        size = DTYPES[rec.dtype].itemsize
        w = 8 * size
        wp = w - p["z"]
        mask = np.uint64((1 << wp) - 1) if wp < 64 else np.uint64(2**64 - 1)
        c = np.frombuffer(prefix, f"<u{size}").astype(np.uint64)
        stored = np.frombuffer(decode_stream(f, t, p["Q"], rec.streams[p["Q"]]),
                               f"<u{size}").astype(np.uint64)
        # remainder order: elements sorted by the exponent field of c, stable
        key = (c >> np.uint64(M)) & np.uint64((1 << E) - 1)
        r = np.empty_like(stored)
        r[np.argsort(key, kind="stable")] = stored
        if p["z"] and r.size and int(r.max()) >= 1 << wp:                       # [BND-09]
            raise CorruptPayload(f"[BND-09] {rec.name!r}: a remainder does not fit {wp} bits")
        d = (r >> np.uint64(1)) ^ ((r & np.uint64(1)) * mask)       # zigzag decode, mod 2^w'
        zz = np.uint64(p["z"])
        x = bnd_order_map((bnd_order_map(c >> zz, wp) + d) & mask, wp) << zz
        return x.astype(f"<u{size}").tobytes()


RECORD_KINDS[3] = BandsRecord


# ================================================================ record kind 4 `predicted` (records/predicted.md)
# decoded = residual applied to predictor(permutation(reference)). The reference is a tensor of
# this file (source 1) or of a parent file (source 2) found by the SHA-256 of its whole content
# next to the input file. Chains of references are followed and checked before anything is
# decoded: at each step depth <= 16 [PRD-09], parent located [PRD-10], no cycle [PRD-08], the
# reference exists [PRD-06] with the record's dtype and shape [PRD-07].
# | PredHeader | source u8 | predictor u8 | permutation u8 | residual u8 | order u8 | reserved u8 |
#   repeat u16 | a f64 | b f64 | step f32 | reserved u32 | parent_sha256 [32] |
# | ref_name_length u16 | ref_name | hint_length u16 | hint |
class UnresolvedReference(WcodecError): """a predicted record's parent file is missing or has changed"""


PRD_HEAD = struct.Struct("<BBBBBBHddfI32s")
PRD_MAX_DEPTH, PRD_MAX_REPEAT, PRD_MAX_LEVEL = 16, 1024, 1 << 28
# float dtype code -> (numpy dtype or None for bfloat16, mantissa bits M, exponent bits E, canonical NaN)
PRD_FLOATS = {1: ("<f8", 52, 11, 0x7FF8000000000000), 2: ("<f4", 23, 8, 0x7FC00000),
              3: ("<f2", 10, 5, 0x7E00), 4: (None, 7, 8, 0x7FC0)}
PRD_UINT = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
PRD_PARENTS = {}    # parent SHA-256 -> opened WcodecFile (each parent is read once)


def prd_params(rec: TensorRecord) -> dict:
    P = bytes(rec.params)
    bad = lambda m: MalformedRecord(f"[PRD-01] {rec.name!r}: {m}")              # noqa: E731
    if len(P) < PRD_HEAD.size + 4:
        raise bad("params shorter than 68 bytes")
    src, pred, perm, res, order, r0, repeat, a, b, step, r1, sha = PRD_HEAD.unpack_from(P)
    if r0 or r1:                                                                 # [RSV-01]
        raise MalformedRecord(f"[RSV-01] {rec.name!r}: reserved predicted params are not zero")
    n = struct.unpack_from("<H", P, 64)[0]
    if not 1 <= n <= 1024 or 66 + n + 2 > len(P):
        raise bad("ref_name_length")
    ref = utf8(P[66:66 + n], "ref_name")
    h = struct.unpack_from("<H", P, 66 + n)[0]
    if h > 255 or 68 + n + h != len(P):
        raise bad("hint_length, or params do not end after the hint")
    hint = utf8(P[68 + n:], "hint")
    if src not in (1, 2) or pred > 2 or perm > 2 or res not in (1, 2, 3) or order > 1:
        raise bad("source, predictor, permutation, residual or order out of range")
    if src == 1 and (any(sha) or h):
        raise bad("a same-file reference has a zero parent_sha256 and no hint")
    if h and ("/" in hint or "\\" in hint or "\x00" in hint or hint in (".", "..")):
        raise bad("the hint is not a base name")
    zero = lambda v, fmt: struct.pack(fmt, v) == bytes(struct.calcsize(fmt))    # noqa: E731
    if pred == 1:
        if not (1 <= repeat <= PRD_MAX_REPEAT and np.isfinite(a) and np.isfinite(b)):
            raise bad("scalar affine needs repeat 1..1024 and finite a, b")
    elif repeat or not zero(a, "<d") or not zero(b, "<d"):
        raise bad("repeat, a and b are zero unless the predictor is scalar affine")
    if res == 3:
        if not (np.isfinite(step) and step > 0):
            raise bad("a quantized residual needs a finite step > 0")
    elif not zero(step, "<f"):
        raise bad("step is +0.0 unless the residual is quantized")
    return dict(source=src, predictor=pred, permutation=perm, residual=res, order=order,
                repeat=repeat, a=a, b=b, step=step, sha=sha, ref=ref, hint=hint)


def prd_streams(rec: TensorRecord, p: dict) -> list:
    """[(allowed stream dtype codes, shape)] of §6: residual, permutation, coefficients."""
    size = DTYPES[rec.dtype].itemsize
    out = [((11, 12, 13) if p["residual"] == 3 else ({1: 11, 2: 12, 4: 13, 8: 14}[size],),
            (rec.elements,))]
    if p["permutation"]:
        out.append(((12, 13), (rec.shape[0] if p["permutation"] == 1 else rec.shape[-1],)))
    if p["predictor"] == 2:
        out.append(((2,), (2, rec.shape[0])))
    return out


def prd_values(bits: np.ndarray, code: int) -> np.ndarray:
    """float64(p) of §4: the exact binary64 value of each bit pattern."""
    npd = PRD_FLOATS[code][0]
    with np.errstate(invalid="ignore"):
        if npd is None:                                  # bfloat16: the upper half of a binary32
            return (bits.astype(np.uint32) << np.uint32(16)).view("<f4").astype(np.float64)
        return bits.view(npd).astype(np.float64)


def prd_round(y: np.ndarray, code: int) -> np.ndarray:
    """round_T of §4: one rounding to nearest even, overflow to infinity, canonical NaN."""
    npd, M, E, nan = PRD_FLOATS[code]
    with np.errstate(over="ignore", invalid="ignore"):
        if npd is not None:
            out = y.astype(npd).view(PRD_UINT[int(npd[-1])]).copy()
        else:
            # binary32 rounded *to odd*, then to 16 bits to nearest even: one correct rounding
            f = y.astype("<f4")
            bits = f.view("<u4").copy()
            back = f.astype(np.float64)
            fin = np.isfinite(y)
            bits[fin & (np.abs(back) > np.abs(y))] -= np.uint32(1)          # was rounded away
            bits[fin & (back != y)] |= np.uint32(1)                          # inexact: odd
            bits[fin & ~np.isfinite(f)] = (bits[fin & ~np.isfinite(f)] & np.uint32(0x80000000)) \
                | np.uint32(0x7F7FFFFF)                                      # beyond binary32
            lsb = (bits >> np.uint32(16)) & np.uint32(1)
            out = ((bits + np.uint32(0x7FFF) + lsb) >> np.uint32(16)).astype("<u2")
    out[np.isnan(y)] = nan
    return out


def prd_find_parent(p: dict, name: str):
    """[PRD-10] the file next to the input whose SHA-256 is parent_sha256 (hint tried first)."""
    sha = p["sha"]
    if sha in PRD_PARENTS:
        return PRD_PARENTS[sha]
    folder = os.path.dirname(os.path.abspath(sys.argv[1]))
    names = sorted(os.listdir(folder))
    if p["hint"] in names:
        names.remove(p["hint"])
        names.insert(0, p["hint"])
    changed = False
    for n in names:
        path = os.path.join(folder, n)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            data = fh.read()
        if hashlib.sha256(data).digest() == sha:
            PRD_PARENTS[sha] = open_wcodec(memoryview(data))
            return PRD_PARENTS[sha]
        changed = changed or n == p["hint"]
    what = f"{p['hint']!r} has changed (its SHA-256 differs)" if changed else "is missing"
    raise UnresolvedReference(f"[PRD-10] tensor {name!r}: parent file {sha.hex()} {what}")


def prd_apply(f: WcodecFile, t: int, rec: TensorRecord, ref: bytes) -> bytes:
    """Steps 3-5 of §7: permutation, predictor, residual, given the reference's decoded bytes."""
    p = prd_params(rec)
    size = DTYPES[rec.dtype].itemsize
    w, U = 8 * size, PRD_UINT[size]
    n = rec.elements
    P = np.frombuffer(bytes(ref), U).astype(np.uint64)
    s = 1
    if p["permutation"]:                                                         # §3
        d = rec.shape[0] if p["permutation"] == 1 else rec.shape[-1]
        st = rec.streams[s]
        pi = np.frombuffer(bytes(decode_stream(f, t, s, st)), PRD_UINT[DTYPES[st.stream_dtype].itemsize])
        pi = pi.astype(np.int64)
        if pi.size != d or (d and (pi.min() < 0 or pi.max() >= d)) \
                or len(set(pi.tolist())) != d:                                   # [PRD-05]
            raise CorruptPayload(f"[PRD-05] {rec.name!r}: the stored permutation is not one")
        P = (P.reshape(d, -1)[pi] if p["permutation"] == 1 else P.reshape(-1, d)[:, pi]).reshape(-1)
        s += 1
    if p["predictor"] == 1:                                                      # §4 scalar
        for _ in range(p["repeat"]):
            y = prd_values(P.astype(U), rec.dtype) * p["a"]
            if p["b"] != 0:
                y = y + p["b"]
            P = prd_round(y, rec.dtype).astype(np.uint64)
    elif p["predictor"] == 2:                                                    # §4 channel
        c = np.frombuffer(bytes(decode_stream(f, t, s, rec.streams[s])), "<f4").reshape(2, -1)
        if not np.all(np.isfinite(c)):                                           # [PRD-05]
            raise CorruptPayload(f"[PRD-05] {rec.name!r}: a channel coefficient is not finite")
        per = n // rec.shape[0]
        alpha = np.repeat(c[0].astype(np.float64), per)
        beta = np.repeat(c[1].astype(np.float64), per)
        y = prd_values(P.astype(U), rec.dtype) * alpha
        y = np.where(beta != 0, y + beta, y)
        P = prd_round(y, rec.dtype).astype(np.uint64)
    st = rec.streams[0]
    z = np.frombuffer(bytes(decode_stream(f, t, 0, st)),
                      PRD_UINT[DTYPES[st.stream_dtype].itemsize]).astype(np.uint64)
    if p["order"] == 1:                                                          # §5.4
        _, M, E, _ = PRD_FLOATS[rec.dtype]
        key = (P >> np.uint64(M)) & np.uint64((1 << E) - 1)
        zt = np.empty_like(z)
        zt[np.argsort(key, kind="stable")] = z
        z = zt
    mask = np.uint64((1 << w) - 1) if w < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    if p["residual"] == 1:                                                       # §5.1 sub
        d = (z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))
        out = (P + d) & mask
    elif p["residual"] == 2:                                                     # §5.2 xor
        out = P ^ z
    else:                                                                        # §5.3 quantized
        q = ((z >> np.uint64(1)) ^ (np.uint64(0) - (z & np.uint64(1)))).view(np.int64)
        if q.size and int(np.abs(q).max()) > PRD_MAX_LEVEL:                      # [PRD-12]
            raise CorruptPayload(f"[PRD-12] {rec.name!r}: a quantized level exceeds 2^28")
        s64 = float(np.float32(p["step"]))
        y = prd_values(P.astype(U), rec.dtype) + q.astype(np.float64) * s64
        out = np.where(q == 0, P, prd_round(y, rec.dtype).astype(np.uint64))
    return out.astype(U).tobytes()


class PredictedRecord:
    @staticmethod
    def check(rec: TensorRecord) -> None:
        p = prd_params(rec)                                                      # [PRD-01]
        if rec.dtype not in PRD_FLOATS and (p["predictor"] or p["residual"] == 3 or p["order"]):
            raise MalformedRecord(f"[PRD-04] {rec.name!r}: affine/quantized/exponent order need a float dtype")
        if (p["permutation"] or p["predictor"] == 2) and not rec.shape:
            raise MalformedRecord(f"[PRD-04] {rec.name!r}: a permutation or channel affine needs rank >= 1")
        if bool(rec.record_flags & LOSSY) != (p["residual"] == 3):              # [PRD-03]
            raise MalformedRecord(f"[PRD-03] {rec.name!r}: lossy flag and residual disagree")
        want = prd_streams(rec, p)
        if len(rec.streams) != len(want) or any(                                 # [PRD-02]
                s.stream_dtype not in codes or tuple(s.stream_shape) != tuple(shape)
                for s, (codes, shape) in zip(rec.streams, want)):
            raise MalformedRecord(f"[PRD-02] {rec.name!r}: streams differ from §6")

    @staticmethod
    def decode(f: WcodecFile, t: int, rec: TensorRecord) -> bytes:
        # §2.2: follow the chain R_0 = this record, R_1, ... to the first record not predicted
        chain = [(f, t)]
        seen = {(id(f), rec.name)}
        while True:
            cf, ct = chain[-1]
            crec = cf.index.tensors[ct]
            if crec.record_kind != 4:
                break
            p = prd_params(crec)
            if len(chain) > PRD_MAX_DEPTH:                                       # [PRD-09]
                raise LimitExceeded(f"[PRD-09] {rec.name!r}: more than 16 predicted records in the chain")
            nf = prd_find_parent(p, crec.name) if p["source"] == 2 else cf      # [PRD-10]
            if (id(nf), p["ref"]) in seen:                                       # [PRD-08]
                raise MalformedRecord(f"[PRD-08] {rec.name!r}: reference cycle through {p['ref']!r}")
            idx = [i for i, r in enumerate(nf.index.tensors) if r.name == p["ref"]]
            if not idx:                                                          # [PRD-06]
                raise MalformedRecord(f"[PRD-06] {crec.name!r}: no reference tensor {p['ref']!r}")
            rrec = nf.index.tensors[idx[0]]
            if rrec.dtype != crec.dtype or tuple(rrec.shape) != tuple(crec.shape):   # [PRD-07]
                raise MalformedRecord(f"[PRD-07] {crec.name!r}: reference dtype/shape differ")
            seen.add((id(nf), p["ref"]))
            chain.append((nf, idx[0]))
        # decode the base by its own kind, then each predicted level upwards, checking digests
        bf, bt = chain[-1]
        data = decode_tensor(bf, bt)
        for cf, ct in reversed(chain[1:-1]):
            crec = cf.index.tensors[ct]
            data = prd_apply(cf, ct, crec, data)
            if crec.sha256 is not None and hashlib.sha256(data).digest() != crec.sha256:
                raise DigestMismatch(f"[REC-09] reference {crec.name!r}: SHA-256 disagrees")
        return prd_apply(f, t, rec, data)


RECORD_KINDS[4] = PredictedRecord


# ================================================================ record kind 5 `factors` (records/factors.md)
# The tensor is the product of factors (low-rank U.V, Tucker core x factors, tensor-train cores),
# each factor its own stream (float values, or zigzag levels + scales of quantization.md), then an
# optional residual: 1 exact (the bit-domain remainder of bands.md), 2 quantized (added in binary64).
# Arithmetic: binary64, one rounding per multiply and per add, sums over the rank index in
# increasing order starting from the a = 0 term ("ordered sum"), no FMA. Below, every sum is built
# with separate numpy multiply and add calls on whole arrays, one rank index at a time.
FAC_LOW_RANK, FAC_TUCKER, FAC_TT = 1, 2, 3
FAC_FLOAT_DTYPES = {1: "float64", 2: "float32", 3: "float16", 4: "bfloat16"}
FAC_LEVEL_DTYPES = {11: np.uint8, 12: np.uint16, 13: np.uint32}     # uint8, uint16, uint32
# (exponent bits E, mantissa bits M, largest finite) of quantization.md §4.2
FAC_FORMATS = {"float64": (11, 52, None), "float32": (8, 23, float.fromhex("0x1.fffffep127")),
               "float16": (5, 10, 65504.0), "bfloat16": (8, 7, float.fromhex("0x1.fep127"))}


def fac_matrix_view(shape) -> tuple:
    """quantization.md §1.1: rows = shape[0] for rank >= 2 and shape[0] > 0, else one row."""
    n = 1
    for d in shape:
        n *= d
    return (shape[0], n // shape[0]) if len(shape) >= 2 and shape[0] > 0 else (1, n)


def fac_prod(xs) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def fac_scale_fields(quantizer, scale_mode, group_size, scale_raw, what):
    # quantizer 0 or 1; scale_mode 0, 1, 2; group_size 1..2^24 exactly for mode 2; scale > 0 for mode 0
    if quantizer not in (0, 1) or scale_mode not in (0, 1, 2):
        raise MalformedRecord(f"[FAC-01] {what}: quantizer {quantizer} / scale_mode {scale_mode}")
    if (scale_mode == 2) != (1 <= group_size <= 1 << 24) or (scale_mode != 2 and group_size):
        raise MalformedRecord(f"[FAC-01] {what}: group_size {group_size} with scale_mode {scale_mode}")
    scale = struct.unpack("<f", scale_raw)[0]
    if scale_mode == 0 and not (np.isfinite(scale) and scale > 0):
        raise MalformedRecord(f"[FAC-01] {what}: the scale is not a positive finite binary32")
    if scale_mode != 0 and scale_raw != b"\0\0\0\0":
        raise MalformedRecord(f"[FAC-01] {what}: scale must be +0.0 unless scale_mode is 0")
    return dict(quantizer=quantizer, scale_mode=scale_mode, group_size=group_size, scale=scale)


def fac_scale_count(q: dict, rows: int, cols: int) -> int:
    return {0: 0, 1: rows}.get(q["scale_mode"], rows * -(-cols // max(q["group_size"], 1)))


class FactorsRecord:
    """Record kind 5. FactorHeader (40 bytes) | ModeEntry x order (12) | FactorEntry x F (12)."""

    @staticmethod
    def params(rec: TensorRecord) -> dict:
        p = rec.params
        if len(p) < 40:
            raise MalformedRecord(f"[FAC-01] {rec.name!r}: params shorter than the FactorHeader")
        # | factorization u8 | order u8 | residual u8 | residual_shift u8 | residual_quantizer u8 |
        # | residual_scale_mode u8 | reserved u16 | residual_group_size u32 | residual_scale f32 |
        # | approx_error ErrorStats |
        fz, order, residual, shift, rq, rmode, reserved, rgroup = struct.unpack_from("<BBBBBBHI", p, 0)
        if fz not in (1, 2, 3):
            raise MalformedRecord(f"[FAC-01] {rec.name!r}: factorization {fz}")
        if not (order == 1 if fz == FAC_LOW_RANK else 2 <= order <= 8):
            raise MalformedRecord(f"[FAC-01] {rec.name!r}: order {order}")
        if residual not in (0, 1, 2):
            raise MalformedRecord(f"[FAC-01] {rec.name!r}: residual {residual}")
        if reserved:
            raise MalformedRecord(f"[RSV-01] {rec.name!r}: reserved field of the FactorHeader")
        F = {FAC_LOW_RANK: 2, FAC_TUCKER: order + 1, FAC_TT: order}[fz]
        if len(p) != 40 + 12 * order + 12 * F:
            raise MalformedRecord(f"[FAC-01] {rec.name!r}: params are {len(p)} bytes")
        if residual != 1 and shift:
            raise MalformedRecord(f"[FAC-01] {rec.name!r}: residual_shift without an exact residual")
        if residual == 2:
            rq = fac_scale_fields(rq, rmode, rgroup, p[12:16], f"{rec.name!r} residual")
        elif rq or rmode or rgroup or p[12:16] != b"\0\0\0\0":
            raise MalformedRecord(f"[FAC-01] {rec.name!r}: residual quantizer fields must be zero")
        modes = [struct.unpack_from("<III", p, 40 + 12 * k) for k in range(order)]
        factors = []
        for f in range(F):
            at = 40 + 12 * order + 12 * f
            enc, qz, mode, res, group = struct.unpack_from("<BBBBI", p, at)
            if res:
                raise MalformedRecord(f"[RSV-01] {rec.name!r}: reserved byte of FactorEntry {f}")
            if enc == 0:
                if qz or mode or group or p[at + 8:at + 12] != b"\0\0\0\0":
                    raise MalformedRecord(f"[FAC-01] {rec.name!r}: float factor {f} has non-zero fields")
                factors.append(None)
            elif enc == 1:
                factors.append(fac_scale_fields(qz, mode, group, p[at + 8:at + 12], f"factor {f}"))
            else:
                raise MalformedRecord(f"[FAC-01] {rec.name!r}: factor {f} encoding {enc}")
        return dict(fz=fz, modes=modes, residual=residual, shift=shift, rq=rq, factors=factors)

    @staticmethod
    def factor_shapes(fz: int, modes) -> list:
        # low-rank: U [rows, r], V [r, cols]; Tucker: G [r_1..r_d], U_k [n_k, r_k];
        # tensor-train: G_k [r_{k-1}, m_k, n_k, r_k], r_0 = 1
        if fz == FAC_LOW_RANK:
            (rows, cols, r), = modes
            return [(rows, r), (r, cols)]
        if fz == FAC_TUCKER:
            return [tuple(m[2] for m in modes)] + [(m[0], m[2]) for m in modes]
        return [(1 if k == 0 else modes[k - 1][2], m, n, r) for k, (m, n, r) in enumerate(modes)]

    @staticmethod
    def check(rec: TensorRecord) -> None:
        P = FactorsRecord.params(rec)                                            # [FAC-01]
        if rec.dtype not in FAC_FLOAT_DTYPES:                                    # [FAC-02]
            raise MalformedRecord(f"[FAC-02] {rec.name!r}: dtype {DTYPES[rec.dtype].name}")
        width = 8 * DTYPES[rec.dtype].itemsize
        if P["shift"] >= width:
            raise MalformedRecord(f"[FAC-02] {rec.name!r}: residual_shift {P['shift']}")
        rows, cols = fac_matrix_view(rec.shape)                                  # [FAC-03] [FAC-04]
        n, modes, fz = rows * cols, P["modes"], P["fz"]
        if n < 1:
            raise MalformedRecord(f"[FAC-03] {rec.name!r}: no elements")
        if fz == FAC_LOW_RANK:
            if modes[0][:2] != (rows, cols):
                raise MalformedRecord(f"[FAC-03] {rec.name!r}: modes are not {rows} x {cols}")
            bounds = [min(rows, cols)]
        elif fz == FAC_TUCKER:
            if any(m[1] != 0 or m[0] < 1 for m in modes) or fac_prod(m[0] for m in modes) != n:
                raise MalformedRecord(f"[FAC-03] {rec.name!r}: Tucker modes do not reshape {n}")
            bounds = [m[0] for m in modes]
        else:
            if (any(m[0] < 1 or m[1] < 1 for m in modes) or fac_prod(m[0] for m in modes) != rows
                    or fac_prod(m[1] for m in modes) != cols):
                raise MalformedRecord(f"[FAC-03] {rec.name!r}: TT modes do not reshape {rows} x {cols}")
            P_ = [m[0] * m[1] for m in modes]
            d = len(modes)
            bounds = [min(fac_prod(P_[:k + 1]), fac_prod(P_[k + 1:])) for k in range(d - 1)] + [1]
        for k, (m, b) in enumerate(zip(modes, bounds)):
            lo = b if fz == FAC_TT and k == len(modes) - 1 else 1                 # r_d = 1
            if not lo <= m[2] <= b:
                raise MalformedRecord(f"[FAC-04] {rec.name!r}: rank {m[2]} of entry {k} not in {lo}..{b}")
        want = []                                                                # [FAC-05]
        for shp, q in zip(FactorsRecord.factor_shapes(fz, modes), P["factors"]):
            want.append(("factor", shp, FAC_FLOAT_DTYPES if q is None else FAC_LEVEL_DTYPES))
            if q is not None and q["scale_mode"] != 0:
                want.append(("scales", (fac_scale_count(q, *fac_matrix_view(shp)),), {2: 0}))
        if P["residual"] == 1:
            want.append(("remainders", (n,), {{8: 11, 16: 12, 32: 13, 64: 14}[width]: 0}))
        elif P["residual"] == 2:
            want.append(("residual levels", (n,), FAC_LEVEL_DTYPES))
            if P["rq"]["scale_mode"] != 0:
                want.append(("residual scales", (fac_scale_count(P["rq"], rows, cols),), {2: 0}))
        if len(rec.streams) != len(want):
            raise MalformedRecord(f"[FAC-05] {rec.name!r}: {len(rec.streams)} streams, {len(want)} expected")
        for s, (what, shp, dts) in zip(rec.streams, want):
            if s.stream_dtype not in dts or tuple(s.stream_shape) != tuple(shp):
                raise MalformedRecord(f"[FAC-05] {rec.name!r}: the {what} stream is not {shp}")
        if bool(rec.record_flags & LOSSY) != (P["residual"] != 1):              # [FAC-06]
            raise MalformedRecord(f"[FAC-06] {rec.name!r}: lossy flag vs residual {P['residual']}")

    @staticmethod
    def values(data, stream: Stream, q, shape, what) -> np.ndarray:
        """§4 step 1: a factor (or the residual) as exact binary64 values."""
        if q is None:                                          # encoding 0: float values
            name = FAC_FLOAT_DTYPES[stream.stream_dtype]
            if name == "bfloat16":
                v = (np.frombuffer(data, "<u2").astype(np.uint32) << 16).view("<f4").astype(np.float64)
            else:
                v = np.frombuffer(data, {"float64": "<f8", "float32": "<f4", "float16": "<f2"}[name]).astype(np.float64)
            if not np.all(np.isfinite(v)):                                       # [FAC-08]
                raise CorruptPayload(f"[FAC-08] {what}: a factor value is not finite")
            return v.reshape(shape)
        z = np.frombuffer(data, FAC_LEVEL_DTYPES[stream.stream_dtype]).astype(np.int64)
        k = (z >> 1) ^ -(z & 1)                                # zigzag decode (quantization.md §2)
        if k.size and np.abs(k).max() > 1 << 23:                                 # [FAC-07]
            raise CorruptPayload(f"[FAC-07] {what}: a level exceeds 2^23")
        rows, cols = fac_matrix_view(shape)
        k = k.reshape(rows, cols)
        m = k.copy()
        if q["quantizer"] == 1:                                # dependent: the 4-state machine, per row
            for i in range(rows):
                state = 0
                for j in range(cols):
                    a, b = state >> 1, state & 1
                    m[i, j] = 2 * k[i, j] - a * (1 if k[i, j] > 0 else -1 if k[i, j] < 0 else 0)
                    state = ((b ^ (int(k[i, j]) & 1)) << 1) | a
        S = q["scales"]                                        # binary64 scale of every element
        return (m.astype(np.float64) * S).reshape(shape)      # one exact multiplication

    @staticmethod
    def scales(q, data, rows, cols, what) -> np.ndarray:
        if q["scale_mode"] == 0:
            return np.full((rows, cols), np.float64(np.float32(q["scale"])))
        s = np.frombuffer(data, "<f4").astype(np.float64)
        if not np.all(np.isfinite(s) & (s > 0)):                                 # [FAC-07]
            raise CorruptPayload(f"[FAC-07] {what}: a scale is not positive and finite")
        if q["scale_mode"] == 1:
            return np.repeat(s, cols).reshape(rows, cols)
        g = q["group_size"]
        per_row = -(-cols // g)
        col_group = np.arange(cols) // g
        return s.reshape(rows, per_row)[:, col_group]

    @staticmethod
    def contract(fz, modes, V) -> np.ndarray:
        """§4 step 2: R in binary64, row-major. s = t_0; s = s + t_a for a = 1, 2, ..."""
        if fz == FAC_LOW_RANK:                 # R[i, j] = sum_a U[i, a] * V[a, j]
            U, W = V
            R = None
            for a in range(U.shape[1]):
                t = U[:, a][:, None] * W[a, :][None, :]
                R = t if R is None else R + t
            return R.reshape(-1)
        if fz == FAC_TUCKER:                   # X_k = X_{k-1} x_k U_k, k = 1..d
            X = V[0]
            for k, U in enumerate(V[1:]):
                Xk = np.moveaxis(X, k, -1)     # mode k last: [..., r_k]
                acc = None
                for a in range(U.shape[1]):
                    t = Xk[..., a][..., None] * U[:, a]          # [..., n_k]
                    acc = t if acc is None else acc + t
                X = np.moveaxis(acc, -1, k)
            return np.ascontiguousarray(X).reshape(-1)
        # tensor-train: X_1[p, b] = G_1[0, i, j, b]; X_k[q*P_k + p, b] = sum_a X_{k-1}[q, a] G_k[a, i, j, b]
        X = V[0].reshape(-1, V[0].shape[3])
        for G in V[1:]:
            Gp = G.reshape(G.shape[0], -1, G.shape[3])           # [a, p = i*n_k + j, b]
            acc = None
            for a in range(G.shape[0]):
                t = X[:, a][:, None, None] * Gp[a][None, :, :]   # [q, p, b]
                acc = t if acc is None else acc + t
            X = acc.reshape(-1, G.shape[3])
        ms, ns = [m[0] for m in modes], [m[1] for m in modes]
        d = len(modes)
        X = X.reshape([x for k in range(d) for x in (ms[k], ns[k])])   # (i_1, j_1, ..., i_d, j_d)
        X = X.transpose(list(range(0, 2 * d, 2)) + list(range(1, 2 * d, 2)))
        return np.ascontiguousarray(X).reshape(-1)

    @staticmethod
    def round_to(R, dtype_name) -> np.ndarray:
        """quantization.md §4.2: one rounding from binary64, to nearest even, saturating at the
        largest finite value; R is finite here. Returns the bit patterns as uint64."""
        if dtype_name == "float64":
            return R.view(np.uint64).copy()
        E, M, maxf = FAC_FORMATS[dtype_name]
        emin = 2 - (1 << (E - 1))                              # 1 - bias
        sign = np.signbit(R).astype(np.uint64)
        a = np.abs(R)
        _, e = np.frexp(a)                                     # floor(log2 a) = e - 1 for a > 0
        ulp = np.maximum(e - 1, emin) - M                      # exponent of the last mantissa bit
        r = np.ldexp(np.rint(np.ldexp(a, -ulp)), ulp)          # exact scaling, one rounding (ties even)
        r = np.minimum(r, maxf)                                # saturate
        normal = r >= np.ldexp(1.0, emin)
        _, e2 = np.frexp(r)
        expo = np.where(normal, e2 - 1 - emin + 1, 0).astype(np.uint64)
        mant = np.where(normal, np.ldexp(r, M - (e2 - 1)) - (1 << M), np.ldexp(r, M - emin))
        return (sign << np.uint64(E + M)) | (expo << np.uint64(M)) | mant.astype(np.uint64)

    @staticmethod
    def remainder(c, stored, width, z, dtype_name, what) -> np.ndarray:
        """bands.md, *The remainder band*, with c the bit patterns of round(R)."""
        E, M, _ = FAC_FORMATS[dtype_name]
        order = np.argsort((c >> np.uint64(M)) & np.uint64((1 << E) - 1), kind="stable")
        r = np.empty(c.size, np.uint64)
        r[order] = stored                                      # remainder order -> element order
        w = width - z
        mask = np.uint64((1 << w) - 1) if w < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
        if z and r.size and r.max() > mask:                                       # [FAC-10]
            raise CorruptPayload(f"[FAC-10] {what}: a remainder does not fit {w} bits")

        def o(p):                                              # order-preserving image, own inverse
            return p ^ ((p >> np.uint64(w - 1)) * np.uint64((1 << (w - 1)) - 1))
        d = (r >> np.uint64(1)) ^ ((r & np.uint64(1)) * mask)  # zigzag decode, mod 2^w'
        return o((o(c >> np.uint64(z)) + d) & mask) << np.uint64(z)

    @staticmethod
    def decode(f: WcodecFile, t: int, rec: TensorRecord) -> bytearray:
        P = FactorsRecord.params(rec)
        name, what = DTYPES[rec.dtype].name, f"tensor {rec.name!r}"
        rows, cols = fac_matrix_view(rec.shape)
        data = [bytes(decode_stream(f, t, s, st)) for s, st in enumerate(rec.streams)]
        s = 0
        V = []
        for shp, q in zip(FactorsRecord.factor_shapes(P["fz"], P["modes"]), P["factors"]):
            factor_stream = s
            if q is not None:
                q = dict(q)
                if q["scale_mode"] != 0:
                    s += 1
                q["scales"] = FactorsRecord.scales(q, data[s], *fac_matrix_view(shp), what)
            V.append(FactorsRecord.values(data[factor_stream], rec.streams[factor_stream], q, shp, what))
            s += 1
        with np.errstate(over="ignore", invalid="ignore"):
            R = FactorsRecord.contract(P["fz"], P["modes"], V)
            if not np.all(np.isfinite(R)):                                       # [FAC-09]
                raise CorruptPayload(f"[FAC-09] {what}: the reconstruction is not finite")
            if P["residual"] == 2:
                q = dict(P["rq"])
                q["scales"] = FactorsRecord.scales(q, data[s + 1] if q["scale_mode"] else b"", rows, cols, what)
                D = FactorsRecord.values(data[s], rec.streams[s], q, (rows, cols), what).reshape(-1)
                R = R + D                                      # one binary64 addition
                if not np.all(np.isfinite(R)):                                   # [FAC-09]
                    raise CorruptPayload(f"[FAC-09] {what}: the reconstruction is not finite")
        bits = FactorsRecord.round_to(R, name)
        width = 8 * DTYPES[rec.dtype].itemsize
        if P["residual"] == 1:
            stored = np.frombuffer(data[s], f"<u{width // 8}").astype(np.uint64)
            bits = FactorsRecord.remainder(bits, stored, width, P["shift"], name, what)
        return bytearray(bits.astype(f"<u{width // 8}").tobytes())


RECORD_KINDS[5] = FactorsRecord


def decode_tensor(f: WcodecFile, t: int) -> bytearray:
    rec = f.index.tensors[t]
    data = RECORD_KINDS[rec.record_kind].decode(f, t, rec)
    # §7.3 the decoded bytes are elements x itemsize little-endian bytes in row-major order.
    assert len(data) == rec.elements * DTYPES[rec.dtype].itemsize
    # a band prefix (--bands K < N) was checked against its own prefix_sha256 [BND-07]
    if rec.sha256 is not None and not isinstance(data, BndPrefix) \
            and hashlib.sha256(data).digest() != rec.sha256:                    # [REC-09]
        raise DigestMismatch(f"[REC-09] tensor {rec.name!r}: SHA-256 of the decoded bytes disagrees")
    return data


def decode_all(buf):
    """Open the file and decode every tensor, in index order. Returns (file, [tensor bytes])."""
    f = open_wcodec(buf)
    tensors = [decode_tensor(f, t) for t in range(len(f.index.tensors))]
    # [BLK-03] optional blocks are never read. [LAY-03] requires checking only the padding after
    # blocks a decoder reads; the whole file is in memory, so we check the rest too (allowed: every
    # padding byte must be zero), and reject a_LAY-03_optional_block_padding, which may be rejected.
    for k, b in enumerate(f.index.blocks):
        if b.block_type != CHUNK:
            end = b.offset + BLOCK_OVERHEAD + b.payload_length
            check_padding(buf, end, padding_end(f.index.blocks, k, f.footer.index_offset), f"block {k}")
    return f, tensors


# ================================================================ output: safetensors
def safetensors_bytes(f: WcodecFile, tensors: list) -> list:
    """8-byte LE header length N, N bytes of compact UTF-8 JSON padded with spaces to N % 8 == 0,
    then the tensor data concatenated. `__metadata__` holds the string entries (value_type 1)
    whose keys do not start with `wcodec.`, and is omitted when empty."""
    def dump(x):
        return json.dumps(x, separators=(",", ":"), ensure_ascii=False)
    items = []
    meta = {m.key: m.value for m in f.index.metadata
            if m.value_type == 1 and not m.key.startswith("wcodec.")}
    if meta:
        items.append(dump("__metadata__") + ":" + dump(meta))
    offset = 0
    for rec, data in zip(f.index.tensors, tensors):
        entry = {"dtype": DTYPES[rec.dtype].safetensors, "shape": list(rec.shape),
                 "data_offsets": [offset, offset + len(data)]}
        items.append(dump(rec.name) + ":" + dump(entry))
        offset += len(data)
    header = ("{" + ",".join(items) + "}").encode("utf-8")
    header += b" " * (-len(header) % 8)
    return [struct.pack("<Q", len(header)), header, *tensors]


def main(argv: list) -> int:
    global BND_PREFIX
    if len(argv) == 5 and argv[3] == "--bands" and argv[4].isdigit() and int(argv[4]) >= 1:
        BND_PREFIX, argv = int(argv[4]), argv[:3]   # band records: only their first K bands
    if len(argv) != 3:
        print("usage: python edu_decoder.py INPUT OUTPUT [--bands K]", file=sys.stderr)
        return 2
    src, dst = argv[1], argv[2]
    try:
        with open(src, "rb") as fh:
            buf = memoryview(fh.read())      # §1.6: the file is read as a whole byte string
        f, tensors = decode_all(buf)
        parts = safetensors_bytes(f, tensors)
    except WcodecError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # not a format error (I/O, memory, a bug here): still one line, no traceback
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    # Everything decoded and checked: only now write OUTPUT (via a temporary file, then rename).
    tmp = f"{dst}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as out:
            for p in parts:
                out.write(p)
        os.replace(tmp, dst)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
