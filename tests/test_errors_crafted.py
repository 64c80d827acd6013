"""Every error class of spec/container.md §11 from crafted bytes.

A valid small file is parsed into a `WFile` (conftest), one field is changed, and the file is laid out
again with every other length, offset and CRC32C recomputed, so that the crafted file carries exactly
the intended defect. Each case asserts the exact class and rule id (and block, where the spec asks
that the error name it). One case per class also goes through the real CLI: exit code of the class,
one line on stderr, no traceback, no partial output file.
"""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest
import zstandard

import wcodec
import wcodec.numpy as wnp
from wcodec import errors as E
from wcodec import layout as L
from wcodec.codecs import LanesCodec

from conftest import WBlock, WFile, lanes_payload, parse_lanes, run_cli

ALIGN_LOG2 = 6  # 64-byte alignment: the header and most blocks are followed by padding


def _tensors():
    rng = np.random.default_rng(7)
    return {
        # 3 chunks of 128/128/44; a pattern of 25 values repeated, so that its lanes repeat and
        # zstd wins them (small lanes without repeats now go to rans with one state)
        "w": np.tile((rng.standard_normal(25) * 0.05).astype(np.float32), 12),
        "ids": np.arange(20, dtype=np.int64),
        "h": rng.standard_normal((2, 3)).astype(np.float16),
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("crafted")
    out = {}
    for codec in ("planes", "raw"):
        p = root / f"{codec}.wcodec"
        wnp.save_file(_tensors(), p, metadata={"note": "hi"}, chunk_elements=128,
                      alignment_log2=ALIGN_LOG2, codec=codec, threads=1)
        data = p.read_bytes()
        f = WFile.parse(data)
        assert f.build() == data, "the test's file model must rebuild the writer's bytes exactly"
        out[codec] = f
        out[codec + "_bytes"] = data
    w = out["planes"].record("w")["streams"][0]
    assert [c["codec_id"] for c in w["codecs"]] == [2, 256], "fixture needs planes > lanes"
    lanes = parse_lanes(out["planes"].blocks[w["chunk_blocks"][0]].payload, 4)
    assert any(m == 1 for m, _ in lanes), "fixture needs a zstd lane"
    out["root"] = root
    return out


def read_everything(path, **reader_kw):
    """Open, then decode every tensor (checking its SHA-256), as `decode` does."""
    with wcodec.Reader(path, **reader_kw) as r:
        for name in r.keys():
            r.read_bytes(name)


# -- crafting helpers ------------------------------------------------------------------------------
def w_chunk0(f: WFile) -> WBlock:
    return f.blocks[f.chunk_block("w", 0)]


def patch(data: bytes, pos: int, xor: int = 0x01) -> bytes:
    b = bytearray(data)
    b[pos] ^= xor
    return bytes(b)


def index_offset(data: bytes) -> int:
    return L.Footer.parse(data[-32:]).index_offset


def w_lanes(f: WFile):
    return parse_lanes(w_chunk0(f).payload, 4)


def with_lane(f: WFile, j: int, method: int, body: bytes) -> WFile:
    lanes = w_lanes(f)
    lanes[j] = (method, body)
    w_chunk0(f).payload = lanes_payload(lanes)
    return f


def zstd_lane_index(f: WFile) -> int:
    return next(j for j, (m, _) in enumerate(w_lanes(f)) if m == 1)


D = 128  # decoded bytes of one lane of chunk 0 of "w" (128 float32 elements, 4 lanes)


@dataclass
class Case:
    id: str
    cls: type
    rule: str | None
    make: Callable  # (base fixture) -> bytes
    limits: dict = field(default_factory=dict)
    block: Callable | None = None   # (base) -> block number the error must name
    message: str | None = None      # text the message must contain
    at_open: bool = True            # raised by Reader() itself, not only when reading a tensor
    codec_block: Callable | None = None  # block of a chunk that a codec cannot decode


def F(kind: str, fn: Callable[[WFile], object]) -> Callable:
    """A maker: copy base[kind], let fn change it (fn may return a replacement), build."""
    def make(base):
        f = base[kind].copy()
        r = fn(f)
        return (r if isinstance(r, WFile) else f).build()
    return make


def B(kind: str, fn: Callable[[bytes], bytes]) -> Callable:
    """A maker that patches the raw bytes of base[kind]."""
    return lambda base: fn(base[kind + "_bytes"])


def setv(obj, **kw):
    obj.update(kw)


def rec(f, name="w"):
    return f.record(name)


def stream(f, name="w"):
    return f.record(name)["streams"][0]


def _crcs(f, n):
    """The first n chunk CRCs of stream 0 (None when the file has none): edits that drop
    chunks drop their CRCs too, so the file stays buildable."""
    c = stream(f).get("chunk_crc32c")
    return None if c is None else list(c)[:n]


def blk(name="w", chunk=0, kind="planes"):
    return lambda base: base[kind].chunk_block(name, chunk)


def add_block(f: WFile, block_type: int, payload=b"", **ids) -> WFile:
    f.add_block(WBlock(block_type, payload, **ids))
    return f


def set_codecs(f: WFile, specs) -> None:
    s = stream(f)
    s["codecs"] = [dict(codec_id=i, config_length=len(c), config=c) for i, c in specs]
    s["codec_count"] = len(specs)


def set_meta(f: WFile, key: bytes, vtype: int, value: bytes) -> None:
    f.metadata.append(dict(key_length=len(key), key=key, value_type=vtype,
                           value_length=len(value), value=value))


def planes_only(f: WFile, cut: int = 0) -> WFile:
    """Chain `planes` alone (legal: one array->bytes codec); every chunk of "w" rewritten."""
    lanes = LanesCodec(4)
    s = stream(f)
    n = 300
    for c, b in enumerate(s["chunk_blocks"]):
        k = min(128, n - c * 128)
        f.blocks[b].payload = bytes(lanes.decode(f.blocks[b].payload, 4 * k))
    set_codecs(f, [(2, b"")])
    w_chunk0(f).payload = w_chunk0(f).payload[:len(w_chunk0(f).payload) - cut]
    return f


def zc(data: bytes, content_size=True) -> bytes:
    return zstandard.ZstdCompressor(level=3, write_content_size=content_size).compress(data)


def raw_payload_changed(f: WFile) -> None:
    b = w_chunk0(f)
    b.payload = patch(b.payload, 5)  # the block CRC and the table are recomputed by build()


def no_chunk_crcs(f: WFile) -> None:
    """Clear has_chunk_crc32c on every record (the file as a writer asked not to write them)."""
    for r in f.records:
        r["record_flags"] &= ~L.FLAG_HAS_CHUNK_CRC32C
        for st in r["streams"]:
            st["chunk_crc32c"] = None


def hole_before_index(f: WFile):
    f.gap_before_index = bytes(f.alignment)


# -- the cases -----------------------------------------------------------------------------------
CASES = [
    # BadMagic
    Case("magic-first-byte", E.BadMagic, "HDR-01", B("planes", lambda d: patch(d, 0))),
    Case("magic-last-byte", E.BadMagic, "HDR-01", B("planes", lambda d: patch(d, 7, 0x40))),
    Case("short-non-prefix", E.BadMagic, "HDR-01", lambda base: b"PK\x03\x04"),
    Case("safetensors-bytes", E.BadMagic, "HDR-01",
         lambda base: struct.pack("<Q", 2) + b"{}" + bytes(62)),
    # UnsupportedVersion
    Case("version-major-2", E.UnsupportedVersion, "HDR-04",
         F("planes", lambda f: setv(f.header, version_major=2))),
    Case("version-major-0", E.UnsupportedVersion, "HDR-04",
         F("planes", lambda f: setv(f.header, version_major=0))),
    # UnsupportedFeature
    Case("required-feature-bit", E.UnsupportedFeature, "HDR-05",
         F("planes", lambda f: setv(f.header, required_features=1 << 5)), message="bit 5"),
    Case("required-block-type", E.UnsupportedFeature, "BLK-02",
         F("planes", lambda f: add_block(f, 0x8003)), message="0x8003",
         block=lambda base: len(base["planes"].blocks)),
    Case("unknown-dtype", E.UnsupportedFeature, "REC-02",
         F("planes", lambda f: (setv(rec(f), dtype=99), setv(stream(f), stream_dtype=99)))),
    Case("unknown-stream-dtype", E.UnsupportedFeature, "REC-02",
         F("planes", lambda f: setv(stream(f), stream_dtype=0))),
    Case("unknown-record-kind", E.UnsupportedFeature, "REC-03",
         F("planes", lambda f: setv(rec(f), record_kind=255)), message="255"),
    Case("unknown-codec", E.UnsupportedFeature, None,
         F("planes", lambda f: set_codecs(f, [(77, b""), (256, b"\x04")])), message="77"),
    Case("unknown-lane-method", E.UnsupportedFeature, "LAN-04",
         F("planes", lambda f: with_lane(f, 1, 7, w_lanes(f)[1][1])), message="7",
         codec_block=blk(), at_open=False),
    # Truncated
    Case("empty-file", E.Truncated, "HDR-02", lambda base: b""),
    Case("magic-prefix", E.Truncated, "HDR-02", lambda base: L.MAGIC[:5]),
    Case("shorter-than-64", E.Truncated, "HDR-02",
         lambda base: base["planes_bytes"][:63]),
    Case("cut-last-byte", E.Truncated, "FTR-01", B("planes", lambda d: d[:-1])),
    Case("cut-in-half", E.Truncated, "FTR-01", B("planes", lambda d: d[:len(d) // 2])),
    Case("byte-after-footer", E.Truncated, "FTR-01", B("planes", lambda d: d + b"\x00")),
    Case("counts-exceed-index", E.Truncated, "IDX-04",
         F("planes", lambda f: setv(f.index_header, block_count=len(f.blocks) + 1000))),
    Case("record-runs-past-index", E.Truncated, "IDX-03",
         F("planes", lambda f: setattr(f, "index_payload_hook", lambda p: p[:-3]))),
    # ChecksumMismatch
    Case("header-crc", E.ChecksumMismatch, "HDR-03", B("planes", lambda d: patch(d, 28))),
    Case("header-field-without-crc", E.ChecksumMismatch, "HDR-03",
         B("planes", lambda d: patch(d, 8))),
    Case("footer-crc", E.ChecksumMismatch, "FTR-02", B("planes", lambda d: patch(d, len(d) - 1))),
    Case("footer-offset-without-crc", E.ChecksumMismatch, "FTR-02",
         B("planes", lambda d: patch(d, len(d) - 32))),
    Case("index-payload-byte", E.ChecksumMismatch, "IDX-02",
         B("planes", lambda d: patch(d, index_offset(d) + 24 + 40))),
    Case("index-trailer", E.ChecksumMismatch, "IDX-02",
         B("planes", lambda d: patch(d, len(d) - 33))),
    Case("chunk-payload-byte", E.ChecksumMismatch, "BLK-01",
         F("planes", lambda f: setattr(w_chunk0(f), "crc", 0x12345678)),
         block=blk(), at_open=False),
    Case("table-crc-differs", E.ChecksumMismatch, "LAY-05",
         F("planes", lambda f: setattr(w_chunk0(f), "entry", {"block_crc32c": lambda c: c ^ 1})),
         block=blk(), at_open=False),
    # LayoutError
    Case("footer-offset-unaligned", E.LayoutError, "FTR-03",
         F("planes", lambda f: setattr(f, "footer", {"index_offset": lambda o: o + 1,
                                                     "index_block_size": lambda s: s - 1}))),
    Case("footer-size-mismatch", E.LayoutError, "FTR-03",
         F("planes", lambda f: setattr(f, "footer", {"index_block_size": lambda s: s + 8}))),
    Case("footer-size-below-28", E.LayoutError, "FTR-03",
         F("planes", lambda f: setattr(f, "footer", {"index_offset": lambda o: 0,
                                                     "index_block_size": lambda s: 20}))),
    Case("index-block-ids", E.LayoutError, "IDX-01",
         F("planes", lambda f: setattr(f, "index_block", {"tensor_id": 0}))),
    Case("index-block-type", E.LayoutError, "IDX-01",
         F("planes", lambda f: setattr(f, "index_block", {"block_type": L.BLOCK_CHUNK}))),
    Case("hole-before-block", E.LayoutError, "LAY-01",
         F("planes", lambda f: setattr(f.blocks[1], "gap_before", bytes(f.alignment))),
         block=lambda base: 1),
    Case("overlap", E.LayoutError, "LAY-01",
         F("planes", lambda f: setattr(f.blocks[2], "entry", {"offset": lambda o: o - 64})),
         block=lambda base: 2),
    Case("hole-before-index", E.LayoutError, "LAY-02", F("planes", hole_before_index)),
    Case("header-padding", E.LayoutError, "LAY-03",
         F("planes", lambda f: setattr(f, "header_pad_byte", 1))),
    Case("block-padding", E.LayoutError, "LAY-03",
         F("planes", lambda f: setattr(w_chunk0(f), "pad_byte", 0x20)),
         block=blk(), at_open=False),
    Case("block-past-index", E.LayoutError, "LAY-04",
         F("planes", lambda f: setattr(f.blocks[-1], "entry", {"payload_length": 1 << 40})),
         block=lambda base: len(base["planes"].blocks) - 1),
    Case("block-length-u64-max", E.LayoutError, "LAY-04",
         F("planes", lambda f: setattr(f.blocks[-1], "entry",
                                       {"payload_length": (1 << 64) - 1})),
         block=lambda base: len(base["planes"].blocks) - 1),
    Case("header-length-differs", E.LayoutError, "LAY-05",
         F("planes", lambda f: w_chunk0(f).header.update(
             payload_length=len(w_chunk0(f).payload) + 1)),
         block=blk(), at_open=False),
    Case("header-type-differs", E.LayoutError, "LAY-05",
         F("planes", lambda f: (w_chunk0(f).header.update(block_type=0x0042),
                                w_chunk0(f).entry.update(block_type=L.BLOCK_CHUNK))),
         block=blk(), at_open=False),
    Case("chunk-names-missing-block", E.LayoutError, "REC-07",
         F("planes", lambda f: stream(f)["chunk_blocks"].__setitem__(0, 999))),
    Case("chunk-names-optional-block", E.LayoutError, "REC-07",
         F("planes", lambda f: (add_block(f, 0x0042),
                                stream(f)["chunk_blocks"].__setitem__(0, len(f.blocks) - 1)))),
    Case("block-named-twice", E.LayoutError, "REC-07",
         F("planes", lambda f: stream(f, "ids")["chunk_blocks"].__setitem__(
             0, stream(f)["chunk_blocks"][0]))),
    Case("chunk-block-named-by-none", E.LayoutError, "REC-07",
         F("planes", lambda f: add_block(f, L.BLOCK_CHUNK, b"\x00" * 4, tensor_id=0,
                                         stream_id=0, chunk_id=9)),
         block=lambda base: len(base["planes"].blocks)),
    Case("block-ids-differ", E.LayoutError, "REC-08",
         F("planes", lambda f: w_chunk0(f).header.update(chunk_id=1)),
         block=blk(), at_open=False),
    Case("block-moved", E.LayoutError, "REC-08",
         F("planes", lambda f: w_chunk0(f).header.update(tensor_id=1)),
         block=blk(), at_open=False),
    # MalformedRecord
    Case("alignment-17", E.MalformedRecord, "HDR-07",
         F("planes", lambda f: setv(f.header, alignment_log2=17))),
    Case("header-reserved", E.MalformedRecord, "RSV-01",
         F("planes", lambda f: setv(f.header, reserved=b"\x00\x00\x00\x01\x00\x00\x00"))),
    Case("footer-reserved", E.MalformedRecord, "RSV-01",
         F("planes", lambda f: setattr(f, "footer", {"reserved": 1}))),
    Case("index-flags", E.MalformedRecord, "RSV-01",
         F("planes", lambda f: setattr(f, "index_block", {"block_flags": 1}))),
    Case("index-header-reserved", E.MalformedRecord, "RSV-01",
         F("planes", lambda f: setv(f.index_header, reserved=1))),
    Case("block-entry-reserved", E.MalformedRecord, "RSV-01",
         F("planes", lambda f: setattr(f.blocks[0], "entry", {"reserved": 1})),
         block=lambda base: 0),
    Case("block-flags", E.MalformedRecord, "RSV-01",
         F("planes", lambda f: w_chunk0(f).header.update(block_flags=0x0100)),
         block=blk(), at_open=False),
    Case("record-flags-reserved", E.MalformedRecord, "RSV-01",
         F("planes", lambda f: setv(rec(f), record_flags=rec(f)["record_flags"] | 0x04))),
    Case("index-trailing-byte", E.MalformedRecord, "IDX-03",
         F("planes", lambda f: setattr(f, "index_tail", b"\x00"))),
    Case("table-lists-index", E.MalformedRecord, "IDX-05",
         F("planes", lambda f: add_block(f, L.BLOCK_INDEX)),
         block=lambda base: len(base["planes"].blocks)),
    Case("meta-key-not-utf8", E.MalformedRecord, "META-01",
         F("planes", lambda f: f.metadata[0].update(key=b"\xff\xfe", key_length=2))),
    Case("meta-key-empty", E.MalformedRecord, "META-01",
         F("planes", lambda f: f.metadata[0].update(key=b"", key_length=0))),
    Case("meta-key-257", E.MalformedRecord, "META-01",
         F("planes", lambda f: f.metadata[0].update(key=b"k" * 257, key_length=257))),
    Case("meta-key-twice", E.MalformedRecord, "META-01",
         F("planes", lambda f: f.metadata.append(dict(f.metadata[0])))),
    Case("meta-string-not-utf8", E.MalformedRecord, "META-01",
         F("planes", lambda f: set_meta(f, b"s", 1, b"\xc3"))),
    Case("meta-bool-2", E.MalformedRecord, "META-01",
         F("planes", lambda f: set_meta(f, b"b", 4, b"\x02"))),
    Case("meta-i64-short", E.MalformedRecord, "META-01",
         F("planes", lambda f: set_meta(f, b"i", 2, b"\x01\x00\x00\x00"))),
    Case("meta-f64-long", E.MalformedRecord, "META-01",
         F("planes", lambda f: set_meta(f, b"f", 3, bytes(9)))),
    Case("meta-type-0", E.MalformedRecord, "META-01",
         F("planes", lambda f: set_meta(f, b"t", 0, b""))),
    Case("meta-type-6", E.MalformedRecord, "META-01",
         F("planes", lambda f: set_meta(f, b"t", 6, b"x"))),
    Case("name-not-utf8", E.MalformedRecord, "REC-01",
         F("planes", lambda f: rec(f).update(name=b"\xc0\xaf", name_length=2))),
    Case("name-empty", E.MalformedRecord, "REC-01",
         F("planes", lambda f: rec(f).update(name=b"", name_length=0))),
    Case("name-twice", E.MalformedRecord, "REC-01",
         F("planes", lambda f: rec(f, "ids").update(name=b"w", name_length=1))),
    Case("chunk-count", E.MalformedRecord, "REC-06",
         F("planes", lambda f: stream(f).update(chunk_count=2,
                                                chunk_blocks=stream(f)["chunk_blocks"][:2],
                                                chunk_crc32c=_crcs(f, 2)))),
    Case("chain-two-array-to-bytes", E.MalformedRecord, "CHN-01",
         F("planes", lambda f: set_codecs(f, [(2, b""), (1, b"")]))),
    Case("chain-starts-bytes-to-bytes", E.MalformedRecord, "CHN-01",
         F("planes", lambda f: set_codecs(f, [(256, b"\x04")]))),
    Case("chain-two-bytes-to-bytes", E.MalformedRecord, "CHN-01",
         F("planes", lambda f: set_codecs(f, [(2, b""), (256, b"\x04"), (256, b"\x04")]))),
    Case("planes-config", E.MalformedRecord, "CHN-01",
         F("planes", lambda f: set_codecs(f, [(2, b"\x00"), (256, b"\x04")]))),
    Case("bytes-config", E.MalformedRecord, "CHN-01",
         F("raw", lambda f: set_codecs(f, [(1, b"\x01")]))),
    Case("lanes-config-2-bytes", E.MalformedRecord, "LAN-01",
         F("planes", lambda f: set_codecs(f, [(2, b""), (256, b"\x04\x00")]))),
    Case("lanes-count-0", E.MalformedRecord, "LAN-01",
         F("planes", lambda f: set_codecs(f, [(2, b""), (256, b"\x00")]))),
    Case("lanes-count-17", E.MalformedRecord, "LAN-01",
         F("planes", lambda f: set_codecs(f, [(2, b""), (256, b"\x11")]))),
    Case("plain-params", E.MalformedRecord, "PLN-01",
         F("planes", lambda f: rec(f).update(params=b"x", params_length=1))),
    Case("plain-stream-shape", E.MalformedRecord, "PLN-01",
         F("planes", lambda f: stream(f).update(stream_shape=[3, 100], stream_rank=2))),
    Case("plain-stream-dtype", E.MalformedRecord, "PLN-01",
         F("planes", lambda f: stream(f).update(stream_dtype=9))),
    Case("plain-lossy", E.MalformedRecord, "PLN-01",
         F("planes", lambda f: rec(f).update(
             record_flags=rec(f)["record_flags"] | L.FLAG_LOSSY,
             error=dict(max_abs_error=0.0, mean_squared_error=0.0, signal_power=1.0)))),
    Case("plain-two-streams", E.MalformedRecord, "PLN-01",
         F("planes", lambda f: rec(f).update(stream_count=2, streams=[stream(f), dict(
             stream(f), stream_shape=[0], chunk_count=0, chunk_blocks=[],
             chunk_crc32c=_crcs(f, 0))]))),
    # LimitExceeded
    Case("metadata-count-4097", E.LimitExceeded, "IDX-04",
         F("planes", lambda f: setv(f.index_header, metadata_count=4097))),
    Case("configured-max-blocks", E.LimitExceeded, "IDX-04",
         B("planes", lambda d: d), limits=dict(max_blocks=2)),
    Case("configured-max-tensors", E.LimitExceeded, "IDX-04",
         B("planes", lambda d: d), limits=dict(max_tensors=2)),
    Case("configured-max-index-bytes", E.LimitExceeded, "LIM-02",
         B("planes", lambda d: d), limits=dict(max_index_bytes=64)),
    Case("configured-max-tensor-bytes", E.LimitExceeded, "LIM-02",
         B("planes", lambda d: d), limits=dict(max_tensor_bytes=1000)),
    Case("configured-max-metadata-value", E.LimitExceeded, "LIM-02",
         B("planes", lambda d: d), limits=dict(max_metadata_value_bytes=1)),
    Case("metadata-value-over-1MiB", E.LimitExceeded, "LIM-02",
         F("planes", lambda f: set_meta(f, b"big", 5, bytes((1 << 20) + 1)))),
    Case("shape-over-2^62-bytes", E.LimitExceeded, "REC-04",
         F("planes", lambda f: rec(f, "ids").update(shape=[1 << 31, 1 << 31], rank=2))),
    Case("shape-overflows-u64", E.LimitExceeded, "REC-04",
         F("planes", lambda f: rec(f, "ids").update(shape=[(1 << 64) - 1] * 3, rank=3))),
    Case("rank-17", E.LimitExceeded, "REC-05",
         F("planes", lambda f: rec(f).update(shape=[1] * 16 + [300], rank=17))),
    Case("stream-rank-17", E.LimitExceeded, "REC-05",
         F("planes", lambda f: stream(f).update(stream_shape=[1] * 16 + [300], stream_rank=17))),
    Case("chunk-elements-0", E.LimitExceeded, "REC-05",
         F("planes", lambda f: stream(f).update(chunk_elements=0))),
    Case("chunk-elements-2^26+1", E.LimitExceeded, "REC-05",
         F("planes", lambda f: stream(f).update(chunk_elements=(1 << 26) + 1))),
    Case("stream-count-0", E.LimitExceeded, "REC-05",
         F("planes", lambda f: rec(f).update(stream_count=0, streams=[]))),
    Case("stream-count-65", E.LimitExceeded, "REC-05",
         F("planes", lambda f: rec(f).update(stream_count=65, streams=[stream(f)] * 65))),
    Case("codec-count-9", E.LimitExceeded, "REC-05",
         F("planes", lambda f: set_codecs(f, [(2, b"")] + [(256, b"\x04")] * 8))),
    Case("config-length-1025", E.LimitExceeded, "REC-05",
         F("planes", lambda f: set_codecs(f, [(2, b""), (256, bytes(1025))]))),
    Case("params-over-1MiB", E.LimitExceeded, "REC-05",
         F("planes", lambda f: rec(f).update(params=bytes((1 << 20) + 1),
                                             params_length=(1 << 20) + 1))),
    # CorruptPayload (found when the chunk is decoded)
    Case("lane-lengths-exceed-payload", E.CorruptPayload, "LAN-03",
         F("planes", lambda f: setattr(w_chunk0(f), "payload", patch(w_chunk0(f).payload, 1))),
         codec_block=blk(), at_open=False),
    Case("lanes-byte-left-over", E.CorruptPayload, "LAN-03",
         F("planes", lambda f: setattr(w_chunk0(f), "payload", w_chunk0(f).payload + b"\x00")),
         codec_block=blk(), at_open=False),
    Case("lane-headers-cut", E.CorruptPayload, "LAN-03",
         F("planes", lambda f: setattr(w_chunk0(f), "payload", b"\x00" * 7)),
         codec_block=blk(), at_open=False),
    Case("raw-lane-short", E.CorruptPayload, "LAN-05",
         F("planes", lambda f: with_lane(f, 3, 0, bytes(D - 1))), codec_block=blk(), at_open=False),
    Case("fill-lane-2-bytes", E.CorruptPayload, "LAN-05",
         F("planes", lambda f: with_lane(f, 3, 2, b"\x00\x00")), codec_block=blk(), at_open=False),
    Case("zstd-declares-wrong-size", E.CorruptPayload, "LAN-06",
         F("planes", lambda f: with_lane(f, zstd_lane_index(f), 1, zc(bytes(D + 1)))),
         codec_block=blk(), at_open=False),
    Case("zstd-trailing-byte", E.CorruptPayload, "LAN-06",
         F("planes", lambda f: with_lane(f, zstd_lane_index(f), 1,
                                         w_lanes(f)[zstd_lane_index(f)][1] + b"\x00")),
         codec_block=blk(), at_open=False),
    Case("zstd-frame-cut", E.CorruptPayload, "LAN-06",
         F("planes", lambda f: with_lane(f, zstd_lane_index(f), 1,
                                         w_lanes(f)[zstd_lane_index(f)][1][:-2])),
         codec_block=blk(), at_open=False),
    Case("zstd-not-a-frame", E.CorruptPayload, "LAN-06",
         F("planes", lambda f: with_lane(f, 0, 1, b"garbage!")), codec_block=blk(), at_open=False),
    Case("zstd-skippable-frame", E.CorruptPayload, "LAN-06",
         F("planes", lambda f: with_lane(f, 0, 1, b"\x50\x2a\x4d\x18" + struct.pack("<I", 4)
                                         + b"abcd")), codec_block=blk(), at_open=False),
    Case("zstd-unsized-too-long", E.CorruptPayload, "LAN-06",
         F("planes", lambda f: with_lane(f, 0, 1, zc(bytes(D + 100), content_size=False))),
         codec_block=blk(), at_open=False),
    Case("zstd-unsized-too-short", E.CorruptPayload, "LAN-06",
         F("planes", lambda f: with_lane(f, 0, 1, zc(bytes(D - 1), content_size=False))),
         codec_block=blk(), at_open=False),
    Case("lane-count-not-dividing", E.CorruptPayload, "LAN-02",
         F("planes", lambda f: set_codecs(f, [(2, b""), (256, b"\x03")])),
         codec_block=blk(), at_open=False),
    Case("bytes-payload-short", E.CorruptPayload, "BYT-01",
         F("raw", lambda f: setattr(w_chunk0(f), "payload", w_chunk0(f).payload[:-1])),
         codec_block=blk(kind="raw"), at_open=False),
    Case("planes-payload-short", E.CorruptPayload, "PLN2-01",
         F("planes", lambda f: planes_only(f, cut=1)), codec_block=blk(), at_open=False),
    # DigestMismatch
    # a record without chunk CRCs: its SHA-256 is checked by default (REC-09)
    Case("sha256-field", E.DigestMismatch, "REC-09",
         F("planes", lambda f: (no_chunk_crcs(f), rec(f).update(sha256=bytes(32)))),
         at_open=False),
    Case("payload-rewritten-consistently-no-crcs", E.DigestMismatch, "REC-09",
         F("raw", lambda f: (no_chunk_crcs(f), raw_payload_changed(f))), at_open=False),
    # with chunk CRCs the chunk check catches it first (REC-11)
    Case("payload-rewritten-consistently", E.DigestMismatch, "REC-11",
         F("raw", raw_payload_changed), at_open=False),
]

assert len({c.id for c in CASES}) == len(CASES)


# the classes of format 1.0's container and codecs (spec/container.md §11); record kinds that
# land later may add classes of their own, tested with those kinds
CORE_CLASSES = ["BadMagic", "UnsupportedVersion", "UnsupportedFeature", "Truncated",
                "ChecksumMismatch", "LayoutError", "MalformedRecord", "LimitExceeded",
                "CorruptPayload", "DigestMismatch"]


def test_every_error_class_has_a_case():
    assert set(CORE_CLASSES) <= set(E.FORMAT_ERROR_CLASSES)
    assert {c.cls.__name__ for c in CASES} == set(CORE_CLASSES)
    assert set(CLI_CASES) == set(CORE_CLASSES)


def _write(base, case: Case):
    path = base["root"] / f"{case.id}.wcodec"
    if not path.exists():
        path.write_bytes(case.make(base))
    return path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_crafted(base, case: Case):
    path = _write(base, case)
    limits = wcodec.Limits(**case.limits)
    if case.at_open:
        with pytest.raises(E.FormatError) as ei:
            wcodec.Reader(path, limits=limits)
    else:
        with wcodec.Reader(path, limits=limits) as r:  # the index is fine; a tensor is not
            with pytest.raises(E.FormatError) as ei:
                for name in r.keys():
                    r.read_bytes(name)
    e = ei.value
    assert type(e) is case.cls, f"{type(e).__name__}: {e}"
    assert e.error_class == case.cls.__name__
    if case.rule is not None:
        assert e.rule == case.rule, str(e)
    if case.block is not None:
        assert e.block == case.block(base), str(e)
    if case.message is not None:
        assert case.message in str(e)
    if not case.at_open:
        # the same problem from the torch API and from verify(), naming the block where known
        with pytest.raises(case.cls):
            wcodec.load_file(path, limits=limits)
        with wcodec.Reader(path, limits=limits) as r:
            problems = r.verify()
        assert problems and problems[0]["error"] == case.cls.__name__
        if case.block is not None:
            assert problems[0]["block"] == case.block(base)


CODEC_CASES = [c for c in CASES if c.codec_block is not None]


@pytest.mark.parametrize("case", CODEC_CASES[:1] + [c for c in CODEC_CASES
                                                    if c.cls is E.CorruptPayload][:1],
                         ids=lambda c: c.id)
def test_codec_errors_name_their_block(base, case: Case):
    path = _write(base, case)
    with wcodec.Reader(path) as r:
        problems = r.verify()
    assert problems[0]["error"] == case.cls.__name__
    assert problems[0]["block"] == case.codec_block(base)


# -- valid crafted files: what a decoder must accept ------------------------------------------------
ACCEPTED = {
    "rebuilt-unchanged": F("planes", lambda f: None),
    "version-minor-65535": F("planes", lambda f: setv(f.header, version_minor=0xFFFF)),
    "optional-features": F("planes", lambda f: setv(f.header, optional_features=0xFFFFFFFF)),
    "optional-block": F("planes", lambda f: add_block(f, 0x0042, b"ignored payload")),
    "optional-block-first": F("planes", lambda f: f.blocks.insert(0, WBlock(0x7FFF, b"x")) or
                              [s.update(chunk_blocks=[b + 1 for b in s["chunk_blocks"]])
                               for r in f.records for s in r["streams"]]),
    "planes-without-lanes": F("planes", lambda f: planes_only(f)),
    "alignment-0": F("planes", lambda f: setv(f.header, alignment_log2=0)),
    "alignment-16": F("planes", lambda f: setv(f.header, alignment_log2=16)),
    "metadata-typed": F("planes", lambda f: (set_meta(f, b"i", 2, struct.pack("<q", -5)),
                                             set_meta(f, b"b", 4, b"\x01"),
                                             set_meta(f, b"x", 5, b"\xff\x00")))
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_crafted_valid_files_decode(base, name):
    path = base["root"] / f"ok-{name}.wcodec"
    path.write_bytes(ACCEPTED[name](base))
    expect = _tensors()
    with wcodec.Reader(path) as r:
        assert r.verify() == []
        for k, a in expect.items():
            assert r.read_bytes(k).tobytes() == a.tobytes()
    if name == "metadata-typed":
        with wcodec.Reader(path) as r:
            assert r.metadata() == {"note": "hi", "wcodec.source_format": "api", "i": -5,
                                    "b": True, "x": b"\xff\x00"}


def test_sha256_check_can_be_skipped_explicitly(base):
    path = _write(base, next(c for c in CASES if c.id == "sha256-field"))
    out = wcodec.numpy.load_file(path, verify_sha256=False)
    assert out["w"].tobytes() == _tensors()["w"].tobytes()


# -- the CLI: one case per class --------------------------------------------------------------------
CLI_CASES = {
    "BadMagic": "magic-first-byte",
    "UnsupportedVersion": "version-major-2",
    "UnsupportedFeature": "unknown-record-kind",
    "Truncated": "cut-last-byte",
    "ChecksumMismatch": "chunk-payload-byte",
    "LayoutError": "hole-before-block",
    "MalformedRecord": "meta-key-not-utf8",
    "LimitExceeded": "shape-over-2^62-bytes",
    "CorruptPayload": "zstd-declares-wrong-size",
    "DigestMismatch": "payload-rewritten-consistently",
}


@pytest.fixture(scope="module")
def cli_results(base):
    """decode and verify of every CLI case, run in parallel (each is a real subprocess)."""
    by_id = {c.id: c for c in CASES}
    jobs = {}
    for cls_name, cid in CLI_CASES.items():
        path = _write(base, by_id[cid])
        out = base["root"] / f"{cid}.decoded.safetensors"
        jobs[(cls_name, "decode")] = (("decode", path, "-o", out, "-q"), out)
        jobs[(cls_name, "verify")] = (("verify", path), None)
    with ThreadPoolExecutor(4) as pool:
        futures = {k: pool.submit(run_cli, *args) for k, (args, _) in jobs.items()}
        return {k: (f.result(), jobs[k][1]) for k, f in futures.items()}


@pytest.mark.parametrize("cls_name", list(CLI_CASES))
def test_cli_exit_code_per_class(cli_results, cls_name):
    code = E.FORMAT_ERROR_CLASSES[cls_name].exit_code
    res, out = cli_results[(cls_name, "decode")]
    assert res.returncode == code, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"wcodec: error: {cls_name}: "), lines[0]
    assert "Traceback" not in res.stderr and res.stdout == ""
    assert not out.exists(), "a failed decode must not leave an output file (W-WRT-02)"
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
    res, _ = cli_results[(cls_name, "verify")]
    assert res.returncode == code, res.stdout + res.stderr
    assert f"BAD  {cls_name}: " in res.stdout
    assert "Traceback" not in res.stdout + res.stderr
