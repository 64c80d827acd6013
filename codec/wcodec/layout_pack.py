"""struct-based builders for the structures the writer emits once per block or per tensor: the same
bytes as the construct declarations of layout.py (which stay the spec's mirror and what the reader
parses with), at a fraction of the cost. tests/test_layout_pack.py checks them against construct.

Building a BlockHeader with construct's compiled builder costs ~15 us and a TensorRecord ~70 us;
the writer's main thread builds one header, trailer and index entry per chunk and one record per
tensor, and every microsecond it holds the GIL is a microsecond the encoder threads may wait."""

from __future__ import annotations

import struct

from . import layout as L

BLOCK_HEADER = struct.Struct("<HHIIIQ")    # §4 BlockHeader
BLOCK_TRAILER = struct.Struct("<I")        # §4 BlockTrailer
BLOCK_ENTRY = struct.Struct("<QQHHI")      # §6.2 BlockEntry
_NAME_LEN = struct.Struct("<H")
_RECORD_FIXED = struct.Struct("<BBBB")     # dtype, record_kind, record_flags, rank
_ERROR = struct.Struct("<ddd")             # §6.4 ErrorStats
_U32 = struct.Struct("<I")
_U8 = struct.Struct("<B")
_STREAM_HEAD = struct.Struct("<BB")        # stream_dtype, stream_rank
_U64 = struct.Struct("<Q")
_CODEC_HEAD = struct.Struct("<HH")         # codec_id, config_length


def block_header(block_type: int, block_flags: int, tensor_id: int, stream_id: int,
                 chunk_id: int, payload_length: int) -> bytes:
    return BLOCK_HEADER.pack(block_type, block_flags, tensor_id, stream_id, chunk_id,
                             payload_length)


def block_trailer(block_crc32c: int) -> bytes:
    return BLOCK_TRAILER.pack(block_crc32c)


def block_entry(offset: int, payload_length: int, block_type: int, reserved: int,
                block_crc32c: int) -> bytes:
    return BLOCK_ENTRY.pack(offset, payload_length, block_type, reserved, block_crc32c)


def _sized(data, length: int, what: str) -> bytes:
    data = bytes(data)
    if len(data) != length:
        raise ValueError(f"{what}: {len(data)} bytes, the length field says {length}")
    return data


def _count(items, count: int, what: str) -> list:
    items = list(items)
    if len(items) != count:
        raise ValueError(f"{what}: {len(items)} items, the count field says {count}")
    return items


def tensor_record(r: dict) -> bytes:
    """A §6.4 TensorRecord from the same dict that layout.TensorRecord.build takes."""
    flags = r["record_flags"]
    shape = _count(r["shape"], r["rank"], "shape")
    out = [_NAME_LEN.pack(r["name_length"]), _sized(r["name"], r["name_length"], "name"),
           _RECORD_FIXED.pack(r["dtype"], r["record_kind"], flags, r["rank"]),
           struct.pack(f"<{len(shape)}Q", *shape)]
    if flags & L.FLAG_HAS_SHA256:
        out.append(_sized(r["sha256"], 32, "sha256"))
    if flags & L.FLAG_LOSSY:
        e = r["error"]
        out.append(_ERROR.pack(e["max_abs_error"], e["mean_squared_error"], e["signal_power"]))
    out += [_U32.pack(r["params_length"]), _sized(r["params"], r["params_length"], "params"),
            _U8.pack(r["stream_count"])]
    for s in _count(r["streams"], r["stream_count"], "streams"):
        sshape = _count(s["stream_shape"], s["stream_rank"], "stream_shape")
        out += [_STREAM_HEAD.pack(s["stream_dtype"], s["stream_rank"]),
                struct.pack(f"<{len(sshape)}Q", *sshape), _U64.pack(s["chunk_elements"]),
                _U8.pack(s["codec_count"])]
        for c in _count(s["codecs"], s["codec_count"], "codecs"):
            out += [_CODEC_HEAD.pack(c["codec_id"], c["config_length"]),
                    _sized(c["config"], c["config_length"], "config")]
        blocks = _count(s["chunk_blocks"], s["chunk_count"], "chunk_blocks")
        out += [_U32.pack(s["chunk_count"]), struct.pack(f"<{len(blocks)}I", *blocks)]
        if flags & L.FLAG_HAS_CHUNK_CRC32C:
            crcs = _count(s["chunk_crc32c"], s["chunk_count"], "chunk_crc32c")
            out.append(struct.pack(f"<{len(crcs)}I", *crcs))
    return b"".join(out)
