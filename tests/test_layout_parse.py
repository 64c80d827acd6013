"""The parsers layout_parse.py generates from layout.py (the reader's fast path for the INDEX) agree
with construct's declarative parse on every input: same Containers and end position where construct
parses, an exception where it fails (the reader then re-parses with construct to name the error).
Also the block table's numpy dtype, and that the reader's fast layout and ownership checks give
the errors of the block-by-block loops."""

from __future__ import annotations

import io
import os
import struct
import sys

import construct
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wcodec import layout as L
from wcodec import layout_parse as LP

sys.path.insert(0, os.path.dirname(__file__))
from test_structs import NAMES, STRATEGIES, context  # noqa: E402

PARSERS = {name: LP.generate(L.ALL_STRUCTS[name]) for name in NAMES}


def canon(x):
    """Comparable form: private keys dropped, floats as their bits, container types kept."""
    if isinstance(x, dict):
        return (type(x).__name__, {k: canon(v) for k, v in x.items() if not k.startswith("_")})
    if isinstance(x, list):
        return (type(x).__name__, [canon(v) for v in x])
    if isinstance(x, float):
        return struct.pack("<d", x)
    return (type(x).__name__, x)


def outcomes(name, data: bytes, ctx: dict):
    """(declarative, generated): each (canon(result), end) or None when it raised."""
    try:
        s = io.BytesIO(data)
        ref = (canon(L.ALL_STRUCTS[name].parse_stream(s, **ctx)), s.tell())
    except Exception:  # noqa: BLE001 - construct failed: the generated parser must too
        ref = None
    try:
        got, end = PARSERS[name](data, 0, 1, ctx)
        fast = (canon(got[0]), end)
    except Exception:  # noqa: BLE001
        fast = None
    return ref, fast


@pytest.mark.parametrize("name", NAMES)
def test_generated_parser_agrees_on_built_bytes(name):
    """Valid bytes, the same bytes cut short or followed by more: construct and the generated
    parser agree, and the generated one parses every built object."""
    s = L.ALL_STRUCTS[name]

    @settings(max_examples=60, deadline=None)
    @given(STRATEGIES[name], st.integers(0, 1 << 30), st.binary(max_size=8))
    def check(obj, cut, tail):
        ctx = context(name, obj)
        data = s.build(obj, **ctx)
        ref, fast = outcomes(name, data + tail, ctx)
        assert ref is not None and ref == fast and fast[1] == len(data)
        cut = cut % (len(data) + 1)
        if cut < len(data):
            ref, fast = outcomes(name, data[:cut], ctx)
            assert ref is None and fast is None
    check()


@pytest.mark.parametrize("name", NAMES)
def test_generated_parser_agrees_on_damaged_bytes(name):
    """A built struct with one byte changed (counts and lengths included), or arbitrary bytes:
    both parse to the same objects and end, or both fail."""
    s = L.ALL_STRUCTS[name]

    @settings(max_examples=80, deadline=None)
    @given(STRATEGIES[name], st.integers(0, 1 << 30), st.integers(0, 255), st.binary(max_size=80))
    def check(obj, at, value, junk):
        ctx = context(name, obj)
        data = bytearray(s.build(obj, **ctx) + junk)
        if data:
            data[at % len(data)] = value
        ref, fast = outcomes(name, bytes(data), ctx)
        assert ref == fast
        ref, fast = outcomes(name, junk, ctx)
        assert ref == fast
    check()


def test_generated_parser_reads_many_and_offsets():
    """parse(buf, pos, count) starts at pos and returns the position after the last one."""
    objs = [dict(key_length=1, key=b"k", value_type=1, value_length=2, value=b"ab"),
            dict(key_length=2, key=b"xy", value_type=0, value_length=0, value=b"")]
    data = b"\x00" * 5 + b"".join(L.MetadataEntry.build(o) for o in objs)
    got, end = LP.generate(L.MetadataEntry)(data, 5, 2)
    assert end == len(data) and [canon(g)[1] for g in got] == [canon(o)[1] for o in objs]


def test_unknown_declarations_are_refused():
    """A declaration the generator does not know is refused when generating, not misparsed."""
    for bad in (construct.Struct("a" / construct.VarInt),
                construct.Struct("a" / construct.Int16ub),
                construct.Struct(construct.Padding(2)),
                construct.Struct("n" / construct.Int8ul,
                                 "a" / construct.Array(lambda this: this.n, construct.Int8ul)),
                construct.Struct("a" / construct.IfThenElse(construct.this._._.x,
                                                            construct.Int8ul, construct.Int16ul))):
        with pytest.raises(NotImplementedError):
            LP.generate(bad)


def test_block_table_dtype_matches_block_entry():
    """The numpy dtype of the block table reads what construct's BlockEntry reads."""
    dt = LP.numpy_dtype(L.BlockEntry)
    assert dt.itemsize == L.BlockEntry.sizeof() == L.BLOCK_ENTRY_SIZE
    rows = [dict(offset=(1 << 64) - 1, payload_length=3, block_type=0x8001, reserved=7,
                 block_crc32c=0xFFFFFFFF),
            dict(offset=64, payload_length=1 << 40, block_type=1, reserved=0, block_crc32c=5)]
    table = np.frombuffer(b"".join(L.BlockEntry.build(r) for r in rows), dtype=dt)
    assert [dict(zip(dt.names, t)) for t in table.tolist()] == rows
    with pytest.raises(NotImplementedError):
        LP.numpy_dtype(L.MetadataEntry)


# -- the reader's fast checks give the loops' errors ------------------------------------------------
def _error(path, loop: bool):
    """(class, rule, block, tensor, message) of opening path, or None; loop=True hides the block
    table's record array from the reader, so its block-by-block loops decide."""
    from wcodec.errors import FormatError
    from wcodec.reader import Reader
    saved = Reader._parse_index

    def parse_index(self, payload):
        saved(self, payload)
        self._block_table = (None, None)
    if loop:
        Reader._parse_index = parse_index
    try:
        with Reader(path):
            return None
    except FormatError as e:
        return type(e).__name__, e.rule, e.block, e.tensor, str(e)
    finally:
        Reader._parse_index = saved


def test_fast_layout_checks_match_the_loops(tmp_path):
    """Forged block tables (holes, overlaps, blocks past the index, huge offsets and lengths,
    unknown required or optional types, dropped and duplicated blocks, aliased chunks): opening
    fails with the same error, or succeeds, with and without the numpy checks."""
    import random

    import wcodec
    sys.path.insert(0, os.path.dirname(__file__))
    import _wcd_hostile as H
    path = tmp_path / "f.wcd"
    import torch
    wcodec.save_file({f"t{i}": torch.arange(100 * (i + 1), dtype=torch.float32)
                      for i in range(3)}, path, chunk_elements=64)
    data = path.read_bytes()
    assert _error(path, False) is None
    seen = set()
    # every field of every entry of the block table forged in turn, the index CRC resealed
    io_, payload = H.index_payload(data)
    n_blocks = H.IH.unpack_from(payload, 0)[1]
    for k in range(n_blocks):
        e = io_ + 24 + 16 + 24 * k
        off, length, btype, _, _ = H.BE.unpack_from(data, e)
        for field, values in ((0, (off + 64, off - 64, io_, off + 1)),
                              (8, (length + 1, length + 64, max(length - 64, 0), io_ - off,
                                   io_ - off - 28, 1 << 40,
                                   (1 << 64) - 28)),
                              (16, (0x8002, 0x8003, 0x0001, 0xFFFF)), (18, (1,))):
            for v in values:
                d = bytearray(data)
                fmt = {0: "<Q", 8: "<Q", 16: "<H", 18: "<H"}[field]
                struct.pack_into(fmt, d, e + field, v % (1 << 8 * struct.calcsize(fmt)))
                path.write_bytes(H.reseal(d, blocks=False))
                fast, loop = _error(path, False), _error(path, True)
                assert fast == loop, (k, field, v, fast, loop)
                seen.add(fast[1] if fast else None)
    assert {"LAY-01", "LAY-02", "LAY-04", "IDX-05", "BLK-02", "RSV-01"} <= seen, seen
    rng = random.Random(5)
    for k in range(240):
        m = H.mutate(data, rng, op=rng.choice(["offset", "alias", "swap", "blocks", "field"]))
        path.write_bytes(m)
        fast, loop = _error(path, False), _error(path, True)
        assert fast == loop, (k, fast, loop)
        seen.add(fast[1] if fast else None)
    assert {"LAY-01", "LAY-04", "REC-07", "BLK-02", None} <= seen, seen
