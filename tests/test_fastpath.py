"""The native batch decoder of plain chunks (wcodec/fastpath.py, _crans.c decode_chunks) against
the Python path: same bytes, and on damaged files the same error (class, rule, tensor, block)."""

import os

import numpy as np
import pytest
import torch

import wcodec
from wcodec import fastpath
from wcodec.codecs import rans
from wcodec.errors import FormatError
from wcodec.reader import Reader

native = pytest.mark.skipif(rans.native is None or not hasattr(rans.native, "decode_chunks"),
                            reason="C kernels not built")


def _state(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3 * 1000 + 17, generator=g) * 0.05
    st = {
        "f32": w.clone(),
        "f16": w.to(torch.float16),
        "bf16": w.to(torch.bfloat16).reshape(-1, 1),
        "f8": w.to(torch.float8_e4m3fn),
        "i32": torch.randint(-5, 5, (2000,), generator=g, dtype=torch.int32),
        "u8": torch.randint(0, 7, (999,), generator=g, dtype=torch.uint8),
        "bool": torch.rand(777, generator=g) > 0.5,
        "f64": w.to(torch.float64),  # itemsize 8: always the Python path
        "zero_d": torch.tensor(1.5),
        "empty": torch.zeros(0, 3),
        "const": torch.full((5000,), -0.0),
        "rep": torch.arange(64, dtype=torch.float32).repeat(200),  # zstd lanes: the fallback
    }
    st["special"] = torch.tensor([float("nan"), -0.0, 1e-45, float("inf"), -float("inf")] * 300)
    return st


def _python_path(monkeypatch):
    monkeypatch.setattr(fastpath, "native_shape", lambda chain, dtype: None)


def _bytes(d):
    return {k: v.reshape(-1).view(torch.uint8).numpy().tobytes() for k, v in d.items()}


@native
@pytest.mark.parametrize("threads", [1, 2])
def test_same_bytes_as_python_path(tmp_path, monkeypatch, threads):
    st = _state()
    p = tmp_path / "m.wcd"
    wcodec.save_file(st, p, chunk_elements=1000)  # several chunks and a short last one
    fast = wcodec.load_file(p, threads=threads)
    assert _bytes(fast) == _bytes(st)
    _python_path(monkeypatch)
    assert _bytes(wcodec.load_file(p, threads=threads)) == _bytes(st)


@native
def test_native_path_is_taken(tmp_path, monkeypatch):
    st = {"w": torch.randn(6 * 8192) * 0.02}  # no short chunk: those may get a zstd lane
    p = tmp_path / "m.wcd"
    wcodec.save_file(st, p, chunk_elements=8192)
    done, real = [], fastpath.run_batch
    monkeypatch.setattr(fastpath, "run_batch", lambda *a: done.append(len(a[2])) or real(*a))
    fell_back = []
    real_chunk = Reader._decode_chunk
    monkeypatch.setattr(Reader, "_decode_chunk", lambda self, a: fell_back.append(1) or real_chunk(self, a))
    assert _bytes(wcodec.load_file(p, threads=1)) == _bytes(st)
    assert sum(done) == 6 and not fell_back


def _damage(path, at):
    b = bytearray(path.read_bytes())
    b[at] ^= 0x10
    path.write_bytes(bytes(b))


def _error(path, threads):
    try:
        wcodec.load_file(path, threads=threads)
    except FormatError as e:
        return type(e).__name__, e.rule, e.tensor, e.block
    return None


@native
@pytest.mark.parametrize("where", ["header", "payload", "trailer", "padding"])
def test_same_error_as_python_path(tmp_path, monkeypatch, where):
    st = {"a": torch.randn(20_000) * 0.02, "b": (torch.randn(30_000) * 0.02).to(torch.bfloat16)}
    p = tmp_path / "m.wcd"
    wcodec.save_file(st, p, chunk_elements=4096)
    r = Reader(p)
    info = r.info("b")
    e = r.blocks[info.streams[0].chunk_blocks[2]]
    r.close()
    end = e.offset + 24 + e.payload_length
    at = {"header": e.offset + 5, "payload": e.offset + 24 + e.payload_length // 2,
          "trailer": end + 1, "padding": end + 5}[where]
    if where == "padding" and at >= (end + 4 + 63) // 64 * 64:
        pytest.skip("no padding after this block")
    _damage(p, at)
    fast = [_error(p, t) for t in (1, 2)]
    _python_path(monkeypatch)
    slow = _error(p, 1)
    assert slow is not None
    assert fast == [slow, slow]


@native
def test_planes_kernels_every_tail():
    rng = np.random.default_rng(1)
    for size in (2, 4):
        for k in (0, 1, 31, 32, 33, 100, 4097):
            words = rng.integers(0, 2 ** (8 * size), k, dtype=np.uint64).astype(
                {2: np.uint16, 4: np.uint32}[size])
            for rotate in (False, True):
                planes = np.empty(k * size, np.uint8)
                rans.native.planes_encode(words, size, rotate, planes)
                back = np.empty_like(words)
                rans.native.planes_decode(planes, size, rotate, back)
                assert np.array_equal(back, words)


@native
def test_crc32c_kernel():
    import crc32c
    assert rans.native.crc32c(b"123456789") == 0xE3069283
    for n in (0, 1, 7, 8, 12287, 12288, 12289, 3 * 4096 * 7 + 5, 1 << 20):
        b = os.urandom(n)
        assert rans.native.crc32c(b) == crc32c.crc32c(b), n
