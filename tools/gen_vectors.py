#!/usr/bin/env python3
"""Deterministic generator of the wcodec conformance vectors (conformance/vectors/*.wcd) and their
manifest (conformance/manifest.json).

    python tools/gen_vectors.py            # write missing vectors, check existing ones, write manifest
    python tools/gen_vectors.py --check    # change nothing; exit 1 if anything differs
    python tools/gen_vectors.py --out DIR --manifest PATH   # build elsewhere (the determinism test)

Vectors are write-once: once published, a vector's bytes never change (the generator refuses to
overwrite a differing file without --force, and tests/test_conformance.py regenerates everything
and compares it byte for byte). New record kinds, codecs or rules get a NEW batch function appended
to BATCHES below, with new vector ids; never edit an earlier batch in a way that changes its bytes.
Each vector draws its data from an RNG seeded by its own id, so adding vectors changes nothing else.

Naming (PngSuite style): valid files `v_<feature>.wcd`; invalid files `x_<RULE>_<defect>.wcd` with
exactly one defect, the rule it breaks first; files a decoder MAY reject (between the "must
support" and the "format maximum" columns of spec §10, or defects only a decoder that reads more
than it must can see) `a_<RULE>_<what>.wcd`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import vectorlib as V  # noqa: E402
import numpy as np  # noqa: E402
from wcodec import layout as LW  # noqa: E402
from vectorlib import Block, File, chain, rng_for, sample  # noqa: E402

SCHEMA = "wcodec.conformance.manifest/1"
FORMAT_VERSION = "1.0"
ROOT = HERE.parent
DEFAULT_OUT = ROOT / "conformance" / "vectors"
DEFAULT_MANIFEST = ROOT / "conformance" / "manifest.json"
ERROR_CLASSES = ["BadMagic", "UnsupportedVersion", "UnsupportedFeature", "Truncated",
                 "ChecksumMismatch", "LayoutError", "MalformedRecord", "LimitExceeded",
                 "CorruptPayload", "DigestMismatch", "UnresolvedReference"]


@dataclass
class Vector:
    id: str
    expected: str                 # valid | invalid | acceptable
    data: bytes
    rules: list
    features: list
    description: str
    error_classes: list = field(default_factory=list)
    tensors: list | None = None   # [Expect] for valid / acceptable
    note: str | None = None
    batch: str = ""


class Suite:
    def __init__(self):
        self.vectors: list[Vector] = []
        self.batch = ""

    def _add(self, v: Vector) -> None:
        assert all(v.id != o.id for o in self.vectors), v.id
        v.batch = self.batch
        prefix = {"valid": "v_", "invalid": "x_", "acceptable": "a_"}[v.expected]
        assert v.id.startswith(prefix), v.id
        if v.expected != "valid":
            rule = v.id.split("_")[1]
            assert rule in v.rules, (v.id, v.rules)
            assert v.error_classes and all(c in ERROR_CLASSES for c in v.error_classes), v.id
        self.vectors.append(v)

    def valid(self, vid, f: File, rules, features, description):
        data = f.build()
        self._add(Vector(vid, "valid", data, list(rules), list(features), description,
                         tensors=list(f.expect)))

    def invalid(self, vid, data, error_class, rules, features, description, *, also=(),
                note=None):
        if isinstance(data, File):
            data = data.build()
        self._add(Vector(vid, "invalid", data, list(rules), list(features), description,
                         error_classes=[error_class, *also], note=note))

    def acceptable(self, vid, f: File, error_class, rules, features, description, note):
        data = f.build()
        self._add(Vector(vid, "acceptable", data, list(rules), list(features), description,
                         error_classes=[error_class], tensors=list(f.expect), note=note))


# ================================================================================================
# shared building blocks
# ================================================================================================
def base(alignment_log2: int = 6) -> File:
    """The file most invalid vectors start from (it is also published as v_base): a float32
    tensor `w` [4, 8] in two chunks through planes > lanes(4), an int8 tensor `b` [5] through
    bytes, and one metadata string. Every block is followed by padding (A = 64)."""
    f = File(alignment_log2)
    f.meta_str("note", "conformance base file")
    f.add_plain("w", "float32", [4, 8], rng=rng_for("base", "w"),
                chain_=chain("planes+lanes", "float32"), chunk_elements=16)
    f.add_plain("b", "int8", [5], rng=rng_for("base", "b"), chain_=chain("bytes"))
    return f


def zbase(methods=("zstd", "raw", "raw", "raw")) -> File:
    """One float32 tensor `z` [256] through planes > lanes(4) with explicit lane methods (lane 0,
    the exponent plane, zstd): the start of the zstd and lanes defects."""
    f = File(6)
    f.add_plain("z", "float32", [256], rng=rng_for("zbase", "z"),
                chain_=chain("planes+lanes", "float32", methods=list(methods)))
    return f


def parse_lanes(payload: bytes, lane_count: int) -> list[list]:
    heads = [struct.unpack_from("<BI", payload, 5 * j) for j in range(lane_count)]
    pos, out = 5 * lane_count, []
    for m, n in heads:
        out.append([m, payload[pos:pos + n]])
        pos += n
    assert pos == len(payload)
    return out


def raw_lanes(payload_lanes) -> bytes:
    return V.lanes_payload([(m, b) for m, b in payload_lanes])


def rec_offset(f: File, t: int) -> int:
    """Offset of tensor record t inside the INDEX payload (after build())."""
    parts = f.layout["index_parts"]
    n_blocks = sum(1 for b in f.blocks if b.listed)
    before = 1 + n_blocks + len(f.metadata) + t
    return sum(parts[:before])


def set_at(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


ALL_DTYPES = list(V.DTYPES)


# ================================================================================================
# batch 1.0: container, plain records, codecs bytes / planes / lanes
# ================================================================================================
def batch_1_0(s: Suite) -> None:
    s.batch = "1.0"
    _valid_1_0(s)
    _header_1_0(s)
    _footer_index_1_0(s)
    _layout_blocks_1_0(s)
    _metadata_1_0(s)
    _records_1_0(s)
    _codecs_1_0(s)
    _limits_1_0(s)
    _acceptable_1_0(s)


LOSSLESS = ["REC-10", "PLN-01", "REC-09"]
CONTAINER = ["HDR-06", "LAY-01", "LAY-02", "LAY-03", "LAY-05", "BLK-01", "IDX-03", "REC-07",
             "REC-08"]


def _valid_1_0(s: Suite) -> None:
    s.valid("v_base", base(), [*LOSSLESS, *CONTAINER, "CHN-01", "LAN-05", "META-01"],
            ["record:plain", "dtype:float32", "dtype:int8", "codec:planes", "codec:lanes",
             "codec:bytes", "chunking", "metadata"],
            "The base file of the invalid vectors: float32 `w` [4,8] in two chunks through "
            "planes > lanes(4), int8 `b` [5] through bytes, one metadata string.")

    # -- every dtype through every chain ------------------------------------------------------
    for dt in ALL_DTYPES:
        f = File(6)
        rng = rng_for("v_dtype", dt)
        f.add_plain("bytes", dt, [37], rng=rng, chain_=chain("bytes"))
        f.add_plain("planes", dt, [37], rng=rng, chain_=chain("planes"))
        f.add_plain("bytes+lanes", dt, [37], rng=rng, chain_=chain("bytes+lanes", dt))
        f.add_plain("planes+lanes", dt, [4, 37], rng=rng, chain_=chain("planes+lanes", dt),
                    chunk_elements=64)
        s.valid(f"v_dtype_{dt}", f, [*LOSSLESS, "REC-02", "BYT-01", "PLN2-01", "CHN-01",
                                     "CHN-02", "LAN-02", "LAN-03"],
                [f"dtype:{dt}", "codec:bytes", "codec:planes", "codec:lanes", "record:plain",
                 "chunking"],
                f"{dt}: the same kind of data through bytes, planes, bytes > lanes and "
                "planes > lanes (3 chunks), special bit patterns (NaN payloads, -0, subnormals, "
                "extremes) first.")

    # -- the planes worked example of spec/codecs/planes.md --------------------------------------
    f = File(6)
    data = struct.pack("<HH", 0x3F80, 0xC000)
    f.add_plain("example", "bfloat16", [2], data, chain_=chain("planes"))
    assert f.blocks[0].payload == bytes.fromhex("7F800001")
    s.valid("v_planes_worked_example", f, ["PLN2-01", *LOSSLESS],
            ["codec:planes", "dtype:bfloat16"],
            "The worked example of codecs/planes.md: bfloat16 [1.0, -2.0] is stored as 7F 80 00 01.")

    # -- lane methods ---------------------------------------------------------------------------
    f = File(6)
    f.add_plain("raw", "uint16", [64], rng=rng_for("v_lanes_raw"),
                chain_=chain("bytes+lanes", "uint16", methods="raw"))
    s.valid("v_lanes_raw", f, ["LAN-01", "LAN-03", "LAN-05", *LOSSLESS],
            ["codec:lanes", "lane:raw"], "uint16 through bytes > lanes(2), both lanes raw.")

    f = File(6)
    r = rng_for("v_lanes_fill")
    up = ((r.standard_normal(100) * 0.05).astype("<f4").view("<u4") & 0xFFFF0000).astype("<u4")
    up[::2] &= 0x7FFFFFFF    # positive and negative values
    f.add_plain("upcast", "float32", [100], up.tobytes(),
                chain_=chain("planes+lanes", "float32", methods=["zstd", "raw", "fill", "raw"]))
    f.add_plain("const", "uint32", [50], struct.pack("<I", 0xDEADBEEF) * 50,
                chain_=chain("planes+lanes", "uint32", methods="fill"))
    s.valid("v_lanes_fill", f, ["LAN-05", "LAN-03", *LOSSLESS],
            ["codec:lanes", "lane:fill", "lane:zstd", "lane:raw"],
            "fill lanes: a float32 tensor upcast from bfloat16 (its plane 2 is constant) and a "
            "constant uint32 tensor whose four lanes are all fill.")

    f = File(6)
    f.add_plain("zstd", "float32", [2048], rng=rng_for("v_lanes_zstd"),
                chain_=chain("planes+lanes", "float32", methods="zstd"))
    s.valid("v_lanes_zstd", f, ["LAN-06", "LAN-03", *LOSSLESS],
            ["codec:lanes", "lane:zstd"],
            "float32 [2048] through planes > lanes(4), every lane zstd (content size declared).")

    f = File(6)
    r = rng_for("v_lanes_zstd_variants")
    low = r.integers(0, 6, 600, dtype=np.uint8).tobytes()
    f.add_plain("no_content_size", "uint8", [600], low,
                chain_=chain("bytes+lanes", "uint8", methods="zstd-nofcs"))
    f.add_plain("checksum", "uint8", [600], low[::-1],
                chain_=chain("bytes+lanes", "uint8", methods="zstd-checksum"))
    s.valid("v_lanes_zstd_variants", f, ["LAN-06", *LOSSLESS], ["codec:lanes", "lane:zstd"],
            "zstd frames without a declared content size, and with a content checksum.")

    # hand-written frames: raw and RLE blocks, every FCS field size, no FCS, several blocks
    f = File(6)
    r = rng_for("v_lanes_zstd_handmade")
    d = 300
    lanes_data = [r.integers(0, 256, d, dtype=np.uint8).tobytes(), bytes([7]) * d,
                  r.integers(0, 256, d, dtype=np.uint8).tobytes(),
                  r.integers(0, 256, d, dtype=np.uint8).tobytes()]
    frames = [
        V.zframe([("raw", lanes_data[0])], fcs=d, fcs_bytes=2),
        V.zframe([("rle", 7, d)], fcs=d, fcs_bytes=4),
        V.zframe([("raw", lanes_data[2][:100]), ("rle", lanes_data[2][100], 0),
                  ("raw", lanes_data[2][100:])], fcs=None, window_log=10),
        V.zframe([("raw", lanes_data[3][:150]), ("raw", lanes_data[3][150:])], fcs=d,
                 fcs_bytes=8, single_segment=False, window_log=10),
    ]
    data = b"".join(lanes_data)
    f.add_plain("handmade", "uint8", [4 * d], data, chain_=chain("bytes+lanes", "uint8", lanes=4,
                                                                 methods="raw"))
    f.blocks[0].payload = V.lanes_payload([(V.ZSTD, fr) for fr in frames])
    s.valid("v_lanes_zstd_handmade", f, ["LAN-06", *LOSSLESS], ["codec:lanes", "lane:zstd"],
            "Hand-written zstd frames (RFC 8878): raw and RLE blocks (one of size 0), a 2-, 4- "
            "and 8-byte Frame_Content_Size, single-segment and windowed frames, no content size.")

    f = File(6)
    pattern = rng_for("v_lanes_zstd_multiblock").integers(0, 256, 1000, dtype=np.uint8).tobytes()
    big = (pattern * 300)[:300_000]
    f.add_plain("multiblock", "uint8", [300_000], big,
                chain_=chain("bytes+lanes", "uint8", methods="zstd"))
    s.valid("v_lanes_zstd_multiblock", f, ["LAN-06", *LOSSLESS], ["codec:lanes", "lane:zstd"],
            "One 300,000-byte zstd lane: a frame of several blocks (blocks hold at most 128 KiB).")

    f = File(6)
    f.add_plain("one_lane", "float32", [64], rng=rng_for("v_lanes_count", "1"),
                chain_=chain("planes+lanes", "float32", lanes=1, methods="zstd"))
    f.add_plain("three_lanes", "int16", [30], rng=rng_for("v_lanes_count", "3"),
                chain_=chain("bytes+lanes", "int16", lanes=3, methods=["raw", "zstd", "raw"]))
    r = rng_for("v_lanes_count", "16u8")
    lanes16 = b"".join(bytes([j]) * 4 if j % 4 == 1 else
                       r.integers(0, 256, 4, dtype=np.uint8).tobytes() for j in range(16))
    f.add_plain("sixteen_lanes", "uint8", [64], lanes16,
                chain_=chain("bytes+lanes", "uint8", lanes=16,
                             methods=["raw", "fill", "zstd", "raw"] * 4))
    f.add_plain("sixteen_lanes_f64", "float64", [2, 3], rng=rng_for("v_lanes_count", "16"),
                chain_=chain("planes+lanes", "float64", lanes=16, methods="raw"))
    s.valid("v_lanes_count", f, ["LAN-01", "LAN-02", *LOSSLESS],
            ["codec:lanes", "lane:raw", "lane:zstd", "lane:fill"],
            "lane_count other than itemsize: 1, 3 (on int16), 16 (on uint8, and on float64 with "
            "3-byte lanes).")

    f = File(6)
    per_chunk = {0: ["zstd", "raw"], 1: ["raw", "zstd"], 2: ["raw", "raw"], 3: ["zstd", "zstd"]}
    f.add_plain("mixed", "float16", [4, 100], rng=rng_for("v_lanes_methods_per_chunk"),
                chain_=chain("planes+lanes", "float16", methods=lambda c: per_chunk[c]),
                chunk_elements=100)
    s.valid("v_lanes_methods_per_chunk", f, ["LAN-03", "LAN-05", "LAN-06", *LOSSLESS],
            ["codec:lanes", "chunking", "lane:zstd", "lane:raw"],
            "Four chunks of one stream whose lanes use different methods in each chunk.")

    # -- shapes -----------------------------------------------------------------------------------
    f = File(6)
    f.add_plain("scalar_f32", "float32", [], rng=rng_for("v_shape_scalar", 1))
    f.add_plain("scalar_i64", "int64", [], rng=rng_for("v_shape_scalar", 2),
                chain_=chain("bytes"))
    f.add_plain("scalar_bool", "bool", [], b"\x01", chain_=chain("bytes+lanes", "bool"))
    s.valid("v_shape_scalar", f, ["REC-04", "REC-06", *LOSSLESS], ["shape:scalar"],
            "0-d tensors (rank 0, one element): float32, int64, bool.")

    f = File(6)
    f.add_plain("empty_1d", "float32", [0], b"")
    f.add_plain("empty_3d", "int8", [3, 0, 2], b"", chain_=chain("bytes"))
    f.add_plain("empty_2d", "bfloat16", [0, 0], b"", chain_=chain("planes"))
    f.add_plain("empty_then_large", "uint8", [1 << 40, 0], b"", chain_=chain("bytes"))
    f.add_plain("after_empty", "int16", [3], rng=rng_for("v_shape_empty"))
    s.valid("v_shape_empty", f, ["REC-04", "REC-06", *LOSSLESS], ["shape:empty"],
            "Empty tensors (chunk_count 0, no blocks): [0], [3,0,2], [0,0], [2^40,0], then a "
            "non-empty tensor.")

    f = File(6)
    f.add_plain("one", "float64", [1], rng=rng_for("v_shape_one", 1))
    f.add_plain("one_3d", "uint16", [1, 1, 1], rng=rng_for("v_shape_one", 2),
                chain_=chain("bytes"))
    f.add_plain("one_lanes", "float8_e5m2", [1, 1], rng=rng_for("v_shape_one", 3),
                chain_=chain("bytes+lanes", "float8_e5m2", methods="raw"))
    s.valid("v_shape_one_element", f, ["REC-04", "REC-06", *LOSSLESS], ["shape:one"],
            "Tensors of one element: [1], [1,1,1], [1,1].")

    f = File(6)
    f.add_plain("rank16", "int8", [2, 1] * 8, rng=rng_for("v_shape_rank16", 1),
                chain_=chain("bytes"), chunk_elements=100)
    f.add_plain("rank16_f32", "float32", [1] * 15 + [3], rng=rng_for("v_shape_rank16", 2))
    f.add_plain("rank16_empty", "uint32", [1] * 15 + [0], b"")
    s.valid("v_shape_rank16", f, ["REC-05", "REC-04", *LOSSLESS], ["shape:rank16", "chunking"],
            "Rank 16, the largest: [2,1]*8 (256 elements, 3 chunks), [1]*15+[3], [1]*15+[0].")

    # -- chunking ---------------------------------------------------------------------------------
    f = File(6)
    f.add_plain("partial_last", "float32", [1000], rng=rng_for("v_chunks", 1),
                chunk_elements=256)
    f.add_plain("exact", "uint16", [512], rng=rng_for("v_chunks", 2),
                chain_=chain("bytes+lanes", "uint16"), chunk_elements=128)
    f.add_plain("one_per_chunk", "int32", [7], rng=rng_for("v_chunks", 3),
                chain_=chain("planes"), chunk_elements=1)
    f.add_plain("max_chunk", "uint8", [300], rng=rng_for("v_chunks", 4), chain_=chain("bytes"),
                chunk_elements=1 << 26)
    f.add_plain("multidim", "float16", [3, 50, 7], rng=rng_for("v_chunks", 5),
                chunk_elements=64)
    s.valid("v_chunks", f, ["REC-06", "REC-07", "REC-08", "REC-05", *LOSSLESS], ["chunking"],
            "Chunked streams: a partial last chunk, exact chunks, chunk_elements 1, chunk_elements "
            "2^26 (the maximum), chunks that cut across rows of a 3-d tensor.")

    f = File(6)
    f.add_plain("reversed", "int16", [100], rng=rng_for("v_chunks_file_order", 1),
                chain_=chain("bytes"), chunk_elements=16)
    f.add_plain("a", "float32", [64], rng=rng_for("v_chunks_file_order", 2), chunk_elements=16)
    f.add_plain("b", "uint8", [40], rng=rng_for("v_chunks_file_order", 3),
                chain_=chain("bytes+lanes", "uint8"), chunk_elements=10)
    # reversed: blocks 6..0; a and b interleaved a0 b0 a1 b1 ...
    order = list(range(6, -1, -1)) + [x for pair in zip(range(7, 11), range(11, 15)) for x in pair]
    f.reorder_blocks(order)
    s.valid("v_chunks_file_order", f, ["REC-07", "REC-08", "LAY-01", *LOSSLESS], ["chunking"],
            "Chunk blocks out of chunk order in the file: one stream's chunks stored in reverse, "
            "two tensors' chunks interleaved. chunk_blocks says where each chunk is.")

    f = File(6)
    f.add_plain("first_in_index", "float32", [10], rng=rng_for("v_index_order", 1))
    f.add_plain("second_in_index", "int64", [3], rng=rng_for("v_index_order", 2),
                chain_=chain("bytes"))
    f.add_plain("third_in_index", "bool", [9], rng=rng_for("v_index_order", 3),
                chain_=chain("bytes"))
    f.reorder_blocks([2, 0, 1])
    s.valid("v_index_order", f, ["REC-07", "REC-08", *LOSSLESS], ["chunking", "index"],
            "The blocks of three tensors appear in the file in an order other than the index's.")

    # -- alignment --------------------------------------------------------------------------------
    for a in range(17):
        f = File(a)
        f.add_plain("a", "uint8", [3], rng=rng_for("v_align", a, "a"), chain_=chain("bytes"))
        f.add_plain("b", "float16", [5], rng=rng_for("v_align", a, "b"))
        s.valid(f"v_align_{a:02d}", f, ["HDR-07", "LAY-01", "LAY-02", "LAY-03", "FTR-03",
                                        *LOSSLESS],
                ["alignment"], f"alignment_log2 = {a}: blocks and the index start at multiples "
                f"of {1 << a} bytes, zero padding in between.")

    # -- names ------------------------------------------------------------------------------------
    f = File(6)
    names = ["z", "x" * 1024, "a/b/../c", "../../../../tmp/wcodec-escape", "/etc/passwd",
             "C:\\Windows\\system32\\x", "model.layers.0.weight", "слой.0", "层.权重",
             "emoji \U0001F642", " leading and trailing ", "tab\there", "caf\u00e9",
             "cafe\u0301", "A", "a", ".", ".."]
    for i, name in enumerate(names):
        dt = ALL_DTYPES[i % len(ALL_DTYPES)]
        f.add_plain(name, dt, [i % 3 + 1], rng=rng_for("v_names", i),
                    chain_=chain("bytes" if i % 2 else "planes+lanes", dt))
    s.valid("v_names", f, ["REC-01", "STR-01", *LOSSLESS], ["names"],
            "Tensor names are opaque UTF-8 keys: 1 byte, 1024 bytes, path-like names ('..', '/', "
            "'C:\\'), non-ASCII, a tab, names equal up to Unicode normalization or case. A decoder "
            "must keep them all, distinct, and must not use them as paths.")

    # -- metadata ---------------------------------------------------------------------------------
    f = File(6)
    f.meta_str("wcodec.source_format", "safetensors")
    f.meta_str("wcodec.source_file", "model.safetensors")
    f.meta_str("string", "a string value")
    f.meta_str("empty_string", "")
    f.meta_str("ключ.键", "значение 值 \U0001F642")
    f.meta_str("k" * 256, "a 256-byte key")
    f.meta_str("K", "single-byte key")
    for k, v in (("i64_min", -(1 << 63)), ("i64_max", (1 << 63) - 1), ("i64_minus_one", -1)):
        f.add_meta(k, 2, struct.pack("<q", v))
    f.add_meta("f64_nan_payload", 3, struct.pack("<Q", 0x7FF8000000000123))
    f.add_meta("f64_negative_zero", 3, struct.pack("<d", -0.0))
    f.add_meta("f64_inf", 3, struct.pack("<d", float("inf")))
    f.add_meta("f64_pi", 3, struct.pack("<d", 3.141592653589793))
    f.add_meta("bool_true", 4, b"\x01")
    f.add_meta("bool_false", 4, b"\x00")
    f.add_meta("bytes", 5, bytes(range(256)))
    f.add_meta("bytes_empty", 5, b"")
    f.add_plain("t", "float32", [3, 3], rng=rng_for("v_metadata_types"))
    s.valid("v_metadata_types", f, ["META-01", "STR-01", *LOSSLESS], ["metadata"],
            "Every metadata value type (string, i64, f64, bool, bytes) with edge values (empty "
            "string and bytes, i64 extremes, NaN with payload, -0.0, inf), 1- and 256-byte keys, "
            "non-ASCII keys and values, the two wcodec.* keys of version 1.0.")

    f = File(6)
    for k, v in (("dtype", "float64"), ("shape", "[1000000000, 1000000000]"),
                 ("codec", "bytes"), ("chunk_elements", "1"),
                 ("exec", "__import__('os').system('touch /tmp/wcodec-pwned')"),
                 ("shell", "$(touch /tmp/wcodec-pwned); `touch /tmp/wcodec-pwned`"),
                 ("env", "${HOME} %PATH%"), ("url", "file:///etc/passwd"),
                 ("include", "../../../../etc/passwd"),
                 ("json", '{"__class__": "os.system", "args": ["touch /tmp/wcodec-pwned"]}'),
                 ("pickle", "cos\nsystem\n(S'touch /tmp/wcodec-pwned'\ntR."),
                 ("format", "{0.__class__.__mro__} %s%s%s%n")):
        f.meta_str(k, v)
    f.add_meta("wcodec.source_file_is_bytes?", 5, b"\x00\xff")
    f.add_meta("record_kind", 2, struct.pack("<q", 5))
    f.add_plain("int8_not_float64", "int8", [2, 5], rng=rng_for("v_metadata_inert"),
                chain_=chain("bytes"))
    s.valid("v_metadata_inert", f, ["META-02", "META-01", *LOSSLESS], ["metadata"],
            "Metadata that looks like code, shell, paths, URLs, format strings and decoding "
            "instructions (dtype, shape, codec). It is inert: the tensor decodes from its record.")

    f = File(6)
    f.meta_str("only", "metadata, no tensors")
    s.valid("v_metadata_only", f, ["META-01", "IDX-03"], ["metadata", "index"],
            "No tensors, one metadata entry.")

    f = File(6)
    s.valid("v_empty", f, ["IDX-03", "FTR-03", "LAY-02"], ["index"],
            "No blocks, no metadata, no tensors: a header, an INDEX block and a footer.")

    f = File(6)
    for i in range(1024):
        f.add_meta(f"key{i:04d}", 2, struct.pack("<q", i * 7919 - 4_000_000))
    f.add_meta("big_value", 5, bytes(rng_for("v_metadata_must_support").integers(
        0, 256, 64 << 10, dtype=np.uint8)))
    f.metadata.pop(0)   # 1024 entries in all, the last one of 64 KiB
    f.add_plain("t", "uint8", [4], rng=rng_for("v_metadata_must_support", "t"),
                chain_=chain("bytes"))
    s.valid("v_metadata_must_support", f, ["META-01", "LIM-02", "IDX-04", *LOSSLESS],
            ["metadata", "limits"],
            "The metadata a decoder must support (spec §10): 1,024 entries, one of them a "
            "64 KiB value.")

    f = File(6)
    f.add_plain("no_digest", "float32", [4, 4], rng=rng_for("v_no_sha256", 1), has_sha256=False)
    f.add_plain("with_digest", "float32", [4, 4], rng=rng_for("v_no_sha256", 2))
    s.valid("v_no_sha256", f, ["REC-09", "REC-10", "PLN-01"], ["sha256"],
            "A record without a SHA-256 (has_sha256 clear) next to one with it.")

    # -- header versions and optional features ----------------------------------------------------
    for minor in (1, 65535):
        f = base()
        f.header["version_minor"] = minor
        s.valid(f"v_version_minor_{minor}", f, ["HDR-04", *LOSSLESS], ["header", "version"],
                f"version_minor = {minor}: a decoder accepts any minor version of major 1.")
    for name, bits in (("bit0", 1), ("all", 0xFFFFFFFF)):
        f = base()
        f.header["optional_features"] = bits
        s.valid(f"v_optional_features_{name}", f, ["HDR-06", *LOSSLESS],
                ["header", "optional-feature"],
                f"optional_features = {bits:#010x}: unknown optional feature bits are ignored.")

    # -- unknown optional blocks -------------------------------------------------------------------
    f = base()
    f.blocks.insert(0, Block(0x0001, b"an optional block a decoder ignores"))
    for r in f.records:
        r["streams"][0]["chunk_blocks"] = [b + 1 for b in r["streams"][0]["chunk_blocks"]]
    s.valid("v_optional_block_first", f, ["BLK-03", "LAY-01", *LOSSLESS], ["optional-block"],
            "An unknown optional block (type 0x0001) before every CHUNK block.")

    f = base()
    f.blocks.insert(1, Block(0x7FFF, bytes(range(200))))
    f.blocks.append(Block(0x0000, b""))
    for r in f.records:
        r["streams"][0]["chunk_blocks"] = [b + (b >= 1) for b in r["streams"][0]["chunk_blocks"]]
    s.valid("v_optional_blocks", f, ["BLK-03", "LAY-01", "LAY-02", *LOSSLESS],
            ["optional-block"],
            "Unknown optional blocks between two chunks of one stream (type 0x7FFF) and last "
            "before the index (type 0x0000, empty payload).")


def _header_1_0(s: Suite) -> None:
    good = base().build()
    s.invalid("x_HDR-01_magic_byte0", set_at(good, 0, b"\x88"), "BadMagic", ["HDR-01"],
              ["header"], "The first byte of magic is 0x88.")
    s.invalid("x_HDR-01_magic_byte7", set_at(good, 7, b"\x00"), "BadMagic", ["HDR-01"],
              ["header"], "The last byte of magic is 0x00.")
    s.invalid("x_HDR-01_magic_crlf", set_at(good, 4, b"\n\r"), "BadMagic", ["HDR-01"],
              ["header"], "Magic with CR LF swapped (what a text-mode transfer can do).")
    png = b"\x89PNG\r\n\x1a\n" + bytes(rng_for("png").integers(0, 256, 120, dtype=np.uint8))
    s.invalid("x_HDR-01_png_file", png, "BadMagic", ["HDR-01"], ["header"],
              "A file that starts with the PNG signature.")
    s.invalid("x_HDR-01_short_not_magic", b"WCD\r\n", "BadMagic", ["HDR-01"], ["header"],
              "A 5-byte file that is not a prefix of magic: BadMagic, not Truncated.")
    s.invalid("x_HDR-02_empty", b"", "Truncated", ["HDR-02", "HDR-01"], ["header", "truncation"],
              "An empty file (a prefix of magic).")
    s.invalid("x_HDR-02_magic_prefix", good[:5], "Truncated", ["HDR-02", "HDR-01"],
              ["header", "truncation"], "The first 5 bytes of magic only.")
    s.invalid("x_HDR-02_header_only", good[:32], "Truncated", ["HDR-02"],
              ["header", "truncation"], "A file header and nothing else (32 bytes).")
    s.invalid("x_HDR-02_63_bytes", good[:63], "Truncated", ["HDR-02"], ["header", "truncation"],
              "The first 63 bytes of a valid file: shorter than a header and a footer.")

    f = base()
    f.header_crc = lambda c: c ^ 1
    s.invalid("x_HDR-03_header_crc", f, "ChecksumMismatch", ["HDR-03"], ["header", "checksum"],
              "header_crc32c has one bit flipped.")
    f = base()
    f.header_crc = lambda c: crc_of_header(base(), alignment_log2=5)
    s.invalid("x_HDR-03_stale_crc", f, "ChecksumMismatch", ["HDR-03"], ["header", "checksum"],
              "header_crc32c is that of the same header with alignment_log2 = 5: a field was "
              "changed after the CRC was computed.")

    for name, major in (("2", 2), ("0", 0), ("65535", 65535)):
        f = base()
        f.header["version_major"] = major
        s.invalid(f"x_HDR-04_major_{name}", f, "UnsupportedVersion", ["HDR-04"],
                  ["header", "version"], f"version_major = {major}.")
    for name, bits in (("bit31", 1 << 31), ("all", 0xFFFFFFFF)):
        f = base()
        f.header["required_features"] = bits
        s.invalid(f"x_HDR-05_required_{name}", f, "UnsupportedFeature", ["HDR-05"],
                  ["header", "required-feature"],
                  f"required_features = {bits:#010x}: unknown required feature bits.")
    for a in (17, 255):
        f = base()
        f.header["alignment_log2"] = a
        s.invalid(f"x_HDR-07_alignment_{a}", f, "MalformedRecord", ["HDR-07"],
                  ["header", "alignment"], f"alignment_log2 = {a} (at most 16). The rest of "
                  "the file is laid out for A = 64.")
    for i in (0, 6):
        f = base()
        f.header["reserved"] = bytes(7)[:i] + b"\x01" + bytes(7)[i + 1:]
        s.invalid(f"x_RSV-01_header_reserved_{i}", f, "MalformedRecord", ["RSV-01"],
                  ["header", "reserved"], f"FileHeader reserved byte {i} is 1.")


def crc_of_header(f: File, **changes) -> int:
    g = f.copy()
    g.header.update(changes)
    return V.crc(g.header_bytes()[:28])


def _footer_index_1_0(s: Suite) -> None:
    f = base()
    good = f.build()
    lay = f.layout
    n = len(good)

    # -- truncation at every structure -------------------------------------------------------------
    cuts = [
        ("after_header_padding", 64, "the header and its padding (64 bytes)"),
        ("block_header", lay["blocks"][0]["offset"] + 10, "inside the first BlockHeader"),
        ("block_payload", lay["blocks"][0]["offset"] + 30, "inside the first payload"),
        ("block_trailer", lay["blocks"][0]["end"] - 2, "inside the first BlockTrailer"),
        ("block_padding", lay["blocks"][0]["end"] + 3, "inside the padding after a block"),
        ("last_block", lay["blocks"][-1]["end"], "right after the last CHUNK block"),
        ("index_header", lay["index_offset"] + 24 + 8, "inside the IndexHeader"),
        ("index_records", lay["footer_offset"] - 40, "inside the tensor records"),
        ("index_trailer", lay["footer_offset"] - 1, "inside the INDEX trailer"),
        ("before_footer", lay["footer_offset"], "right before the footer"),
        ("footer_16", n - 16, "half of the footer"),
        ("footer_1", n - 1, "all but the last byte"),
    ]
    for name, at, what in cuts:
        cut = good[:at]
        assert len(cut) >= 64 and cut[-16:-8] != b"WCDINDEX"
        s.invalid(f"x_FTR-01_cut_{name}", cut, "Truncated", ["FTR-01"], ["truncation"],
                  f"A valid file cut short {what} ({at} of {n} bytes).")
    f = base()
    f.footer["footer_magic"] = b"WCDINDEY"
    s.invalid("x_FTR-01_footer_magic", f, "Truncated", ["FTR-01"], ["footer"],
              "footer_magic is WCDINDEY (footer CRC recomputed).")
    s.invalid("x_FTR-01_trailing_byte", good + b"\x00", "Truncated", ["FTR-01"], ["footer"],
              "A zero byte appended after the footer.")
    unfinished = good[:lay["index_offset"]]
    s.invalid("x_FTR-01_unfinished", unfinished, "Truncated", ["FTR-01"], ["truncation"],
              "A writer that stopped before the index: header and blocks only.")

    f = base()
    f.footer_crc = lambda c: c ^ 0x80000000
    s.invalid("x_FTR-02_footer_crc", f, "ChecksumMismatch", ["FTR-02"], ["footer", "checksum"],
              "footer_crc32c has its top bit flipped.")
    f = base()
    f.footer["reserved"] = 1
    s.invalid("x_RSV-01_footer_reserved", f, "MalformedRecord", ["RSV-01"], ["footer", "reserved"],
              "Footer reserved = 1 (footer CRC recomputed).")

    f = base()
    f.footer["index_offset"] = lambda x: x + 64
    s.invalid("x_FTR-03_index_offset_plus_size", f, "LayoutError", ["FTR-03"], ["footer"],
              "index_offset + index_block_size is 64 more than file_size - 32.")
    f = base()
    f.footer["index_offset"] = lambda x: x + 1
    f.footer["index_block_size"] = lambda x: x - 1
    s.invalid("x_FTR-03_index_offset_unaligned", f, "LayoutError", ["FTR-03"], ["footer"],
              "index_offset is not a multiple of A (its sum with index_block_size is right).")
    f = base(alignment_log2=0)
    good0 = f.build()
    f.footer["index_offset"] = len(good0) - 32 - 20
    f.footer["index_block_size"] = 20
    s.invalid("x_FTR-03_index_block_size_20", f, "LayoutError", ["FTR-03"], ["footer"],
              "index_block_size = 20 (< 28), index_offset + index_block_size = file_size - 32, "
              "A = 1.")
    f = base()
    f.footer["index_offset"] = (1 << 64) - 64
    f.footer["index_block_size"] = lambda x: n - 32 + 64
    s.invalid("x_FTR-03_sum_wraps_u64", f, "LayoutError", ["FTR-03"], ["footer"],
              "index_offset = 2^64 - 64 and index_block_size chosen so that their sum is "
              "file_size - 32 modulo 2^64: the sum must be computed without overflow.")
    s.invalid("x_FTR-03_footer_twice", good + good[-32:], "LayoutError", ["FTR-03"], ["footer"],
              "The footer written twice: the last 32 bytes are a valid footer, but "
              "index_offset + index_block_size is file_size - 64.")
    b0 = lay["blocks"][1]
    cut_out = good[:b0["offset"]] + good[b0["offset"] + 64:]
    s.invalid("x_FTR-03_bytes_removed", cut_out, "LayoutError", ["FTR-03"], ["truncation"],
              "64 bytes (a block and its padding) cut out of the middle of the file; the footer "
              "is intact but no longer points at the index.")

    # -- the INDEX block ---------------------------------------------------------------------------
    f = base()
    f.index_block["block_type"] = V.CHUNK
    s.invalid("x_IDX-01_type_chunk", f, "LayoutError", ["IDX-01"], ["index"],
              "The block at index_offset has block_type CHUNK (its CRC recomputed).")
    f = base()
    f.index_block["tensor_id"] = 0
    s.invalid("x_IDX-01_tensor_id", f, "LayoutError", ["IDX-01"], ["index"],
              "The INDEX block has tensor_id 0 instead of 0xFFFFFFFF (its CRC recomputed).")
    f = base()
    f.index_block["chunk_id"] = 0
    s.invalid("x_IDX-01_chunk_id", f, "LayoutError", ["IDX-01"], ["index"],
              "The INDEX block has chunk_id 0 instead of 0xFFFFFFFF (its CRC recomputed).")
    f = base()
    f.index_block["payload_length"] = lambda x: x - 4
    s.invalid("x_IDX-01_payload_length", f, "LayoutError", ["IDX-01"], ["index"],
              "The INDEX BlockHeader's payload_length is 4 less than index_block_size - 28 (its "
              "CRC recomputed over the header as written and the full payload).")
    f = base()
    f.index_crc = lambda c: c ^ 0xFFFFFFFF
    s.invalid("x_IDX-02_index_crc", f, "ChecksumMismatch", ["IDX-02"], ["index", "checksum"],
              "The INDEX block_crc32c is inverted.")
    f = base()
    f.build()
    where = rec_offset(f, 0) + 2   # the first byte of the name "w"
    f.index_hook = lambda p: set_at(p, where, b"v")
    f.index_crc = lambda c: V.crc(build_without_hook(base()))
    s.invalid("x_IDX-02_payload_changed", f, "ChecksumMismatch", ["IDX-02"],
              ["index", "checksum"],
              "The first tensor's name changed from 'w' to 'v' after the INDEX CRC was computed.")
    f = base()
    f.index_block["block_flags"] = 1
    s.invalid("x_BLK-04_index_block_flags", f, "MalformedRecord", ["BLK-04", "RSV-01"],
              ["index", "reserved"], "The INDEX block has block_flags = 1 (CRC recomputed).")

    f = base()
    f.index_tail = b"\x00"
    s.invalid("x_IDX-03_trailing_byte", f, "MalformedRecord", ["IDX-03"], ["index"],
              "One zero byte left over after the last tensor record.")
    f = base()
    f.index_hook = lambda p: p[:-4]
    s.invalid("x_IDX-03_record_cut", f, "Truncated", ["IDX-03", "LIM-01"],
              ["index", "truncation"],
              "The INDEX payload ends 4 bytes early, inside the last tensor record's chunk_blocks "
              "(every CRC and length recomputed).")
    f = File(6)
    f.add_meta("key", 5, b"0123456789X")
    f.index_hook = lambda p: p[:-1]
    s.invalid("x_IDX-03_value_past_end", f, "Truncated", ["IDX-03", "LIM-01"],
              ["index", "metadata", "truncation"],
              "The only metadata entry declares an 11-byte value; 10 bytes remain in the payload.")
    f = File(6)
    f.add_plain("t", "uint8", [2], b"\x01\x02", chain_=chain("bytes"))
    rec = f.records[0]
    rec["rank"] = 16
    rec["shape"] = [2] + [1] * 15
    rec["streams"][0]["stream_rank"] = 16
    rec["streams"][0]["stream_shape"] = [2] + [1] * 15
    f.build()
    cut_at = rec_offset(f, 0) + 2 + 1 + 4 + 5 * 8
    f.index_hook = lambda p: p[:cut_at]
    s.invalid("x_IDX-03_shape_past_end", f, "Truncated", ["IDX-03", "LIM-01"],
              ["index", "truncation"],
              "The only tensor record says rank 16 and the payload ends after 5 of its shape "
              "dimensions.")

    # -- IDX-04: counts against the remaining bytes --------------------------------------------
    for what, key, value in (("block_count", "block_count", lambda x: x + 1000),
                             ("metadata_count", "metadata_count", lambda x: x + 1000),
                             ("tensor_count", "tensor_count", lambda x: 1 << 20)):
        f = base()
        f.index_header[key] = value
        s.invalid(f"x_IDX-04_{what}_exceeds_payload", f, "Truncated", ["IDX-04", "LIM-01"],
                  ["index", "limits"],
                  f"{what} is larger than the remaining INDEX payload can hold at the smallest "
                  "entry size (and below the §10 maximum).")
    f = base()
    f.blocks.append(Block(V.INDEX, b"not an index"))
    s.invalid("x_IDX-05_index_block_listed", f, "MalformedRecord", ["IDX-05"], ["index"],
              "The block table lists a block of type INDEX (a real block before the index).")


def build_without_hook(f: File) -> bytes:
    """The INDEX block body (header + payload) of f as built without any hook."""
    f.build()
    data = f.build()
    off = f.layout["index_offset"]
    return data[off:off + 24 + f.layout["index_payload"]]


def _layout_blocks_1_0(s: Suite) -> None:
    # -- BLK: block CRCs and types --------------------------------------------------------------
    f = base()
    b = f.chunk_block("b")
    good_crc = block_crc(b)
    b.payload = bytes([b.payload[0] ^ 0x10]) + b.payload[1:]
    b.trailer = good_crc
    s.invalid("x_BLK-01_bytes_payload_bitflip", f, "ChecksumMismatch", ["BLK-01"],
              ["blocks", "checksum"],
              "One bit of the `bytes` chunk of tensor `b` flipped after its CRC was computed "
              "(trailer and table entry agree with each other).")
    f = base()
    b = f.chunk_block("w", 1)
    good_crc = block_crc(b)
    b.payload = b.payload[:-1] + bytes([b.payload[-1] ^ 0x01])
    b.trailer = good_crc
    s.invalid("x_BLK-01_lanes_payload_bitflip", f, "ChecksumMismatch", ["BLK-01"],
              ["blocks", "checksum"],
              "The last byte of a `lanes` chunk payload changed after its CRC was computed.")
    f = base()
    f.chunk_block("w", 0).trailer = lambda c: c ^ 0x00010000
    s.invalid("x_BLK-01_trailer", f, "ChecksumMismatch", ["BLK-01"], ["blocks", "checksum"],
              "A CHUNK block's trailer (and its table entry, which copies it) is wrong.")
    f = base()
    f.blocks.append(Block(0xFFFF, b"a required block of a future version"))
    s.invalid("x_BLK-02_required_type_ffff", f, "UnsupportedFeature", ["BLK-02"], ["blocks"],
              "The block table lists a block of the unknown required type 0xFFFF.")
    f = base()
    f.chunk_block("w", 1).block_flags = 0x8000
    s.invalid("x_BLK-04_chunk_block_flags", f, "MalformedRecord", ["BLK-04", "RSV-01"],
              ["blocks", "reserved"], "A CHUNK block has block_flags = 0x8000 (CRC recomputed).")
    f = base()
    f.chunk_block("b").entry["reserved"] = 2
    s.invalid("x_RSV-01_block_entry_reserved", f, "MalformedRecord", ["RSV-01"],
              ["index", "reserved"], "A BlockEntry has reserved = 2.")
    f = base()
    f.index_header["reserved"] = 1
    s.invalid("x_RSV-01_index_header_reserved", f, "MalformedRecord", ["RSV-01"],
              ["index", "reserved"], "IndexHeader reserved = 1.")

    # -- LAY-01..05 ----------------------------------------------------------------------------
    f = base()
    f.chunk_block("b").gap_before = bytes(64)
    s.invalid("x_LAY-01_hole", f, "LayoutError", ["LAY-01"], ["layout"],
              "64 zero bytes before the third block: a hole (the table has the true offset).")
    f = base()
    f.chunk_block("w", 1).entry["offset"] = lambda x: x - 64
    s.invalid("x_LAY-01_overlap", f, "LayoutError", ["LAY-01"], ["layout"],
              "The second table entry's offset is 64 less: it overlaps the first block.")
    f = base()
    f.chunk_block("w", 1).entry["offset"] = lambda x: x - 128
    s.invalid("x_LAY-01_aliased", f, "LayoutError", ["LAY-01"], ["layout"],
              "The second table entry has the first entry's offset (two entries, one block).")
    # laid out for A = 32, but the header says A = 64 (index_offset kept a multiple of 64)
    h = base(alignment_log2=5)
    h.build()
    if h.layout["index_offset"] % 64:
        h.gap_before_index = bytes(32)
    h.hook = lambda d: set_at(d, 20, b"\x06")
    data = h.build()
    data = set_at(data, 28, struct.pack("<I", V.crc(data[:28])))
    assert h.layout["index_offset"] % 64 == 0 and h.layout["blocks"][0]["offset"] == 32
    s.invalid("x_LAY-01_first_block_unaligned", data, "LayoutError", ["LAY-01"],
              ["layout", "alignment"],
              "alignment_log2 = 6 but the first block starts at 32: the blocks were laid out "
              "for A = 32 (index_offset is a multiple of 64).")
    f = base()
    f.index_hook = lambda p: swap_entries(p, 0, 1)
    st = f.record("w")["streams"][0]
    st["chunk_blocks"] = [{0: 1, 1: 0}.get(x, x) for x in st["chunk_blocks"]]
    s.invalid("x_LAY-01_table_order", f, "LayoutError", ["LAY-01"], ["layout"],
              "The block table lists the first two blocks in the opposite of their file order "
              "(chunk_blocks follow the table, so every reference is right).")

    f = base()
    f.gap_before_index = bytes(64)
    s.invalid("x_LAY-02_hole_before_index", f, "LayoutError", ["LAY-02"], ["layout"],
              "64 zero bytes between the last block's padding and the INDEX block.")
    f = File(6)
    data = f.build()
    s.invalid("x_LAY-02_index_in_header", reseal_footer_fields(data, index_offset=0,
                                                                index_block_size=len(data) - 32),
              "LayoutError", ["LAY-02", "FTR-03"], ["layout"],
              "The footer locates the INDEX block at offset 0, over the file header "
              "(index_offset + index_block_size = file_size - 32, A divides it).")

    f = base()
    f.header_pad_fill = 0x01
    s.invalid("x_LAY-03_header_padding", f, "LayoutError", ["LAY-03"], ["layout"],
              "The padding after the file header is 0x01 bytes.")
    f = base()
    f.chunk_block("w", 0).pad_fill = 0x80
    s.invalid("x_LAY-03_block_padding", f, "LayoutError", ["LAY-03"], ["layout"],
              "The padding after the first CHUNK block is 0x80 bytes.")
    f = base()
    f.chunk_block("b").pad_fill = 0xFF
    s.invalid("x_LAY-03_padding_before_index", f, "LayoutError", ["LAY-03"], ["layout"],
              "The padding between the last CHUNK block and the INDEX block is 0xFF bytes.")
    f = base()
    blk = f.chunk_block("w", 0)
    f.build()
    last_pad = f.layout["blocks"][0]
    assert align_pad(last_pad["end"], 64) > 1
    blk.pad_fill = 0
    blk_hook_at = last_pad["end"] + align_pad(last_pad["end"], 64) - 1
    f.hook = lambda d: set_at(d, blk_hook_at, b"\x01")
    s.invalid("x_LAY-03_last_padding_byte", f, "LayoutError", ["LAY-03"], ["layout"],
              "Only the last padding byte after the first CHUNK block is 0x01.")

    f = base()
    f.chunk_block("b").entry["payload_length"] = lambda x: x + 100
    s.invalid("x_LAY-04_block_past_index", f, "LayoutError", ["LAY-04"], ["layout"],
              "The last table entry's payload_length is 100 more: the block would run into "
              "the index.")
    f = base()
    f.chunk_block("b").entry["payload_length"] = (1 << 64) - 1
    s.invalid("x_LAY-04_length_max_u64", f, "LayoutError", ["LAY-04"], ["layout"],
              "The last table entry's payload_length is 2^64 - 1: offset + 28 + payload_length "
              "must be computed without overflow.")
    f = base()
    f.chunk_block("b").entry["payload_length"] = (1 << 64) - 28
    s.invalid("x_LAY-04_end_wraps_u64", f, "LayoutError", ["LAY-04"], ["layout"],
              "The last table entry's payload_length is 2^64 - 28: offset + 28 + payload_length "
              "wraps to the block's own offset in 64-bit arithmetic.")

    f = base()
    f.chunk_block("w", 1).header["block_type"] = 0x0001
    s.invalid("x_LAY-05_header_type", f, "LayoutError", ["LAY-05"], ["layout", "blocks"],
              "A CHUNK block's own header says type 0x0001 while the table says CHUNK (CRC "
              "recomputed over the header as written).")
    f = base()
    f.chunk_block("w", 1).header["payload_length"] = lambda x: x + 1
    s.invalid("x_LAY-05_header_length", f, "LayoutError", ["LAY-05"], ["layout", "blocks"],
              "A CHUNK block's own payload_length is one more than the table's (CRC recomputed "
              "over the header as written).")
    f = base()
    f.chunk_block("b").entry["block_crc32c"] = lambda c: c ^ 1
    s.invalid("x_LAY-05_entry_crc", f, "ChecksumMismatch", ["LAY-05"], ["layout", "checksum"],
              "The table entry's block_crc32c differs from the block's (correct) trailer.")


def block_crc(b: Block) -> int:
    return V.crc(LW.BlockHeader.build(b.header_dict()) + b.payload)


def swap_entries(payload: bytes, i: int, j: int) -> bytes:
    p = bytearray(payload)
    a, b = 16 + 24 * i, 16 + 24 * j
    p[a:a + 24], p[b:b + 24] = payload[b:b + 24], payload[a:a + 24]
    return bytes(p)


def align_pad(x: int, a: int) -> int:
    return V.align_up(x, a) - x


def reseal_footer_fields(data: bytes, **fields) -> bytes:
    ftr = dict(LW.Footer.parse(data[-32:]))
    ftr = {k: v for k, v in ftr.items() if not k.startswith("_")}
    ftr.update(fields)
    raw = bytearray(LW.Footer.build(ftr))
    raw[28:32] = struct.pack("<I", V.crc(raw[:24]))
    return data[:-32] + bytes(raw)


def _metadata_1_0(s: Suite) -> None:
    def mfile():
        f = base()
        return f

    f = mfile()
    f.meta_str("note", "again")
    s.invalid("x_META-01_duplicate_key", f, "MalformedRecord", ["META-01"], ["metadata"],
              "The key 'note' appears twice.")
    f = mfile()
    f.add_meta(b"bad\xffkey", 1, b"x")
    s.invalid("x_META-01_key_not_utf8", f, "MalformedRecord", ["META-01", "STR-01"],
              ["metadata"], "A metadata key holds the byte 0xFF.")
    f = mfile()
    f.add_meta("s", 1, b"caf\xc3")
    s.invalid("x_META-01_string_not_utf8", f, "MalformedRecord", ["META-01", "STR-01"],
              ["metadata"], "A string value ends inside a two-byte UTF-8 sequence.")
    f = mfile()
    f.add_meta("b", 4, b"\x02")
    s.invalid("x_META-01_bool_2", f, "MalformedRecord", ["META-01"], ["metadata"],
              "A bool value of 2.")
    f = mfile()
    f.add_meta("b", 4, b"\x01\x00")
    s.invalid("x_META-01_bool_two_bytes", f, "MalformedRecord", ["META-01"], ["metadata"],
              "A bool value two bytes long.")
    f = mfile()
    f.add_meta("i", 2, b"\x01\x00\x00\x00")
    s.invalid("x_META-01_i64_4_bytes", f, "MalformedRecord", ["META-01"], ["metadata"],
              "An i64 value 4 bytes long.")
    f = mfile()
    f.add_meta("d", 3, struct.pack("<d", 1.5) + b"\x00")
    s.invalid("x_META-01_f64_9_bytes", f, "MalformedRecord", ["META-01"], ["metadata"],
              "An f64 value 9 bytes long.")
    for vt in (0, 6, 255):
        f = mfile()
        f.add_meta("t", vt, b"x")
        s.invalid(f"x_META-01_value_type_{vt}", f, "MalformedRecord", ["META-01"], ["metadata"],
                  f"value_type = {vt}.")
    f = mfile()
    f.add_meta(b"", 1, b"empty key")
    s.invalid("x_META-01_key_length_0", f, "MalformedRecord", ["META-01"], ["metadata"],
              "An empty key (key_length 0).")
    f = mfile()
    f.add_meta("k" * 257, 1, b"x")
    s.invalid("x_META-01_key_length_257", f, "MalformedRecord", ["META-01"], ["metadata"],
              "A 257-byte key (at most 256).")


def _records_1_0(s: Suite) -> None:
    # -- names ------------------------------------------------------------------------------------
    f = base()
    f.add_plain("w", "uint8", [1], b"\x05", chain_=chain("bytes"), expect=False)
    s.invalid("x_REC-01_duplicate_name", f, "MalformedRecord", ["REC-01"], ["names"],
              "Two tensors named 'w'.")
    for name, raw, what in (("overlong", b"w\xc0\xaf", "an overlong encoding of '/'"),
                            ("surrogate", b"w\xed\xa0\x80", "a UTF-16 surrogate (U+D800)"),
                            ("truncated_sequence", b"w\xe2\x82", "a truncated 3-byte sequence"),
                            ("continuation", b"\x80w", "a lone continuation byte"),
                            ("above_u10ffff", b"\xf4\x90\x80\x80", "a code point above U+10FFFF")):
        f = base()
        f.add_plain(raw, "uint8", [1], b"\x05", chain_=chain("bytes"), expect=False)
        s.invalid(f"x_STR-01_name_{name}", f, "MalformedRecord", ["STR-01", "REC-01"],
                  ["names"], f"A tensor name holding {what}.")
    f = base()
    rec = f.add_plain("x", "uint8", [1], b"\x05", chain_=chain("bytes"), expect=False)
    rec["name_length"], rec["name"] = 0, b""
    s.invalid("x_REC-01_name_length_0", f, "MalformedRecord", ["REC-01"], ["names"],
              "A tensor with an empty name.")
    f = base()
    f.add_plain("n" * 1025, "uint8", [1], b"\x05", chain_=chain("bytes"), expect=False)
    s.invalid("x_REC-01_name_length_1025", f, "LimitExceeded", ["REC-01", "LIM-02"], ["names"],
              "A 1025-byte tensor name.", also=("MalformedRecord",),
              note="REC-01 says names are 1 to 1024 bytes (MalformedRecord) and §10 says "
                   "values beyond the format maximum of name_length (1024) are LimitExceeded; "
                   "both classes are accepted until the spec settles it.")

    # -- dtypes and record kinds --------------------------------------------------------------------
    for code in (0, 16, 255):
        f = base()
        rec = f.add_plain("t", "uint8", [4], b"\x01\x02\x03\x04", chain_=chain("bytes"),
                          expect=False)
        rec["dtype"] = code
        rec["streams"][0]["stream_dtype"] = code
        s.invalid(f"x_REC-02_dtype_{code}", f, "UnsupportedFeature", ["REC-02"], ["dtype"],
                  f"A tensor (and its stream) of dtype {code}.")
    f = base()
    rec = f.add_plain("t", "uint8", [4], b"\x01\x02\x03\x04", chain_=chain("bytes"), expect=False)
    rec["streams"][0]["stream_dtype"] = 200
    s.invalid("x_REC-02_stream_dtype_200", f, "UnsupportedFeature", ["REC-02"], ["dtype"],
              "A uint8 tensor whose stream has dtype 200.")
    for kind in (0, 255):
        f = base()
        f.record("b")["record_kind"] = kind
        s.invalid(f"x_REC-03_kind_{kind}", f, "UnsupportedFeature", ["REC-03"], ["record"],
                  f"record_kind = {kind}, which no version defines.")

    # -- REC-04: shape overflow ------------------------------------------------------------------
    def shaped(shape, dtype="float32"):
        f = base()
        rec = f.add_plain("huge", "uint8", [0], b"", chain_=chain("bytes"), expect=False)
        rec["dtype"] = rec["streams"][0]["stream_dtype"] = V.DTYPES[dtype][0]
        rec["rank"] = rec["streams"][0]["stream_rank"] = len(shape)
        rec["shape"] = list(shape)
        rec["streams"][0]["stream_shape"] = list(shape)
        return f, rec
    f, _ = shaped([1 << 61])
    s.invalid("x_REC-04_bytes_over_2_62", f, "LimitExceeded", ["REC-04", "LIM-02"],
              ["shape", "limits"],
              "float32 [2^61]: 2^63 bytes, above 2^62 (chunk_count 0, no blocks).")
    f, _ = shaped([1 << 62, 1, 2], "uint8")
    s.invalid("x_REC-04_bytes_2_62_plus", f, "LimitExceeded", ["REC-04", "LIM-02"],
              ["shape", "limits"], "uint8 [2^62, 1, 2]: 2^63 bytes.")
    f, _ = shaped([1 << 32, 1 << 32, 1 << 32], "uint8")
    s.invalid("x_REC-04_product_over_u64", f, "LimitExceeded", ["REC-04", "LIM-02"],
              ["shape", "limits"], "uint8 [2^32, 2^32, 2^32]: 2^96 elements.")
    f, _ = shaped([1 << 32, 1 << 32, 3], "uint8")
    s.invalid("x_REC-04_product_wraps_to_0", f, "LimitExceeded", ["REC-04", "LIM-02"],
              ["shape", "limits"],
              "uint8 [2^32, 2^32, 3]: 3 * 2^64 elements, which is 0 in wrapping 64-bit "
              "arithmetic; chunk_count 0 matches that wrong count.")
    f, _ = shaped([(1 << 63) + 1, 2], "uint8")
    s.invalid("x_REC-04_product_wraps_to_2", f, "LimitExceeded", ["REC-04", "LIM-02"],
              ["shape", "limits"],
              "uint8 [2^63 + 1, 2]: 2^64 + 2 elements, which is 2 in wrapping 64-bit arithmetic.")
    f = base()
    rec = f.add_plain("t", "float32", [1], b"\x00\x00\x80\x3f", chain_=chain("bytes"),
                      expect=False)
    rec["streams"][0]["stream_rank"] = 2
    rec["streams"][0]["stream_shape"] = [1 << 40, 1 << 40]
    rec["streams"][0]["chunk_count"] = 0
    rec["streams"][0]["chunk_blocks"] = []
    f.remove_block(len(f.blocks) - 1)
    s.invalid("x_REC-04_stream_shape", f, "LimitExceeded", ["REC-04", "LIM-02"],
              ["shape", "limits"],
              "A float32 [1] record whose stream shape is [2^40, 2^40] (2^82 bytes).")

    # -- REC-05 ----------------------------------------------------------------------------------
    f, rec = shaped([1] * 17, "uint8")
    s.invalid("x_REC-05_rank_17", f, "LimitExceeded", ["REC-05", "LIM-02"], ["shape", "limits"],
              "A tensor of rank 17 (shape [1]*17, stream rank 17 too; chunk_count 0).")
    f, rec = shaped([0], "uint8")
    rec["streams"][0]["stream_rank"] = 17
    rec["streams"][0]["stream_shape"] = [0] + [1] * 16
    s.invalid("x_REC-05_stream_rank_17", f, "LimitExceeded", ["REC-05", "LIM-02"],
              ["shape", "limits"], "A tensor [0] whose stream has rank 17.")
    f, rec = shaped([0], "uint8")
    rec["stream_count"], rec["streams"] = 0, []
    s.invalid("x_REC-05_stream_count_0", f, "LimitExceeded", ["REC-05"], ["record", "limits"],
              "A tensor with stream_count 0.")
    f, rec = shaped([0], "uint8")
    rec["stream_count"] = 65
    rec["streams"] = [dict(rec["streams"][0]) for _ in range(65)]
    s.invalid("x_REC-05_stream_count_65", f, "LimitExceeded", ["REC-05", "LIM-02"],
              ["record", "limits"], "An empty tensor with 65 (empty) streams.")
    f, rec = shaped([0], "uint8")
    rec["streams"][0]["codec_count"], rec["streams"][0]["codecs"] = 0, []
    s.invalid("x_REC-05_codec_count_0", f, "LimitExceeded", ["REC-05", "CHN-01"],
              ["codecs", "limits"], "A stream with codec_count 0.")
    f, rec = shaped([0], "uint8")
    rec["streams"][0]["codec_count"] = 9
    rec["streams"][0]["codecs"] = [dict(codec_id=1, config_length=0, config=b"")] * 9
    s.invalid("x_REC-05_codec_count_9", f, "LimitExceeded", ["REC-05", "LIM-02"],
              ["codecs", "limits"], "A stream with codec_count 9 (nine `bytes` codecs).")
    f, rec = shaped([0], "uint8")
    rec["streams"][0]["codecs"][0] = dict(codec_id=1, config_length=1025, config=bytes(1025))
    s.invalid("x_REC-05_config_length_1025", f, "LimitExceeded", ["REC-05", "LIM-02"],
              ["codecs", "limits"], "A `bytes` codec with a 1025-byte config.")
    f, rec = shaped([0], "uint8")
    rec["params_length"], rec["params"] = (1 << 20) + 1, bytes((1 << 20) + 1)
    s.invalid("x_REC-05_params_length_over_1mib", f, "LimitExceeded", ["REC-05", "LIM-02"],
              ["record", "limits"],
              "params_length = 1 MiB + 1 (the bytes are present). A plain record must have no "
              "params at all, but the limit is checked first, before anything is read.")
    for name, ce in (("0", 0), ("over_2_26", (1 << 26) + 1)):
        f = base()
        f.record("b")["streams"][0]["chunk_elements"] = ce
        s.invalid(f"x_REC-05_chunk_elements_{name}", f, "LimitExceeded", ["REC-05", "LIM-02"],
                  ["chunking", "limits"], f"chunk_elements = {ce} (1 to 2^26).")

    # -- REC-06, REC-07, REC-08 -------------------------------------------------------------------
    f = base()
    st = f.record("w")["streams"][0]
    f.remove_block(st["chunk_blocks"][-1])
    st = f.record("w")["streams"][0]
    st["chunk_blocks"] = st["chunk_blocks"][:-1]
    st["chunk_count"] = 1
    s.invalid("x_REC-06_chunk_count_short", f, "MalformedRecord", ["REC-06"], ["chunking"],
              "32 elements in chunks of 16 but chunk_count 1 (the second chunk and its block are "
              "gone).")
    f = base()
    st = f.record("w")["streams"][0]
    st["chunk_elements"] = 8
    s.invalid("x_REC-06_chunk_elements_changed", f, "MalformedRecord", ["REC-06"], ["chunking"],
              "chunk_elements = 8 while the stream keeps its 2 chunks of 16 elements.")
    f = base()
    rec = f.add_plain("e", "uint8", [0], b"", chain_=chain("bytes"), expect=False)
    blk = f.add_block(Block(V.CHUNK, b"", len(f.records) - 1, 0, 0))
    rec["streams"][0]["chunk_count"] = 1
    rec["streams"][0]["chunk_blocks"] = [blk]
    s.invalid("x_REC-06_empty_with_chunk", f, "MalformedRecord", ["REC-06"], ["chunking",
                                                                               "shape:empty"],
              "An empty tensor [0] with chunk_count 1 (an empty CHUNK block): it must be 0.")

    f = base()
    st = f.record("b")["streams"][0]
    f.remove_block(st["chunk_blocks"][0])
    st["chunk_blocks"] = [len(f.blocks)]
    s.invalid("x_REC-07_block_out_of_range", f, "LayoutError", ["REC-07"], ["chunking"],
              "A chunk names block index block_count (its block is gone).")
    f = base()
    st = f.record("b")["streams"][0]
    f.remove_block(st["chunk_blocks"][0])
    f.blocks.append(Block(0x0001, f.blocks[0].payload))
    st["chunk_blocks"] = [len(f.blocks) - 1]
    s.invalid("x_REC-07_names_optional_block", f, "LayoutError", ["REC-07"], ["chunking"],
              "A chunk names an optional block (type 0x0001) instead of a CHUNK block.")
    f = base()
    rec = f.add_plain("b2", "int8", [5], rng=rng_for("base", "b"), chain_=chain("bytes"),
                      expect=False)
    f.remove_block(rec["streams"][0]["chunk_blocks"][0])
    rec["streams"][0]["chunk_blocks"] = list(f.record("b")["streams"][0]["chunk_blocks"])
    s.invalid("x_REC-07_block_named_twice", f, "LayoutError", ["REC-07"], ["chunking"],
              "Two tensors with the same content; the second one's chunk names the first one's "
              "block.")
    f = base()
    f.add_block(Block(V.CHUNK, b"\x01\x02\x03\x04\x05", 1, 0, 1))
    s.invalid("x_REC-07_orphan_chunk_block", f, "LayoutError", ["REC-07"], ["chunking"],
              "A CHUNK block that no chunk names.")

    for what, key in (("tensor_id", "tensor_id"), ("stream_id", "stream_id"),
                      ("chunk_id", "chunk_id")):
        f = base()
        b = f.chunk_block("b")
        setattr(b, key, {"tensor_id": 0, "stream_id": 1, "chunk_id": 1}[key])
        s.invalid(f"x_REC-08_{what}", f, "LayoutError", ["REC-08"], ["chunking", "blocks"],
                  f"The CHUNK block of tensor `b` carries a wrong {what} (CRC recomputed).")
    f = base()
    w0, w1 = f.chunk_block("w", 0), f.chunk_block("w", 1)
    assert len(w0.payload) == len(w1.payload)
    st = f.record("w")["streams"][0]
    i0, i1 = st["chunk_blocks"]
    f.blocks[i0], f.blocks[i1] = f.blocks[i1], f.blocks[i0]
    s.invalid("x_REC-08_chunks_swapped", f, "LayoutError", ["REC-08"], ["chunking", "blocks"],
              "The two (equal-sized, intact) chunks of `w` trade places in the file; the index "
              "is unchanged, so chunk 0 reads the block that holds chunk 1.")

    # -- REC-09, REC-10, PLN-01 --------------------------------------------------------------------
    f = base()
    d = bytearray(f.record("w")["sha256"])
    d[31] ^= 1
    f.record("w")["sha256"] = bytes(d)
    s.invalid("x_REC-09_sha256_bitflip", f, "DigestMismatch", ["REC-09"], ["sha256"],
              "The last bit of tensor `w`'s SHA-256 is flipped.")
    f = base()
    f.record("b")["sha256"] = f.record("w")["sha256"]
    s.invalid("x_REC-09_sha256_of_other", f, "DigestMismatch", ["REC-09"], ["sha256"],
              "Tensor `b` carries the SHA-256 of tensor `w`.")
    f = base()
    f.record("b")["sha256"] = hashlib.sha256(b"").digest()
    s.invalid("x_REC-09_sha256_of_empty", f, "DigestMismatch", ["REC-09"], ["sha256"],
              "Tensor `b` carries the SHA-256 of the empty string.")
    for bit in (2, 7):
        f = base()
        f.record("b")["record_flags"] |= 1 << bit
        s.invalid(f"x_REC-10_flags_bit{bit}", f, "MalformedRecord", ["REC-10", "RSV-01"],
                  ["record", "reserved"], f"record_flags bit {bit} (reserved) is set.")

    f = base()
    r = f.record("b")
    r["params_length"], r["params"] = 4, b"\x00\x00\x00\x00"
    s.invalid("x_PLN-01_params", f, "MalformedRecord", ["PLN-01"], ["record:plain"],
              "A plain record with params_length 4.")
    f = base()
    r = f.record("b")
    r["stream_count"] = 2
    empty = dict(stream_dtype=7, stream_rank=1, stream_shape=[0], chunk_elements=1,
                 codec_count=1, codecs=[dict(codec_id=1, config_length=0, config=b"")],
                 chunk_count=0, chunk_blocks=[])
    r["streams"] = [r["streams"][0], empty]
    s.invalid("x_PLN-01_two_streams", f, "MalformedRecord", ["PLN-01"], ["record:plain"],
              "A plain record with a second (empty) stream.")
    f = base()
    r = f.record("b")
    r["record_flags"] |= 2
    r["error"] = dict(max_abs_error=0.0, mean_squared_error=0.0, signal_power=1.0)
    s.invalid("x_PLN-01_lossy", f, "MalformedRecord", ["PLN-01", "REC-10"], ["record:plain"],
              "A plain record with the lossy flag (and its ErrorStats).")
    f = base()
    f.record("w")["streams"][0]["stream_dtype"] = 13   # uint32, same itemsize
    s.invalid("x_PLN-01_stream_dtype", f, "MalformedRecord", ["PLN-01"], ["record:plain"],
              "A float32 plain record whose stream is uint32 (same itemsize).")
    f = base()
    st = f.record("w")["streams"][0]
    st["stream_rank"], st["stream_shape"] = 1, [32]
    s.invalid("x_PLN-01_stream_rank", f, "MalformedRecord", ["PLN-01"], ["record:plain"],
              "A [4, 8] plain record whose stream is [32] (same element count).")
    f = base()
    st = f.record("w")["streams"][0]
    st["stream_shape"] = [8, 4]
    s.invalid("x_PLN-01_stream_shape", f, "MalformedRecord", ["PLN-01"], ["record:plain"],
              "A [4, 8] plain record whose stream is [8, 4].")


def _codecs_1_0(s: Suite) -> None:
    # -- CHN-01 ------------------------------------------------------------------------------------
    B = dict(codec_id=1, config_length=0, config=b"")
    P = dict(codec_id=2, config_length=0, config=b"")

    def LN(n):
        return dict(codec_id=256, config_length=1, config=bytes([n]))

    def with_codecs(codecs, name="w"):
        f = base()
        st = f.record(name)["streams"][0]
        st["codec_count"], st["codecs"] = len(codecs), codecs
        return f

    for vid, codecs, what in (
            ("lanes_only", [LN(4)], "only `lanes`: no array->bytes codec"),
            ("two_array_to_bytes", [P, B], "`planes` then `bytes`"),
            ("lanes_first", [LN(4), P], "`lanes` before `planes`"),
            ("two_lanes", [P, LN(4), LN(4)], "`planes`, `lanes`, `lanes` (more than one "
                                             "bytes->bytes codec)")):
        s.invalid(f"x_CHN-01_{vid}", with_codecs(codecs), "MalformedRecord", ["CHN-01"],
                  ["codecs"], f"Tensor `w`'s chain is {what}.")
    for cid, what in ((255, "an unknown array->bytes id"), (511, "an unknown bytes->bytes id"),
                      (0, "a reserved id"), (65535, "a reserved id")):
        codecs = [B, dict(codec_id=cid, config_length=0, config=b"")] if cid == 511 else \
            [dict(codec_id=cid, config_length=0, config=b"")]
        s.invalid(f"x_CHN-01_unknown_codec_{cid}", with_codecs(codecs, "b"),
                  "UnsupportedFeature", ["CHN-01"], ["codecs"],
                  f"Tensor `b`'s chain holds codec_id {cid} ({what}).")
    s.invalid("x_CHN-01_array_to_array_512",
              with_codecs([dict(codec_id=512, config_length=0, config=b""), B], "b"),
              "UnsupportedFeature", ["CHN-01"], ["codecs"],
              "Tensor `b`'s chain is codec 512 (an array->array id, none defined) then `bytes`.",
              also=("MalformedRecord",),
              note="CHN-01 rejects both an unknown codec_id (UnsupportedFeature) and, in 1.0, "
                   "any array->array codec (MalformedRecord); the spec does not say which "
                   "check comes first, so both classes are accepted.")
    s.invalid("x_CHN-01_bytes_config", with_codecs([dict(codec_id=1, config_length=1,
                                                         config=b"\x00")], "b"),
              "MalformedRecord", ["CHN-01"], ["codecs", "codec:bytes"],
              "A `bytes` codec with a 1-byte config.")
    s.invalid("x_CHN-01_planes_config", with_codecs([dict(codec_id=2, config_length=2,
                                                          config=b"\x00\x00"), LN(4)]),
              "MalformedRecord", ["CHN-01"], ["codecs", "codec:planes"],
              "A `planes` codec with a 2-byte config.")

    # -- LAN-01 ------------------------------------------------------------------------------------
    for vid, cfg, what in (("config_empty", b"", "config_length 0"),
                           ("config_2_bytes", b"\x04\x00", "a 2-byte config"),
                           ("lane_count_0", b"\x00", "lane_count 0"),
                           ("lane_count_17", b"\x11", "lane_count 17")):
        s.invalid(f"x_LAN-01_{vid}", with_codecs([P, dict(codec_id=256, config_length=len(cfg),
                                                          config=cfg)]),
                  "MalformedRecord", ["LAN-01", "CHN-01"], ["codec:lanes"],
                  f"`lanes` with {what}.")

    # -- LAN-02 ------------------------------------------------------------------------------------
    f = File(6)
    data = bytes(range(10))
    f.add_plain("t", "uint8", [10], data, chain_=chain("bytes+lanes", "uint8", lanes=1,
                                                       methods="raw"))
    f.record("t")["streams"][0]["codecs"][1]["config"] = b"\x04"
    f.blocks[0].payload = V.lanes_payload([(V.RAW, data[:2]), (V.RAW, data[2:4]),
                                           (V.RAW, data[4:6]), (V.RAW, data[6:10])])
    s.invalid("x_LAN-02_not_multiple", f, "CorruptPayload", ["LAN-02", "CHN-02"],
              ["codec:lanes"], "uint8 [10] through `lanes` with lane_count 4: L = 10.")
    f = File(6)
    data = bytes(range(14))
    f.add_plain("t", "uint8", [14], data, chain_=chain("bytes+lanes", "uint8", lanes=1,
                                                       methods="raw"), chunk_elements=8)
    f.record("t")["streams"][0]["codecs"][1]["config"] = b"\x04"
    f.blocks[0].payload = V.lanes_encode(data[:8], 4, "raw")
    f.blocks[1].payload = V.lanes_payload([(V.RAW, data[8:10]), (V.RAW, data[10:12]),
                                           (V.RAW, data[12:13]), (V.RAW, data[13:14])])
    s.invalid("x_LAN-02_last_chunk", f, "CorruptPayload", ["LAN-02", "CHN-02"],
              ["codec:lanes", "chunking"],
              "uint8 [14] in chunks of 8 through `lanes` with lane_count 4: the first chunk "
              "(L = 8) is fine, the second has L = 6.")

    # -- LAN-03 .. LAN-06 on the zstd base ----------------------------------------------------------
    def zmut(mutate, methods=("zstd", "raw", "raw", "raw")) -> File:
        f = zbase(methods)
        lanes = parse_lanes(f.blocks[0].payload, 4)
        out = mutate(lanes)
        f.blocks[0].payload = out if isinstance(out, bytes) else raw_lanes(out)
        return f

    s.valid("v_zbase", zbase(), ["LAN-06", *LOSSLESS], ["codec:lanes", "lane:zstd"],
            "The base of the lanes defects: float32 `z` [256] through planes > lanes(4), lane 0 "
            "zstd, lanes 1-3 raw.")
    s.invalid("x_LAN-03_headers_cut",
              zmut(lambda ls: raw_lanes(ls)[:17]), "CorruptPayload", ["LAN-03", "CHN-02"],
              ["codec:lanes"], "The chunk payload is 17 bytes: less than the 4 lane headers.")
    s.invalid("x_LAN-03_extra_byte", zmut(lambda ls: raw_lanes(ls) + b"\x00"), "CorruptPayload",
              ["LAN-03", "CHN-02"], ["codec:lanes"],
              "One byte after the last lane's data.")
    s.invalid("x_LAN-03_missing_byte", zmut(lambda ls: raw_lanes(ls)[:-1]), "CorruptPayload",
              ["LAN-03", "CHN-02"], ["codec:lanes"],
              "The last lane's data is one byte short of its coded_length.")

    def lane_len(ls, j, n):
        heads = b"".join(struct.pack("<BI", m, n if k == j else len(b))
                         for k, (m, b) in enumerate(ls))
        return heads + b"".join(b for _, b in ls)
    s.invalid("x_LAN-03_coded_length_large",
              zmut(lambda ls: lane_len(ls, 1, 0xFFFFFFFF)), "CorruptPayload",
              ["LAN-03", "CHN-02"], ["codec:lanes"],
              "Lane 1 declares coded_length 2^32 - 1.")

    for m in (3, 255):
        s.invalid(f"x_LAN-04_method_{m}",
                  zmut(lambda ls, m=m: [[m if j == 2 else a, b] for j, (a, b) in enumerate(ls)]),
                  "UnsupportedFeature", ["LAN-04"], ["codec:lanes"],
                  f"Lane 2 has method {m}.")

    def shift(ls):   # raw lanes 1 and 2: 255 and 257 bytes, the total unchanged
        ls[1][1], ls[2][1] = ls[1][1][:-1], ls[1][1][-1:] + ls[2][1]
        return ls
    s.invalid("x_LAN-05_raw_length", zmut(shift), "CorruptPayload", ["LAN-05", "CHN-02"],
              ["codec:lanes", "lane:raw"],
              "Raw lanes of 255 and 257 bytes where D = 256 (their sum is right).")
    const_methods = ("zstd", "raw", "raw", "raw")

    def fill2(ls):
        ls[3] = [V.FILL, ls[3][1][:2]]
        return ls
    s.invalid("x_LAN-05_fill_2_bytes", zmut(fill2, const_methods), "CorruptPayload",
              ["LAN-05", "CHN-02"], ["codec:lanes", "lane:fill"],
              "A fill lane with coded_length 2.")

    def fill0(ls):
        ls[3] = [V.FILL, b""]
        return ls
    s.invalid("x_LAN-05_fill_0_bytes", zmut(fill0, const_methods), "CorruptPayload",
              ["LAN-05", "CHN-02"], ["codec:lanes", "lane:fill"],
              "A fill lane with coded_length 0.")

    lane0 = planes_lane0()
    D = len(lane0)

    def frame(fr):
        return lambda ls: [[V.ZSTD, fr]] + ls[1:]
    s.invalid("x_LAN-06_declares_more", zmut(frame(V.zstd_compress(lane0 + b"\x00"))),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a zstd frame of D + 1 bytes that declares its content size.")
    s.invalid("x_LAN-06_declares_less", zmut(frame(V.zstd_compress(lane0[:-1]))),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a zstd frame of D - 1 bytes that declares its content size.")
    s.invalid("x_LAN-06_undeclared_more",
              zmut(frame(V.zstd_compress(lane0 + b"\x00", content_size=False))),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a zstd frame of D + 1 bytes without a declared content size.")
    s.invalid("x_LAN-06_undeclared_less",
              zmut(frame(V.zstd_compress(lane0[:-1], content_size=False))),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a zstd frame of D - 1 bytes without a declared content size.")
    bomb = V.zframe([("rle", 0, 128 << 10)] * 128, fcs=None, window_log=17)
    s.invalid("x_LAN-06_bomb_undeclared", zmut(frame(bomb)), "CorruptPayload",
              ["LAN-06", "CHN-02", "LIM-01"], ["codec:lanes", "lane:zstd", "limits"],
              "Lane 0 is a 520-byte zstd frame without a content size that expands to 16 MiB: "
              "a decoder must stop after D bytes.")
    declared = V.zframe([("rle", 0, 1000)], fcs=1 << 40, fcs_bytes=8)
    s.invalid("x_LAN-06_bomb_declared", zmut(frame(declared)), "CorruptPayload",
              ["LAN-06", "CHN-02", "LIM-01"], ["codec:lanes", "lane:zstd", "limits"],
              "Lane 0 is a zstd frame whose header declares 2^40 bytes: rejected before "
              "decompressing.")
    good_frame = V.zstd_compress(lane0)
    s.invalid("x_LAN-06_byte_after_frame", zmut(frame(good_frame + b"\x00")), "CorruptPayload",
              ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a complete zstd frame followed by one zero byte.")
    s.invalid("x_LAN-06_two_frames",
              zmut(frame(V.zstd_compress(lane0[:100]) + V.zstd_compress(lane0[100:]))),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is two zstd frames whose contents add up to the lane.")
    skippable = b"\x50\x2a\x4d\x18" + struct.pack("<I", 4) + b"skip"
    s.invalid("x_LAN-06_skippable_first", zmut(frame(skippable + good_frame)),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a skippable frame, then the right zstd frame.")
    s.invalid("x_LAN-06_skippable_after", zmut(frame(good_frame + skippable)),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is the right zstd frame, then a skippable frame.")
    s.invalid("x_LAN-06_truncated_frame", zmut(frame(good_frame[:-3])), "CorruptPayload",
              ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a zstd frame missing its last 3 bytes.")
    s.invalid("x_LAN-06_not_a_frame", zmut(frame(b"\x00" * 16)), "CorruptPayload",
              ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 (method zstd) holds 16 zero bytes, not a frame.")
    s.invalid("x_LAN-06_dictionary",
              zmut(frame(V.zframe([("raw", lane0)], fcs=D, fcs_bytes=2, dict_id=0x1234))),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a frame whose header names dictionary 0x1234 (raw block, content "
              "size D).")
    s.invalid("x_LAN-06_reserved_block_type",
              zmut(frame(V.zframe([("reserved", lane0)], fcs=D, fcs_bytes=2))),
              "CorruptPayload", ["LAN-06", "CHN-02"], ["codec:lanes", "lane:zstd"],
              "Lane 0 is a frame whose only block has the reserved Block_Type 3.")

    # -- BYT-01 and PLN2-01 ------------------------------------------------------------------------
    f = base()
    b = f.chunk_block("b")
    b.payload = b.payload[:-1]
    s.invalid("x_BYT-01_short", f, "CorruptPayload", ["BYT-01", "CHN-02"], ["codec:bytes"],
              "The `bytes` chunk of int8 [5] holds 4 bytes (CRCs recomputed).")
    f = base()
    b = f.chunk_block("b")
    b.payload = b.payload + b"\x00"
    s.invalid("x_BYT-01_long", f, "CorruptPayload", ["BYT-01", "CHN-02"], ["codec:bytes"],
              "The `bytes` chunk of int8 [5] holds 6 bytes (CRCs recomputed).")
    for vid, cut in (("short", -1), ("long", 1)):
        f = File(6)
        f.add_plain("p", "float16", [6], rng=rng_for("x_PLN2-01"), chain_=chain("planes"))
        p = f.blocks[0].payload
        f.blocks[0].payload = p[:cut] if cut < 0 else p + b"\x00"
        s.invalid(f"x_PLN2-01_{vid}", f, "CorruptPayload", ["PLN2-01", "CHN-02"],
                  ["codec:planes"],
                  f"The `planes` chunk of float16 [6] holds {len(p) + cut} bytes, not 12.")


def planes_lane0() -> bytes:
    f = zbase()
    data = V.sample("float32", 256, rng_for("zbase", "z"))
    return V.planes_encode(data, "float32")[:256]


def _limits_1_0(s: Suite) -> None:
    for what, key, value, maximum in (("block_count", "block_count", (1 << 28) + 1, "2^28"),
                                      ("tensor_count", "tensor_count", (1 << 24) + 1, "2^24")):
        f = base()
        f.index_header[key] = value
        s.invalid(f"x_IDX-04_{what}_over_max", f, "LimitExceeded", ["IDX-04", "LIM-02"],
                  ["index", "limits"],
                  f"{what} = {maximum} + 1, above the format maximum (the payload cannot hold "
                  "that many entries either).", also=("Truncated",),
                  note="IDX-04 asks for both checks (LimitExceeded against §10, Truncated against "
                       "the remaining bytes) without an order, and a file cannot hold this many "
                       "entries; both classes are accepted.")
    f = base()
    for i in range(4096):
        f.add_meta(f"m{i:04d}", 4, b"\x01")
    s.invalid("x_IDX-04_metadata_count_4097", f, "LimitExceeded", ["IDX-04", "LIM-02"],
              ["metadata", "limits"],
              "4,097 metadata entries (all present and well-formed): the format maximum is 4,096.")
    f = base()
    f.add_meta("big", 5, bytes((1 << 20) + 1))
    s.invalid("x_LIM-02_metadata_value_over_1mib", f, "LimitExceeded", ["LIM-02", "LIM-01"],
              ["metadata", "limits"],
              "A metadata value of 1 MiB + 1 bytes (present in full): above the format maximum.")


def _acceptable_1_0(s: Suite) -> None:
    f = base()
    for i in range(2000):
        f.add_meta(f"m{i:04d}", 2, struct.pack("<q", i))
    s.acceptable("a_LIM-02_metadata_count_2000", f, "LimitExceeded", ["LIM-02", "IDX-04"],
                 ["metadata", "limits"], "2,000 metadata entries.",
                 note="Between 'must support' (1,024) and the format maximum (4,096): a decoder "
                      "MAY reject with LimitExceeded.")
    f = base()
    f.add_meta("big", 5, bytes(rng_for("a_LIM-02_metadata_value_100kib").integers(
        0, 256, 100 << 10, dtype=np.uint8)))
    s.acceptable("a_LIM-02_metadata_value_100kib", f, "LimitExceeded", ["LIM-02"],
                 ["metadata", "limits"], "A 100 KiB metadata value.",
                 note="Between 'must support' (64 KiB) and the format maximum (1 MiB): a decoder "
                      "MAY reject with LimitExceeded.")
    f = base()
    f.add_plain("empty_huge", "float32", [1 << 61, 0], b"", chain_=chain("bytes"))
    s.acceptable("a_REC-04_zero_dim_after_huge", f, "LimitExceeded", ["REC-04"],
                 ["shape:empty", "limits"],
                 "float32 [2^61, 0]: 0 elements, but the partial product 2^61 (2^63 bytes) "
                 "exceeds 2^62.",
                 note="The byte size is 0, yet a decoder multiplying dimensions in order with "
                      "overflow checks (as REC-04 asks) sees 2^63 bytes first; both readings "
                      "are allowed until the spec says which.")
    f = base()
    f.blocks.insert(0, Block(0x0001, b"optional block with a bad CRC", trailer=lambda c: c ^ 1))
    for r in f.records:
        r["streams"][0]["chunk_blocks"] = [b + 1 for b in r["streams"][0]["chunk_blocks"]]
    s.acceptable("a_BLK-01_optional_block_crc", f, "ChecksumMismatch", ["BLK-01", "BLK-03"],
                 ["optional-block", "checksum"],
                 "An unknown optional block whose CRC is wrong (trailer and table agree).",
                 note="BLK-01 binds blocks a decoder reads; a decoder that ignores the unknown "
                      "block (BLK-03) never sees the error. One that reads every block rejects.")
    f = base()
    f.blocks.insert(0, Block(0x0001, b"optional block, then bad padding", pad_fill=0x01))
    for r in f.records:
        r["streams"][0]["chunk_blocks"] = [b + 1 for b in r["streams"][0]["chunk_blocks"]]
    s.acceptable("a_LAY-03_optional_block_padding", f, "LayoutError", ["LAY-03", "BLK-03"],
                 ["optional-block", "layout"],
                 "Non-zero padding after an unknown optional block.",
                 note="LAY-03 requires checking the padding after the header and after blocks "
                      "a decoder reads; this padding follows a block it need not read.")
    zl = V.zstd_compress(planes_lane0(), checksum=True)
    zl = zl[:-4] + bytes(b ^ 0xFF for b in zl[-4:])
    f = zbase()
    lanes = parse_lanes(f.blocks[0].payload, 4)
    lanes[0][1] = zl
    f.blocks[0].payload = raw_lanes(lanes)
    s.acceptable("a_LAN-06_frame_checksum", f, "CorruptPayload", ["LAN-06"],
                 ["codec:lanes", "lane:zstd"],
                 "Lane 0 is a zstd frame with a wrong Content_Checksum (its content is right).",
                 note="RFC 8878 lets a decoder skip the optional content checksum; one that "
                      "checks it rejects the frame.")


# ================================================================================================
# batch container-1.0b: gaps of batch 1.0 against issue 3's list (container rules only)
# ================================================================================================
def batch_container_1_0b(s: Suite) -> None:
    s.batch = "container-1.0b"

    # -- HDR-01 before HDR-02: a short file with the wrong magic is BadMagic ----------------------
    png = b"\x89PNG\r\n\x1a\n" + bytes(12)
    s.invalid("x_HDR-01_short_bad_magic_20", png, "BadMagic", ["HDR-01", "HDR-02"], ["header"],
              "A 20-byte file that starts with the PNG signature: the magic is checked before "
              "the length (BadMagic, not Truncated).")
    good = base().build()
    s.invalid("x_HDR-01_short_bad_magic_63", set_at(good[:63], 0, b"\x88"), "BadMagic",
              ["HDR-01", "HDR-02"], ["header"],
              "The first 63 bytes of a valid file with magic byte 0 changed to 0x88.")

    # -- truncation inside every structure of the INDEX payload (all CRCs and sizes recomputed) ---
    f = base()
    f.build()
    parts = f.layout["index_parts"]
    blocks_end = parts[0] + 24 * len(f.blocks)
    meta0 = blocks_end
    b_rec = rec_offset(f, 1)        # tensor `b`, int8 [5] through `bytes`: the last record
    cuts = [
        ("index_header", 10, "inside the IndexHeader (10 of 16 bytes)", ["IDX-03"]),
        ("block_entry", parts[0] + 24 + 12, "inside the second BlockEntry", ["IDX-03", "IDX-04"]),
        ("metadata_key", meta0 + 2 + 2, "inside the first metadata key",
         ["IDX-03", "IDX-04"]),
        ("tensor_name", b_rec + 2, "after the last record's name_length, before its name",
         ["IDX-03"]),
        ("sha256", b_rec + 15 + 16, "inside the last record's sha256", ["IDX-03"]),
        ("params_length", b_rec + 47 + 2, "inside the last record's params_length", ["IDX-03"]),
        ("stream_count", b_rec + 51, "before the last record's stream_count", ["IDX-03"]),
        ("chunk_elements", b_rec + 62 + 4, "inside the last stream's chunk_elements",
         ["IDX-03"]),
        ("codec", b_rec + 71 + 1, "inside the last stream's CodecSpec", ["IDX-03"]),
        ("chunk_count", b_rec + 75 + 2, "inside the last stream's chunk_count", ["IDX-03"]),
    ]
    assert f.record("b")["name"] == b"b" and sum(parts) == b_rec + 83
    for name, at, what, rules in cuts:
        g = base()
        g.index_hook = lambda p, at=at: p[:at]
        s.invalid(f"x_IDX-03_cut_{name}", g, "Truncated", [*rules, "LIM-01"],
                  ["index", "truncation"],
                  f"The INDEX payload ends {what}; every length and CRC agrees with the shorter "
                  "payload.")
    f = File(6)
    f.add_plain("t", "float32", [8], rng=rng_for("x_IDX-03_cut_codec_config"))
    f.build()
    cfg = sum(f.layout["index_parts"]) - 4 - 4 - 1   # lanes' one config byte
    assert f.records[0]["streams"][0]["codecs"][1]["config_length"] == 1
    f.index_hook = lambda p: p[:cfg]
    s.invalid("x_IDX-03_cut_codec_config", f, "Truncated", ["IDX-03", "LIM-01"],
              ["index", "truncation", "codec:lanes"],
              "The INDEX payload ends after the `lanes` codec's config_length (1), before its "
              "config byte.")

    # -- offsets out of range, overlapping the header, holes -----------------------------------
    f = base()
    f.chunk_block("b").entry["offset"] = (1 << 64) - 1
    s.invalid("x_LAY-01_offset_past_end", f, "LayoutError", ["LAY-01", "LAY-04"], ["layout"],
              "The last table entry's offset is 2^64 - 1, far past the end of the file.")
    f = base()
    f.chunk_block("w", 0).entry["offset"] = 0
    s.invalid("x_LAY-01_offset_in_header", f, "LayoutError", ["LAY-01"], ["layout"],
              "The first table entry's offset is 0: the block would overlap the file header.")
    f = base()
    f.blocks[0].gap_before = bytes(64)
    s.invalid("x_LAY-01_hole_after_header", f, "LayoutError", ["LAY-01"], ["layout"],
              "64 zero bytes between the header's padding and the first block (the table has "
              "the true offsets).")
    f = base()
    data = f.build()
    first = f.layout["blocks"][0]["offset"]
    s.invalid("x_IDX-01_footer_points_at_chunk",
              reseal_footer_fields(data, index_offset=first,
                                   index_block_size=len(data) - 32 - first),
              "LayoutError", ["IDX-01", "FTR-03"], ["footer", "index"],
              "The footer locates the INDEX block at the first CHUNK block (index_offset + "
              "index_block_size = file_size - 32, A divides it).")
    f = base()
    f.index_block["stream_id"] = 0
    s.invalid("x_IDX-01_stream_id", f, "LayoutError", ["IDX-01"], ["index"],
              "The INDEX block has stream_id 0 instead of 0xFFFFFFFF (its CRC recomputed).")


# ================================================================================================
# batch quantized-1.0: record kind 2 `quantized` (spec/records/quantized.md)
# ================================================================================================
# The expected bytes are computed here from the spec with exact rational arithmetic (Fraction), not
# with wcodec: y = m × S (exact, |m| ≤ 2^29), then one rounding to nearest even in the target
# format, saturating at its largest finite value (quantization.md §4.2).
Q_FMT = {"float64": (11, 52), "float32": (8, 23), "float16": (5, 10), "bfloat16": (8, 7)}
Q_LEVEL_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32}


def q_round_bits(v, dtype: str) -> int:
    """The bit pattern of the exact rational v (a Fraction) rounded once to `dtype`."""
    from fractions import Fraction
    E, M = Q_FMT[dtype]
    bias = (1 << (E - 1)) - 1
    emin = 1 - bias
    sign = 1 if v < 0 else 0
    a = abs(Fraction(v))
    maxf = Fraction(2 ** (M + 1) - 1, 2 ** M) * Fraction(2) ** bias
    if a == 0:
        return sign << (E + M)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1                                   # now 2^e <= a < 2^(e+1)
    ulp = Fraction(2) ** (max(e, emin) - M)
    q = a / ulp
    n = q.numerator // q.denominator
    r = q - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2):
        n += 1
    res = min(n * ulp, maxf)
    if res >= Fraction(2) ** emin:
        e2 = res.numerator.bit_length() - res.denominator.bit_length()
        if Fraction(2) ** e2 > res:
            e2 -= 1
        mant = res / Fraction(2) ** (e2 - M) - 2 ** M
        field_e = e2 + bias
    else:
        mant, field_e = res / Fraction(2) ** (emin - M), 0
    assert mant.denominator == 1
    return (sign << (E + M)) | (field_e << M) | int(mant)


def q_multipliers(k: np.ndarray, quantizer: int) -> np.ndarray:
    """Per row, the state machine of quantization.md §3.2 (state 0 at every row's start)."""
    if quantizer == 0:
        return k.copy()
    m = np.zeros_like(k)
    for r in range(k.shape[0]):
        state = 0
        for j in range(k.shape[1]):
            a, b = state >> 1, state & 1
            kk = int(k[r, j])
            m[r, j] = 2 * kk - a * ((kk > 0) - (kk < 0))
            state = ((b ^ (kk & 1)) << 1) | a
    return m


def q_zigzag(k: np.ndarray) -> np.ndarray:
    return np.where(k >= 0, 2 * k, -2 * k - 1).astype(np.int64)


def add_quantized(f: File, name: str, dtype: str, shape, *, quantizer: int, scale_mode: int,
                  group_size: int = 0, classes=None, level_dtypes=None, seed=None,
                  levels=None, scales=None, x=None, expect: bool = True,
                  chain_spec: str = "planes+lanes") -> dict:
    """A `quantized` record: levels (rows, cols) int64 and scales (float32) are drawn from an RNG
    seeded by `seed` unless given. classes: row -> class list (C > 1) or None. Returns the record
    (its streams in the order of quantized.md §2), with the expected decoded bytes registered."""
    from fractions import Fraction
    rng = rng_for("quantized", seed or name)
    n = V.count(shape)
    rows, cols = (shape[0], n // shape[0]) if len(shape) >= 2 and shape[0] > 0 else (1, n)
    per_row = -(-cols // group_size) if scale_mode == 2 else 0
    nscales = {0: 0, 1: rows, 2: rows * per_row}[scale_mode]
    if scales is None:
        scales = (np.exp(rng.uniform(-7, -3, max(nscales, 1)))).astype(np.float32)
    scales = np.asarray(scales, np.float32).reshape(-1)
    if levels is None:
        levels = np.rint(rng.standard_normal((rows, cols)) * rng.uniform(2, 40)).astype(np.int64)
    levels = np.asarray(levels, np.int64).reshape(rows, cols)
    m = q_multipliers(levels, quantizer)

    def S(r, c):
        if scale_mode == 0:
            return scales[0]
        if scale_mode == 1:
            return scales[r]
        return scales[r * per_row + c // group_size]
    out = []
    for r in range(rows):
        for c in range(cols):
            sc = float(S(r, c))
            if not np.isfinite(sc):   # only in invalid vectors (QNT-07): no expected value
                out.append(0)
                continue
            out.append(q_round_bits(Fraction(int(m[r, c])) * Fraction(sc), dtype))
    size = V.itemsize(dtype)
    decoded = np.array(out, dtype=np.uint64).astype(f"<u{size}").tobytes()
    # ErrorStats: against x when given, else against the decoded values themselves (all zero)
    yv = np.array([V_value(b, dtype) for b in out], np.float64)
    xv = yv if x is None else np.asarray(x, np.float64).reshape(-1)
    d = xv - yv
    error = dict(max_abs_error=float(np.max(np.abs(d))) if n else 0.0,
                 mean_squared_error=float(np.mean(d * d)) if n else 0.0,
                 signal_power=float(np.mean(xv * xv)) if n else 0.0)
    # streams
    t = len(f.records)
    cmap, C = classes if classes is not None else ([0] * rows, 1)
    parts = []
    for c in range(C):
        sel = [r for r in range(rows) if cmap[r] == c]
        z = q_zigzag(levels[sel].reshape(-1)) if sel else np.zeros(0, np.int64)
        ld = (level_dtypes or {}).get(c)
        if ld is None:
            top = int(z.max()) if z.size else 0
            ld = "uint8" if top < 256 else "uint16" if top < 65536 else "uint32"
        parts.append((ld, z.astype(Q_LEVEL_DTYPES[ld]).tobytes(), z.size))
    if C > 1:
        parts.append(("uint8", bytes(cmap), rows))
    if scale_mode:
        parts.append(("float32", scales[:nscales].tobytes(), nscales))
    streams = []
    for sid, (sd, data, count) in enumerate(parts):
        ch = chain(chain_spec, sd)
        payload = ch.encode(data, sd, 0)
        blocks = [f.add_block(Block(V.CHUNK, payload, t, sid, 0))] if count else []
        streams.append(dict(stream_dtype=V.DTYPES[sd][0], stream_rank=1, stream_shape=[count],
                            chunk_elements=max(count, 1), codec_count=len(ch.specs()),
                            codecs=ch.specs(), chunk_count=len(blocks), chunk_blocks=blocks))
    params = struct.pack("<BBBBIfI", quantizer, scale_mode, C, 0, group_size,
                         float(scales[0]) if scale_mode == 0 else 0.0, 0)
    nb = name.encode()
    rec = dict(name_length=len(nb), name=nb, dtype=V.DTYPES[dtype][0], record_kind=2,
               record_flags=3, rank=len(shape), shape=list(shape),
               sha256=hashlib.sha256(decoded).digest(), error=error,
               params_length=len(params), params=params, stream_count=len(streams),
               streams=streams)
    f.records.append(rec)
    if expect:
        f.expect.append(V.Expect(name, dtype, list(shape), V.sha256(decoded)))
    return rec


def V_value(bits: int, dtype: str) -> float:
    """The value of a bit pattern (for ErrorStats only)."""
    if dtype == "bfloat16":
        return float(np.array([bits << 16], np.uint32).view(np.float32)[0])
    size = V.itemsize(dtype)
    return float(np.array([bits], f"<u{size}").view(f"<f{size}")[0])


def batch_quantized_1_0(s: Suite) -> None:
    s.batch = "quantized-1.0"
    Q = ["QNT-01", "QNT-02", "QNT-03", "QNT-04", "QNT-08", "REC-09"]
    # -- valid: each scale mode × quantizer × dtype ------------------------------------------------
    for dtype in ("float32", "float16", "bfloat16", "float64"):
        for quantizer, qname in ((0, "uniform"), (1, "dependent")):
            for mode, mname, g in ((0, "tensor", 0), (1, "channel", 0), (2, "group", 5)):
                if dtype == "float64" and mode != 0:
                    continue
                f = File(6)
                add_quantized(f, "q", dtype, [6, 12], quantizer=quantizer, scale_mode=mode,
                              group_size=g, seed=f"{dtype}/{qname}/{mname}")
                vid = f"v_quantized_{dtype}_{qname}_{mname}"
                s.valid(vid, f, Q, ["record:quantized", f"dtype:{dtype}", f"quantizer:{qname}",
                                    f"scales:{mname}"],
                        f"A {dtype} [6, 12] quantized record, {qname} quantizer, {mname} scales"
                        + (" (group_size 5: the last group of each row has 2 elements)"
                           if mode == 2 else "") + ".")
    # row classes, several level dtypes, rank 1 and rank 3, empty tensor, a class with no rows
    f = File(6)
    add_quantized(f, "classes", "float32", [8, 10], quantizer=1, scale_mode=1,
                  classes=([2, 0, 1, 2, 0, 1, 1, 0], 3), level_dtypes={1: "uint16"},
                  seed="classes")
    add_quantized(f, "vector", "float32", [37], quantizer=1, scale_mode=0, seed="vector")
    add_quantized(f, "conv", "float16", [4, 3, 2, 2], quantizer=0, scale_mode=2, group_size=4,
                  seed="conv")
    add_quantized(f, "empty_class", "bfloat16", [4, 3], quantizer=0, scale_mode=0,
                  classes=([0, 0, 2, 2], 3), seed="empty_class")
    add_quantized(f, "empty", "float32", [0, 5], quantizer=1, scale_mode=1, seed="empty")
    add_quantized(f, "wide", "float32", [2, 300], quantizer=1, scale_mode=2, group_size=64,
                  levels=np.rint(rng_for("quantized", "wide").standard_normal((2, 300)) * 30000),
                  seed="wide", chain_spec="bytes")
    s.valid("v_quantized_classes_shapes", f, Q + ["QNT-05", "QNT-06", "QNT-07"],
            ["record:quantized", "quantized:classes", "shape"],
            "Quantized records with 3 row classes (one level stream uint16), rank 1, rank 4 with "
            "group scales, a class that holds no rows, an empty tensor [0, 5] (one row, 0 "
            "columns, 1 channel scale) and uint32 levels through the bytes codec.")
    # exact rounding: bfloat16 rounded directly from binary64 (rounding through binary32 differs),
    # float16 saturation, signed zero, subnormal results
    f = File(6)
    T = (1 << 27) + (1 << 19)   # a bfloat16 tie; binary32's ulp there is 16
    add_quantized(f, "bf16_direct", "bfloat16", [4], quantizer=0, scale_mode=0,
                  scales=[1 + 2 ** -23], levels=[[T - 16, -(T - 16), 0, 3]], seed="bf16_direct")
    add_quantized(f, "f16_saturate", "float16", [5], quantizer=0, scale_mode=0,
                  scales=[1000.0], levels=[[65, -66, 100000, 1, -1]], seed="f16_saturate")
    add_quantized(f, "f16_subnormal", "float16", [4], quantizer=0, scale_mode=0,
                  scales=[2 ** -26], levels=[[1, 3, -5, 1023]], seed="f16_subnormal")
    add_quantized(f, "f32_max_level", "float32", [3], quantizer=1, scale_mode=0,
                  scales=[2 ** -20], levels=[[1 << 28, -(1 << 28), 7]], seed="f32_max_level")
    s.valid("v_quantized_rounding", f, Q + ["QNT-06"],
            ["record:quantized", "quantized:rounding"],
            "Exact rounding of quantization.md §4.2: bfloat16 rounded once from binary64 (a value "
            "just above a tie that rounding through binary32 would turn into a tie, then down), "
            "float16 results beyond 65504 saturate to ±65504, float16 subnormal results, and "
            "dependent levels of magnitude 2^28 (the largest allowed).")

    # -- invalid: one defect each -----------------------------------------------------------------
    def one(**kw):
        f = File(6)
        rec = add_quantized(f, "q", kw.pop("dtype", "float32"), kw.pop("shape", [4, 6]),
                            quantizer=kw.pop("quantizer", 1), scale_mode=kw.pop("scale_mode", 1),
                            group_size=kw.pop("group_size", 0), seed="invalid", expect=False,
                            **kw)
        return f, rec
    feats = ["record:quantized"]
    f, rec = one()
    rec["params"] = rec["params"] + b"\0"
    rec["params_length"] = 17
    s.invalid("x_QNT-01_params_17_bytes", f, "MalformedRecord", ["QNT-01"], feats,
              "Quantized params of 17 bytes.")
    for field_, off, val, what in (("quantizer", 0, 2, "quantizer 2"),
                                   ("scale_mode", 1, 3, "scale_mode 3"),
                                   ("class_count_0", 2, 0, "class_count 0"),
                                   ("class_count_17", 2, 17, "class_count 17")):
        f, rec = one()
        p = bytearray(rec["params"])
        p[off] = val
        rec["params"] = bytes(p)
        s.invalid(f"x_QNT-01_{field_}", f, "MalformedRecord", ["QNT-01"], feats,
                  f"Quantized params with {what}.")
    f, rec = one(scale_mode=2, group_size=3)
    rec["params"] = rec["params"][:4] + struct.pack("<I", 0) + rec["params"][8:]
    s.invalid("x_QNT-01_group_size_0", f, "MalformedRecord", ["QNT-01"], feats,
              "scale_mode 2 (group) with group_size 0.")
    f, rec = one(scale_mode=1)
    rec["params"] = rec["params"][:4] + struct.pack("<I", 3) + rec["params"][8:]
    s.invalid("x_QNT-01_group_size_with_channel", f, "MalformedRecord", ["QNT-01"], feats,
              "scale_mode 1 (channel) with group_size 3 (must be 0).")
    for what, sc in (("zero", 0.0), ("negative", -0.5), ("inf", float("inf")),
                     ("nan", float("nan"))):
        f, rec = one(scale_mode=0)
        rec["params"] = rec["params"][:8] + struct.pack("<f", sc) + rec["params"][12:]
        s.invalid(f"x_QNT-01_tensor_scale_{what}", f, "MalformedRecord", ["QNT-01"], feats,
                  f"A per-tensor scale that is {what} ({sc}).")
    f, rec = one(scale_mode=1)
    rec["params"] = rec["params"][:8] + struct.pack("<f", 0.25) + rec["params"][12:]
    s.invalid("x_QNT-01_scale_with_channel", f, "MalformedRecord", ["QNT-01"], feats,
              "scale_mode 1 (channel) with a non-zero params scale.")
    f, rec = one(scale_mode=0)
    rec["params"] = rec["params"][:3] + b"\x01" + rec["params"][4:]
    s.invalid("x_RSV-01_quantized_reserved_u8", f, "MalformedRecord", ["RSV-01", "QNT-01"],
              feats, "The reserved u8 of the quantized params is 1.")
    f, rec = one(scale_mode=0)
    rec["params"] = rec["params"][:12] + struct.pack("<I", 1)
    s.invalid("x_RSV-01_quantized_reserved_u32", f, "MalformedRecord", ["RSV-01", "QNT-01"],
              feats, "The reserved u32 of the quantized params is 1.")
    # QNT-02
    f, rec = one()
    rec["dtype"] = V.DTYPES["int32"][0]
    s.invalid("x_QNT-02_dtype_int32", f, "MalformedRecord", ["QNT-02"], feats,
              "A quantized record of dtype int32.")
    f, rec = one()
    rec["dtype"] = V.DTYPES["float8_e4m3fn"][0]
    rec["sha256"] = None
    rec["record_flags"] = 2
    s.invalid("x_QNT-02_dtype_float8", f, "MalformedRecord", ["QNT-02"], feats,
              "A quantized record of dtype float8_e4m3fn (not one of the four allowed).")
    f, rec = one()
    rec["record_flags"] = 1
    rec["error"] = None
    s.invalid("x_QNT-02_not_lossy", f, "MalformedRecord", ["QNT-02"], feats,
              "A quantized record whose lossy flag is clear.")
    # QNT-03: the group_size bomb
    f, rec = one(scale_mode=2, group_size=6, shape=[4, 6])
    rec["params"] = rec["params"][:4] + struct.pack("<I", 1 << 24) + rec["params"][8:]
    s.invalid("x_QNT-03_group_size_over_row", f, "MalformedRecord", ["QNT-03"], feats,
              "A [4, 6] record with group_size 2^24 (one group per row, so the scale count still "
              "matches): a decoder that sized memory by group_size would allocate gigabytes.")
    f, rec = one(scale_mode=2, group_size=6, shape=[4, 6])
    rec["params"] = rec["params"][:4] + struct.pack("<I", 7) + rec["params"][8:]
    s.invalid("x_QNT-03_group_size_7_row_6", f, "MalformedRecord", ["QNT-03"], feats,
              "A [4, 6] record with group_size 7, one more than the row length.")
    # QNT-04: streams
    f, rec = one()
    rec["streams"] = rec["streams"][:1]
    rec["stream_count"] = 1
    f.remove_block(len(f.blocks) - 1)
    s.invalid("x_QNT-04_missing_scale_stream", f, "MalformedRecord", ["QNT-04"], feats,
              "A channel-scaled record without its scale stream.")
    f, rec = one(level_dtypes={0: "uint16"})
    rec["streams"][0]["stream_dtype"] = V.DTYPES["int16"][0]
    s.invalid("x_QNT-04_level_dtype_int16", f, "MalformedRecord", ["QNT-04"], feats,
              "A level stream of dtype int16 (must be uint8, uint16 or uint32).")
    f2, rec2 = one(scale_mode=0)
    rec2["streams"][0]["stream_shape"] = [18]
    rec2["streams"][0]["chunk_elements"] = 18
    s.invalid("x_QNT-04_levels_short", f2, "MalformedRecord", ["QNT-04"], feats,
              "A level stream of 18 entries for a [4, 6] tensor (24 elements).",
              also=("CorruptPayload",),
              note="18 is a multiple of the row length, so only the total is wrong; a decoder "
                   "that decodes the chunk first sees a payload of the wrong length.")
    f, rec = one(scale_mode=0, classes=([0, 1, 1, 0], 2))
    rec["streams"][2]["stream_dtype"] = V.DTYPES["uint16"][0]
    s.invalid("x_QNT-04_class_map_uint16", f, "MalformedRecord", ["QNT-04"], feats,
              "A class map stream of dtype uint16 (must be uint8).")
    f, rec = one(scale_mode=1)
    rec["streams"][1]["stream_dtype"] = V.DTYPES["float16"][0]
    s.invalid("x_QNT-04_scale_float16", f, "MalformedRecord", ["QNT-04"], feats,
              "A scale stream of dtype float16 (must be float32).")
    f, rec = one(scale_mode=2, group_size=4, shape=[4, 6])
    rec["streams"][1]["stream_shape"] = [4]
    rec["streams"][1]["chunk_elements"] = 4
    s.invalid("x_QNT-04_group_scale_count", f, "MalformedRecord", ["QNT-04"], feats,
              "A [4, 6] record with group_size 4 (2 groups per row) whose scale stream has 4 "
              "entries instead of 8.", also=("CorruptPayload",))
    # QNT-05: class map
    f, rec = one(scale_mode=0, classes=([0, 1, 1, 0], 2))
    f.blocks[rec["streams"][2]["chunk_blocks"][0]].payload = \
        chain("planes+lanes", "uint8").encode(bytes([0, 1, 2, 0]), "uint8", 0)
    s.invalid("x_QNT-05_class_out_of_range", f, "CorruptPayload", ["QNT-05"], feats,
              "A class map entry 2 with class_count 2.")
    f, rec = one(scale_mode=0, classes=([0, 1, 1, 0], 2))
    f.blocks[rec["streams"][2]["chunk_blocks"][0]].payload = \
        chain("planes+lanes", "uint8").encode(bytes([0, 1, 1, 1]), "uint8", 0)
    s.invalid("x_QNT-05_class_rows_mismatch", f, "CorruptPayload", ["QNT-05"], feats,
              "A class map with 1 row in class 0 and 3 in class 1, whose level streams hold 2 "
              "rows each.")
    # QNT-06: level magnitude
    lv = np.zeros((4, 6), np.int64)
    lv[2, 3] = (1 << 28) + 1
    f, rec = one(scale_mode=0, levels=lv, level_dtypes={0: "uint32"})
    s.invalid("x_QNT-06_level_2_28_plus_1", f, "CorruptPayload", ["QNT-06"], feats,
              "A level of 2^28 + 1.")
    lv = np.zeros((4, 6), np.int64)
    lv[0, 0] = -(1 << 30)
    f, rec = one(scale_mode=0, levels=lv, level_dtypes={0: "uint32"})
    s.invalid("x_QNT-06_level_minus_2_30", f, "CorruptPayload", ["QNT-06"], feats,
              "A level of −2^30 (zigzag 2^31 − 1 in a uint32 stream).")
    # QNT-07: stored scales
    for what, val in (("zero", 0.0), ("negative", -1.0), ("inf", float("inf")),
                      ("nan", float("nan"))):
        sc = np.full(4, 0.01, np.float32)
        sc[1] = val
        f, rec = one(scale_mode=1, scales=sc)
        s.invalid(f"x_QNT-07_channel_scale_{what}", f, "CorruptPayload", ["QNT-07"], feats,
                  f"A channel scale that is {what}.")
    # REC-09 with a quantized record: the digest is of the rounded bytes
    f, rec = one(scale_mode=0)
    d = bytearray(rec["sha256"])
    d[0] ^= 1
    rec["sha256"] = bytes(d)
    s.invalid("x_REC-09_quantized_digest", f, "DigestMismatch", ["REC-09", "QNT-08"], feats,
              "A quantized record whose sha256 differs in one bit from the SHA-256 of its "
              "decoded bytes.")


from vectors_bands import batch_bands_1_0  # noqa: E402  (record kind 3, spec/records/bands.md)

from vectors_rans import batch_rans_1_0  # noqa: E402  (lane method rans, spec/codecs/rans.md)

from vectors_factors import batch_factors_1_0  # noqa: E402  (record kind 5, spec/records/factors.md)

from vectors_predicted import batch_predicted_1_0  # noqa: E402  (record kind 4, spec/records/predicted.md)

BATCHES = [batch_1_0, batch_quantized_1_0, batch_bands_1_0, batch_container_1_0b, batch_rans_1_0, batch_factors_1_0, batch_predicted_1_0]
from vectors_hardening import batch_hardening_1_0  # noqa: E402  (issue 8: declared, unbacked sizes)
BATCHES.append(batch_hardening_1_0)
from vectors_rans import batch_rans_1_0b  # noqa: E402  (N = 16 lanes of the C kernels)
BATCHES.append(batch_rans_1_0b)
from vectors_chunkcrc import batch_chunkcrc_1_0  # noqa: E402  (record flag has_chunk_crc32c, REC-11)
BATCHES.append(batch_chunkcrc_1_0)
from vectors_rans_split import batch_rans_split_1_0  # noqa: E402  (lane method rans_split)
BATCHES.append(batch_rans_split_1_0)


# ================================================================================================
# output
# ================================================================================================
def generate() -> tuple[list[Vector], dict]:
    s = Suite()
    for batch in BATCHES:
        batch(s)
    vectors = s.vectors
    entries = []
    for v in vectors:
        e = {"id": v.id, "file": v.id + ".wcd", "batch": v.batch, "expected": v.expected,
             "error_class": v.error_classes[0] if v.error_classes else None}
        if len(v.error_classes) > 1:
            e["error_classes"] = v.error_classes
        e["rules"] = v.rules
        e["features"] = v.features
        e["description"] = v.description
        if v.note:
            e["note"] = v.note
        if getattr(v, "parents", None):
            # files the decoder finds next to this one (predicted records, source 2); optional
            e["parents"] = list(v.parents)
        e["size"] = len(v.data)
        e["sha256"] = V.sha256(v.data)
        if v.tensors is not None:
            e["tensors"] = [{"name": t.name, "dtype": t.dtype, "shape": t.shape,
                             "sha256": t.sha256} for t in v.tensors]
            for t, d in zip(v.tensors, e["tensors"]):
                # band records (batch bands-1.0): the SHA-256 of every prefix k = 1..N; the
                # decoder contract decodes whole files, so these are checked by tests, not the
                # harness (spec/records/bands.md, "Conformance")
                if getattr(t, "prefix_sha256", None):
                    d["prefix_sha256"] = list(t.prefix_sha256)
        entries.append(e)
    manifest = {
        "schema": SCHEMA,
        "format_version": FORMAT_VERSION,
        "generator": "tools/gen_vectors.py",
        "decoder_contract": "conformance/README.md",
        "error_classes": ERROR_CLASSES,
        "batches": sorted({v.batch for v in vectors}),
        "vectors": entries,
    }
    return vectors, manifest


def manifest_text(manifest: dict) -> str:
    return json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder of the .wcd files")
    ap.add_argument("--manifest", type=Path, default=None,
                    help="manifest path (default: conformance/manifest.json, or "
                         "OUT/../manifest.json with --out)")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 on any change")
    ap.add_argument("--force", action="store_true",
                    help="overwrite published vectors that differ (breaks write-once!)")
    args = ap.parse_args(argv)
    manifest_path = args.manifest or (DEFAULT_MANIFEST if args.out == DEFAULT_OUT
                                      else args.out.parent / "manifest.json")
    vectors, manifest = generate()
    text = manifest_text(manifest)
    problems, written = [], 0
    if not args.check:
        args.out.mkdir(parents=True, exist_ok=True)
    for v in vectors:
        p = args.out / (v.id + ".wcd")
        if p.exists():
            if p.read_bytes() != v.data:
                if args.force and not args.check:
                    p.write_bytes(v.data)
                    written += 1
                problems.append(f"{p.name}: differs from the published file")
        elif args.check:
            problems.append(f"{p.name}: missing")
        else:
            p.write_bytes(v.data)
            written += 1
    known = {v.id + ".wcd" for v in vectors}
    if args.out.exists():
        for p in sorted(args.out.glob("*.wcd")):
            if p.name not in known:
                problems.append(f"{p.name}: not produced by the generator")
    if args.check:
        if not manifest_path.exists() or manifest_path.read_text(encoding="utf-8") != text:
            problems.append(f"{manifest_path}: differs")
    else:
        manifest_path.write_text(text, encoding="utf-8")
    for p in problems:
        print(f"gen_vectors: {p}", file=sys.stderr)
    if not args.check:
        print(f"gen_vectors: {len(vectors)} vectors, {written} written, manifest {manifest_path}",
              file=sys.stderr)
    return 1 if problems and (args.check or not args.force) else 0


if __name__ == "__main__":
    sys.exit(main())
