"""Record kind 2, `quantized`: spec/records/quantized.md.

A float tensor stored as integer levels and binary32 scales. Decoding is exact integer arithmetic
followed by one IEEE multiplication in binary64 (exact by construction) and one rounding to the
tensor's dtype, so every decoder produces the same bytes (QNT-07). Two quantizers:

- uniform: value = k × s;
- dependent (trellis-coded, 4 states driven by the parity of the levels, as in MPEG NNC / VVC):
  value = (2k − a·sgn(k)) × s, where a ∈ {0, 1} is the high bit of the state, reset to 0 at the start
  of every row. a is a prefix XOR of level parities, so decoding is vectorised (no per-element loop).

Rows (the first dimension) can be split into `class_count` classes, each class's levels in its own
stream, so that the entropy coder of each stream sees rows of similar spread.

The encoder half (`quantize_tensor`) picks levels: plain rounding for the uniform quantizer, a
Viterbi search over the 4-state trellis (distortion + λ·rate) for the dependent one. The search uses
numba when it is installed (`pip install wcodec[fast]`), and a numpy version otherwise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .. import dtypes as D
from ..errors import CorruptPayload, InputError, MalformedRecord
from .base import EncodedRecord, RecordKind, StreamPlan

KIND_ID = 2

QUANTIZER_UNIFORM = 0
QUANTIZER_DEPENDENT = 1
QUANTIZER_NAMES = {QUANTIZER_UNIFORM: "uniform", QUANTIZER_DEPENDENT: "dependent"}

SCALE_TENSOR = 0
SCALE_CHANNEL = 1
SCALE_GROUP = 2
SCALE_NAMES = {SCALE_TENSOR: "tensor", SCALE_CHANNEL: "channel", SCALE_GROUP: "group"}

MAX_CLASSES = 16
MAX_GROUP_SIZE = 1 << 24
MAX_LEVEL = 1 << 28          # |k| ≤ 2^28, so |m| ≤ 2^29 and m × s is exact in binary64 (QNT-06)
LEVEL_DTYPES = (D.BY_NAME["uint8"], D.BY_NAME["uint16"], D.BY_NAME["uint32"])
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")

# quantizer u8, scale_mode u8, class_count u8, reserved u8, group_size u32, scale f32, reserved u32
PARAMS = struct.Struct("<BBBBIfI")
PARAMS_LENGTH = PARAMS.size  # 16


@dataclass(frozen=True)
class QuantParams:
    quantizer: int
    scale_mode: int
    class_count: int
    group_size: int
    scale: float

    def pack(self) -> bytes:
        return PARAMS.pack(self.quantizer, self.scale_mode, self.class_count, 0,
                           self.group_size, self.scale, 0)

    @classmethod
    def unpack(cls, params: bytes, name: str | None = None) -> "QuantParams":
        if len(params) != PARAMS_LENGTH:
            raise MalformedRecord(f"quantized params are {PARAMS_LENGTH} bytes, not {len(params)}",
                                  rule="QNT-01", tensor=name)
        q, mode, k, r0, g, s, r1 = PARAMS.unpack(params)
        if r0 or r1:
            raise MalformedRecord("quantized params reserved fields are not zero", rule="RSV-01",
                                  tensor=name)
        if q not in QUANTIZER_NAMES:
            raise MalformedRecord(f"quantizer {q} is not 0 or 1", rule="QNT-01", tensor=name)
        if mode not in SCALE_NAMES:
            raise MalformedRecord(f"scale_mode {mode} is not 0, 1 or 2", rule="QNT-01",
                                  tensor=name)
        if not 1 <= k <= MAX_CLASSES:
            raise MalformedRecord(f"class_count {k} not in 1..{MAX_CLASSES}", rule="QNT-01",
                                  tensor=name)
        if (mode == SCALE_GROUP) != (1 <= g <= MAX_GROUP_SIZE) or (mode != SCALE_GROUP and g):
            raise MalformedRecord(f"group_size {g} with scale_mode {mode}", rule="QNT-01",
                                  tensor=name)
        if mode == SCALE_TENSOR:
            if not np.isfinite(s):
                raise MalformedRecord("the tensor scale is not finite", rule="QNT-01",
                                      tensor=name)
        elif PARAMS.pack(q, mode, k, 0, g, s, 0)[8:12] != b"\0\0\0\0":
            raise MalformedRecord("scale must be +0.0 unless scale_mode is 0", rule="QNT-01",
                                  tensor=name)
        return cls(q, mode, k, g, s)


def rows_cols(shape) -> tuple[int, int]:
    """The matrix view of a tensor (QNT-02): rows = shape[0] for rank ≥ 2, else one row."""
    n = 1
    for d in shape:
        n *= int(d)
    if len(shape) >= 2 and shape[0] > 0:
        return int(shape[0]), n // int(shape[0])
    return 1, n


def scale_count(p: QuantParams, rows: int, cols: int) -> int:
    if p.scale_mode == SCALE_CHANNEL:
        return rows
    if p.scale_mode == SCALE_GROUP:
        return rows * (-(-cols // p.group_size))
    return 0


# -- exact reconstruction (decoder and encoder share it) -------------------------------------------
def zigzag_decode(u: np.ndarray) -> np.ndarray:
    u = u.astype(np.int64)
    return (u >> 1) ^ -(u & 1)


def zigzag_encode(k: np.ndarray) -> np.ndarray:
    k = k.astype(np.int64)
    return ((k << 1) ^ (k >> 63)).astype(np.uint64)


def dependent_selector(k: np.ndarray) -> np.ndarray:
    """a for each level of a (rows, cols) array: the high bit of the 4-state machine, state 0 at
    the start of each row. With s = 2a + b and next = ((b ⊕ parity) << 1) | a, a_{j} = a_{j−2} ⊕
    parity_{j−1}: a prefix XOR over every other position (QNT-07)."""
    p = (k & 1).astype(np.uint8)
    a = np.zeros_like(p)
    if p.shape[1] > 1:
        even = np.bitwise_xor.accumulate(p[:, 0::2], axis=1)   # parities at 0, 2, 4, ...
        a[:, 1::2] = even[:, :a[:, 1::2].shape[1]]            # a_{2m+1} = p_0 ⊕ p_2 ⊕ … ⊕ p_{2m}
        if p.shape[1] > 2:
            odd = np.bitwise_xor.accumulate(p[:, 1::2], axis=1)
            a[:, 2::2] = odd[:, :a[:, 2::2].shape[1]]         # a_{2m} = p_1 ⊕ … ⊕ p_{2m−1}
    return a


def multipliers(k: np.ndarray, quantizer: int) -> np.ndarray:
    """The integer m of each element (rows, cols): k, or 2k − a·sgn(k) for the dependent one."""
    if quantizer == QUANTIZER_UNIFORM:
        return k
    a = dependent_selector(k).astype(np.int64)
    return 2 * k - a * np.sign(k)


def _f64_to_bf16_bits(y: np.ndarray) -> np.ndarray:
    """Round binary64 to bfloat16 once, to nearest even: round to odd into binary32 (exact for a
    later rounding to fewer bits), then round the binary32 to nearest even into bfloat16."""
    with np.errstate(over="ignore", invalid="ignore"):
        f = y.astype(np.float32)
    bits = f.view(np.uint32).copy()
    back = f.astype(np.float64)
    finite = np.isfinite(y)
    # round to nearest gave a value farther from zero than y: step one ulp toward zero
    away = finite & (np.abs(back) > np.abs(y))
    bits[away] -= 1
    inexact = finite & (back != y)
    bits[inexact] |= 1
    # a finite y beyond binary32's range: truncation toward zero gives the largest finite, odd
    huge = finite & ~np.isfinite(f)
    bits[huge] = (bits[huge] & 0x80000000) | 0x7F7FFFFF
    lsb = (bits >> 16) & 1
    out = (bits + 0x7FFF + lsb) >> 16
    nan = np.isnan(y)
    out[nan] = 0x7FC0
    return out.astype(np.uint16)


def round_to_dtype(y: np.ndarray, dtype: D.DType) -> np.ndarray:
    """binary64 values to the tensor dtype's little-endian bit patterns, round to nearest even."""
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype.name == "float64":
            return y.astype("<f8").view("<u8")
        if dtype.name == "float32":
            return y.astype("<f4").view("<u4")
        if dtype.name == "float16":
            return y.astype("<f2").view("<u2")
    if dtype.name == "bfloat16":
        return _f64_to_bf16_bits(y)
    raise InputError(f"quantized records hold float tensors, not {dtype.name}")


def reconstruct(levels: np.ndarray, p: QuantParams, shape, dtype: D.DType,
                scales: np.ndarray | None) -> np.ndarray:
    """Levels in tensor order (int64, n) to the tensor's bit patterns (QNT-07)."""
    rows, cols = rows_cols(shape)
    k = levels.reshape(rows, cols)
    m = multipliers(k, p.quantizer).astype(np.float64)
    if p.scale_mode == SCALE_TENSOR:
        y = m * np.float64(np.float32(p.scale))
    elif p.scale_mode == SCALE_CHANNEL:
        y = m * scales.astype(np.float64)[:, None]
    else:
        g = p.group_size
        per_row = -(-cols // g)
        s = scales.astype(np.float64).reshape(rows, per_row)
        y = m * np.repeat(s, g, axis=1)[:, :cols]
    return round_to_dtype(y.reshape(-1), dtype)


def to_float64(elements: np.ndarray, dtype: D.DType) -> np.ndarray:
    """A tensor's bit patterns (1-D unsigned) as binary64 values."""
    if dtype.name == "bfloat16":
        return (elements.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    if dtype.name in ("float64", "float32", "float16"):
        return elements.view(np.dtype(dtype.numpy_name)).astype(np.float64)
    raise InputError(f"quantized records hold float tensors, not {dtype.name}")


def error_stats(x: np.ndarray, y: np.ndarray) -> dict:
    """ErrorStats of container §6.4, in binary64."""
    if x.size == 0:
        return dict(max_abs_error=0.0, mean_squared_error=0.0, signal_power=0.0)
    d = x - y
    return dict(max_abs_error=float(np.max(np.abs(d))), mean_squared_error=float(np.mean(d * d)),
                signal_power=float(np.mean(x * x)))


# -- the record kind -------------------------------------------------------------------------------
def _level_dtype(stream_dtype_code: int):
    for d in LEVEL_DTYPES:
        if d.code == stream_dtype_code:
            return d
    return None


class Quantized(RecordKind):
    kind_id = KIND_ID
    name = "quantized"

    @classmethod
    def encode(cls, dtype, shape, elements, options, *, step: float | None = None,
               rel_step: float | None = None, quantizer: str = "dependent",
               scale_mode: str = "tensor", group_size: int = 0, classes: int = 1,
               lam: float = 0.0, values: np.ndarray | None = None) -> EncodedRecord:
        """Quantize one float tensor. `step` is the scale s of a per-tensor record; channel and
        group records get s = rel_step × RMS of the channel/group. `lam` is the trellis' rate
        weight (in units of s², bits). `values` may pass the tensor as binary64 already."""
        if dtype.name not in FLOAT_DTYPES:
            raise InputError(f"quantized records hold float tensors, not {dtype.name}")
        x = to_float64(elements, dtype) if values is None else values
        if not np.all(np.isfinite(x)):
            raise InputError("a tensor with NaN or infinite values cannot be quantized")
        rows, cols = rows_cols(shape)
        q = quantizer_code(quantizer)
        mode = {v: k for k, v in SCALE_NAMES.items()}[scale_mode]
        xm = x.reshape(rows, cols)
        if mode == SCALE_TENSOR:
            if step is None:
                raise InputError("a per-tensor quantized record needs step=")
            s32 = np.float32(step)
            scales = None
            smat = np.float64(s32)
        else:
            g = cols if mode == SCALE_CHANNEL else int(group_size)
            if mode == SCALE_GROUP and not 1 <= g <= MAX_GROUP_SIZE:
                raise InputError(f"group_size must be 1..{MAX_GROUP_SIZE}")
            if rel_step is None:
                raise InputError("channel and group records need rel_step=")
            scales = group_scales(xm, g, rel_step)
            per_row = -(-cols // g)
            smat = np.repeat(scales.astype(np.float64).reshape(rows, per_row), g, axis=1)[:, :cols]
            s32 = np.float32(0.0)
        k = quantize_levels(xm, smat, q, lam=lam)
        p = QuantParams(q, mode, 1, int(group_size) if mode == SCALE_GROUP else 0, float(s32))
        # row classes for the entropy coder: equal-count classes by row RMS
        cls_of_row = None
        if classes > 1 and rows >= 2 * classes:
            cls_of_row = row_classes(xm, classes)
            p = QuantParams(p.quantizer, p.scale_mode, classes, p.group_size, p.scale)
        decoded = reconstruct(k.reshape(-1), p, shape, dtype, scales)
        y = to_float64(decoded, dtype)
        error = error_stats(x, y)
        streams = level_streams(k, cls_of_row, p.class_count, options)
        if cls_of_row is not None:
            cm = cls_of_row.astype(np.uint8)
            streams.append(StreamPlan(D.BY_NAME["uint8"], (rows,), cm,
                                      options.chain_for(D.BY_NAME["uint8"]),
                                      options.chunk_elements))
        if scales is not None:
            f32 = D.BY_NAME["float32"]
            streams.append(StreamPlan(f32, (scales.size,), scales.view(np.uint32),
                                      options.chain_for(f32), options.chunk_elements))
        return EncodedRecord(params=p.pack(), streams=streams, lossy=True, error=error,
                             decoded=decoded.view(np.uint8))

    @classmethod
    def check(cls, record, name):
        p = QuantParams.unpack(bytes(record.params), name)
        dtype = D.by_code(record.dtype)
        if dtype.name not in FLOAT_DTYPES:
            raise MalformedRecord(f"a quantized record holds a float tensor, not {dtype.name}",
                                  rule="QNT-02", tensor=name)
        if not record.record_flags & 0x02:
            raise MalformedRecord("a quantized record has the lossy flag set", rule="QNT-02",
                                  tensor=name)
        rows, cols = rows_cols(record.shape)
        n = rows * cols
        expect = p.class_count + (1 if p.class_count > 1 else 0) + \
            (1 if p.scale_mode != SCALE_TENSOR else 0)
        if record.stream_count != expect:
            raise MalformedRecord(f"{record.stream_count} streams, the params call for {expect}",
                                  rule="QNT-03", tensor=name)
        s = record.streams
        total = 0
        for c in range(p.class_count):
            if _level_dtype(s[c].stream_dtype) is None or s[c].stream_rank != 1:
                raise MalformedRecord(f"level stream {c} is not a rank-1 uint8/16/32 stream",
                                      rule="QNT-03", tensor=name)
            if s[c].stream_shape[0] % max(cols, 1):
                raise MalformedRecord(f"level stream {c} does not hold whole rows",
                                      rule="QNT-03", tensor=name)
            total += s[c].stream_shape[0]
        if total != n:
            raise MalformedRecord(f"level streams hold {total} levels for {n} elements",
                                  rule="QNT-03", tensor=name)
        i = p.class_count
        if p.class_count > 1:
            if s[i].stream_dtype != D.BY_NAME["uint8"].code or list(s[i].stream_shape) != [rows]:
                raise MalformedRecord("the class map is a uint8 stream of one entry per row",
                                      rule="QNT-03", tensor=name)
            i += 1
        if p.scale_mode != SCALE_TENSOR:
            if s[i].stream_dtype != D.BY_NAME["float32"].code or \
                    list(s[i].stream_shape) != [scale_count(p, rows, cols)]:
                raise MalformedRecord("the scale stream is float32 with one entry per "
                                      "channel or group", rule="QNT-03", tensor=name)

    @classmethod
    def assemble(cls, record, streams, out, ctx, **options):
        name = record.name.decode("utf-8", "replace")
        p = QuantParams.unpack(bytes(record.params), name)
        dtype = D.by_code(record.dtype)
        rows, cols = rows_cols(record.shape)
        per_class = []
        for c in range(p.class_count):
            sd = _level_dtype(record.streams[c].stream_dtype)
            per_class.append(zigzag_decode(streams[c].view(sd.uint)))
        i = p.class_count
        if p.class_count > 1:
            cmap = streams[i].view(np.uint8)
            i += 1
            if cmap.size and int(cmap.max()) >= p.class_count:
                raise CorruptPayload("class map names a class ≥ class_count", rule="QNT-04",
                                     tensor=name)
            counts = np.bincount(cmap, minlength=p.class_count)
            for c in range(p.class_count):
                if counts[c] * cols != per_class[c].size:
                    raise CorruptPayload(f"class {c} has {counts[c]} rows, its stream "
                                         f"{per_class[c].size} levels", rule="QNT-04",
                                         tensor=name)
            k = np.empty((rows, cols), np.int64)
            for c in range(p.class_count):
                k[cmap == c] = per_class[c].reshape(-1, cols)
            levels = k.reshape(-1)
        else:
            levels = per_class[0]
        if levels.size and int(np.abs(levels).max()) > MAX_LEVEL:
            raise CorruptPayload(f"a level exceeds 2^28 in magnitude", rule="QNT-06",
                                 tensor=name)
        scales = None
        if p.scale_mode != SCALE_TENSOR:
            scales = streams[i].view("<f4")
            if not np.all(np.isfinite(scales)):
                raise CorruptPayload("a scale is not finite", rule="QNT-05", tensor=name)
        bits = reconstruct(levels, p, record.shape, dtype, scales)
        out[:] = bits.view(np.uint8)

    @classmethod
    def describe(cls, record) -> dict:
        p = QuantParams.unpack(bytes(record.params))
        d = {"quantizer": QUANTIZER_NAMES[p.quantizer], "scales": SCALE_NAMES[p.scale_mode],
             "classes": p.class_count}
        if p.scale_mode == SCALE_TENSOR:
            d["step"] = p.scale
        if p.scale_mode == SCALE_GROUP:
            d["group_size"] = p.group_size
        return d


def quantizer_code(name) -> int:
    if isinstance(name, int):
        return name
    codes = {"uniform": QUANTIZER_UNIFORM, "dependent": QUANTIZER_DEPENDENT,
             "dq": QUANTIZER_DEPENDENT, "trellis": QUANTIZER_DEPENDENT}
    try:
        return codes[name]
    except KeyError:
        raise InputError(f"quantizer must be 'uniform' or 'dependent', not {name!r}") from None


def level_streams(k: np.ndarray, cls_of_row, class_count: int, options) -> list[StreamPlan]:
    """Zigzag levels in the narrowest unsigned dtype, one stream per row class (rows in order)."""
    rows, cols = k.shape
    parts = [k] if cls_of_row is None else [k[cls_of_row == c] for c in range(class_count)]
    out = []
    for part in parts:
        z = zigzag_encode(part.reshape(-1))
        top = int(z.max()) if z.size else 0
        sd = next(d for d in LEVEL_DTYPES if top < (1 << (8 * d.itemsize)))
        out.append(StreamPlan(sd, (z.size,), z.astype(sd.uint), options.chain_for(sd),
                              options.chunk_elements))
    return out


def row_classes(xm: np.ndarray, classes: int) -> np.ndarray:
    """Equal-count classes of rows by RMS (class 0 the smallest)."""
    rms = np.sqrt(np.mean(xm * xm, axis=1))
    order = np.argsort(rms, kind="stable")
    cls = np.empty(xm.shape[0], np.int64)
    cls[order] = (np.arange(xm.shape[0]) * classes) // xm.shape[0]
    return cls


def group_scales(xm: np.ndarray, g: int, rel_step: float) -> np.ndarray:
    rows, cols = xm.shape
    per_row = -(-cols // g)
    pad = per_row * g - cols
    xp = np.pad(xm, ((0, 0), (0, pad))) if pad else xm
    sq = (xp * xp).reshape(rows, per_row, g).sum(axis=2)
    cnt = np.full(per_row, g, np.float64)
    cnt[-1] = g - pad
    rms = np.sqrt(sq / cnt)
    return (rms * rel_step).astype(np.float32).reshape(-1)


# -- encoder: choosing levels ----------------------------------------------------------------------
def quantize_levels(xm: np.ndarray, smat, quantizer: int, *, lam: float = 0.0,
                    bits: np.ndarray | None = None) -> np.ndarray:
    """Levels (rows, cols) int64 for values xm and scales smat (scalar or (rows, cols))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(smat != 0, xm / smat, 0.0)
    if quantizer == QUANTIZER_UNIFORM:
        k = np.rint(u)
    else:
        k = trellis_levels(u, lam, bits)
    if k.size and np.abs(k).max() > MAX_LEVEL:
        raise InputError("step too small for this tensor: a level exceeds 2^28")
    return k.astype(np.int64)


def default_rate_table(u: np.ndarray, K: int = 64) -> np.ndarray:
    """−log2 of the smoothed frequency of the nearest dependent-quantizer level k ≈ u/2."""
    k0 = np.clip(np.rint(u.reshape(-1)[:: max(1, u.size // 65536)] * 0.5), -K, K).astype(np.int64)
    c = np.bincount(k0 + K, minlength=2 * K + 1).astype(np.float64) + 0.5
    return -np.log2(c / c.sum())


def trellis_levels(u: np.ndarray, lam: float = 0.0, bits: np.ndarray | None = None) -> np.ndarray:
    """Viterbi search of the 4-state dependent quantizer for u = x / s (rows, cols): per row, the
    level sequence minimising Σ (u − m)² + lam · bits(k), state 0 at the start of each row."""
    u = np.ascontiguousarray(u, dtype=np.float64)
    if bits is None:
        bits = default_rate_table(u) if lam else np.zeros(3)
    K = (bits.size - 1) // 2
    out = np.empty(u.shape, np.int64)
    if u.size == 0:
        return out
    fn = _numba_trellis()
    if fn is not None:
        fn(u, float(lam), np.ascontiguousarray(bits, np.float64), K, out)
    else:
        _numpy_trellis(u, float(lam), bits, K, out)
    return out


_NUMBA = None


def _numba_trellis():
    global _NUMBA
    if _NUMBA is None:
        try:
            from ._trellis_nb import trellis_rows
            _NUMBA = trellis_rows
        except Exception:  # numba missing or unusable: the numpy version does the same search
            _NUMBA = False
    return _NUMBA or None


def _numpy_trellis(u, lam, bits, K, out):
    """Same search as _trellis_nb.trellis_rows, vectorised across rows (slow for few long rows)."""
    R, C = u.shape
    J = np.full((R, 4), np.inf)
    J[:, 0] = 0.0
    BP = np.empty((C, R, 4), np.uint8)
    LV = np.empty((C, R, 4), np.int64)

    def rate(k):
        return bits[np.clip(k, -K, K) + K]
    z_rate = lam * bits[K]
    for j in range(C):
        x = u[:, j]
        ka = np.floor(x * 0.5).astype(np.int64)
        kb = ka + 1
        ca = (x - 2.0 * ka) ** 2 + lam * rate(ka)
        cb = (x - 2.0 * kb) ** 2 + lam * rate(kb)
        z = x * x + z_rate
        odd = (ka & 1) == 1
        c00, k00 = np.where(odd, cb, ca), np.where(odd, kb, ka)
        c01, k01 = np.where(odd, ca, cb), np.where(odd, ka, kb)
        m = z < c00
        c00, k00 = np.where(m, z, c00), np.where(m, 0, k00)
        mm = np.floor((x - 1.0) * 0.5).astype(np.int64)
        r1 = 2 * mm + 1
        r2 = r1 + 2
        k1 = np.where(r1 > 0, (r1 + 1) // 2, (r1 - 1) // 2)
        k2 = np.where(r2 > 0, (r2 + 1) // 2, (r2 - 1) // 2)
        c1 = (x - r1) ** 2 + lam * rate(k1)
        c2 = (x - r2) ** 2 + lam * rate(k2)
        inf = np.inf
        e1, e2 = np.where(k1 & 1, inf, c1), np.where(k2 & 1, inf, c2)
        c10 = np.minimum(np.minimum(e1, e2), z)
        k10 = np.where(z <= np.minimum(e1, e2), 0, np.where(e1 <= e2, k1, k2))
        o1, o2 = np.where(k1 & 1, c1, inf), np.where(k2 & 1, c2, inf)
        c11 = np.minimum(o1, o2)
        k11 = np.where(o1 <= o2, k1, k2)
        C_ = ((c00, c01), (c10, c11))
        K_ = ((k00, k01), (k10, k11))
        nJ = np.empty_like(J)
        for s in range(4):
            ap, bp = s >> 1, s & 1
            v0 = J[:, 2 * bp] + C_[bp][ap]
            v1 = J[:, 2 * bp + 1] + C_[bp][ap ^ 1]
            sel = v1 < v0
            nJ[:, s] = np.where(sel, v1, v0)
            BP[j, :, s] = sel
            LV[j, :, s] = np.where(sel, K_[bp][ap ^ 1], K_[bp][ap])
        J = nJ
    s = np.argmin(J, axis=1)
    g = np.arange(R)
    for j in range(C - 1, -1, -1):
        out[:, j] = LV[j, g, s]
        s = 2 * (s & 1) + BP[j, g, s]
