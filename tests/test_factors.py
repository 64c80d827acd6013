"""Record kind 5 `factors` (spec/records/factors.md): round trips, the exact-order arithmetic
against a scalar Python evaluation, the residual, the stored error statistics and every FAC rule
that `check` and the decoder enforce."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest

import wcodec
from wcodec import dtypes as D
from wcodec import factor_encoder
from wcodec import quant as Q
from wcodec.errors import CorruptPayload, InputError, MalformedRecord
from wcodec.records import REGISTRY
from wcodec.records import factors as F
from wcodec.records.factors import Factors

METHODS = [("low_rank", dict(rank=5)), ("tucker", dict(eps=0.2)),
           ("tt", dict(eps=0.3, cores=3))]


def _matrix(rows=24, cols=36, rank=6, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((rows, rank)) @ rng.standard_normal((rank, cols))
    return a + 0.05 * rng.standard_normal((rows, cols))


def _bits(a, dtype):
    return Q.round_to_dtype(np.asarray(a, np.float64).reshape(-1), D.BY_NAME[dtype]) \
        .reshape(np.shape(a))


def _roundtrip(tmp_path, bits, dtype, **kw):
    path = tmp_path / "f.wcd"
    with wcodec.Writer(path) as w:
        w.add("t", D.BY_NAME[dtype], bits.shape, bits, kind=Factors, **kw)
    r = wcodec.Reader(path)
    return r.read_bytes("t").view(bits.dtype).reshape(bits.shape), r.info("t").record


def test_registered():
    assert REGISTRY[5] is Factors


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("method,how", METHODS)
@pytest.mark.parametrize("residual", ["none", "exact", "quantized"])
def test_roundtrip(tmp_path, dtype, method, how, residual):
    bits = _bits(_matrix(), dtype)
    before = bits.copy()
    extra = dict(residual_rel_step=0.1) if residual == "quantized" else {}
    out, rec = _roundtrip(tmp_path, bits, dtype, method=method, residual=residual,
                          codec="q8", **how, **extra)
    assert np.array_equal(bits, before)              # the caller's array is untouched
    x = Q.to_float64(bits.reshape(-1), D.BY_NAME[dtype])
    y = Q.to_float64(out.reshape(-1), D.BY_NAME[dtype])
    if residual == "exact":
        assert np.array_equal(out, bits)              # lossless = bit-identical
        assert not rec.record_flags & 0x02
    else:
        assert rec.record_flags & 0x02
        st = Q.error_stats(x, y)                      # the stored ErrorStats are the real ones
        assert rec.error.mean_squared_error == pytest.approx(st["mean_squared_error"], rel=1e-12)
        assert rec.error.max_abs_error == pytest.approx(st["max_abs_error"], rel=1e-12)
        assert st["mean_squared_error"] > 0
    p = F.FactorParams.unpack(bytes(rec.params))
    assert p.approx_error["mean_squared_error"] > 0   # the factor-only error is kept in params
    if residual == "quantized":                       # the residual brings the error down
        assert rec.error.mean_squared_error < p.approx_error["mean_squared_error"]


def test_exact_residual_restores_specials(tmp_path):
    a = _matrix().astype(np.float32)
    a[0, 0], a[1, 1], a[2, 2] = np.nan, np.inf, -0.0
    a[3, 3] = np.float32(1e-42)                       # subnormal
    bits = a.view(np.uint32)
    out, _ = _roundtrip(tmp_path, bits, "float32", method="low_rank", rank=4,
                        residual="exact", values=np.nan_to_num(a.reshape(-1).astype(np.float64),
                                                               posinf=0, neginf=0))
    assert np.array_equal(out, bits)


def _scalar_reconstruct(fz, modes, vals):
    """The spec's §4 step 2 with Python floats, one element at a time (IEEE binary64, no FMA)."""
    if fz == F.LOW_RANK:
        u, v = (a.tolist() for a in vals)
        rows, cols, r = modes[0]
        out = []
        for i in range(rows):
            for j in range(cols):
                s = u[i][0] * v[0][j]
                for a in range(1, r):
                    s = s + u[i][a] * v[a][j]
                out.append(s)
        return np.array(out)
    if fz == F.TUCKER:
        x = vals[0]
        for k in range(len(modes)):
            u = vals[k + 1]
            shp = list(x.shape)
            shp[k] = u.shape[0]
            y = np.empty(shp)
            for idx in np.ndindex(*shp):
                s = None
                for a in range(x.shape[k]):
                    src = list(idx)
                    src[k] = a
                    t = float(x[tuple(src)]) * float(u[idx[k], a])
                    s = t if s is None else s + t
                y[idx] = s
            x = y
        return x.reshape(-1)
    ms, ns = [m[0] for m in modes], [m[1] for m in modes]
    rows, cols = int(np.prod(ms)), int(np.prod(ns))
    out = np.empty((rows, cols))
    for i in range(rows):
        di = np.unravel_index(i, ms)
        for j in range(cols):
            dj = np.unravel_index(j, ns)
            vec = [float(v) for v in vals[0][0, di[0], dj[0], :]]
            for k in range(1, len(modes)):
                g = vals[k]
                new = []
                for b in range(g.shape[3]):
                    s = vec[0] * float(g[0, di[k], dj[k], b])
                    for a in range(1, g.shape[0]):
                        s = s + vec[a] * float(g[a, di[k], dj[k], b])
                    new.append(s)
                vec = new
            out[i, j] = vec[0]
    return out.reshape(-1)


@pytest.mark.parametrize("method,how,shape", [
    ("low_rank", dict(rank=7), (9, 11)),
    ("tucker", dict(rank=[3, 2, 4]), (4, 3, 6)),
    ("tt", dict(rank=[5, 4], modes=([2, 3, 2], [3, 2, 2])), (12, 12))])
def test_arithmetic_is_the_specified_order(method, how, shape):
    """The vectorised decoder equals a scalar evaluation in the spec's order bit for bit, on
    values chosen so that a different order or an FMA would round differently."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(int(np.prod(shape))) * np.exp(rng.uniform(-8, 8, int(np.prod(shape))))
    fz = factor_encoder.decompose(x, shape, method=method, codec="float64", **how)
    vals = [np.asarray(a, np.float64) for a in fz.arrays]
    fast = F.reconstruct(fz.factorization, fz.modes, vals)
    slow = _scalar_reconstruct(fz.factorization, fz.modes, vals)
    assert np.array_equal(fast.view(np.uint64), slow.view(np.uint64))
    # and it is not what BLAS happens to give: order matters on this data
    if fz.factorization == F.LOW_RANK:
        other = vals[0][:, ::-1] @ vals[1][::-1, :]
        assert not np.array_equal(other.reshape(-1), fast)


def test_decode_is_deterministic_across_chunking(tmp_path):
    bits = _bits(_matrix(40, 50), "float32")
    a, _ = _roundtrip(tmp_path, bits, "float32", method="tt", eps=0.2, codec="q6")
    p2 = tmp_path / "g.wcd"
    with wcodec.Writer(p2, options=wcodec.EncodeOptions(chunk_elements=7, codec="raw")) as w:
        w.add("t", D.BY_NAME["float32"], bits.shape, bits, kind=Factors, method="tt", eps=0.2,
              codec="q6")
    assert np.array_equal(wcodec.Reader(p2).read_bytes("t").view(np.uint32).reshape(bits.shape), a)


# -- rules -----------------------------------------------------------------------------------------
def _record(tmp_path, **kw):
    bits = _bits(_matrix(), "float32")
    _, rec = _roundtrip(tmp_path, bits, "float32", **kw)
    return rec


def _fake(rec, **changes):
    """A shallow stand-in for a parsed TensorRecord with some fields changed."""
    d = dict(params=bytes(rec.params), dtype=rec.dtype, shape=list(rec.shape),
             record_flags=rec.record_flags, stream_count=rec.stream_count,
             streams=[SimpleNamespace(stream_dtype=s.stream_dtype,
                                      stream_shape=list(s.stream_shape)) for s in rec.streams],
             name=b"t")
    d.update(changes)
    return SimpleNamespace(**d)


def _params(rec):
    return F.FactorParams.unpack(bytes(rec.params))


def _check_fails(rec, rule):
    with pytest.raises(MalformedRecord) as e:
        Factors.check(rec, "t")
    assert e.value.rule == rule


def test_check_accepts_valid(tmp_path):
    for method, how in METHODS:
        Factors.check(_fake(_record(tmp_path, method=method, **how)), "t")


def test_fac01_params(tmp_path):
    rec = _record(tmp_path, method="low_rank", rank=3)
    raw = bytearray(rec.params)
    raw[0] = 4                                        # factorization 4
    _check_fails(_fake(rec, params=bytes(raw)), "FAC-01")
    _check_fails(_fake(rec, params=bytes(rec.params) + b"\0"), "FAC-01")
    raw = bytearray(rec.params)
    raw[1] = 2                                        # low-rank has order 1
    _check_fails(_fake(rec, params=bytes(raw)), "FAC-01")
    raw = bytearray(rec.params)
    raw[3] = 1                                        # residual_shift without an exact residual
    _check_fails(_fake(rec, params=bytes(raw)), "FAC-01")
    raw = bytearray(rec.params)
    raw[40 + 12] = 2                                  # factor encoding 2
    _check_fails(_fake(rec, params=bytes(raw)), "FAC-01")


def test_fac02_dtype(tmp_path):
    rec = _record(tmp_path, method="low_rank", rank=3)
    _check_fails(_fake(rec, dtype=D.BY_NAME["int32"].code), "FAC-02")


def test_fac03_fac04_modes_and_ranks(tmp_path):
    rec = _record(tmp_path, method="low_rank", rank=3)
    p = _params(rec)
    for r, rule in ((0, "FAC-04"), (25, "FAC-04")):
        q = copy.deepcopy(p)
        q.modes = [(24, 36, r)]
        _check_fails(_fake(rec, params=q.pack()), rule)
    q = copy.deepcopy(p)
    q.modes = [(36, 24, 3)]
    _check_fails(_fake(rec, params=q.pack()), "FAC-03")
    rec = _record(tmp_path, method="tt", rank=[4, 3], modes=([4, 3, 2], [4, 3, 3]))
    p = _params(rec)
    q = copy.deepcopy(p)
    q.modes = [(4, 4, 4), (3, 3, 3), (2, 3, 2)]       # last bond must be 1
    _check_fails(_fake(rec, params=q.pack()), "FAC-04")
    q.modes = [(4, 4, 17), (3, 3, 3), (2, 3, 1)]      # r_1 > P_1 = 16
    _check_fails(_fake(rec, params=q.pack()), "FAC-04")
    q.modes = [(4, 4, 4), (3, 3, 3), (2, 2, 1)]       # columns multiply to 24, not 36
    _check_fails(_fake(rec, params=q.pack()), "FAC-03")


def test_fac05_streams(tmp_path):
    rec = _record(tmp_path, method="low_rank", rank=3, residual="exact")
    f = _fake(rec)
    f.streams[0].stream_shape = [24, 4]               # factor shape mismatch
    _check_fails(f, "FAC-05")
    f = _fake(rec)
    f.stream_count -= 1                               # the residual stream is missing
    f.streams = f.streams[:-1]
    _check_fails(f, "FAC-05")
    f = _fake(rec)
    f.streams[-1].stream_dtype = D.BY_NAME["uint16"].code
    _check_fails(f, "FAC-05")


def test_fac06_lossy_flag(tmp_path):
    rec = _record(tmp_path, method="low_rank", rank=3, residual="exact")
    _check_fails(_fake(rec, record_flags=rec.record_flags | 2), "FAC-06")
    rec = _record(tmp_path, method="low_rank", rank=3)
    _check_fails(_fake(rec, record_flags=rec.record_flags & ~2), "FAC-06")


def _decode(p, shape, streams, dtypes):
    return F.decode_bits(p, D.BY_NAME["float32"], shape, streams,
                         [D.BY_NAME[d] for d in dtypes], "t")


def test_fac07_fac08_fac09_payload():
    u = np.ones((2, 1), np.float32)
    v = np.ones((1, 3), np.float32)
    p = F.FactorParams(F.LOW_RANK, [(2, 3, 1)], [F.FactorCodec(), F.FactorCodec()])
    assert np.array_equal(_decode(p, (2, 3), [u.view(np.uint8), v.view(np.uint8)],
                                  ["float32", "float32"]),
                          np.ones(6, np.float32).view(np.uint32))
    bad = u.copy()
    bad[0, 0] = np.nan
    with pytest.raises(CorruptPayload) as e:
        _decode(p, (2, 3), [bad.view(np.uint8), v.view(np.uint8)], ["float32", "float32"])
    assert e.value.rule == "FAC-08"
    big = np.full((2, 1), 1e200)
    with pytest.raises(CorruptPayload) as e:
        _decode(p, (2, 3), [big.view(np.uint8), np.full((1, 3), 1e200).view(np.uint8)],
                ["float64", "float64"])
    assert e.value.rule == "FAC-09"
    q = F.FactorParams(F.LOW_RANK, [(2, 3, 1)],
                       [F.FactorCodec(F.ENC_QUANTIZED, "", 0, Q.ScaleLayout(), 0.5),
                        F.FactorCodec()])
    lv = Q.zigzag_encode(np.array([1, (1 << 23) + 1])).astype(np.uint32)
    with pytest.raises(CorruptPayload) as e:
        _decode(q, (2, 3), [lv.view(np.uint8), v.view(np.uint8)], ["uint32", "float32"])
    assert e.value.rule == "FAC-07"


def test_encoder_input_errors():
    with pytest.raises(InputError):
        Factors.encode(D.BY_NAME["int8"], (4, 4), np.zeros(16, np.uint8),
                       wcodec.EncodeOptions(), method="low_rank", rank=1)
    with pytest.raises(InputError):
        Factors.encode(D.BY_NAME["float32"], (4, 4), np.zeros(16, np.uint32),
                       wcodec.EncodeOptions(), method="low_rank", rank=1, residual="maybe")


def test_describe(tmp_path):
    rec = _record(tmp_path, method="tucker", eps=0.1, codec="float16")
    d = Factors.describe(rec)
    assert d["factorization"] == "tucker" and d["residual"] == "none"
    assert d["factor_params"] == sum(int(np.prod(s)) for s in d["factor_shapes"])
