"""The container's structures, declared with construct: one struct per table of spec/container.md,
with the spec's field names. Parsing checks only shapes of bytes; the meaning of the values (limits,
cross-references, layout) is checked by `reader.py` in the order the spec gives.
"""

from __future__ import annotations

from construct import (
    Array,
    Bytes,
    Const,
    Default,
    Float64l,
    If,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Struct,
    this,
)

MAGIC = b"\x89WCD\r\n\x1a\n"
FOOTER_MAGIC = b"WCDINDEX"
VERSION_MAJOR = 1
VERSION_MINOR = 0
NONE_ID = 0xFFFFFFFF

HEADER_SIZE = 32
FOOTER_SIZE = 32
BLOCK_HEADER_SIZE = 24
BLOCK_TRAILER_SIZE = 4
BLOCK_OVERHEAD = BLOCK_HEADER_SIZE + BLOCK_TRAILER_SIZE
BLOCK_ENTRY_SIZE = 24
INDEX_HEADER_SIZE = 16

# §4 block types; bit 15 marks a required type
REQUIRED_BIT = 0x8000
BLOCK_CHUNK = 0x8001
BLOCK_INDEX = 0x8002
KNOWN_BLOCK_TYPES = {BLOCK_CHUNK: "CHUNK", BLOCK_INDEX: "INDEX"}

# §6.4 record_flags
FLAG_HAS_SHA256 = 0x01
FLAG_LOSSY = 0x02
FLAG_HAS_CHUNK_CRC32C = 0x08  # bit 2 stays reserved (vector x_REC-10_flags_bit2)
KNOWN_RECORD_FLAGS = FLAG_HAS_SHA256 | FLAG_LOSSY | FLAG_HAS_CHUNK_CRC32C

# §3 FileHeader. `magic` is not a Const: a wrong magic is BadMagic, checked before parsing.
FileHeader = Struct(
    "magic" / Bytes(8),
    "version_major" / Int16ul,
    "version_minor" / Int16ul,
    "required_features" / Int32ul,
    "optional_features" / Int32ul,
    "alignment_log2" / Int8ul,
    "reserved" / Bytes(7),
    "header_crc32c" / Int32ul,
)

# §4 BlockHeader and BlockTrailer
BlockHeader = Struct(
    "block_type" / Int16ul,
    "block_flags" / Int16ul,
    "tensor_id" / Int32ul,
    "stream_id" / Int32ul,
    "chunk_id" / Int32ul,
    "payload_length" / Int64ul,
)
BlockTrailer = Struct("block_crc32c" / Int32ul)

# §5.1 Footer
Footer = Struct(
    "index_offset" / Int64ul,
    "index_block_size" / Int64ul,
    "footer_magic" / Bytes(8),
    "reserved" / Int32ul,
    "footer_crc32c" / Int32ul,
)

# §6.1 IndexHeader
IndexHeader = Struct(
    "tensor_count" / Int32ul,
    "block_count" / Int32ul,
    "metadata_count" / Int32ul,
    "reserved" / Int32ul,
)

# §6.2 BlockEntry
BlockEntry = Struct(
    "offset" / Int64ul,
    "payload_length" / Int64ul,
    "block_type" / Int16ul,
    "reserved" / Int16ul,
    "block_crc32c" / Int32ul,
)

# §6.3 MetadataEntry
MetadataEntry = Struct(
    "key_length" / Int16ul,
    "key" / Bytes(this.key_length),
    "value_type" / Int8ul,
    "value_length" / Int32ul,
    "value" / Bytes(this.value_length),
)

# §6.4 ErrorStats
ErrorStats = Struct(
    "max_abs_error" / Float64l,
    "mean_squared_error" / Float64l,
    "signal_power" / Float64l,
)

# §6.4 CodecSpec
CodecSpec = Struct(
    "codec_id" / Int16ul,
    "config_length" / Int16ul,
    "config" / Bytes(this.config_length),
)

# §6.4 Stream
Stream = Struct(
    "stream_dtype" / Int8ul,
    "stream_rank" / Int8ul,
    "stream_shape" / Array(this.stream_rank, Int64ul),
    "chunk_elements" / Int64ul,
    "codec_count" / Int8ul,
    "codecs" / Array(this.codec_count, CodecSpec),
    "chunk_count" / Int32ul,
    "chunk_blocks" / Array(this.chunk_count, Int32ul),
    # the enclosing TensorRecord's flag (this._ is the record); Default: builders that predate
    # the field may leave it out when the flag is clear
    "chunk_crc32c" / Default(If(this._.record_flags & FLAG_HAS_CHUNK_CRC32C,
                                Array(this.chunk_count, Int32ul)), None),
)

# §6.4 TensorRecord
TensorRecord = Struct(
    "name_length" / Int16ul,
    "name" / Bytes(this.name_length),
    "dtype" / Int8ul,
    "record_kind" / Int8ul,
    "record_flags" / Int8ul,
    "rank" / Int8ul,
    "shape" / Array(this.rank, Int64ul),
    "sha256" / If(this.record_flags & FLAG_HAS_SHA256, Bytes(32)),
    "error" / If(this.record_flags & FLAG_LOSSY, ErrorStats),
    "params_length" / Int32ul,
    "params" / Bytes(this.params_length),
    "stream_count" / Int8ul,
    "streams" / Array(this.stream_count, Stream),
)

ALL_STRUCTS = {
    "FileHeader": FileHeader,
    "BlockHeader": BlockHeader,
    "BlockTrailer": BlockTrailer,
    "Footer": Footer,
    "IndexHeader": IndexHeader,
    "BlockEntry": BlockEntry,
    "MetadataEntry": MetadataEntry,
    "ErrorStats": ErrorStats,
    "CodecSpec": CodecSpec,
    "Stream": Stream,
    "TensorRecord": TensorRecord,
}

_ = Const  # re-exported for tests that build deliberately broken structures


def align_up(x: int, alignment: int) -> int:
    return (x + alignment - 1) // alignment * alignment
