"""Record kind 2 `quantized` (spec/records/quantized.md): round trips over every scale mode,
quantizer and float dtype, the exact reconstruction of QNT-08, and the encoder's promises."""

import numpy as np
import pytest

from wcodec import dtypes as D
from wcodec import quant as Q
from wcodec.errors import InputError, MalformedRecord
from wcodec.reader import Reader
from wcodec.records.quantized import MAX_LEVEL, Quantized, QuantParams, reconstruct
from wcodec.writer import EncodeOptions, Writer

DT = ["float32", "float16", "bfloat16", "float64"]
MODES = [dict(scale_mode="tensor", step=0.02), dict(scale_mode="channel", rel_step=0.1),
         dict(scale_mode="group", group_size=8, rel_step=0.1)]


def _bits(x, name):
    if name == "bfloat16":
        return (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return x.astype(np.dtype(D.by_name(name).numpy_name)).view(D.by_name(name).uint)


def _write(path, items):
    with Writer(path, options=EncodeOptions(threads=1)) as w:
        for name, dt, shape, raw, kw in items:
            w.add(name, D.by_name(dt), shape, raw, kind=Quantized, **kw)


@pytest.mark.parametrize("dt", DT)
@pytest.mark.parametrize("mode", range(len(MODES)))
@pytest.mark.parametrize("quantizer", ["uniform", "dependent"])
def test_round_trip(tmp_path, dt, mode, quantizer):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((24, 20)) * 0.3
    x[3, 5] = 7.9   # an outlier is never clipped
    raw = _bits(x, dt)
    kw = dict(MODES[mode], quantizer=quantizer, classes=4 if mode == 0 else 1)
    p = str(tmp_path / "q.wcd")
    _write(p, [("t", dt, (24, 20), raw, kw)])
    with Reader(p) as r:
        info = r.info("t")
        y = r.read_bytes("t")
        assert info.kind_name == "quantized" and info.error is not None
    xv = Q.to_float64(raw, D.by_name(dt))
    yv = Q.to_float64(np.frombuffer(bytes(y), D.by_name(dt).uint), D.by_name(dt))
    err = Q.error_stats(xv, yv)
    for k in ("max_abs_error", "mean_squared_error", "signal_power"):
        assert info.error[k] == pytest.approx(err[k], rel=1e-12, abs=1e-300)
    assert Q.snr_db(err) > 20
    assert abs(yv[3 * 20 + 5] - 7.9) < 0.5


def test_dependent_beats_uniform_at_equal_rate_scale():
    """At scale Δ/2 the dependent quantizer has lower MSE than the uniform one at Δ (§3.2)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 256))
    ku = np.rint(x / 0.1)
    kd = Q.dependent_levels(x / 0.05)
    yd = Q.multipliers(kd, 1) * 0.05
    assert np.mean((x - yd) ** 2) < np.mean((x - ku * 0.1) ** 2)


def test_reconstruction_is_exact_and_saturates():
    """QNT-08: y = float64(m) × S rounded once; float16 beyond 65504 saturates, never inf."""
    p = QuantParams(0, 0, 1, 0, 1000.0)
    k = np.array([1, -1, 65, -66, 0], np.int64)
    bits = reconstruct(k, p, (5,), D.by_name("float16"), None)
    y = bits.view(np.float16).astype(np.float64)
    assert list(y) == [1000.0, -1000.0, 64992.0, -65504.0, 0.0]
    # dependent: m = 2k − a·sgn(k), a reset per row
    p = QuantParams(1, 0, 1, 0, 0.5)
    k = np.array([[1, 2, 1], [1, 2, 1]], np.int64)
    a = Q.dependent_selector(k)
    assert a.tolist() == [[0, 1, 0], [0, 1, 0]]
    y = reconstruct(k.reshape(-1), p, (2, 3), D.by_name("float32"), None).view(np.float32)
    assert y.tolist() == [1.0, 1.5, 1.0] * 2


def test_group_scales_are_indexed_not_expanded():
    p = QuantParams(0, 2, 1, 3, 0.0)
    s = np.array([1, 2, 4, 8], np.float32)   # 2 rows × ceil(5 / 3) groups
    k = np.ones(10, np.int64)
    y = reconstruct(k, p, (2, 5), D.by_name("float32"), s.view(np.uint32)).view(np.float32)
    assert y.tolist() == [1, 1, 1, 2, 2, 4, 4, 4, 8, 8]


def test_group_size_cut_to_row_and_limit(tmp_path):
    x = np.random.default_rng(3).standard_normal((4, 6)).astype(np.float32)
    p = str(tmp_path / "g.wcd")
    _write(p, [("g", "float32", (4, 6), x.view(np.uint32),
                dict(scale_mode="group", group_size=1000, rel_step=0.1))])
    with Reader(p) as r:
        assert Quantized.describe(r.info("g").record)["group_size"] == 6


def test_params_checks():
    good = QuantParams(1, 0, 1, 0, 0.25).pack()
    assert QuantParams.unpack(good).scale == 0.25
    for bad in (QuantParams(2, 0, 1, 0, 0.25).pack(), QuantParams(0, 3, 1, 0, 0.25).pack(),
                QuantParams(0, 0, 0, 0, 0.25).pack(), QuantParams(0, 0, 17, 0, 0.25).pack(),
                QuantParams(0, 0, 1, 0, 0.0).pack(), QuantParams(0, 0, 1, 0, -1.0).pack(),
                QuantParams(0, 0, 1, 0, float("inf")).pack(), QuantParams(0, 1, 1, 0, 0.5).pack(),
                QuantParams(0, 2, 1, 0, 0.0).pack(), QuantParams(0, 0, 1, 4, 0.5).pack(),
                good[:15], good[:3] + b"\1" + good[4:]):
        with pytest.raises(MalformedRecord):
            QuantParams.unpack(bad)


def test_encoder_rejects_what_it_cannot_represent():
    opts = EncodeOptions(threads=1)
    x = np.array([1.0, np.nan], np.float32).view(np.uint32)
    with pytest.raises(InputError):
        Quantized.encode(D.by_name("float32"), (2,), x, opts, step=0.1)
    with pytest.raises(InputError):
        Quantized.encode(D.by_name("int32"), (2,), np.zeros(2, np.uint32), opts, step=0.1)


def test_no_clipping_raises_the_step():
    """A step too small for the largest value is raised, not clipped (levels stay ≤ 2^28)."""
    x = np.array([1e6, 1.0, -3.0], np.float64)
    rec = Quantized.encode(D.by_name("float64"), (3,), x.view(np.uint64),
                           EncodeOptions(threads=1), step=1e-6, quantizer="uniform")
    y = np.frombuffer(rec.decoded.tobytes(), np.float64)
    assert abs(y[0] - 1e6) <= 1e6 / MAX_LEVEL
    assert rec.error["max_abs_error"] <= 1e6 / MAX_LEVEL


def test_input_not_mutated_and_deterministic():
    x = np.random.default_rng(4).standard_normal((16, 16)).astype(np.float32)
    before = x.copy()
    a = Quantized.encode(D.by_name("float32"), (16, 16), x.view(np.uint32),
                         EncodeOptions(threads=1), step=0.01, lam=0.2)
    b = Quantized.encode(D.by_name("float32"), (16, 16), x.view(np.uint32),
                         EncodeOptions(threads=1), step=0.01, lam=0.2)
    assert np.array_equal(x, before)
    assert a.decoded.tobytes() == b.decoded.tobytes()
