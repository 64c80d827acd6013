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
