"""The native chunk encoder (_crans.c encode_chunk via fastpath.encode_chunk) writes exactly the bytes
of the Python encoder (planes.py + lanes.py: the same decisions, the same rANS tables), or hands the
chunk back (None) where it does not decide alone."""

import numpy as np
import pytest
import torch

from wcodec import fastpath
from wcodec.chain import Chain
from wcodec.codecs import LanesCodec, PlanesCodec, rans
from wcodec.codecs.lanes import METHOD_FILL, METHOD_RANS, METHOD_RANS_SPLIT, METHOD_RAW
from wcodec.dtypes import by_name

pytestmark = pytest.mark.skipif(rans.native is None or not hasattr(rans.native, "encode_chunk"),
                                reason="C kernels not built")


def _python_payload(chain: Chain, elements, dtype) -> bytes:
    data = chain.array_to_bytes.encode(elements, dtype)
    return chain.bytes_to_bytes.encode(memoryview(data).cast("B"))


def _elements(kind: str, dtype_name: str, n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    tdt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float8_e4m3fn": torch.float8_e4m3fn, "int8": torch.int8, "int16": torch.int16,
           "int32": torch.int32}[dtype_name]
    if kind == "weights":
        t = torch.randn(n, generator=g) * 0.03
    elif kind == "upcast":  # bf16 values in float32: two constant (fill) planes
        t = (torch.randn(n, generator=g) * 0.03).to(torch.bfloat16).float()
    elif kind == "ints":
        t = torch.randint(-3, 4, (n,), generator=g)
    elif kind == "noise":
        return np.random.default_rng(seed).integers(
            0, 256, n * by_name(dtype_name).itemsize, dtype=np.uint8).view(by_name(dtype_name).uint)
    elif kind == "zeros":
        t = torch.zeros(n)
    else:  # "tiled": repeats a zstd sample trial looks at
        base = torch.randn(97, generator=g)
        t = base.repeat(n // 97 + 1)[:n]
    t = t.to(tdt).contiguous()
    dtype = by_name(dtype_name)
    return t.view(torch.uint8).numpy().view(dtype.uint).reshape(-1)


@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16", "float8_e4m3fn", "int8",
                                        "int16", "int32"])
@pytest.mark.parametrize("kind", ["weights", "upcast", "ints", "noise", "zeros", "tiled"])
def test_same_bytes_as_the_python_encoder(dtype_name, kind):
    dtype = by_name(dtype_name)
    chain = Chain(PlanesCodec(), LanesCodec(dtype.itemsize))
    for n, seed in ((16385, 1), (70001, 2), (262144, 3)):
        el = _elements(kind, dtype_name, n, seed)
        fast = fastpath.encode_chunk(chain, el, dtype)
        if fast is None:
            assert kind == "tiled", "only zstd candidates go back to lanes.py"
            continue
        assert fast == _python_payload(chain, el, dtype), (dtype_name, kind, n)


def test_short_chunks_stay_with_lanes_py():
    dtype = by_name("bfloat16")
    chain = Chain(PlanesCodec(), LanesCodec(2))
    assert fastpath.encode_chunk(chain, _elements("weights", "bfloat16", 16384, 0), dtype) is None


def test_methods_of_a_weight_chunk():
    """The encoder's plan on weights: exponent rans (32 states, the chunk's only rans lane), top
    mantissa rans_split, the two low mantissa planes of float32 raw."""
    dtype = by_name("float32")
    el = _elements("weights", "float32", 100000, 4)
    payload = fastpath.encode_chunk(Chain(PlanesCodec(), LanesCodec(4)), el, dtype)
    methods = [payload[5 * j] for j in range(4)]
    assert methods == [METHOD_RANS, METHOD_RANS_SPLIT, METHOD_RAW, METHOD_RAW]
    first_body = 5 * 4
    assert payload[first_body + 1] == 2 * rans.ENCODER_STATES  # state_count of lane 0
    up = fastpath.encode_chunk(Chain(PlanesCodec(), LanesCodec(4)),
                               _elements("upcast", "float32", 100000, 4), dtype)
    # bf16 values upcast: plane 2 is all zeros (fill), plane 3 holds only the rotated sign bit
    assert [up[5 * j] for j in range(4)][2:] == [METHOD_FILL, METHOD_RANS]


def test_input_untouched_and_buffers_reused():
    dtype = by_name("bfloat16")
    chain = Chain(PlanesCodec(), LanesCodec(2))
    el = _elements("weights", "bfloat16", 50000, 5)
    before = el.copy()
    a = fastpath.encode_chunk(chain, el, dtype)
    b = fastpath.encode_chunk(chain, el, dtype)
    assert a == b and np.array_equal(el, before)


def test_bad_arguments_raise():
    el = np.zeros(20000, np.uint16)
    with pytest.raises(ValueError):
        rans.native.encode_chunk(el, 3, True, np.empty(10, np.uint8), np.empty(10, np.uint8),
                                 np.empty(4, np.int64))
    with pytest.raises(ValueError):  # scratch too small
        rans.native.encode_chunk(el, 2, True, np.empty(50000, np.uint8), np.empty(10, np.uint8),
                                 np.empty(4, np.int64))


def _histograms():
    g = np.random.default_rng(11)
    yield np.bincount(g.integers(0, 256, 5000), minlength=256)           # every symbol
    yield np.bincount(np.clip(g.normal(120, 3, 200000), 0, 255).astype(int), minlength=256)
    yield np.bincount(g.geometric(0.02, 70000) % 256, minlength=256)    # long tail of 1s
    c = np.zeros(256, np.int64)
    c[7] = 1
    yield c                                                              # one symbol
    c = np.zeros(256, np.int64)
    c[:200] = 1
    c[200] = 10**6
    yield c                                                              # many rare symbols
    for _ in range(20):
        yield (g.pareto(1.2, 256) * g.integers(0, 2, 256) * 100).astype(np.int64) + \
            (np.arange(256) == g.integers(0, 256))


def test_scale_search_and_tables_match_numba():
    """An encode without numba (C scale search, normalization, table) and with it give the same
    frequencies, scale and header bytes: files do not depend on which kernels are installed."""
    k = rans.kernels()
    for counts in _histograms():
        counts = counts.astype(np.int64)
        for lo, hi, n in ((10, 12, 16), (8, 12, 1), (1, 15, 32)):
            rc, ec = rans.native.choose_scale(counts.astype(np.uint64), lo, hi, n)
            rn, en = k.choose_scale(counts, lo, hi, n)
            assert (rc, ec) == (rn, en)
        for r in (4, 8, 10, 12, 15):
            fn, ok = k.normalize(counts, r)
            f = np.empty(256, np.int64)
            head = np.empty(519, np.uint8)
            t = rans.native.rans_head(counts.astype(np.uint64), r, 16, f, head)
            assert (t >= 0) == bool(ok)
            if ok:
                assert np.array_equal(f, fn)
                a, b, w, base, tt = k.table_layout(fn)
                ref = np.zeros(tt, np.uint8)
                k.pack_table(fn, a, b, w, base, ref)
                assert head[:t].tobytes() == rans.HEADER.pack(r, 16, a, b, w, base) + ref.tobytes()


def test_lossless_encode_does_not_import_numba(tmp_path):
    import subprocess
    import sys
    code = ("import sys, torch, wcodec\n"
            "t = {'w': torch.randn(300000).to(torch.bfloat16), 'b': torch.randn(384)}\n"
            f"wcodec.save_file(t, {str(tmp_path / 'a.wcd')!r})\n"
            f"back = wcodec.load_file({str(tmp_path / 'a.wcd')!r})\n"
            "assert all(torch.equal(back[k], v) for k, v in t.items())\n"
            "print('numba' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
