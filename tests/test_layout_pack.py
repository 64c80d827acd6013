"""The writer's fast paths produce the bytes of the spec mirror: layout_pack's struct builders
against layout.py's construct declarations, AtomicFile's gathered writes against plain
concatenation (short writes included), and the writer's job split (one job for a small tensor, a
job per chunk for a large one) against a decode."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wcodec import atomic
from wcodec import layout as L
from wcodec import layout_pack as P
from wcodec.dtypes import by_name
from wcodec.reader import Reader
from wcodec.writer import EncodeOptions, Writer

from test_structs import block_entry, block_header, block_trailer, tensor_record


@given(block_header)
def test_block_header_bytes(h):
    assert P.block_header(**h) == L.BlockHeader.build(h)
    assert P.BLOCK_HEADER.size == L.BLOCK_HEADER_SIZE


@given(block_trailer)
def test_block_trailer_bytes(t):
    assert P.block_trailer(**t) == L.BlockTrailer.build(t)


@given(block_entry)
def test_block_entry_bytes(e):
    assert P.block_entry(**e) == L.BlockEntry.build(e)


@given(tensor_record())
def test_tensor_record_bytes(r):
    assert P.tensor_record(r) == L.TensorRecord.build(r)


def test_tensor_record_rejects_inconsistent_lengths():
    r = dict(name_length=3, name=b"ab", dtype=1, record_kind=1, record_flags=0, rank=0, shape=[],
             sha256=None, error=None, params_length=0, params=b"", stream_count=0, streams=[])
    with pytest.raises(ValueError):
        P.tensor_record(r)
    with pytest.raises(ValueError):
        P.tensor_record(dict(r, name=b"abc", rank=1))


@st.composite
def pieces(draw):
    """A mix of small and large pieces of several buffer types, some empty."""
    out = []
    for _ in range(draw(st.integers(0, 12))):
        n = draw(st.sampled_from([0, 1, 7, 100, atomic.SMALL_WRITE - 1, atomic.SMALL_WRITE,
                                  200_000]))
        data = bytes((i * 7 + n) & 0xFF for i in range(n))
        kind = draw(st.sampled_from(["bytes", "bytearray", "memoryview", "numpy"]))
        out.append({"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data),
                    "numpy": np.frombuffer(data, np.uint8).copy()}[kind])
    return out


@given(pieces(), st.lists(st.booleans(), min_size=12, max_size=12), st.integers(1, 70_000))
def test_atomic_writes_are_concatenation(parts, use_writev, short):
    """write() and writev() in any mix give the concatenated bytes and a matching tell(), also
    when the OS writes at most `short` bytes per call."""
    import tempfile
    real = os.writev

    def short_writev(fd, bufs):
        left, cut = short, []
        for b in bufs:
            if left <= 0:
                break
            cut.append(memoryview(b)[:left])
            left -= len(cut[-1])
        return real(fd, cut)

    with tempfile.TemporaryDirectory() as d:
        target = os.path.join(d, "out.bin")
        atomic.os.writev = short_writev
        try:
            f = atomic.AtomicFile(target)
            expect = b""
            for i, p in enumerate(parts):
                if use_writev[i]:
                    f.writev([p])
                else:
                    f.write(p)
                expect += bytes(memoryview(p).cast("B"))
                assert f.tell() == len(expect)
                if isinstance(p, bytearray) and len(p):
                    p[0] ^= 0xFF  # written data is not kept by reference
            f.commit()
        finally:
            atomic.os.writev = real
        with open(target, "rb") as g:
            assert g.read() == expect
        assert os.listdir(d) == ["out.bin"]


def test_atomic_abort_leaves_nothing(tmp_path):
    f = atomic.AtomicFile(tmp_path / "x.bin")
    f.write(b"abc")
    f.writev([b"d" * 100_000])
    f.abort()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("threads", [1, 2])
def test_small_and_large_tensors_round_trip(tmp_path, threads):
    """Tensors at, below and above chunk_elements (one job or one per chunk), empty, scalar, a
    stream the chain does not shrink (stored raw), with progress reported per chunk."""
    ce = 1000
    rng = np.random.default_rng(3)
    f16 = by_name("float16")
    arrays = {
        "empty": np.zeros(0, np.float16), "scalar": np.array(1.5, np.float16),
        "below": rng.standard_normal(ce - 1).astype(np.float16),
        "at": rng.standard_normal(ce).astype(np.float16),
        "above": rng.standard_normal(ce + 1).astype(np.float16),
        "many": rng.standard_normal((7, ce // 2 + 3)).astype(np.float16),
        "noise": rng.integers(0, 1 << 16, 3 * ce + 5, dtype=np.uint16).view(np.float16),
    }
    seen = []
    path = tmp_path / "t.wcd"
    with Writer(path, options=EncodeOptions(chunk_elements=ce, threads=threads),
                progress=seen.append, pipeline_bytes=4 * ce) as w:
        for name, a in arrays.items():
            w.add(name, f16, a.shape, a.view(np.uint16))
    assert sum(seen) == sum(a.nbytes for a in arrays.values())
    with Reader(path) as r:
        for name, a in arrays.items():
            raw, _, shape = r.read_array(name)
            assert tuple(shape) == a.shape
            assert bytes(raw) == a.tobytes()
            assert r.info(name).sha256 == hashlib.sha256(a.tobytes()).digest()


def test_profile_encode_smoke(tmp_path, capsys):
    import torch
    from tools import profile_encode
    p = tmp_path / "m.pt"
    torch.save({"a": torch.randn(70_000).to(torch.bfloat16), "b": torch.randn(3000)}, p)
    assert profile_encode.main([str(p), "--rounds", "1", "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pool work alone" in out and "save_file threads=2" in out
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]  # its output file removed


def test_ab_writer_smoke(tmp_path, capsys):
    """tools/ab_writer.py against the committed writer: runs, and both write the same bytes."""
    import shutil
    import subprocess

    import torch
    from tools import ab_writer
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if shutil.which("git") is None or subprocess.run(
            ["git", "-C", root, "rev-parse", "HEAD"], capture_output=True).returncode:
        pytest.skip("not a git checkout")
    p = tmp_path / "m.pt"
    torch.save({"a": torch.randn(70_000).to(torch.bfloat16), "b": torch.randn(3000)}, p)
    assert ab_writer.main([str(p), "--ref", "HEAD", "--rounds", "1",
                           "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "threads=2: wall old" in out and "same bytes: True" in out
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]
