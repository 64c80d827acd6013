"""Low-level builder for the conformance vectors (used by tools/gen_vectors.py).

Everything a vector contains is chosen here explicitly, never by the reference encoder's heuristics:
the file header, every block (its header fields, payload, trailer, padding and table entry), the
INDEX payload, the footer, each chunk's codec chain and each lane's method. Structures are built
with the construct structs of `wcodec.layout` (which mirror the spec's tables); CRC32C comes from
`crc32c`; zstd frames come from `zstandard` at the pinned level `ZSTD_LEVEL` (pyproject pins the
0.25.x line, whose bundled libzstd fixes the bytes), or are written by hand (`zframe`).

By default every derived field (lengths, offsets, counts, CRCs, SHA-256) is recomputed from the
parts at `build()` time, so a vector mutates exactly the one field it is about and nothing else is
wrong. Overrides exist for each derived field.

Nothing here may change the bytes of a vector that has been published: the determinism test
(tests/test_conformance.py) regenerates every vector and compares it byte for byte.
"""

from __future__ import annotations

import copy
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Callable

import crc32c
import numpy as np
import zstandard

from wcodec import layout as L

NONE_ID = 0xFFFFFFFF
CHUNK = 0x8001
INDEX = 0x8002

# spec/container.md §7.1, copied here (frozen): name -> (code, itemsize, rotated by `planes`)
DTYPES = {
    "float64": (1, 8, True), "float32": (2, 4, True), "float16": (3, 2, True),
    "bfloat16": (4, 2, True), "float8_e4m3fn": (5, 1, False), "float8_e5m2": (6, 1, False),
    "int8": (7, 1, False), "int16": (8, 2, False), "int32": (9, 4, False),
    "int64": (10, 8, False), "uint8": (11, 1, False), "uint16": (12, 2, False),
    "uint32": (13, 4, False), "uint64": (14, 8, False), "bool": (15, 1, False),
}
DTYPE_BY_CODE = {v[0]: k for k, v in DTYPES.items()}

CODEC_BYTES, CODEC_PLANES, CODEC_LANES = 1, 2, 256
RAW, ZSTD, FILL = 0, 1, 2
ZSTD_LEVEL = 9          # pinned: changing it would change published vectors
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def crc(data) -> int:
    return crc32c.crc32c(bytes(data))


def align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


def sha256(data) -> str:
    return hashlib.sha256(bytes(data)).hexdigest()


def itemsize(dtype: str) -> int:
    return DTYPES[dtype][1]


def rng_for(*key) -> np.random.Generator:
    """A numpy RNG seeded from the vector id (and a salt), so that adding or reordering vectors
    never changes another vector's data."""
    seed = int.from_bytes(hashlib.sha256("/".join(map(str, key)).encode()).digest()[:8], "little")
    return np.random.default_rng(seed)


def count(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


# -- tensor data ---------------------------------------------------------------------------------
# bit patterns every float vector carries: -0.0, +-inf, NaNs with payloads (quiet, signalling,
# negative), smallest and largest subnormals of both signs, the largest finite value
SPECIAL_BITS = {
    "float64": [0x8000000000000000, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000001,
                0x7FF0000000000001, 0xFFF8DEADBEEF0001, 0x0000000000000001, 0x000FFFFFFFFFFFFF,
                0x800FFFFFFFFFFFFF, 0x7FEFFFFFFFFFFFFF],
    "float32": [0x80000000, 0x7F800000, 0xFF800000, 0x7FC00001, 0x7F800001, 0xFFC0BEEF,
                0x00000001, 0x007FFFFF, 0x807FFFFF, 0x7F7FFFFF],
    "float16": [0x8000, 0x7C00, 0xFC00, 0x7E01, 0x7C01, 0xFE0F, 0x0001, 0x03FF, 0x83FF, 0x7BFF],
    "bfloat16": [0x8000, 0x7F80, 0xFF80, 0x7FC1, 0x7F81, 0xFFCF, 0x0001, 0x007F, 0x807F, 0x7F7F],
    "float8_e4m3fn": [0x80, 0x7F, 0xFF, 0x01, 0x07, 0x87, 0x7E, 0xFE],
    "float8_e5m2": [0x80, 0x7C, 0xFC, 0x7D, 0x7E, 0xFF, 0x01, 0x03, 0x83, 0x7B],
}


def special_bits(dtype: str) -> list[int]:
    if dtype == "bool":
        return [0, 1]
    if dtype in SPECIAL_BITS:
        return SPECIAL_BITS[dtype]
    bits = 8 * itemsize(dtype)
    top = (1 << bits) - 1
    return [0, 1, top, 1 << (bits - 1), top >> 1]


def sample(dtype: str, n: int, rng: np.random.Generator, *, specials: bool = True) -> bytes:
    """n elements of `dtype` as little-endian bytes: weight-like values for floats (so that the
    exponent plane compresses), full-range values for integers, 0/1 for bool; the special bit
    patterns of the dtype first when `specials`."""
    size = itemsize(dtype)
    u = np.dtype(f"<u{size}")
    if dtype == "float64":
        bits = (rng.standard_normal(n) * 0.02).astype("<f8").view(u)
    elif dtype == "float32":
        bits = (rng.standard_normal(n) * 0.05).astype("<f4").view(u)
    elif dtype == "float16":
        bits = (rng.standard_normal(n) * 0.1).astype("<f2").view(u)
    elif dtype == "bfloat16":
        bits = ((rng.standard_normal(n) * 0.05).astype("<f4").view("<u4") >> 16).astype(u)
    elif dtype == "bool":
        bits = rng.integers(0, 2, n, dtype=np.uint8)
    elif size == 8:
        bits = rng.integers(0, 1 << 64, n, dtype=np.uint64, endpoint=False)
    else:
        bits = rng.integers(0, 1 << (8 * size), n, dtype=np.uint64).astype(u)
    bits = np.asarray(bits, dtype=u).copy()
    if specials:
        sp = special_bits(dtype)[:n]
        bits[:len(sp)] = np.array(sp, dtype=np.uint64).astype(u)
    return bits.astype(u).tobytes()


# -- codecs (spec/codecs/*.md), written from the spec ---------------------------------------------
def planes_encode(data: bytes, dtype: str) -> bytes:
    """Codec `planes`: rotate floats left by one bit, then plane j = byte (itemsize-1-j) of t."""
    _, size, rotated = DTYPES[dtype]
    if size == 1:
        return bytes(data)
    u = np.dtype(f"<u{size}")
    w = np.frombuffer(data, dtype=u)
    if rotated:
        bits = 8 * size
        t = (w << u.type(1)) | (w >> u.type(bits - 1))
    else:
        t = w.copy()
    k = t.shape[0]
    return np.ascontiguousarray(t.view(np.uint8).reshape(k, size)[:, ::-1].T).tobytes()


def zstd_compress(data: bytes, *, content_size: bool = True, checksum: bool = False,
                  level: int = ZSTD_LEVEL) -> bytes:
    c = zstandard.ZstdCompressor(level=level, write_content_size=content_size,
                                 write_checksum=checksum, write_dict_id=False, threads=0)
    return c.compress(bytes(data))


def zframe(blocks, *, fcs: int | None = None, fcs_bytes: int | None = None,
           single_segment: bool = True, window_log: int = 17, dict_id: int | None = None,
           checksum: bytes | None = None) -> bytes:
    """A hand-written zstd frame (RFC 8878 §3.1.1). `blocks`: [("raw", data) | ("rle", byte, n)];
    the last one gets Last_Block. `fcs`: the declared content size (None: not declared)."""
    if fcs is None:
        single_segment = False
        fcs_flag, fcs_field = 0, b""
    else:
        if fcs_bytes is None:
            fcs_bytes = 1 if (single_segment and fcs < 256) else 2 if 256 <= fcs < 65792 \
                else 4 if fcs < 1 << 32 else 8
        if fcs_bytes == 1:
            assert single_segment
            fcs_flag, fcs_field = 0, struct.pack("<B", fcs)
        elif fcs_bytes == 2:
            fcs_flag, fcs_field = 1, struct.pack("<H", fcs - 256)
        elif fcs_bytes == 4:
            fcs_flag, fcs_field = 2, struct.pack("<I", fcs)
        else:
            fcs_flag, fcs_field = 3, struct.pack("<Q", fcs)
    if dict_id is None:
        did_flag, did_field = 0, b""
    else:
        did_flag, did_field = 3, struct.pack("<I", dict_id)
    fhd = (fcs_flag << 6) | (int(single_segment) << 5) | (int(checksum is not None) << 2) | did_flag
    out = bytearray(ZSTD_MAGIC)
    out.append(fhd)
    if not single_segment:
        out.append((window_log - 10) << 3)
    out += did_field + fcs_field
    for i, b in enumerate(blocks):
        last = int(i == len(blocks) - 1)
        if b[0] == "raw":
            out += (last | (0 << 1) | (len(b[1]) << 3)).to_bytes(3, "little") + bytes(b[1])
        elif b[0] == "rle":
            out += (last | (1 << 1) | (b[2] << 3)).to_bytes(3, "little") + bytes([b[1]])
        elif b[0] == "reserved":
            out += (last | (3 << 1) | (len(b[1]) << 3)).to_bytes(3, "little") + bytes(b[1])
        else:
            raise ValueError(b[0])
    if checksum is not None:
        out += checksum
    return bytes(out)


def lane_body(method: str, lane: bytes) -> tuple[int, bytes]:
    """One lane coded with an explicitly named method."""
    if method == "raw":
        return RAW, bytes(lane)
    if method == "fill":
        assert len(set(lane)) == 1, "fill needs a constant lane"
        return FILL, bytes(lane[:1])
    if method == "zstd":
        return ZSTD, zstd_compress(lane)
    if method == "zstd-nofcs":
        return ZSTD, zstd_compress(lane, content_size=False)
    if method == "zstd-checksum":
        return ZSTD, zstd_compress(lane, checksum=True)
    raise ValueError(method)


def auto_method(lane: bytes) -> str:
    """The generator's own frozen choice (not the encoder's): fill for a constant lane, zstd when
    it is smaller than raw, else raw."""
    if len(set(lane)) == 1:
        return "fill"
    if len(zstd_compress(lane)) < len(lane):
        return "zstd"
    return "raw"


def lanes_payload(lanes) -> bytes:
    """A `lanes` payload from [(method_code, body), ...]: headers, then the bodies."""
    return b"".join(struct.pack("<BI", m, len(b)) for m, b in lanes) + \
        b"".join(bytes(b) for _, b in lanes)


def split_lanes(data: bytes, lane_count: int) -> list[bytes]:
    d = len(data) // lane_count
    assert d * lane_count == len(data)
    return [data[j * d:(j + 1) * d] for j in range(lane_count)]


def lanes_encode(data: bytes, lane_count: int, methods) -> bytes:
    """`methods`: "auto", one method for every lane, or a list with one method per lane."""
    lanes = split_lanes(data, lane_count)
    if isinstance(methods, str):
        methods = [methods] * lane_count
    out = []
    for lane, m in zip(lanes, methods):
        out.append(lane_body(auto_method(lane) if m == "auto" else m, lane))
    return lanes_payload(out)


@dataclass
class Chain:
    """A codec chain in encode order: array->bytes codec `a2b` ("bytes" or "planes"), then
    optionally `lanes` (lane_count). `methods(chunk_index) -> lane methods`."""

    a2b: str = "planes"
    lanes: int | None = None
    methods: object = "auto"

    def specs(self) -> list[dict]:
        out = [dict(codec_id=CODEC_BYTES if self.a2b == "bytes" else CODEC_PLANES,
                    config_length=0, config=b"")]
        if self.lanes is not None:
            out.append(dict(codec_id=CODEC_LANES, config_length=1, config=bytes([self.lanes])))
        return out

    def encode(self, data: bytes, dtype: str, chunk_index: int) -> bytes:
        x = planes_encode(data, dtype) if self.a2b == "planes" else bytes(data)
        if self.lanes is None:
            return x
        m = self.methods(chunk_index) if callable(self.methods) else self.methods
        return lanes_encode(x, self.lanes, m)


def chain(spec: str, dtype: str | None = None, methods="auto", lanes: int | None = None) -> Chain:
    """"bytes", "planes", "bytes+lanes", "planes+lanes" (lane_count = itemsize unless given)."""
    a2b, _, b2b = spec.partition("+")
    if b2b:
        n = lanes if lanes is not None else itemsize(dtype)
        return Chain(a2b, n, methods)
    return Chain(a2b, None, methods)


# -- the file --------------------------------------------------------------------------------------
@dataclass
class Block:
    block_type: int
    payload: bytes
    tensor_id: int = NONE_ID
    stream_id: int = NONE_ID
    chunk_id: int = NONE_ID
    block_flags: int = 0
    header: dict = field(default_factory=dict)   # BlockHeader overrides (after computing)
    trailer: object = None                       # int, or f(crc) -> int
    entry: dict = field(default_factory=dict)    # BlockEntry overrides: value or f(computed)
    listed: bool = True                          # appears in the block table
    gap_before: bytes = b""                      # bytes written before the block, after padding
    pad_fill: int = 0                            # value of the padding bytes after the block
    pad_extra: bytes = b""                       # bytes written after the block's padding

    def header_dict(self) -> dict:
        h = dict(block_type=self.block_type, block_flags=self.block_flags,
                 tensor_id=self.tensor_id, stream_id=self.stream_id, chunk_id=self.chunk_id,
                 payload_length=len(self.payload))
        return _apply(h, self.header)


def _apply(d: dict, over: dict) -> dict:
    for k, v in over.items():
        d[k] = v(d[k]) if callable(v) else v
    return d


@dataclass
class Expect:
    name: str
    dtype: str
    shape: list
    sha256: str


class File:
    """A wcodec file as parts; `build()` lays it out per spec/container.md §2-6."""

    def __init__(self, alignment_log2: int = 6):
        self.header = dict(magic=L.MAGIC, version_major=1, version_minor=0, required_features=0,
                           optional_features=0, alignment_log2=alignment_log2,
                           reserved=bytes(7))
        self.header_crc: object = None        # int or f(crc) -> int
        self.header_pad_fill = 0
        self.blocks: list[Block] = []
        self.metadata: list[dict] = []
        self.records: list[dict] = []
        self.expect: list[Expect] = []
        self.index_header: dict = {}          # IndexHeader overrides
        self.index_tail = b""
        self.index_hook: Callable[[bytes], bytes] | None = None
        self.index_block: dict = {}           # INDEX BlockHeader overrides
        self.index_crc: object = None
        self.gap_before_index = b""
        self.footer: dict = {}                # Footer overrides (value or f(computed))
        self.footer_crc: object = None
        self.tail = b""
        self.hook: Callable[[bytes], bytes] | None = None   # on the finished bytes
        self.layout: dict = {}                # filled by build(): offsets of every structure

    def copy(self) -> "File":
        return copy.deepcopy(self)

    @property
    def alignment(self) -> int:
        return 1 << min(self.header["alignment_log2"], 16)

    # -- content ------------------------------------------------------------------------------
    def add_block(self, block: Block) -> int:
        self.blocks.append(block)
        return len(self.blocks) - 1

    def add_meta(self, key, value_type: int, value: bytes) -> dict:
        kb = key.encode() if isinstance(key, str) else bytes(key)
        m = dict(key_length=len(kb), key=kb, value_type=value_type, value_length=len(value),
                 value=bytes(value))
        self.metadata.append(m)
        return m

    def meta_str(self, key, value: str) -> dict:
        return self.add_meta(key, 1, value.encode())

    def add_plain(self, name, dtype: str, shape, data: bytes | None = None, *,
                  rng: np.random.Generator | None = None, chain_: Chain | None = None,
                  chunk_elements: int | None = None, has_sha256: bool = True,
                  expect: bool = True) -> dict:
        """A `plain` record of one stream, its chunks appended as CHUNK blocks in order."""
        shape = list(shape)
        n = count(shape)
        size = itemsize(dtype)
        if data is None:
            data = sample(dtype, n, rng if rng is not None else rng_for(name))
        assert len(data) == n * size
        ch = chain_ if chain_ is not None else chain("planes+lanes", dtype)
        ce = chunk_elements if chunk_elements is not None else max(n, 1)
        t = len(self.records)
        blocks = []
        for c in range(-(-n // ce)):
            part = data[c * ce * size:min((c + 1) * ce, n) * size]
            payload = ch.encode(part, dtype, c)
            blocks.append(self.add_block(Block(CHUNK, payload, t, 0, c)))
        nb = name.encode() if isinstance(name, str) else bytes(name)
        code = DTYPES[dtype][0]
        stream = dict(stream_dtype=code, stream_rank=len(shape), stream_shape=list(shape),
                      chunk_elements=ce, codec_count=len(ch.specs()), codecs=ch.specs(),
                      chunk_count=len(blocks), chunk_blocks=blocks)
        rec = dict(name_length=len(nb), name=nb, dtype=code, record_kind=1,
                   record_flags=1 if has_sha256 else 0, rank=len(shape), shape=list(shape),
                   sha256=hashlib.sha256(data).digest() if has_sha256 else None, error=None,
                   params_length=0, params=b"", stream_count=1, streams=[stream])
        self.records.append(rec)
        if expect:
            self.expect.append(Expect(nb.decode(), dtype, list(shape), sha256(data)))
        return rec

    def record(self, name) -> dict:
        nb = name.encode() if isinstance(name, str) else name
        for r in self.records:
            if r["name"] == nb:
                return r
        raise KeyError(name)

    def chunk_block(self, name, chunk: int = 0, stream: int = 0) -> Block:
        return self.blocks[self.record(name)["streams"][stream]["chunk_blocks"][chunk]]

    def reorder_blocks(self, order: list[int]) -> None:
        """Put the blocks in the file (and table) in `order` (old indices), remapping every
        chunk_blocks reference."""
        assert sorted(order) == list(range(len(self.blocks)))
        new_of = {old: new for new, old in enumerate(order)}
        self.blocks = [self.blocks[i] for i in order]
        for r in self.records:
            for s in r["streams"]:
                s["chunk_blocks"] = [new_of[b] for b in s["chunk_blocks"]]

    def remove_block(self, index: int) -> Block:
        """Drop a block from the file and the table; later chunk_blocks references shift down."""
        b = self.blocks.pop(index)
        for r in self.records:
            for s in r["streams"]:
                s["chunk_blocks"] = [x - 1 if x > index else x for x in s["chunk_blocks"]]
        return b

    # -- bytes --------------------------------------------------------------------------------
    def header_bytes(self) -> bytes:
        h = dict(self.header, header_crc32c=0)
        raw = L.FileHeader.build(h)
        value = crc(raw[:28])
        if self.header_crc is not None:
            value = self.header_crc(value) if callable(self.header_crc) else self.header_crc
        h["header_crc32c"] = value
        return L.FileHeader.build(h)

    def index_payload(self, entries: list[dict]) -> bytes:
        ih = dict(tensor_count=len(self.records), block_count=len(entries),
                  metadata_count=len(self.metadata), reserved=0)
        _apply(ih, self.index_header)
        parts = [L.IndexHeader.build(ih)]
        parts += [L.BlockEntry.build(e) for e in entries]
        parts += [L.MetadataEntry.build(m) for m in self.metadata]
        parts += [L.TensorRecord.build(r) for r in self.records]
        payload = b"".join(parts) + self.index_tail
        self.layout["index_parts"] = [len(p) for p in parts]
        if self.index_hook is not None:
            payload = self.index_hook(payload)
        return payload

    def build(self) -> bytes:
        A = self.alignment
        out = bytearray(self.header_bytes())
        lay = self.layout = {"blocks": []}

        def pad(fill: int) -> None:
            out.extend(bytes([fill]) * (align_up(len(out), A) - len(out)))

        pad(self.header_pad_fill)
        entries = []
        for b in self.blocks:
            out.extend(b.gap_before)
            offset = len(out)
            body = L.BlockHeader.build(b.header_dict()) + bytes(b.payload)
            value = crc(body)
            if b.trailer is not None:
                value = b.trailer(value) if callable(b.trailer) else b.trailer
            out.extend(body)
            out.extend(L.BlockTrailer.build(dict(block_crc32c=value)))
            lay["blocks"].append(dict(offset=offset, end=len(out), payload=len(b.payload)))
            if b.listed:
                e = dict(offset=offset, payload_length=len(b.payload), block_type=b.block_type,
                         reserved=0, block_crc32c=value)
                entries.append(_apply(e, b.entry))
            pad(b.pad_fill)
            out.extend(b.pad_extra)
        out.extend(self.gap_before_index)
        index_offset = len(out)
        payload = self.index_payload(entries)
        ih = dict(block_type=INDEX, block_flags=0, tensor_id=NONE_ID, stream_id=NONE_ID,
                  chunk_id=NONE_ID, payload_length=len(payload))
        _apply(ih, self.index_block)
        body = L.BlockHeader.build(ih) + payload
        value = crc(body)
        if self.index_crc is not None:
            value = self.index_crc(value) if callable(self.index_crc) else self.index_crc
        out.extend(body)
        out.extend(L.BlockTrailer.build(dict(block_crc32c=value)))
        lay["index_offset"] = index_offset
        lay["index_payload"] = len(payload)
        ftr = dict(index_offset=index_offset, index_block_size=len(payload) + 28,
                   footer_magic=L.FOOTER_MAGIC, reserved=0, footer_crc32c=0)
        _apply(ftr, self.footer)
        raw = L.Footer.build(ftr)
        value = crc(raw[:24])
        if self.footer_crc is not None:
            value = self.footer_crc(value) if callable(self.footer_crc) else self.footer_crc
        ftr["footer_crc32c"] = value
        lay["footer_offset"] = len(out)
        out.extend(L.Footer.build(ftr))
        out.extend(self.tail)
        data = bytes(out)
        if self.hook is not None:
            data = self.hook(data)
        return data


def reseal_footer(data: bytes) -> bytes:
    """Recompute the footer CRC of finished bytes (after a hook changed the footer fields)."""
    f = bytearray(data)
    f[-4:] = struct.pack("<I", crc(f[-32:-8]))
    return bytes(f)
