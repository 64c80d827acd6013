"""Uniform quantization with exact reconstruction: spec/quantization.md.

The primitive that record kinds share (bands today; quantized residuals, factors later):

- a *matrix view* of a tensor (rows = first dimension for rank >= 2) and a *scale layout*: one
  scale for the tensor, one per row ("channel"), or one per group of `group_size` consecutive
  elements of a row;
- integer *levels* k = round(x / s) (round to nearest, ties to even), stored zigzag-coded;
- *refinement*: a finer step s·2^-c refines a level exactly (A' = A·2^b + q), so a prefix of
  refinements is again a uniform quantizer whose reconstruction is the centre of its bin;
- *dequantization* y = float64(A) × (s·2^-c), one IEEE binary64 multiplication (a single rounding to
  nearest even; exact while |A| < 2^29), then one rounding to the tensor dtype (ties to even,
  magnitudes beyond the largest finite value saturate to it). No fused multiply-add anywhere.

Everything here is numpy and deterministic; nothing depends on the platform's float environment
beyond IEEE binary64 round-to-nearest-even, which numpy guarantees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import dtypes as D
from .errors import InputError

SCALE_TENSOR = 0
SCALE_CHANNEL = 1
SCALE_GROUP = 2
SCALE_NAMES = {SCALE_TENSOR: "tensor", SCALE_CHANNEL: "channel", SCALE_GROUP: "group"}
SCALE_CODES = {v: k for k, v in SCALE_NAMES.items()}

QUANTIZER_UNIFORM = 0
QUANTIZER_DEPENDENT = 1
QUANTIZER_NAMES = {QUANTIZER_UNIFORM: "uniform", QUANTIZER_DEPENDENT: "dependent"}
QUANTIZER_CODES = {v: k for k, v in QUANTIZER_NAMES.items()}

MAX_GROUP_SIZE = 1 << 24
MAX_BASE_LEVEL = 1 << 23      # |level| of a base (first) quantization; |multiplier| <= 2^24
MAX_ACCUMULATED = 1 << 53     # |A| after refinements: float64(A) is exact
MAX_REFINE_BITS = 28          # total refinement bits over all refinements

LEVEL_DTYPES = (D.BY_NAME["uint8"], D.BY_NAME["uint16"], D.BY_NAME["uint32"])


# -- float formats -------------------------------------------------------------------------------
@dataclass(frozen=True)
class FloatFormat:
    """An IEEE-like binary format: E exponent bits, M mantissa bits, bias 2^(E-1)-1."""

    ebits: int
    mbits: int
    max_finite: float
    nan_bits: int  # the canonical (positive, quiet) NaN

    @property
    def bias(self) -> int:
        return (1 << (self.ebits - 1)) - 1

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def width(self) -> int:
        return 1 + self.ebits + self.mbits


FORMATS = {
    "float64": FloatFormat(11, 52, float(np.finfo(np.float64).max), 0x7FF8000000000000),
    "float32": FloatFormat(8, 23, float(np.finfo(np.float32).max), 0x7FC00000),
    "float16": FloatFormat(5, 10, 65504.0, 0x7E00),
    "bfloat16": FloatFormat(8, 7, float.fromhex("0x1.fep127"), 0x7FC0),
    "float8_e4m3fn": FloatFormat(4, 3, 448.0, 0x7F),
    "float8_e5m2": FloatFormat(5, 2, 57344.0, 0x7E),
}


def float_format(dtype: D.DType) -> FloatFormat:
    try:
        return FORMATS[dtype.name]
    except KeyError:
        raise InputError(f"{dtype.name} is not a float dtype") from None


def _fp8_table(name: str) -> np.ndarray:
    f = FORMATS[name]
    bits = np.arange(256, dtype=np.int64)
    sign = np.where(bits >> 7, -1.0, 1.0)
    e = (bits >> f.mbits) & ((1 << f.ebits) - 1)
    m = bits & ((1 << f.mbits) - 1)
    val = np.where(e == 0, np.ldexp(m.astype(np.float64), f.emin - f.mbits),
                   np.ldexp((m + (1 << f.mbits)).astype(np.float64), e - f.bias - f.mbits))
    val = sign * val
    if name == "float8_e4m3fn":      # no infinities; S.1111.111 is NaN
        val[(bits & 0x7F) == 0x7F] = np.nan
    else:                             # IEEE-like: all-ones exponent is inf / NaN
        top = e == (1 << f.ebits) - 1
        val[top & (m == 0)] = sign[top & (m == 0)] * np.inf
        val[top & (m != 0)] = np.nan
    return val


_FP8 = {n: _fp8_table(n) for n in ("float8_e4m3fn", "float8_e5m2")}


def to_float64(bits: np.ndarray, dtype: D.DType) -> np.ndarray:
    """Bit patterns (any unsigned view of the tensor's elements) as binary64 values, exactly."""
    bits = np.asarray(bits).view(dtype.uint)
    name = dtype.name
    if name in ("float64", "float32", "float16"):
        return bits.view(np.dtype(dtype.numpy_name)).astype(np.float64)
    if name == "bfloat16":
        return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
    if name in _FP8:
        return _FP8[name][bits]
    raise InputError(f"{name} is not a float dtype")


def round_to_dtype(y: np.ndarray, dtype: D.DType) -> np.ndarray:
    """binary64 values -> the dtype's bit patterns (unsigned), spec/quantization.md §4: round to
    nearest, ties to even; a finite value whose rounding exceeds the largest finite value gives the
    largest finite value of its sign; NaN gives the canonical NaN."""
    y = np.asarray(y, dtype=np.float64)
    name = dtype.name
    f = float_format(dtype)
    if name == "float64":
        return y.view(np.uint64).copy()
    if name in ("float32", "float16"):
        # numpy's cast is one IEEE rounding to nearest even; only overflow differs (-> saturate)
        with np.errstate(over="ignore", invalid="ignore"):
            out = y.astype(np.dtype(dtype.numpy_name))
        bad = ~np.isfinite(out)
        if bad.any():
            out[bad] = np.where(np.signbit(y[bad]), -f.max_finite, f.max_finite)
            out[np.isnan(y)] = np.nan
            bits = out.view(dtype.uint)
            bits[np.isnan(y)] = f.nan_bits
            return bits
        return out.view(dtype.uint)
    return _round_generic(y, f).astype(dtype.uint)


def _round_generic(y: np.ndarray, f: FloatFormat) -> np.ndarray:
    """Round binary64 to a narrower IEEE-like format in integer-exact steps (§4)."""
    sign = np.signbit(y).astype(np.uint64)
    nan = np.isnan(y)
    a = np.abs(np.where(nan, 0.0, y))
    a = np.minimum(a, np.float64(np.finfo(np.float64).max))  # inf saturates below
    _, e = np.frexp(a)                       # a = m·2^e, 0.5 <= m < 1: floor(log2 a) = e - 1
    qe = np.maximum(e - 1, f.emin) - f.mbits  # exponent of one unit in the last place
    k = np.rint(np.ldexp(a, -qe))            # exact scaling, one rounding (ties to even)
    r = np.minimum(np.ldexp(k, qe), f.max_finite)
    _, e2 = np.frexp(r)
    normal = r >= np.ldexp(1.0, f.emin)
    ef = np.where(normal, e2 - 1 + f.bias, 0).astype(np.int64)
    mant = np.where(normal, np.ldexp(r, -(e2 - 1 - f.mbits)) - (1 << f.mbits),
                    np.ldexp(r, -(f.emin - f.mbits))).astype(np.int64)
    bits = (sign << np.uint64(f.ebits + f.mbits)) | (ef.astype(np.uint64) << np.uint64(f.mbits)) \
        | mant.astype(np.uint64)
    bits[nan] = f.nan_bits
    return bits


# -- matrix view and scale layouts ---------------------------------------------------------------
def matrix_shape(shape) -> tuple[int, int]:
    """(rows, cols): rows = shape[0] for rank >= 2 (and shape[0] > 0), else one row (§1)."""
    n = 1
    for d in shape:
        n *= int(d)
    if len(shape) >= 2 and int(shape[0]) > 0:
        return int(shape[0]), n // int(shape[0])
    return 1, n


@dataclass(frozen=True)
class ScaleLayout:
    mode: int = SCALE_TENSOR
    group_size: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "ScaleLayout":
        """'tensor', 'channel', 'group:G' (or a ScaleLayout)."""
        if isinstance(text, ScaleLayout):
            return text
        if text is None or text == "tensor":
            return cls(SCALE_TENSOR, 0)
        if text == "channel":
            return cls(SCALE_CHANNEL, 0)
        if text.startswith("group"):
            _, _, g = text.partition(":")
            g = int(g or 64)
            if not 1 <= g <= MAX_GROUP_SIZE:
                raise InputError(f"group size must be 1..{MAX_GROUP_SIZE}")
            return cls(SCALE_GROUP, g)
        raise InputError(f"scales must be 'tensor', 'channel' or 'group:G', not {text!r}")

    def describe(self) -> str:
        return f"group:{self.group_size}" if self.mode == SCALE_GROUP else SCALE_NAMES[self.mode]

    def count(self, rows: int, cols: int) -> int:
        """Number of stored scales (0 for a per-tensor scale, which lives in params)."""
        if self.mode == SCALE_CHANNEL:
            return rows
        if self.mode == SCALE_GROUP:
            return rows * (-(-cols // self.group_size))
        return 0

    def expand(self, scales: np.ndarray | float, rows: int, cols: int) -> np.ndarray:
        """The binary64 scale of every element as a (rows, cols)-broadcastable array."""
        if self.mode == SCALE_TENSOR:
            return np.full((1, 1), np.float64(np.float32(scales)))
        s = np.asarray(scales, dtype=np.float32).astype(np.float64)
        if self.mode == SCALE_CHANNEL:
            return s.reshape(rows, 1)
        g = self.group_size
        per_row = -(-cols // g)
        # a group longer than the row covers the whole row: repeating it `cols` times gives the
        # same array, and a declared group_size (up to 2^24) never sizes an allocation
        return np.repeat(s.reshape(rows, per_row), min(g, cols), axis=1)[:, :cols]


def rms_per(xm: np.ndarray, layout: ScaleLayout) -> np.ndarray:
    """RMS of the finite values of each scale's elements (a scalar for a per-tensor layout)."""
    xf = np.where(np.isfinite(xm), xm, 0.0)
    if layout.mode == SCALE_TENSOR:
        return np.sqrt(np.mean(xf * xf)) if xf.size else np.float64(0.0)
    if layout.mode == SCALE_CHANNEL:
        return np.sqrt(np.mean(xf * xf, axis=1)) if xf.shape[1] else np.zeros(xf.shape[0])
    rows, cols = xf.shape
    g = layout.group_size
    per_row = -(-cols // g)
    pad = per_row * g - cols
    xp = np.pad(xf, ((0, 0), (0, pad))) if pad else xf
    sq = (xp * xp).reshape(rows, per_row, g).sum(axis=2)
    cnt = np.full(per_row, g, np.float64)
    cnt[-1] = g - pad
    return np.sqrt(sq / cnt).reshape(-1)


def maxabs_per(xm: np.ndarray, layout: ScaleLayout) -> np.ndarray:
    xf = np.abs(np.where(np.isfinite(xm), xm, 0.0))
    if layout.mode == SCALE_TENSOR:
        return xf.max() if xf.size else np.float64(0.0)
    if layout.mode == SCALE_CHANNEL:
        return xf.max(axis=1) if xf.shape[1] else np.zeros(xf.shape[0])
    rows, cols = xf.shape
    g = layout.group_size
    per_row = -(-cols // g)
    pad = per_row * g - cols
    xp = np.pad(xf, ((0, 0), (0, pad))) if pad else xf
    return xp.reshape(rows, per_row, g).max(axis=2).reshape(-1)


def choose_scales(xm: np.ndarray, layout: ScaleLayout, *, step: float | None = None,
                  rel_step: float | None = None, max_level: int = MAX_BASE_LEVEL) -> np.ndarray:
    """Scales (float32, one per scale of the layout; a 0-d array for a per-tensor layout).

    `step` is an absolute step for every scale; `rel_step` a step relative to each scale's RMS.
    No value is ever clipped: a scale is raised until max|x| / s <= max_level, and a scale of an
    all-zero (or empty) slice is the layout's fallback 1.0 (any positive value decodes to 0)."""
    if (step is None) == (rel_step is None):
        raise InputError("give exactly one of step= and rel_step=")
    if step is not None:
        if not (np.isfinite(step) and step > 0):
            raise InputError(f"step must be a positive finite number, not {step}")
        s = np.broadcast_to(np.float64(step), np.shape(rms_per(xm, layout))).astype(np.float64)
    else:
        if not (np.isfinite(rel_step) and rel_step > 0):
            raise InputError(f"rel_step must be a positive finite number, not {rel_step}")
        s = np.asarray(rms_per(xm, layout), dtype=np.float64) * rel_step
    big = np.asarray(maxabs_per(xm, layout), dtype=np.float64) / (max_level * 0.999)
    s = np.maximum(s, big)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    s = np.where(s > 0, s, 1.0)
    with np.errstate(over="ignore"):
        s32 = np.maximum(s, tiny).astype(np.float32)
    # a scale beyond float32's range (float64 tensors only) saturates; the caller may clamp levels
    s32 = np.where(np.isfinite(s32), s32, np.finfo(np.float32).max).astype(np.float32)
    # rounding to float32 must not push a level past max_level: nudge up one ulp where needed
    # (not at float32's largest value: the next one up is infinite, and a scale must be finite)
    low = (s32.astype(np.float64) < big) & (s32 < np.finfo(np.float32).max)
    if np.any(low):
        s32 = np.where(low, np.nextafter(s32, np.float32(np.inf)), s32).astype(np.float32)
    return s32


# -- levels ----------------------------------------------------------------------------------------
def quantize(u: np.ndarray, max_level: int) -> np.ndarray:
    """Levels round(u) (nearest, ties to even) as int64, clamped to ±max_level; non-finite u gives
    level 0. Encoder side only: a decoder never rounds."""
    u = np.asarray(u, dtype=np.float64)
    k = np.rint(np.where(np.isfinite(u), u, 0.0))
    np.clip(k, -max_level, max_level, out=k)
    return k.astype(np.int64)


def zigzag_encode(k: np.ndarray) -> np.ndarray:
    """Signed -> unsigned: 0, -1, 1, -2, 2, ... -> 0, 1, 2, 3, 4, ... (uint64)."""
    k = np.asarray(k, dtype=np.int64)
    return ((k << 1) ^ (k >> 63)).view(np.uint64)


def zigzag_decode(u: np.ndarray) -> np.ndarray:
    u = np.asarray(u).astype(np.uint64)
    return ((u >> np.uint64(1)).view(np.int64)) ^ -((u & np.uint64(1)).view(np.int64))


def level_dtype(top: int) -> D.DType:
    """The narrowest unsigned level dtype holding zigzag values up to `top`."""
    for d in LEVEL_DTYPES:
        if top < (1 << (8 * d.itemsize)):
            return d
    raise InputError(f"zigzag level {top} does not fit 32 bits")


def pack_levels(k: np.ndarray) -> tuple[D.DType, np.ndarray]:
    z = zigzag_encode(k.reshape(-1))
    dt = level_dtype(int(z.max()) if z.size else 0)
    return dt, z.astype(dt.uint)


# -- dependent (trellis-coded) quantization -----------------------------------------------------
def dependent_selector(k: np.ndarray) -> np.ndarray:
    """a_j for levels k (rows, cols): the quantizer selector of the 4-state machine of §3.2
    (state 0 at the start of every row; state = 2a + b, next = ((b XOR parity(k)) << 1) | a).
    Unrolled: a_0 = 0, a_1 = p_0, a_j = a_{j-2} XOR p_{j-1}: a prefix XOR over every other
    position, so it vectorises."""
    k = np.asarray(k)
    p = (k & 1).astype(np.uint8)
    a = np.zeros_like(p)
    if p.shape[1] > 1:
        even = np.bitwise_xor.accumulate(p[:, 0::2], axis=1)   # p_0, p_0^p_2, ...
        a[:, 1::2] = even[:, :a[:, 1::2].shape[1]]
        if p.shape[1] > 2:
            odd = np.bitwise_xor.accumulate(p[:, 1::2], axis=1)
            a[:, 2::2] = odd[:, :a[:, 2::2].shape[1]]
    return a


def multipliers(k: np.ndarray, quantizer: int) -> np.ndarray:
    """The integer multiple of the step each level stands for (§3): k for the uniform quantizer,
    2k - a·sgn(k) for the dependent one. `k` is (rows, cols) int64."""
    k = np.asarray(k, dtype=np.int64)
    if quantizer == QUANTIZER_UNIFORM:
        return k
    a = dependent_selector(k).astype(np.int64)
    return 2 * k - a * np.sign(k)


def dependent_levels(u: np.ndarray, lam: float = 0.0) -> np.ndarray:
    """Encoder: levels of the dependent quantizer for u = x / s (rows, cols), by a Viterbi search
    over the 4-state trellis minimising (u - m)^2 + lam·bits (the search of the `quantized` record
    kind; encoder only, it does not affect decoding)."""
    from .records.quantized import default_rate_table, trellis_levels
    u = np.ascontiguousarray(np.where(np.isfinite(u), u, 0.0), dtype=np.float64)
    return trellis_levels(u, lam, default_rate_table(u) if lam else None)


# -- refinement and reconstruction ---------------------------------------------------------------
def refine(acc: np.ndarray, q: np.ndarray, bits: int) -> np.ndarray:
    """A' = A·2^bits + q, exact int64 (§5)."""
    return (np.asarray(acc, dtype=np.int64) << np.int64(bits)) + np.asarray(q, dtype=np.int64)


def step_of(scale64: np.ndarray, shift: int) -> np.ndarray:
    """s·2^-shift, exact in binary64 (a power-of-two scaling of a binary32 value)."""
    return np.ldexp(scale64, -int(shift))


def dequantize(acc: np.ndarray, scale64: np.ndarray, shift: int = 0) -> np.ndarray:
    """float64(A) × (s·2^-shift): one binary64 multiplication, round to nearest even (§3).
    `acc` is (rows, cols) int64, `scale64` broadcastable to it."""
    return np.asarray(acc, dtype=np.int64).astype(np.float64) * step_of(scale64, shift)


# -- error statistics ------------------------------------------------------------------------------
def error_stats(x: np.ndarray, y: np.ndarray) -> dict:
    """ErrorStats (container §6.4) over the elements whose original value x is finite, in
    binary64 (a non-finite original has no error to measure; only an exact decode restores it)."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    fin = np.isfinite(x)
    if not fin.all():
        x, y = x[fin], y[fin]
    if x.size == 0:
        return dict(max_abs_error=0.0, mean_squared_error=0.0, signal_power=0.0)
    d = x - y
    return dict(max_abs_error=float(np.max(np.abs(d))), mean_squared_error=float(np.mean(d * d)),
                signal_power=float(np.mean(x * x)))


def snr_db(err: dict) -> float:
    mse, p = err["mean_squared_error"], err["signal_power"]
    if mse <= 0:
        return float("inf")
    if p <= 0:
        return float("-inf")
    return 10.0 * float(np.log10(p / mse))


__all__ = [
    "SCALE_TENSOR", "SCALE_CHANNEL", "SCALE_GROUP", "ScaleLayout", "QUANTIZER_UNIFORM",
    "QUANTIZER_DEPENDENT", "dependent_selector", "multipliers", "dependent_levels", "FloatFormat", "FORMATS",
    "float_format", "to_float64", "round_to_dtype", "matrix_shape", "choose_scales", "quantize",
    "zigzag_encode", "zigzag_decode", "level_dtype", "pack_levels", "refine", "step_of",
    "dequantize", "error_stats", "snr_db", "rms_per", "maxabs_per",
]
