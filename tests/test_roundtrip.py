"""Lossless round trips, bit for bit, through the torch API (save_file / load_file / safe_open) and
the numpy API, over every dtype; shapes including 0-d, empty and one element; non-contiguous inputs
(transposed, strided, offset, broadcast, negative strides, big-endian); special values (NaN payloads,
-0.0, +-inf, subnormals); and every encoder choice (chunk_elements, alignment_log2, codec, threads).
Bytes are compared (`view` as uint8), never values."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import wcodec
import wcodec.numpy as wnp
from wcodec import dtypes as D
from wcodec.chain import Chain
from wcodec.codecs import BytesCodec, LanesCodec, PlanesCodec

from conftest import (DTYPE_NAMES, ITEMSIZE, NUMPY_DTYPES, numpy_bits, special_patterns,
                      torch_bits, torch_carrier, torch_dtype, uint_np)

FLOATS = ["float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"]

# -- strategies ----------------------------------------------------------------------------------
shapes = st.one_of(
    st.sampled_from([(), (0,), (1,), (1, 1, 1), (3, 0, 2), (0, 0), (2, 1)]),
    array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7),
    array_shapes(min_dims=1, max_dims=1, min_side=100, max_side=700),
)
layouts = st.sampled_from(["contiguous", "transposed", "strided", "offset", "broadcast",
                           "negative"])


@st.composite
def options(draw):
    o = dict(chunk_elements=draw(st.sampled_from([1, 3, 7, 64, 1 << 16])),
             alignment_log2=draw(st.integers(0, 16)),
             codec=draw(st.sampled_from(["planes", "raw"])),
             threads=draw(st.sampled_from([1, 2])),
             sha256=draw(st.booleans()))
    if o["alignment_log2"] > 9:  # keep files small: few blocks when each is padded to 2^16
        o["chunk_elements"] = max(o["chunk_elements"], 256)
    return o


def smooth_bits(name: str, rng, m: int) -> np.ndarray:
    """Bit patterns of trained-weight-like values (compressible, so `planes` > `lanes` is kept)."""
    u = uint_np(name)
    if name == "bool":
        return (rng.random(m) < 0.3).astype(np.uint8)
    if name in FLOATS:
        x = torch.from_numpy((rng.standard_normal(m) * 0.02).astype(np.float32))
        return x.to(torch_dtype(name)).view(torch_carrier(name)).numpy().view(u).copy()
    return rng.integers(-50, 50, m).astype(f"<i{ITEMSIZE[name]}").view(u)


@st.composite
def bit_patterns(draw, name: str, m: int) -> np.ndarray:
    """m element bit patterns (as <uN) of one of several kinds, with special values stamped in."""
    u = uint_np(name)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["random", "smooth", "smooth", "constant"]))
    if kind == "random":
        bits = rng.integers(0, 256, m * u.itemsize, dtype=np.uint8).view(u).copy()
        if name == "bool":
            bits &= 1
    elif kind == "smooth":
        bits = smooth_bits(name, rng, m)
    else:
        bits = np.full(m, draw(st.sampled_from(special_patterns(name))), dtype=u)
    specials = special_patterns(name)
    if m and draw(st.booleans()):  # every special value, at random places
        pos = rng.choice(m, size=min(m, len(specials)), replace=False)
        bits[pos] = np.array(specials[:len(pos)], dtype=u)
    return bits


def numpy_view(base: np.ndarray, shape, layout: str) -> np.ndarray:
    """A view of `base` (1-D, long enough) with logical `shape` and the requested memory layout."""
    n = math.prod(shape)
    nd = len(shape)
    if layout == "transposed" and nd >= 2:
        return base[:n].reshape(shape[::-1]).T
    if layout == "strided" and nd >= 1:
        return base[:2 * n].reshape(shape[:-1] + (2 * shape[-1],))[..., ::2]
    if layout == "offset" or (layout in ("strided", "transposed") and nd < 2):
        return base[1:n + 1].reshape(shape)
    if layout == "broadcast" and nd >= 1 and shape[0] > 1:
        return np.broadcast_to(base[:n // shape[0]].reshape((1,) + shape[1:]), shape)
    if layout == "negative" and nd >= 1:
        return base[:n][::-1].reshape(shape)[..., ::-1] if shape[-1] else base[:n].reshape(shape)
    return base[:n].reshape(shape)


def torch_view(base: torch.Tensor, shape, layout: str) -> torch.Tensor:
    n = math.prod(shape)
    nd = len(shape)
    if layout == "transposed" and nd >= 2:
        return base[:n].reshape(shape[::-1]).permute(*reversed(range(nd)))
    if layout == "strided" and nd >= 1:
        return base[:2 * n].reshape(shape[:-1] + (2 * shape[-1],))[..., ::2]
    if layout == "offset" or (layout in ("strided", "transposed") and nd < 2):
        return base[1:n + 1].reshape(shape)
    if layout == "broadcast" and nd >= 1 and shape[0] > 1:
        return base[:n // shape[0]].reshape((1,) + shape[1:]).expand(shape)
    if layout == "negative" and nd >= 2:  # torch has no negative strides: a channels-last view
        return base[:n].reshape(shape[:1] + shape[2:] + shape[1:2]).movedim(-1, 1)
    return base[:n].reshape(shape)


def torch_input(name, bits: np.ndarray, shape, layout):
    """(tensor of dtype `name` with that layout, its expected C-order bytes)."""
    carrier = torch.from_numpy(bits.view({1: np.uint8, 2: np.int16, 4: np.int32,
                                          8: np.int64}[ITEMSIZE[name]]))
    v = torch_view(carrier, tuple(shape), layout)
    return v.view(torch_dtype(name)), torch_bits(v)


def check_torch_file(path, expect: dict, opts: dict):
    """Every reading path gives the same dtype, shape and bytes."""
    loaded = wcodec.load_file(path)
    assert list(loaded) == list(expect)
    for k, (dtype, shape, raw) in expect.items():
        t = loaded[k]
        assert t.dtype == dtype and tuple(t.shape) == tuple(shape)
        assert torch_bits(t) == raw, k
    with wcodec.safe_open(path) as f:
        assert f.keys() == list(expect)
        for k, (dtype, shape, raw) in reversed(expect.items()):  # random access, any order
            assert torch_bits(f.get_tensor(k)) == raw
            info = f.info(k)
            assert info.shape == tuple(shape) and info.kind_name == "plain" and not info.lossy
            assert (info.sha256 is not None) == opts.get("sha256", True)
            if opts.get("codec") == "raw":
                assert all(s.chain.describe() == "bytes" for s in info.streams)
    with wcodec.Reader(path) as r:
        assert r.verify() == []
        for k, (_, _, raw) in expect.items():
            assert r.read_bytes(k).tobytes() == raw
        assert r.alignment == 1 << opts.get("alignment_log2", 6)


# -- torch API -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DTYPE_NAMES)
@settings(max_examples=10)
@given(data=st.data(), shape=shapes, layout=layouts, opts=options())
def test_torch_roundtrip(fresh_path, name, data, shape, layout, opts):
    n = math.prod(shape)
    bits = data.draw(bit_patterns(name, 2 * n + 2), label="bits")
    t, raw = torch_input(name, bits, shape, layout)
    scalar_bits = data.draw(bit_patterns(name, 1), label="scalar")
    scalar, scalar_raw = torch_input(name, scalar_bits, (), "contiguous")
    empty = t[..., :0] if t.dim() else t.reshape(1, 1)[:, :0]  # an empty view of the input
    path = fresh_path()
    wcodec.save_file({"x": t, "scalar": scalar, "empty": empty}, path, **opts)
    expect = {"x": (t.dtype, shape, raw), "scalar": (t.dtype, (), scalar_raw),
              "empty": (t.dtype, tuple(empty.shape), b"")}
    check_torch_file(path, expect, opts)
    if name in NUMPY_DTYPES:  # the same file through the numpy API
        arrays = wnp.load_file(path)
        assert arrays["x"].dtype == np.dtype(NUMPY_DTYPES[name]) and arrays["x"].shape == shape
        assert numpy_bits(arrays["x"]) == raw
    else:
        with wcodec.safe_open(path, framework="np") as f, \
                pytest.raises(wcodec.UnsupportedFeature):
            f.get_tensor("x")


# -- numpy API -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(NUMPY_DTYPES))
@settings(max_examples=8)
@given(data=st.data(), shape=shapes, layout=layouts, opts=options(),
       big_endian=st.booleans())
def test_numpy_roundtrip(fresh_path, name, data, shape, layout, opts, big_endian):
    n = math.prod(shape)
    bits = data.draw(bit_patterns(name, 2 * n + 2), label="bits")
    v = numpy_view(bits, tuple(shape), layout)
    raw = np.ascontiguousarray(v).tobytes()
    dt = np.dtype(NUMPY_DTYPES[name])
    a = v.view(dt)
    if big_endian and dt.itemsize > 1:
        a = v.byteswap().view(dt.newbyteorder(">"))
    path = fresh_path()
    wnp.save_file({"x": a, "s": a.reshape(-1)[:1].reshape(()) if n else a.reshape(-1)[:0]},
                  path, **opts)
    back = wnp.load_file(path)
    assert list(back) == ["x", "s"]
    assert back["x"].dtype == dt.newbyteorder("<") and back["x"].shape == shape
    assert numpy_bits(back["x"]) == raw
    assert numpy_bits(back["s"]) == raw[:dt.itemsize]
    t = wcodec.load_file(path)["x"]  # and through torch
    assert t.dtype == torch_dtype(name) and torch_bits(t) == raw


# -- special values, deterministically -------------------------------------------------------------
@pytest.mark.parametrize("codec", ["planes", "raw"])
@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_every_special_value(tmp_path, name, codec):
    specials = special_patterns(name)
    u = uint_np(name)
    # the specials alone, then repeated among smooth values (so `planes` > `lanes` is kept)
    bits = np.concatenate([np.array(specials, dtype=u),
                           smooth_bits(name, np.random.default_rng(1), 300),
                           np.array(specials * 10, dtype=u)])
    t, raw = torch_input(name, bits, (bits.size,), "contiguous")
    for ce in (1, 5, 1 << 16):
        path = tmp_path / f"{ce}.wcodec"
        wcodec.save_file({"s": t, "h": t[:len(specials)]}, path, chunk_elements=ce, codec=codec)
        back = wcodec.load_file(path)
        assert torch_bits(back["s"]) == raw
        assert torch_bits(back["h"]) == raw[:len(specials) * u.itemsize]
    with wcodec.Reader(path) as r:
        chain = r.info("s").streams[0].chain.describe()
    if codec == "raw":
        assert chain == "bytes"
    elif ITEMSIZE[name] > 1:  # smooth values compress: the specials went through planes > lanes
        assert chain == f"planes > lanes({ITEMSIZE[name]})"


def test_float_specials_are_what_they_claim():
    """The special bit patterns of conftest really are -0.0, inf, NaN with payloads, subnormals."""
    for name, dt in (("float64", "<f8"), ("float32", "<f4"), ("float16", "<f2")):
        v = np.array(special_patterns(name), dtype=uint_np(name)).view(dt)
        with np.errstate(all="ignore"):
            assert v[0] == 0 and np.signbit(v[0])
            assert np.isposinf(v[1]) and np.isneginf(v[2])
            assert np.isnan(v[3:6]).all()
            assert 0 < abs(v[6]) < np.finfo(dt).tiny and 0 < abs(v[7]) < np.finfo(dt).tiny
    bf = torch.tensor(special_patterns("bfloat16"), dtype=torch.int32).to(torch.int16) \
        .view(torch.bfloat16).float()
    assert torch.isnan(bf[3:6]).all() and torch.isinf(bf[1:3]).all()
    assert bool(torch.signbit(bf[0])) and float(bf[0]) == 0.0
    e4 = torch.tensor(special_patterns("float8_e4m3fn"), dtype=torch.uint8) \
        .view(torch.float8_e4m3fn).float()
    assert torch.isnan(e4[1:3]).all()


# -- the codec chain alone, on random bits (which the writer would otherwise store as `bytes`) ----
# (a chunk holds at least one element: spec 8.1)
@pytest.mark.parametrize("name", DTYPE_NAMES)
@settings(max_examples=10)
@given(data=st.data(), k=st.integers(1, 300), level=st.sampled_from([1, 3, 9]))
def test_chain_chunk_roundtrip(name, data, k, level):
    dtype = D.by_name(name)
    bits = data.draw(bit_patterns(name, k))
    before = bits.tobytes()
    for chain in (Chain(BytesCodec(), None), Chain(PlanesCodec(), None),
                  Chain(PlanesCodec(), LanesCodec(dtype.itemsize, level=level)),
                  Chain(BytesCodec(), LanesCodec(1, level=level))):
        payload = chain.encode_chunk(bits, dtype)
        out = np.empty(k * dtype.itemsize, dtype=np.uint8)
        chain.decode_chunk(memoryview(payload), dtype, out)
        assert out.tobytes() == before, chain.describe()
        assert bits.tobytes() == before  # the encoder did not touch its input


def test_planes_worked_example():
    """spec/codecs/planes.md: bfloat16 [1.0, -2.0] encodes to 7F 80 00 01."""
    bits = np.array([0x3F80, 0xC000], dtype="<u2")
    assert bytes(PlanesCodec().encode(bits, D.by_name("bfloat16"))) == bytes.fromhex("7F800001")


# -- names and metadata --------------------------------------------------------------------------
metadata_values = st.one_of(st.text(max_size=30), st.integers(-(1 << 63), (1 << 63) - 1),
                            st.floats(allow_nan=True), st.booleans(), st.binary(max_size=30))
metadata_keys = st.text(min_size=1, max_size=40).filter(
    lambda k: not k.startswith("wcodec.") and len(k.encode()) <= 256)


@settings(max_examples=25)
@given(names=st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=5, unique=True),
       meta=st.dictionaries(metadata_keys, metadata_values, max_size=6))
def test_names_and_typed_metadata(fresh_path, names, meta):
    tensors = {n: torch.full((i + 1,), float(i)) for i, n in enumerate(names)}
    path = fresh_path()
    wcodec.save_file(tensors, path, metadata=meta)
    with wcodec.safe_open(path) as f:
        assert f.keys() == names
        for n, t in tensors.items():
            assert torch_bits(f.get_tensor(n)) == torch_bits(t)
        typed = f.metadata_typed()
        assert f.metadata() == {k: v for k, v in meta.items() if isinstance(v, str)}
    assert typed.pop("wcodec.source_format") == "api"
    assert typed.keys() == meta.keys()
    for k, v in meta.items():
        got = typed[k]
        assert type(got) is type(v)
        if isinstance(v, float):
            assert struct.pack("<d", got) == struct.pack("<d", v)  # NaN and -0.0 bit for bit
        else:
            assert got == v


def test_reserved_metadata_prefix_refused(tmp_path):
    with pytest.raises(wcodec.InputError):
        wcodec.save_file({"x": torch.zeros(1)}, tmp_path / "a.wcodec",
                         metadata={"wcodec.source_format": "x"})
    assert not (tmp_path / "a.wcodec").exists()


@pytest.mark.parametrize("bad", [dict(chunk_elements=0), dict(chunk_elements=(1 << 26) + 1),
                                 dict(alignment_log2=17), dict(alignment_log2=-1),
                                 dict(codec="zip")])
def test_bad_options_refused(tmp_path, bad):
    with pytest.raises(wcodec.InputError):
        wcodec.save_file({"x": torch.zeros(1)}, tmp_path / "a.wcodec", **bad)
    assert list(tmp_path.iterdir()) == []


def test_inputs_the_format_cannot_store_are_refused(tmp_path):
    p = tmp_path / "a.wcodec"
    for bad in ({"c": torch.zeros(2, dtype=torch.complex64)},
                {"s": torch.zeros(3).to_sparse()},
                {"": torch.zeros(1)},
                {"n" * 1025: torch.zeros(1)},
                {"r": torch.zeros([1] * 17)},
                {"x": [1, 2]}):
        with pytest.raises(wcodec.InputError):
            wcodec.save_file(bad, p)
        assert not p.exists()
    with pytest.raises(wcodec.WcodecError):
        wnp.save_file({"c": np.zeros(2, np.complex64)}, p)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", DTYPE_NAMES)
def test_one_element_views_with_any_stride(tmp_path, name):
    """A one-element view keeps its stride through contiguous(): `x[::2][:1]`, `m[:1, 1]`."""
    bits = smooth_bits(name, np.random.default_rng(3), 16)
    base, raw = torch_input(name, bits, (16,), "contiguous")
    m = base.reshape(4, 4)
    views = {"step": base[::2][:1], "column": m[:1, 1], "corner": m[3:, 3:], "scalar": m[2, 3]}
    path = tmp_path / "v.wcodec"
    wcodec.save_file(views, path)
    back = wcodec.load_file(path)
    for k, v in views.items():
        assert back[k].shape == v.shape and torch_bits(back[k]) == torch_bits(v), k
