"""Rate control for lossy encoding: one tool and one step per tensor, chosen by rate–distortion
optimisation under a global target (spec/records/quantized.md §5, docs/lossy.md).

Targets (exactly one):
- `bits_per_weight=B`: the file holds at most B bits per float weight (file bytes × 8 / weights),
  with the least (sensitivity-weighted) squared error;
- `target_snr=D`: the whole model's SNR, 10·log10(Σx² / Σ(x − y)²) over every float weight, is at
  least D dB, with the fewest bits;
- `max_rel_error=E`: every float tensor has ‖x − y‖ / ‖x‖ ≤ E, with the fewest bits.

How: every float tensor gets a model of rate and distortion as functions of its step, measured on a
sample of its rows (uniform-quantizer entropy and error on a grid of steps, corrected by running
the actual dependent quantizer and the actual codec chain on the sample at the operating point).
Steps follow the equal-slope rule of Lagrangian allocation, Δ_t = c / √w_t (w_t the tensor's
sensitivity, 1 without calibration), and c is found by bisection on the target. Each tensor then
takes the cheapest candidate tool at its slope: `quantized` (dependent quantizer, optional row
classes) or `plain` (lossless) where quantizing would not save bits. After encoding, the file's real
size is checked; a file over a bits-per-weight budget is encoded again with coarser steps, so the
budget always holds.

`CANDIDATE_KINDS` lists the candidates. Not candidates: `bands` (a lossy band record at one rate is
a quantized record plus per-band streams, so it never costs fewer bits at the same error; use
`--bands` when progressive decoding is the point), `predicted` (needs a parent tensor or file) and
`factors` (not evaluated here).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np

from . import dtypes as D
from . import quant as Q
from .errors import InputError
from .records import Plain
from .records.quantized import (
    FLOAT_DTYPES,
    QUANTIZER_DEPENDENT,
    Quantized,
    default_rate_table,
    quantize_levels,
    reconstruct,
    row_classes,
    rows_cols,
    to_float64,
)

CANDIDATE_KINDS = ("plain", "quantized")
SAMPLE_ELEMENTS = 1 << 15
SAMPLE_FRACTION = 32
SAMPLE_MAX = 1 << 19
GRID_ELEMENTS = 1 << 14      # the uniform-quantizer grid is measured on at most about this many
CHUNK_FRAMING_BYTES = 60      # block header, trailer and alignment of one chunk (estimate)
RECORD_OVERHEAD_BYTES = 160      # index record + block framing + alignment, per stream (estimate)
CLASS_CHOICES = (1, 4, 8)
BUDGET_MARGIN_REL = 0.0004
VECTOR_PRIOR = 1024.0          # weight of rank ≤ 1 tensors: a 32× finer step (encode_tensors)
BUDGET_MARGIN_ABS = 0.002      # bits per weight


@dataclass
class Target:
    bits_per_weight: float | None = None
    target_snr: float | None = None
    max_rel_error: float | None = None

    def __post_init__(self):
        given = [v for v in (self.bits_per_weight, self.target_snr, self.max_rel_error)
                 if v is not None]
        if len(given) != 1:
            raise InputError("give exactly one of bits_per_weight, target_snr, max_rel_error")
        if self.bits_per_weight is not None and not self.bits_per_weight > 0:
            raise InputError("bits_per_weight must be > 0")
        if self.max_rel_error is not None and not self.max_rel_error > 0:
            raise InputError("max_rel_error must be > 0")

    def describe(self) -> str:
        if self.bits_per_weight is not None:
            return f"{self.bits_per_weight:g} bits/weight"
        if self.target_snr is not None:
            return f"SNR ≥ {self.target_snr:g} dB"
        return f"relative error ≤ {self.max_rel_error:g} per tensor"


@dataclass
class TensorModel:
    """What rate control knows about one tensor."""

    name: str
    dtype: D.DType
    shape: tuple
    raw: np.ndarray                      # bit patterns (1-D unsigned view)
    x: np.ndarray | None = None          # binary64 values (float tensors that can be quantized)
    n: int = 0
    weight: float = 1.0                  # sensitivity (weighted squared error = weight × SSE)
    prior: float = 1.0                   # VECTOR_PRIOR for rank ≤ 1 tensors, else 1
    power: float = 0.0                   # mean x²
    peak: float = 0.0                    # max |x|
    sample: np.ndarray | None = None     # (rows, cols) rows of x
    grid: np.ndarray | None = None       # log2 of uniform steps q
    h_u: np.ndarray | None = None        # uniform entropy (bits/element) at each q
    d_u: np.ndarray | None = None        # uniform MSE at each q
    r_corr: float = 0.0                  # coded DQ bits − uniform entropy at q = 2Δ
    d_ratio: float = 0.82                # DQ MSE / uniform MSE at q = 2Δ
    lossless_bits: float = 0.0           # bits/element as a plain record (estimate)
    classes: int = 1
    # decision
    kind: str = "plain"
    step: float = 0.0
    lam: float = 0.0
    est_bits: float = 0.0                # whole tensor, estimated
    est_sse: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def quantizable(self) -> bool:
        return self.x is not None


def _sample_rows(x2: np.ndarray, rng) -> np.ndarray:
    """Rows of the matrix view: all of a small tensor, else random rows holding about
    max(SAMPLE_ELEMENTS, n / SAMPLE_FRACTION) elements (a large tensor's rate is half the file's
    for an embedding table: its sample is larger, so its estimate is tighter)."""
    rows, cols = x2.shape
    want = min(max(SAMPLE_ELEMENTS, rows * cols // SAMPLE_FRACTION), SAMPLE_MAX)
    if rows * cols <= want:
        return x2
    if rows == 1:
        return x2[:, :want]
    take = max(1, want // max(cols, 1))
    idx = np.sort(rng.choice(rows, size=min(take, rows), replace=False))
    return x2[idx]


def _entropy(levels: np.ndarray) -> float:
    """Order-0 entropy in bits per element."""
    v = levels.reshape(-1)
    if v.size == 0:
        return 0.0
    lo = int(v.min())
    c = np.bincount(v - lo)
    c = c[c > 0].astype(np.float64)
    return float(-(c * np.log2(c / v.size)).sum() / v.size)


def analyse(models: list[TensorModel], options) -> None:
    """Sample each quantizable tensor and measure the uniform quantizer on a grid of steps."""
    rng = np.random.default_rng(12345)
    kern = _kernels()
    for m in models:
        if not m.quantizable:
            continue
        rows, cols = rows_cols(m.shape)
        x2 = m.x.reshape(rows, cols)
        m.sample = np.asarray(_sample_rows(x2, rng), np.float64)
        s = m.sample
        rms = math.sqrt(max(float(np.mean(s * s)), 1e-300))
        peak = float(np.max(np.abs(s))) if s.size else 0.0
        top = math.floor(math.log2(max(rms, peak / 4, 1e-30))) + 2
        # half-octave steps down to 1/32 of the RMS (or where the largest level reaches 2^14);
        # finer steps are extrapolated at 1 bit and 6 dB per octave, the high-rate limit, which
        # holds there (the calibration pass corrects the model at the operating point anyway)
        low = max(top - 30, math.floor(math.log2(rms)) - 5,
                  math.ceil(math.log2(max(peak, 1e-30))) - 14)
        grid = np.arange(min(low, top - 1), top + 1, 0.5)
        h, d = np.empty(grid.size), np.empty(grid.size)
        flat = np.ascontiguousarray(s.reshape(-1)[:: max(1, s.size // GRID_ELEMENTS)])
        if kern is not None:
            kern.uniform_grid(flat, 2.0 ** grid, h, d)
        else:
            for i, g in enumerate(grid):
                q = 2.0 ** g
                k = np.rint(flat / q)
                h[i] = _entropy(k.astype(np.int64))
                e = flat - k * q
                d[i] = float(np.mean(e * e))
        m.grid, m.h_u, m.d_u = grid, h, d
        m.lossless_bits = 8 * m.dtype.itemsize * (0.85 if m.dtype.itemsize >= 2 else 1.0)


def _kernels():
    """The numba kernels of the quantized encoder, or None without numba."""
    from .records.quantized import _numba_fused
    return _numba_fused()


def _interp(m: TensorModel, log2q: float) -> tuple[float, float]:
    """Uniform-quantizer (entropy, MSE) at step 2^log2q, interpolated on the grid."""
    g = m.grid
    if log2q <= g[0]:
        return float(m.h_u[0]) + (g[0] - log2q), float(m.d_u[0]) * 4.0 ** (log2q - g[0])
    if log2q >= g[-1]:
        return float(m.h_u[-1]), float(m.d_u[-1])
    i = int((log2q - g[0]) / 0.5)
    i = min(i, len(g) - 2)
    t = (log2q - g[i]) / 0.5
    h = (1 - t) * m.h_u[i] + t * m.h_u[i + 1]
    d0, d1 = max(m.d_u[i], 1e-300), max(m.d_u[i + 1], 1e-300)
    d = math.exp((1 - t) * math.log(d0) + t * math.log(d1))
    return float(h), float(d)


def predict(m: TensorModel, step: float) -> tuple[float, float]:
    """(bits per element, MSE) of the dependent quantizer at step Δ, from the corrected model."""
    h, d = _interp(m, math.log2(2.0 * step))
    return max(h + m.r_corr, 0.0), d * m.d_ratio


def _choose(m: TensorModel, c: float) -> tuple[float, float, str, float]:
    """At slope parameter c: (bits, weighted SSE, kind, step) for tensor m."""
    if not m.quantizable:
        return m.n * 8.0 * m.dtype.itemsize * 0.9, 0.0, "plain", 0.0
    step = c / math.sqrt(max(m.weight, 1e-30))
    r, d = predict(m, step)
    # plain is a candidate: zero error at its lossless rate
    if r >= m.lossless_bits:
        return m.n * m.lossless_bits, 0.0, "plain", 0.0
    return m.n * r, m.weight * m.n * d, "quantized", step


def _totals(models, c):
    bits = sse = 0.0
    for m in models:
        b, e, _, _ = _choose(m, c)
        bits += b
        sse += e / max(m.weight, 1e-30)  # unweighted SSE for SNR targets
    return bits, sse


class _Packed:
    """_totals for every tensor at once (numpy): the same numbers as the loop over _choose, for
    the bisections of solve(), which evaluate it 40 times per solve."""

    def __init__(self, models):
        q = [m for m in models if m.quantizable]
        self.fixed = sum(m.n * 8.0 * m.dtype.itemsize * 0.9 for m in models
                         if not m.quantizable)
        L = max((len(m.grid) for m in q), default=1)
        k = len(q)
        self.g0 = np.array([m.grid[0] for m in q])
        self.glast = np.array([m.grid[-1] for m in q])
        self.len = np.array([len(m.grid) for m in q])
        self.H = np.zeros((k, L))
        self.LD = np.zeros((k, L))
        self.D = np.zeros((k, L))
        for i, m in enumerate(q):
            n = len(m.grid)
            self.H[i, :n], self.H[i, n:] = m.h_u, m.h_u[-1]
            self.D[i, :n], self.D[i, n:] = m.d_u, m.d_u[-1]
            dl = np.log(np.maximum(m.d_u, 1e-300))
            self.LD[i, :n], self.LD[i, n:] = dl, dl[-1]
        self.n = np.array([float(m.n) for m in q])
        self.w = np.array([max(m.weight, 1e-30) for m in q])
        self.r_corr = np.array([m.r_corr for m in q])
        self.d_ratio = np.array([m.d_ratio for m in q])
        self.lossless = np.array([m.lossless_bits for m in q])

    def totals(self, c):
        if not self.n.size:
            return self.fixed, 0.0
        lq = np.log2(2.0 * (c / np.sqrt(self.w)))
        rows = np.arange(self.n.size)
        i = np.minimum(np.floor((lq - self.g0) / 0.5).astype(np.int64), self.len - 2)
        i = np.clip(i, 0, None)
        t = (lq - (self.g0 + 0.5 * i)) / 0.5
        j = np.minimum(i + 1, self.len - 1)
        h = (1 - t) * self.H[rows, i] + t * self.H[rows, j]
        d = np.exp((1 - t) * self.LD[rows, i] + t * self.LD[rows, j])
        below, above = lq <= self.g0, lq >= self.glast
        h = np.where(below, self.H[:, 0] + (self.g0 - lq), np.where(above, self.H[rows,
                                                                              self.len - 1], h))
        d = np.where(below, self.D[:, 0] * 4.0 ** (lq - self.g0),
                     np.where(above, self.D[rows, self.len - 1], d))
        r = np.maximum(h + self.r_corr, 0.0)
        d = d * self.d_ratio
        plain = r >= self.lossless
        bits = self.fixed + float(np.sum(np.where(plain, self.n * self.lossless, self.n * r)))
        sse = float(np.sum(np.where(plain, 0.0, self.n * d)))
        return bits, sse


def solve(models: list[TensorModel], target: Target, n_weights: int, overhead_bits: float
          ) -> None:
    """Set kind and step of every tensor for the target."""
    quant = [m for m in models if m.quantizable]
    if target.max_rel_error is not None:
        e2 = target.max_rel_error ** 2
        for m in models:
            if not m.quantizable:
                m.kind = "plain"
                continue
            # largest step on a fine grid whose predicted relative MSE meets the bound (×0.9 margin)
            best = None
            for lg in np.arange(m.grid[-1], m.grid[0] - 1, -0.125):
                step = 2.0 ** (lg - 1)
                r, d = predict(m, step)
                if m.power == 0 or d <= 0.9 * e2 * m.power:
                    best = step
                    break
            if best is None or predict(m, best)[0] >= m.lossless_bits:
                m.kind, m.step = "plain", 0.0
            else:
                m.kind, m.step = "quantized", best
        return
    total_power = sum(m.power * m.n for m in quant)
    if target.bits_per_weight is not None:
        # aim a little under the budget: the calibrated model is within about ±0.001 bit/weight
        # of the file, and a file over budget costs a second encoding pass
        budget = target.bits_per_weight * (1.0 - BUDGET_MARGIN_REL) - BUDGET_MARGIN_ABS
    lo, hi = -60.0, 20.0  # log2 c
    packed = _Packed(models)
    for _ in range(40):      # 80 / 2^40 octave: far below any rate difference
        mid = 0.5 * (lo + hi)
        bits, sse = packed.totals(2.0 ** mid)
        if target.bits_per_weight is not None:
            # within budget: try finer steps
            if bits + overhead_bits <= budget * n_weights:
                hi = mid
            else:
                lo = mid
        else:
            # SNR reached: try coarser steps
            if sse <= 0 or 10 * math.log10(total_power / sse) >= target.target_snr:
                lo = mid
            else:
                hi = mid
    c = 2.0 ** (hi if target.bits_per_weight is not None else lo)
    for m in models:
        b, e, kind, step = _choose(m, c)
        m.kind, m.step, m.est_bits = kind, step, b


def calibrate(models: list[TensorModel], options) -> None:
    """Run the real dependent quantizer on each sample at its current step and correct the
    model's rate and distortion there; also pick row classes. The rate is the level streams' size
    as the codec chain codes them (byte lanes, each rANS-coded per chunk with its table, or a
    fill), computed from the sample's lane histograms scaled to the whole tensor's chunks rather
    than by coding the sample: a sample coded as one short chunk pays its table and framing over
    few elements and overstates the rate (0.04 bit/weight on MiniLM's embedding table)."""
    kern = _kernels()
    for m in models:
        if not m.quantizable or m.kind != "quantized" or m.step <= 0:
            continue
        s = m.sample
        step = float(np.float32(m.step))
        h_u, d_u = _interp(m, math.log2(2.0 * step))
        u = s / step
        d_est = d_u * m.d_ratio
        m.lam = 2.0 * math.log(2.0) * d_est / step ** 2
        bits_tab = default_rate_table(u)
        if kern is not None and m.x.dtype == np.float32:
            # the encoder's own fused kernel on the sample (binary32 again, exactly)
            table, K, clamp = kern.padded_rate_table(bits_tab, float(np.abs(u).max()))
            z = np.empty(s.shape, np.uint32)
            acc = np.zeros(4)
            kern.encode_rows_f32(s.astype(np.float32), step, m.lam, table, K, clamp,
                                 np.arange(s.shape[0]), z, np.empty(s.shape, np.float32), acc)
            d_real = acc[0] / s.size
        else:
            k = quantize_levels(s, step, QUANTIZER_DEPENDENT, lam=m.lam, bits=bits_tab)
            y = reconstruct(k.reshape(-1), _qp(step), s.shape, D.BY_NAME["float64"], None) \
                .view(np.float64).reshape(s.shape)
            d_real = float(np.mean((s - y) ** 2))
            z = Q.zigzag_encode(k.reshape(-1)).reshape(k.shape)
        ce = options.chunk_elements
        full_rows = None
        big = m.peak / step >= 200.0 and kern is not None   # a second byte lane is likely
        rows, cols = rows_cols(m.shape)
        if big:
            hist = np.zeros((1, 256), np.int64)
            kern.high_byte_hist(m.x.reshape(rows, cols), step, np.zeros(rows, np.int64), hist)
        best_k, best_bits = 1, _stream_bits(z.reshape(-1), m.n, ce, hist[0] if big else None)
        if s.shape[0] >= 64:
            for kk in CLASS_CHOICES[1:]:
                if s.shape[0] < 8 * kk:
                    continue
                cls = row_classes(s, kk)
                his = [None] * kk
                if big:
                    if full_rows is None:
                        x2 = m.x.reshape(rows, cols)
                        full_rows = np.einsum("ij,ij->i", x2, x2, dtype=np.float64)
                    order = np.argsort(full_rows, kind="stable")
                    fc = np.empty(rows, np.int64)
                    fc[order] = (np.arange(rows) * kk) // rows
                    hk = np.zeros((kk, 256), np.int64)
                    kern.high_byte_hist(m.x.reshape(rows, cols), step, fc, hk)
                    his = list(hk)
                # equal-count classes: each holds 1/kk of the tensor's rows
                b = sum(_stream_bits(z[cls == c].reshape(-1), m.n // kk, ce, his[c])
                        for c in range(kk))
                b += 8 * RECORD_OVERHEAD_BYTES * kk      # kk − 1 more level streams, a class map
                if b < best_bits:
                    best_k, best_bits = kk, b
        m.classes = best_k
        m.r_corr = best_bits / m.n - h_u
        m.d_ratio = d_real / d_u if d_u > 0 else 1.0


def _qp(step):
    from .records.quantized import QuantParams
    return QuantParams(QUANTIZER_DEPENDENT, 0, 1, 0, float(np.float32(step)))


def _stream_bits(z: np.ndarray, n_full: int, ce: int, high: np.ndarray | None = None) -> float:
    """Estimated bits of a level stream of n_full zigzag levels distributed like the sample z:
    per chunk of ce levels, each byte lane the cheapest of fill, rANS (its exact size from the
    scaled histogram: header, table, states, words) and raw, plus lane headers and block
    framing. `high`: the whole stream's high-byte histogram (high_byte_hist), which decides
    whether the stream has a second byte lane and what it holds."""
    from .codecs import rans
    if z.size == 0 or n_full == 0:
        return 0.0
    kern = rans.kernels()
    top = int(z.max())
    if high is not None and high[1:].any():
        top = max(top, 256)
    dt = Q.level_dtype(top)
    zz = z.astype(np.int64, copy=False)
    if top < 256:
        hists = [(np.bincount(zz, minlength=256), z.size, True)]
    else:
        hists = [(np.bincount((zz >> (8 * (dt.itemsize - 1 - i))) & 0xFF, minlength=256),
                  z.size, True) for i in range(dt.itemsize)]
    if high is not None and dt.itemsize == 2:
        hists[0] = (high, max(int(high.sum()), 1), False)  # lanes: high byte first (planes)
    full, rem = divmod(n_full, ce)
    total = 0.0
    for size, count in ((ce, full), (rem, 1 if rem else 0)):
        if not count:
            continue
        per = CHUNK_FRAMING_BYTES + 5.0 * len(hists)
        for h, hn, sampled in hists:
            present = h > 0
            if present.sum() <= 1:
                per += 1.0
                continue
            c = np.where(present, np.maximum(np.rint(h * (size / hn)), 1), 0).astype(np.int64)
            r, est = kern.choose_scale(c, rans.ENCODER_SCALES[0], rans.ENCODER_SCALES[1],
                                       rans.ENCODER_STATES)
            if sampled:
                # a sample's histogram lacks the rare symbols and understates the entropy by
                # about (symbols − 1) / (2 N ln 2) bits per element (Miller–Madow): add it back
                est += size * (int(present.sum()) - 1) / (2.0 * hn * math.log(2.0)) / 8.0
            per += min(float(size), est) if r > 0 else float(size)
        total += count * per
    return 8.0 * total


def build_models(tensors, weights: dict | None = None, vector_prior: float = 1.0
                 ) -> list[TensorModel]:
    """tensors: iterable of (name, DType, shape, raw bit patterns). A float32 tensor keeps its own
    values (no binary64 copy of the model: the encoder reads binary32 directly); other float
    dtypes are converted to binary64."""
    kern = _kernels()
    models = []
    for name, dtype, shape, raw in tensors:
        n = int(np.prod(shape, dtype=object)) if len(shape) else 1
        m = TensorModel(name, dtype, tuple(shape), raw, n=n)
        if len(shape) <= 1:
            m.prior = vector_prior
        if dtype.name in FLOAT_DTYPES and n >= 1:
            if dtype.name == "float32" and kern is not None:
                x = np.asarray(raw).reshape(-1).view(np.float32)
                sumsq, peak, finite = kern.stats_f32(x)
                if finite:
                    m.x, m.power, m.peak = x, sumsq / n, peak
            else:
                x = to_float64(raw, dtype)
                if np.all(np.isfinite(x)):
                    m.x, m.power, m.peak = x, float(np.mean(x * x)), float(np.abs(x).max())
        if weights and name in weights:
            m.weight = float(weights[name])
        m.weight *= m.prior
        models.append(m)
    return models


def float_weight_count(models) -> int:
    return sum(m.n for m in models if m.dtype.is_float)


def encode_tensors(tensors, path, target: Target, *, options=None, metadata=None,
                   system_metadata=None, sensitivity: dict | None = None, progress=None,
                   max_passes: int = 4, calibrations: int = 1,
                   snr_slack_db: float | None = None, vector_prior: float | None = None
                   ) -> dict:
    """Encode (name, DType, shape, raw) tensors to `path` under `target`. Returns a report.

    `vector_prior` (default VECTOR_PRIOR) multiplies the weight of every tensor of rank ≤ 1
    (biases, norm scales, BatchNorm statistics): their step is √prior times finer than the
    matrices'. Such tensors are a fraction of a percent of the weights, so this costs little rate
    and little model SNR, and they act on every activation (MPEG NNC codes them with a separate,
    much finer "non-weight" step for the same reason).

    `sensitivity` weights tensors (weighted squared error). With `snr_slack_db` (bits-per-weight
    targets only) the weights are tilted only as far as the model's SNR stays within that many
    dB of the SNR-optimal allocation at the same rate: weights w^α, α ≤ 1 the largest that does
    (see tilt())."""
    from .writer import EncodeOptions
    options = options or EncodeOptions()
    t0 = time.perf_counter()
    vector_prior = VECTOR_PRIOR if vector_prior is None else float(vector_prior)
    constrained = sensitivity is not None and snr_slack_db is not None and \
        target.bits_per_weight is not None
    models = build_models(tensors, None if constrained else sensitivity, vector_prior)
    n_weights = max(float_weight_count(models), 1)
    analyse(models, options)
    overhead = 8.0 * (1024 + RECORD_OVERHEAD_BYTES * len(models))
    solve(models, target, n_weights, overhead)
    for _ in range(calibrations):
        calibrate(models, options)
        solve(models, target, n_weights, overhead)
    tilt_alpha = None
    if constrained:
        tilt_alpha = tilt(models, sensitivity, target, n_weights, overhead, snr_slack_db)
        calibrate(models, options)
        solve(models, target, n_weights, overhead)
    budget = target.bits_per_weight * n_weights if target.bits_per_weight is not None else None
    passes = 0
    while True:
        passes += 1
        _write(models, path, options, metadata, system_metadata, progress)
        if passes >= max_passes or _adjust(models, path, target, budget, n_weights):
            break
    problem = _missed(models, path, target, budget, n_weights)
    if problem:
        os.remove(path)        # no file that misses its target (docs/lossy.md)
        raise InputError(f"could not meet {target.describe()}: {problem}")
    rep = report(models, path, target, n_weights, time.perf_counter() - t0, passes)
    if tilt_alpha is not None:
        rep["tilt_alpha"] = tilt_alpha
    return rep


def predicted_snr(models) -> float:
    """The model's SNR (dB) over every quantizable tensor at the chosen steps."""
    sig = err = 0.0
    for m in models:
        if not m.quantizable:
            continue
        sig += m.power * m.n
        if m.kind == "quantized":
            err += predict(m, m.step)[1] * m.n
    return math.inf if err <= 0 else 10 * math.log10(sig / err)


def tilt(models, sensitivity: dict, target: Target, n_weights: int, overhead: float,
         slack_db: float, iterations: int = 12) -> float:
    """Constrained sensitivity weighting: maximise the sensitivity-weighted objective subject to
    the model SNR ≥ (SNR-optimal allocation's SNR) − slack_db, at the same rate. Weights w_t^α
    for α in [0, 1] (α = 0: equal slope, the SNR optimum; α = 1: the full weighting); the SNR
    falls monotonically with α, so the largest α that keeps the floor is found by bisection.
    Near α = 0 the SNR loss is second order in α while the weighted error falls at first order:
    a small slack buys a real share of the weighting's gain. Leaves the models at that α."""
    def at(alpha):
        for m in models:
            w = float(sensitivity.get(m.name, 1.0))
            m.weight = max(w, 1e-30) ** alpha * m.prior
        solve(models, target, n_weights, overhead)
        return predicted_snr(models)
    floor = at(0.0) - slack_db
    lo, hi = 0.0, 1.0
    if at(1.0) >= floor:
        return 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if at(mid) >= floor:
            lo = mid
        else:
            hi = mid
    at(lo)
    return lo


def _stored_errors(path) -> dict:
    from .reader import Reader
    with Reader(path) as r:
        return {n: r.info(n).error for n in r.keys()}


def _missed(models, path, target, budget, n_weights) -> str | None:
    """What the written file misses of the target (None when it meets it), from the file's real
    size and the ErrorStats stored in its records."""
    if budget is not None:
        size_bits = 8 * os.path.getsize(path)
        return None if size_bits <= budget else \
            f"{size_bits / n_weights:.4f} bits/weight after the last pass"
    errs = _stored_errors(path)
    if target.target_snr is not None:
        sig = sum(m.power * m.n for m in models if m.quantizable)
        err = sum(errs[m.name]["mean_squared_error"] * m.n for m in models
                  if m.kind == "quantized" and errs.get(m.name))
        snr = math.inf if err <= 0 else 10 * math.log10(sig / err) if sig > 0 else -math.inf
        return None if snr >= target.target_snr else f"SNR {snr:.3f} dB after the last pass"
    bad = [m.name for m in models if m.kind == "quantized" and errs.get(m.name) and
           errs[m.name]["mean_squared_error"] > target.max_rel_error ** 2 *
           errs[m.name]["signal_power"]]
    return None if not bad else f"{len(bad)} tensors above it after the last pass ({bad[0]}...)"


def _adjust(models, path, target, budget, n_weights) -> bool:
    """True when the file meets the target; otherwise change the steps for another pass."""
    if _missed(models, path, target, budget, n_weights) is None:
        return True
    quant = [m for m in models if m.kind == "quantized"]
    if not quant:
        return True
    if budget is not None:
        # over budget: coarsen every quantized step by the missing bits (≈ 1 bit per octave)
        excess = (8 * os.path.getsize(path) - budget) / sum(m.n for m in quant)
        factor = 2.0 ** (excess * 1.1 + 0.002)
        for m in quant:
            m.step *= factor
        return False
    errs = _stored_errors(path)
    if target.target_snr is not None:
        sig = sum(m.power * m.n for m in models if m.quantizable)
        err = sum(errs[m.name]["mean_squared_error"] * m.n for m in quant)
        deficit = target.target_snr - 10 * math.log10(sig / err)
        factor = 10.0 ** (-(deficit + 0.02) / 20.0)      # SNR moves 20·log10 per step factor
        for m in quant:
            m.step *= factor
        return False
    e2 = target.max_rel_error ** 2
    for m in quant:
        e = errs[m.name]
        if e["mean_squared_error"] > e2 * e["signal_power"]:
            m.step *= 0.97 * math.sqrt(e2 * e["signal_power"] / e["mean_squared_error"])
    return False


def _write(models, path, options, metadata, system_metadata, progress) -> None:
    from .writer import Writer
    with Writer(path, metadata=metadata, system_metadata=system_metadata, options=options,
                progress=progress) as w:
        for m in models:
            if m.kind == "quantized":
                w.add(m.name, m.dtype, m.shape, m.raw, kind=Quantized, step=m.step,
                      quantizer="dependent", classes=m.classes, lam=m.lam,
                      values=m.x if m.x.dtype == np.float64 else None,
                      peak=m.peak if m.x.dtype == np.float32 else None)
            else:
                w.add(m.name, m.dtype, m.shape, m.raw, kind=Plain)


def report(models, path, target, n_weights, seconds, passes) -> dict:
    from .reader import Reader
    sig = err = 0.0
    kinds: dict[str, int] = {}
    with Reader(path) as r:
        for name, info in r.tensors.items():
            kinds[info.kind_name] = kinds.get(info.kind_name, 0) + 1
            if info.dtype.is_float:
                if info.error:
                    sig += info.error["signal_power"] * info.elements
                    err += info.error["mean_squared_error"] * info.elements
                else:
                    m = next(m for m in models if m.name == name)
                    if m.x is not None:
                        sig += m.power * m.n
    size = os.path.getsize(path)
    return {"output": str(path), "target": target.describe(), "bytes": size,
            "bits_per_weight": 8 * size / n_weights, "float_weights": n_weights,
            "snr_db": 10 * math.log10(sig / err) if err > 0 else math.inf,
            "records": kinds, "passes": passes, "seconds": seconds}


# -- calibration: sensitivity of each tensor ---------------------------------------------------------
def sensitivity(state: dict, forward, probes: int = 4, seed: int = 0) -> dict:
    """Per-tensor sensitivity w_t = mean over elements of E_r[(∂(r·f)/∂w)²] for random Gaussian
    output projections r: the expected squared change of the output f per unit squared weight error
    spread evenly over the tensor (a Fisher-style trace estimate). `forward(state) -> tensor` runs the
    model on the calibration inputs with the given weights."""
    import torch
    params = {k: v.detach().float().clone().requires_grad_(True) for k, v in state.items()
              if v.is_floating_point()}
    full = dict(state)
    full.update(params)
    acc = {k: 0.0 for k in params}
    gen = torch.Generator().manual_seed(seed)
    for _ in range(probes):
        out = forward(full)
        r = torch.randn(out.shape, generator=gen, dtype=out.dtype)
        grads = torch.autograd.grad((out * r).sum(), list(params.values()), allow_unused=True)
        for k, g in zip(params, grads):
            if g is not None:
                acc[k] += float((g.double() ** 2).mean())
    w = {k: v / probes for k, v in acc.items()}
    total = sum(w[k] * params[k].numel() for k in w)
    count = sum(params[k].numel() for k in w)
    mean = total / count if total > 0 else 1.0
    # tensors that do not reach the output (weight 0) still get a small weight: never free to ruin
    return {k: max(v / mean, 1e-3) for k, v in w.items()}


def encode_model(state: dict, path, *, forward=None, inputs=None, model=None,
                 bits_per_weight=None, target_snr=None, max_rel_error=None, options=None,
                 metadata=None, probes: int = 4, snr_slack_db: float | None = None) -> dict:
    """Encode a state dict of torch tensors lossily under one target, weighting tensors by their
    sensitivity when a model and calibration inputs are given: either `forward(state) -> output`
    (inputs already bound), or an `nn.Module` `model` with `inputs` (called through
    torch.func.functional_call). `snr_slack_db`: weight by sensitivity only as far as the model
    SNR stays within that many dB of the SNR-optimal allocation (encode_tensors)."""
    from .metadata import KEY_SOURCE_FORMAT
    from .torch_interop import tensor_to_raw
    target = Target(bits_per_weight, target_snr, max_rel_error)
    weights = None
    if model is not None and forward is None:
        import torch

        def forward(s):
            args = inputs if isinstance(inputs, tuple) else (inputs,)
            return torch.func.functional_call(model, s, args)
    if forward is not None:
        weights = sensitivity(state, forward, probes=probes)
    tensors = [tensor_to_raw(k, v) for k, v in state.items()]
    tensors = [(k, dt, shape, np.asarray(raw).reshape(-1).view(np.uint8).view(dt.uint))
               for k, (dt, shape, raw) in zip(state, tensors)]
    return encode_tensors(tensors, path, target, options=options, metadata=metadata,
                          system_metadata={KEY_SOURCE_FORMAT: "api"}, sensitivity=weights,
                          snr_slack_db=snr_slack_db)
