"""Every struct of wcodec.layout: parse/build round trips in both directions, sizeof where the size
is fixed (construct's own test style), and field names, order, offsets and sizes checked against the
tables of spec/container.md."""

from __future__ import annotations

import io
import math
import re
import struct
from pathlib import Path

import construct
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wcodec import layout as L

from conftest import plain

SPEC = Path(__file__).resolve().parents[1] / "spec" / "container.md"

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
f64 = st.floats(allow_nan=False)  # NaN != NaN; NaN bit patterns are covered by the bytes tests


file_header = st.fixed_dictionaries(dict(
    magic=st.binary(min_size=8, max_size=8), version_major=u16, version_minor=u16,
    required_features=u32, optional_features=u32, alignment_log2=u8,
    reserved=st.binary(min_size=7, max_size=7), header_crc32c=u32))
block_header = st.fixed_dictionaries(dict(
    block_type=u16, block_flags=u16, tensor_id=u32, stream_id=u32, chunk_id=u32,
    payload_length=u64))
block_trailer = st.fixed_dictionaries(dict(block_crc32c=u32))
footer = st.fixed_dictionaries(dict(
    index_offset=u64, index_block_size=u64, footer_magic=st.binary(min_size=8, max_size=8),
    reserved=u32, footer_crc32c=u32))
index_header = st.fixed_dictionaries(dict(
    tensor_count=u32, block_count=u32, metadata_count=u32, reserved=u32))
block_entry = st.fixed_dictionaries(dict(
    offset=u64, payload_length=u64, block_type=u16, reserved=u16, block_crc32c=u32))
error_stats = st.fixed_dictionaries(dict(
    max_abs_error=f64, mean_squared_error=f64, signal_power=f64))


@st.composite
def metadata_entry(draw):
    key = draw(st.binary(max_size=300))
    value = draw(st.binary(max_size=64))
    return dict(key_length=len(key), key=key, value_type=draw(u8), value_length=len(value),
                value=value)


@st.composite
def codec_spec(draw):
    cfg = draw(st.binary(max_size=20))
    return dict(codec_id=draw(u16), config_length=len(cfg), config=cfg)


@st.composite
def stream(draw, crcs=None):
    """crcs: whether the enclosing record has has_chunk_crc32c (None: draw it)."""
    shape = draw(st.lists(u64, max_size=17))
    codecs = draw(st.lists(codec_spec(), max_size=9))
    blocks = draw(st.lists(u32, max_size=10))
    crcs = draw(st.booleans()) if crcs is None else crcs
    return dict(stream_dtype=draw(u8), stream_rank=len(shape), stream_shape=shape,
                chunk_elements=draw(u64), codec_count=len(codecs), codecs=codecs,
                chunk_count=len(blocks), chunk_blocks=blocks,
                chunk_crc32c=[draw(u32) for _ in blocks] if crcs else None)


def context(name, obj) -> dict:
    """A Stream reads its record's record_flags (this._): given when it is built alone."""
    if name != "Stream":
        return {}
    return {"record_flags": L.FLAG_HAS_CHUNK_CRC32C if obj["chunk_crc32c"] is not None else 0}


@st.composite
def tensor_record(draw):
    name = draw(st.binary(max_size=60))
    shape = draw(st.lists(u64, max_size=17))
    flags = draw(u8)
    params = draw(st.binary(max_size=30))
    streams = draw(st.lists(stream(bool(flags & L.FLAG_HAS_CHUNK_CRC32C)), max_size=3))
    return dict(
        name_length=len(name), name=name, dtype=draw(u8), record_kind=draw(u8),
        record_flags=flags, rank=len(shape), shape=shape,
        sha256=draw(st.binary(min_size=32, max_size=32)) if flags & L.FLAG_HAS_SHA256 else None,
        error=draw(error_stats) if flags & L.FLAG_LOSSY else None,
        params_length=len(params), params=params, stream_count=len(streams), streams=streams)


STRATEGIES = {
    "FileHeader": file_header, "BlockHeader": block_header, "BlockTrailer": block_trailer,
    "Footer": footer, "IndexHeader": index_header, "BlockEntry": block_entry,
    "MetadataEntry": metadata_entry(), "ErrorStats": error_stats, "CodecSpec": codec_spec(),
    "Stream": stream(), "TensorRecord": tensor_record(),
}
FIXED_SIZES = {"FileHeader": 32, "BlockHeader": 24, "BlockTrailer": 4, "Footer": 32,
               "IndexHeader": 16, "BlockEntry": 24, "ErrorStats": 24}
NAMES = sorted(L.ALL_STRUCTS)


def test_every_struct_has_a_strategy():
    assert set(STRATEGIES) == set(L.ALL_STRUCTS)


@pytest.mark.parametrize("name", NAMES)
def test_parse_build_object(name):
    """parse(build(obj)) == obj, and the bytes are consumed exactly."""
    s = L.ALL_STRUCTS[name]

    @given(STRATEGIES[name])
    def check(obj):
        ctx = context(name, obj)
        data = s.build(obj, **ctx)
        assert plain(s.parse(data, **ctx)) == obj
        stream_ = io.BytesIO(data + b"\xAA\xBB")  # the struct stops at its own end
        assert plain(s.parse_stream(stream_, **ctx)) == obj
        assert stream_.tell() == len(data)
        if name in FIXED_SIZES:
            assert len(data) == FIXED_SIZES[name]
    check()


@pytest.mark.parametrize("name", NAMES)
def test_compiled_struct_agrees(name):
    """The writer, reader and salvage use compiled copies of some structs for speed: same bytes
    built, same objects parsed. (The reader parses the INDEX's records with parsers generated by
    layout_parse.py: tests/test_layout_parse.py.)"""
    s = L.ALL_STRUCTS[name]
    c = s.compile()

    @given(STRATEGIES[name])
    def check(obj):
        ctx = context(name, obj)
        data = s.build(obj, **ctx)
        assert c.build(obj, **ctx) == data
        assert plain(c.parse_stream(io.BytesIO(data), **ctx)) == obj
    check()


@pytest.mark.parametrize("name", NAMES)
def test_build_parse_bytes(name):
    """build(parse(x)) == x: for fixed-size structs any x, for the others any x a build made."""
    s = L.ALL_STRUCTS[name]
    if name in FIXED_SIZES:
        data_st = st.binary(min_size=FIXED_SIZES[name], max_size=FIXED_SIZES[name])
    else:
        data_st = STRATEGIES[name].map(lambda o: (s.build(o, **context(name, o)),
                                                  context(name, o)))

    @given(data_st)
    def check(data):
        data, ctx = data if isinstance(data, tuple) else (data, {})
        assert s.build(s.parse(data, **ctx), **ctx) == data
    check()


@pytest.mark.parametrize("name", NAMES)
def test_sizeof(name):
    s = L.ALL_STRUCTS[name]
    if name in FIXED_SIZES:
        assert s.sizeof() == FIXED_SIZES[name]
        assert len(s.build(s.parse(bytes(FIXED_SIZES[name])))) == FIXED_SIZES[name]
    else:
        with pytest.raises(construct.SizeofError):
            s.sizeof()


@pytest.mark.parametrize("name", [n for n in NAMES if n in FIXED_SIZES])
def test_fixed_struct_rejects_short_input(name):
    s = L.ALL_STRUCTS[name]
    with pytest.raises(construct.StreamError):
        s.parse(bytes(FIXED_SIZES[name] - 1))


def test_nan_payload_bits_survive_error_stats():
    raw = struct.pack("<QQQ", 0x7FF0000000000001, 0xFFF8DEADBEEF0001, 0x8000000000000000)
    parsed = L.ErrorStats.parse(raw)
    assert math.isnan(parsed.max_abs_error) and math.copysign(1, parsed.signal_power) == -1
    assert L.ErrorStats.build(parsed) == raw


def test_known_bytes():
    """A hand-written header and footer decode to the spec's field values (little-endian)."""
    raw = L.MAGIC + bytes([1, 0, 2, 0]) + (5).to_bytes(4, "little") + (6).to_bytes(4, "little") \
        + bytes([6]) + bytes(7) + (0xE3069283).to_bytes(4, "little")
    h = L.FileHeader.parse(raw)
    assert (h.magic, h.version_major, h.version_minor, h.required_features,
            h.optional_features, h.alignment_log2, h.header_crc32c) == \
        (L.MAGIC, 1, 2, 5, 6, 6, 0xE3069283)
    assert L.MAGIC == bytes.fromhex("89 57 43 44 0D 0A 1A 0A")
    assert L.FOOTER_MAGIC == bytes.fromhex("57 43 44 49 4E 44 45 58")
    import crc32c
    assert crc32c.crc32c(b"123456789") == 0xE3069283  # spec 1.2
    r = L.TensorRecord.build(dict(
        name_length=1, name=b"w", dtype=2, record_kind=1, record_flags=0, rank=1, shape=[3],
        sha256=None, error=None, params_length=0, params=b"", stream_count=1, streams=[dict(
            stream_dtype=2, stream_rank=1, stream_shape=[3], chunk_elements=2, codec_count=1,
            codecs=[dict(codec_id=1, config_length=0, config=b"")], chunk_count=2,
            chunk_blocks=[0, 1])]))
    assert r == (b"\x01\x00" b"w" b"\x02\x01\x00\x01" + (3).to_bytes(8, "little")
                 + b"\x00\x00\x00\x00" b"\x01" b"\x02\x01" + (3).to_bytes(8, "little")
                 + (2).to_bytes(8, "little") + b"\x01" b"\x01\x00\x00\x00"
                 + b"\x02\x00\x00\x00" + b"\x00\x00\x00\x00" + b"\x01\x00\x00\x00")


# -- the structs mirror the spec's tables ---------------------------------------------------------
ANCHORS = {  # a line of container.md after which the struct's table is the first table
    "FileHeader": "(`FileHeader`)", "BlockHeader": "`BlockHeader`:",
    "BlockTrailer": "`BlockTrailer`:", "Footer": "the `Footer`:",
    "IndexHeader": "### 6.1 IndexHeader", "BlockEntry": "### 6.2 BlockEntry",
    "MetadataEntry": "### 6.3 MetadataEntry", "ErrorStats": "`ErrorStats` (24 bytes)",
    "CodecSpec": "`CodecSpec`:", "Stream": "`Stream`:", "TensorRecord": "### 6.4 TensorRecord",
}
TYPE_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "f64": 8}


def spec_table(name: str) -> list[dict]:
    lines = SPEC.read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if ANCHORS[name] in line)
    i = next(j for j in range(start + 1, len(lines)) if lines[j].startswith("|"))
    rows = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
        i += 1
    head, body = rows[0], rows[2:]
    return [dict(zip(head, r)) for r in body]


def spec_type_size(t: str):
    t = t.split(",")[0].strip()
    if t in TYPE_SIZES:
        return TYPE_SIZES[t]
    m = re.fullmatch(r"bytes\[(\d+)\]", t)
    if m:
        return int(m.group(1))
    if t == "ErrorStats":
        return 24
    return None  # variable: bytes[key_length], u64[rank], Stream[stream_count], ...


def construct_field_size(sc):
    try:
        return sc.sizeof()
    except (construct.SizeofError, KeyError):  # KeyError: a condition on an earlier field
        return None


@pytest.mark.parametrize("name", NAMES)
def test_struct_mirrors_spec_table(name):
    table = spec_table(name)
    spec_fields = [row["field"].strip("`") for row in table]
    subcons = L.ALL_STRUCTS[name].subcons
    assert [sc.name for sc in subcons] == spec_fields
    offset = 0
    for row, sc in zip(table, subcons):
        size = spec_type_size(row["type"])
        csize = construct_field_size(sc)
        if size is not None and not (name == "TensorRecord" and row["field"] in
                                     ("`sha256`", "`error`")):
            assert csize == size, (name, row)
        if "offset" in row:
            assert int(row["offset"]) == offset, (name, row)
            assert int(row["size"]) == csize, (name, row)
            offset += csize
    if name in FIXED_SIZES:
        assert offset == FIXED_SIZES[name] or "offset" not in table[0]


def test_layout_constants_match_spec():
    assert L.BLOCK_CHUNK == 0x8001 and L.BLOCK_INDEX == 0x8002 and L.REQUIRED_BIT == 0x8000
    assert L.NONE_ID == 0xFFFFFFFF
    assert (L.HEADER_SIZE, L.FOOTER_SIZE, L.BLOCK_HEADER_SIZE, L.BLOCK_TRAILER_SIZE,
            L.BLOCK_ENTRY_SIZE, L.INDEX_HEADER_SIZE) == (32, 32, 24, 4, 24, 16)
    assert (L.FLAG_HAS_SHA256, L.FLAG_LOSSY) == (1, 2)
    assert [L.align_up(x, a) for x, a in ((0, 64), (1, 64), (64, 64), (65, 64), (7, 1))] == \
        [0, 64, 64, 128, 7]
