"""The fast lossy encoder (docs/lossy.md, "Encoder speed"): the branch-free numba trellis search
finds the same levels as the numpy search; the fused float32 encoder gives the same levels, decoded
bytes and ErrorStats as the general path; rate control's stream-size model tracks the real codec
chain; a file encoded through the fast path decodes to what its records promise."""

import numpy as np
import pytest

from wcodec import dtypes as D
from wcodec import quant as Q
from wcodec import ratecontrol as RC
from wcodec.reader import Reader
from wcodec.records import quantized as QZ
from wcodec.writer import EncodeOptions, Writer

nb = pytest.importorskip("wcodec.records._trellis_nb")
F32 = D.BY_NAME["float32"]


@pytest.mark.parametrize("scale,lam", [(3.0, 0.5), (0.7, 0.2), (40.0, 1.0), (0.3, 0.0),
                                       (900.0, 0.3)])
def test_numba_search_equals_numpy_search(scale, lam):
    rng = np.random.default_rng(int(scale * 10))
    u = rng.standard_normal((24, 200)) * scale
    u[0, :6] = [0.0, -1.0, 1.0, 2.0, -3.0, 0.5]        # ties and the −1/+1 odd pair
    bits = QZ.default_rate_table(u) if lam else np.zeros(3)
    K = (bits.size - 1) // 2
    ref = np.empty(u.shape, np.int64)
    QZ._numpy_trellis(u, lam, bits, K, ref)
    got = QZ.trellis_levels(u, lam, bits)
    assert np.array_equal(got, ref)
    # the clamped table (no padding) gives the same search
    out = np.empty(u.shape, np.int64)
    nb.trellis_rows(u, lam, np.ascontiguousarray(bits, np.float64), K, True, out)
    assert np.array_equal(out, ref)


def test_padded_rate_table_keeps_the_costs():
    bits = np.linspace(9.0, 1.0, 21)                   # K = 10
    table, K, clamp = nb.padded_rate_table(bits, 100.0)
    assert not clamp and K >= 53
    k = np.arange(-K, K + 1)
    assert np.array_equal(table[k + K], bits[np.clip(k, -10, 10) + 10])
    _, K2, clamp2 = nb.padded_rate_table(bits, 2.0 ** 23)   # too large to pad: clamp instead
    assert clamp2 and K2 == 10


def _encode_both(x, **kw):
    el = x.reshape(-1).view(np.uint32)
    opts = EncodeOptions(threads=2)
    fast = QZ.Quantized.encode(F32, x.shape, el, opts, **kw)
    saved, QZ._FUSED = QZ._FUSED, False                 # the general (numpy) path
    try:
        ref = QZ.Quantized.encode(F32, x.shape, el, opts, **kw)
    finally:
        QZ._FUSED = saved
    return fast, ref


@pytest.mark.parametrize("shape,step,lam,classes", [((300, 96), 0.01, 0.3, 4),
                                                    ((96,), 0.002, 0.1, 1),
                                                    ((5, 3, 3, 3), 0.05, 0.0, 1),
                                                    ((2000, 70), 0.004, 0.4, 8)])
def test_fused_float32_encoder_equals_general_path(shape, step, lam, classes):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    x.reshape(-1)[3] = 7.9                               # an outlier: never clipped
    x.reshape(-1)[-1] = -0.0
    fast, ref = _encode_both(x, step=step, lam=lam, classes=classes)
    assert QZ._numba_fused() is not None
    assert fast.params == ref.params
    assert np.array_equal(fast.decoded, ref.decoded)
    assert len(fast.streams) == len(ref.streams)
    for a, b in zip(fast.streams, ref.streams):
        assert a.dtype.name == b.dtype.name and np.array_equal(a.elements, b.elements)
    for k in ("max_abs_error", "mean_squared_error", "signal_power"):
        assert fast.error[k] == pytest.approx(ref.error[k], rel=1e-12)
    assert x.reshape(-1)[3] == 7.9                       # the input is not touched


def test_fused_encoder_rejects_non_finite_and_tiny_steps():
    from wcodec.errors import InputError
    x = np.ones((4, 8), np.float32)
    x[1, 2] = np.inf
    with pytest.raises(InputError):
        QZ.Quantized.encode(F32, x.shape, x.reshape(-1).view(np.uint32), EncodeOptions(),
                            step=0.1)
    with pytest.raises(InputError):
        QZ.Quantized.encode(F32, (4, 8), np.ones(32, np.float32).view(np.uint32),
                            EncodeOptions(), step=float("nan"))


def test_fused_records_decode_to_their_error_stats(tmp_path):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((257, 130)) * 0.02).astype(np.float32)
    p = str(tmp_path / "f.wcd")
    with Writer(p, options=EncodeOptions(threads=2)) as w:
        w.add("t", F32, x.shape, x.reshape(-1).view(np.uint32), kind=QZ.Quantized, step=0.003,
              lam=0.3, classes=4)
    with Reader(p) as r:
        info = r.info("t")
        y = np.frombuffer(bytes(r.read_bytes("t")), np.float32)   # SHA-256 checked on read
    err = Q.error_stats(x.reshape(-1).astype(np.float64), y.astype(np.float64))
    for k in err:
        assert info.error[k] == pytest.approx(err[k], rel=1e-12)


@pytest.mark.parametrize("scale", [0.3, 3.0, 60.0])
def test_stream_size_model_tracks_the_chain(scale):
    """_stream_bits (rate control's model of a level stream) against the real chain, on the
    whole stream and from a 1/8 sample scaled up."""
    rng = np.random.default_rng(5)
    k = np.rint(rng.laplace(size=400_000) * scale).astype(np.int64)
    k[:3] = [300, -400, 1000]                             # rare outliers: a second byte lane
    z = Q.zigzag_encode(k)
    opts = EncodeOptions()
    sd, zs = Q.pack_levels(k)
    chain = opts.chain_for(sd)
    real = 8 * sum(len(chain.encode_chunk(zs[i:i + opts.chunk_elements], sd)) +
                   RC.CHUNK_FRAMING_BYTES for i in range(0, zs.size, opts.chunk_elements))
    model = RC._stream_bits(z, z.size, opts.chunk_elements)
    assert model == pytest.approx(real, rel=0.02)
    sample = z[rng.choice(z.size, z.size // 8, replace=False)]
    high = np.bincount(np.minimum(z >> 8, 255).astype(np.int64), minlength=256)
    assert RC._stream_bits(sample, z.size, opts.chunk_elements, high) == \
        pytest.approx(real, rel=0.03)


def _weighted_sse(path, x, sens):
    from wcodec.reader import Reader
    out = 0.0
    with Reader(path) as r:
        for name, v in x.items():
            e = r.info(name).error
            out += sens[name] * e["mean_squared_error"] * v.size
    return out


def test_constrained_tilt_keeps_the_snr_floor(tmp_path):
    """snr_slack_db: the sensitivity weighting goes only as far as the SNR floor allows, and
    still lowers the weighted error against the unweighted (SNR-optimal) allocation."""
    rng = np.random.default_rng(11)
    x = {f"t{i}": (rng.standard_normal((96, 64)) * (0.02 + 0.01 * i)).astype(np.float32)
         for i in range(6)}
    sens = {f"t{i}": [30.0, 0.01, 3.0, 0.01, 1.0, 0.3][i] for i in range(6)}
    tensors = [(k, F32, v.shape, v.reshape(-1).view(np.uint32)) for k, v in x.items()]
    t = RC.Target(bits_per_weight=3.5)
    a, b, c = (str(tmp_path / f"{n}.wcd") for n in "abc")
    r0 = RC.encode_tensors(tensors, a, t)
    r1 = RC.encode_tensors(tensors, b, t, sensitivity=sens, snr_slack_db=0.3)
    r2 = RC.encode_tensors(tensors, c, t, sensitivity=sens)          # full weighting
    assert 0 < r1["tilt_alpha"] < 1
    assert r1["snr_db"] >= r0["snr_db"] - 0.3 - 0.1                   # model vs file: 0.1 dB
    assert r2["snr_db"] < r1["snr_db"] - 0.1                           # the floor binds
    assert _weighted_sse(b, x, sens) < _weighted_sse(a, x, sens)
    assert r1["bits_per_weight"] <= 3.5


def _read_both(path, name):
    with Reader(path) as r:
        fast = bytes(r.read_bytes(name))
    saved, QZ._FUSED = QZ._FUSED, False
    try:
        with Reader(path) as r:
            ref = bytes(r.read_bytes(name))
    finally:
        QZ._FUSED = saved
    return fast, ref


@pytest.mark.parametrize("quantizer,classes", [("dependent", 1), ("dependent", 4),
                                               ("uniform", 8)])
def test_fused_decoder_equals_numpy_decoder(tmp_path, quantizer, classes):
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((300, 70)) * 0.03).astype(np.float32)
    x[5, 5] = 9.0
    p = str(tmp_path / "d.wcd")
    with Writer(p) as w:
        w.add("t", F32, x.shape, x.reshape(-1).view(np.uint32), kind=QZ.Quantized, step=0.002,
              quantizer=quantizer, classes=classes, lam=0.2)
    fast, ref = _read_both(p, "t")
    assert fast == ref


def test_fused_decoder_saturates_like_the_spec(tmp_path):
    """A decoded value beyond binary32's range saturates (QZ-03): the native pass hands such a
    tensor to the numpy path."""
    x = np.array([[3.4e38, -3.39e38, 1e38, 2.9e38]], np.float32)
    p = str(tmp_path / "s.wcd")
    with Writer(p) as w:
        w.add("t", F32, x.shape, x.reshape(-1).view(np.uint32), kind=QZ.Quantized,
              step=2.0e38, quantizer="uniform")
    fast, ref = _read_both(p, "t")
    assert fast == ref
    assert np.isfinite(np.frombuffer(fast, np.float32)).all()


def test_a_missed_target_leaves_no_file(tmp_path):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 64)) * 0.05).astype(np.float32)
    p = tmp_path / "m.wcd"
    from wcodec.errors import InputError
    with pytest.raises(InputError):      # far below what one index and a tensor take
        RC.encode_tensors([("w", F32, x.shape, x.reshape(-1).view(np.uint32))], str(p),
                          RC.Target(bits_per_weight=0.01), max_passes=1)
    assert not p.exists()
