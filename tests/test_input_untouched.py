"""W-WRT-03: the caller's tensors and arrays are never modified by encoding: not their bytes, not
their version counter (no in-place op, even one undone later), not their strides, flags, grad or
storage; and a source file on disk is not changed by `encode`."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch

import wcodec
import wcodec.numpy as wnp
from wcodec import formats
from wcodec.writer import EncodeOptions

from conftest import DTYPE_NAMES, NUMPY_DTYPES, special_patterns, torch_bits, uint_np


def torch_inputs() -> dict:
    """Every dtype, contiguous and as views of many layouts, specials included."""
    out = {}
    g = torch.Generator().manual_seed(0)
    for name in DTYPE_NAMES:
        dt = getattr(torch, name)
        specials = np.array(special_patterns(name) * 8, dtype=uint_np(name))
        carrier = torch.from_numpy(specials.view({1: np.uint8, 2: np.int16, 4: np.int32,
                                                  8: np.int64}[specials.itemsize]))
        t = carrier.view(dt)
        out[name] = t
        m = t[:16].reshape(4, 4)
        out[name + ".T"] = m.T
        out[name + ".step"] = t[::3]
        out[name + ".col"] = m[:1, 1]
        out[name + ".scalar"] = m[2, 3]
        out[name + ".empty"] = t[:0]
        out[name + ".bcast"] = m[:1].expand(5, 4)
    p = torch.nn.Parameter(torch.randn(8, 8, generator=g))
    p.grad = torch.ones(8, 8)
    out["param"] = p
    out["neg"] = torch.randn(6, generator=g)._neg_view()
    out["channels_last"] = torch.randn(2, 3, 4, 5, generator=g).to(
        memory_format=torch.channels_last)
    return out


def snapshot_torch(t: torch.Tensor) -> dict:
    return dict(bits=torch_bits(t), version=t._version, stride=t.stride(),
                offset=t.storage_offset(), ptr=t.data_ptr(), dtype=t.dtype,
                shape=tuple(t.shape), requires_grad=t.requires_grad, is_neg=t.is_neg(),
                grad=None if t.grad is None else torch_bits(t.grad),
                storage=bytes(t.untyped_storage()))


@pytest.mark.parametrize("codec", ["planes", "raw"])
def test_torch_tensors_untouched(tmp_path, codec):
    tensors = torch_inputs()
    before = {k: snapshot_torch(t) for k, t in tensors.items()}
    path = tmp_path / "t.wcodec"
    wcodec.save_file(tensors, path, chunk_elements=3, codec=codec, threads=2)
    after = {k: snapshot_torch(t) for k, t in tensors.items()}
    for k in tensors:
        assert after[k] == before[k], k
    back = wcodec.load_file(path)
    for k, t in tensors.items():
        assert torch_bits(back[k]) == before[k]["bits"], k


def test_loaded_tensors_are_independent_and_writable(tmp_path):
    path = tmp_path / "t.wcodec"
    wcodec.save_file({"a": torch.arange(6.0)}, path)
    before = path.read_bytes()
    a = wcodec.load_file(path)["a"]
    a.add_(1)  # would warn or fail on a read-only buffer, and must not reach the file
    assert path.read_bytes() == before
    assert torch.equal(wcodec.load_file(path)["a"], torch.arange(6.0))


def numpy_inputs() -> dict:
    out = {}
    for name, dt in NUMPY_DTYPES.items():
        bits = np.array(special_patterns(name) * 8, dtype=uint_np(name))
        a = bits.view(dt)
        out[name] = a
        out[name + ".T"] = a[:16].reshape(4, 4).T
        out[name + ".rev"] = a[::-2]
        out[name + ".scalar"] = a[3:4].reshape(())
        big = np.dtype(dt).newbyteorder(">")
        out[name + ".be"] = bits.byteswap().view(big)
    ro = np.arange(10, dtype=np.float32)
    ro.flags.writeable = False
    out["readonly"] = ro
    out["bcast"] = np.broadcast_to(np.arange(3.0), (4, 3))
    out["fortran"] = np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4))
    return out


def snapshot_np(a: np.ndarray) -> dict:
    return dict(bytes=a.tobytes(order="A"), base_bytes=None if a.base is None else
                np.asarray(a.base).tobytes(), strides=a.strides, dtype=a.dtype, shape=a.shape,
                writeable=a.flags.writeable, owndata=a.flags.owndata)


@pytest.mark.parametrize("codec", ["planes", "raw"])
def test_numpy_arrays_untouched(tmp_path, codec):
    arrays = numpy_inputs()
    before = {k: snapshot_np(a) for k, a in arrays.items()}
    wnp.save_file(arrays, tmp_path / "n.wcodec", chunk_elements=5, codec=codec, threads=2)
    for k, a in arrays.items():
        assert snapshot_np(a) == before[k], k
    back = wnp.load_file(tmp_path / "n.wcodec")
    assert back["readonly"].flags.writeable  # a fresh array, not a view of the file


def test_memmapped_input_untouched(tmp_path):
    src = tmp_path / "m.bin"
    np.arange(1000, dtype=np.float32).tofile(src)
    digest = hashlib.sha256(src.read_bytes()).digest()
    mm = np.memmap(src, dtype=np.float32, mode="r")
    wnp.save_file({"m": mm}, tmp_path / "m.wcodec")
    assert hashlib.sha256(src.read_bytes()).digest() == digest
    assert wnp.load_file(tmp_path / "m.wcodec")["m"].tobytes() == src.read_bytes()


def test_writer_add_does_not_touch_buffer(tmp_path):
    """The low-level Writer: the uint8 buffer handed to add() keeps its bytes and its flags."""
    from wcodec import dtypes as D
    data = np.frombuffer(np.arange(300, dtype="<f4").tobytes(), dtype=np.uint8).copy()
    ref = data.copy()
    with wcodec.Writer(tmp_path / "w.wcodec", options=EncodeOptions(chunk_elements=7)) as w:
        w.add("x", D.by_name("float32"), (300,), data)
    assert data.flags.writeable and np.array_equal(data, ref)


def test_encode_leaves_source_file_untouched(tmp_path):
    import safetensors.torch
    src = tmp_path / "s.safetensors"
    safetensors.torch.save_file({"a": torch.randn(64, 64), "b": torch.arange(10)}, str(src),
                                metadata={"k": "v"})
    st = os.stat(src)
    digest = hashlib.sha256(src.read_bytes()).digest()
    formats.encode_file(src, tmp_path / "s.wcodec", EncodeOptions(chunk_elements=100))
    st2 = os.stat(src)
    assert hashlib.sha256(src.read_bytes()).digest() == digest
    assert (st2.st_mtime_ns, st2.st_size, st2.st_mode) == (st.st_mtime_ns, st.st_size,
                                                           st.st_mode)
