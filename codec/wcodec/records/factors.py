"""Record kind 5, `factors`: spec/records/factors.md.

A float tensor stored as the factors of a factorization of its matrix view (or of a stated
reshaping of it): low-rank U·V, Tucker (a core and one factor per mode) or tensor-train / MPO
(a chain of 4-way cores). Each factor is its own stream with its own codec chain: its values as
floats, or levels and scales of the shared quantization primitive (spec/quantization.md). An
optional residual makes the result exact (the bit-domain remainder of record kind 3) or adds a
quantized correction (a "quantized base + low-rank" record is this kind with a quantized residual).

Decoding is exact-order binary64 arithmetic: every product and every sum is one IEEE operation,
rounded to nearest even, in the order the spec fixes (rank index increasing, no fused multiply-add).
numpy guarantees that for separate elementwise multiply and add ufunc calls, so the contractions
below accumulate one rank-1 term at a time into a binary64 array and never call matmul/einsum
(BLAS leaves the summation order unspecified).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes as D
from .. import quant as Q
from ..errors import CorruptPayload, InputError, MalformedRecord
from .base import EncodedRecord, RecordKind, StreamPlan
from .bands import (apply_remainder, remainder_encode, remainder_order,
                    trailing_zero_bits)

KIND_ID = 5

LOW_RANK, TUCKER, TENSOR_TRAIN = 1, 2, 3
FACTORIZATION_NAMES = {LOW_RANK: "low_rank", TUCKER: "tucker", TENSOR_TRAIN: "tensor_train"}
FACTORIZATION_CODES = {v: k for k, v in FACTORIZATION_NAMES.items()}

RESIDUAL_NONE, RESIDUAL_EXACT, RESIDUAL_QUANTIZED = 0, 1, 2
RESIDUAL_NAMES = {RESIDUAL_NONE: "none", RESIDUAL_EXACT: "exact",
                  RESIDUAL_QUANTIZED: "quantized"}

ENC_FLOAT, ENC_QUANTIZED = 0, 1
ENCODING_NAMES = {ENC_FLOAT: "float", ENC_QUANTIZED: "quantized"}

MAX_ORDER = 8                        # Tucker modes / tensor-train cores
TENSOR_DTYPES = ("float64", "float32", "float16", "bfloat16")
FACTOR_DTYPES = TENSOR_DTYPES

# factorization u8, order u8, residual u8, residual_shift u8, residual_quantizer u8,
# residual_scale_mode u8, reserved u16, residual_group_size u32, residual_scale f32,
# approx_error ErrorStats (3 x f64)
HEAD = struct.Struct("<BBBBBBHIfddd")
MODE = struct.Struct("<III")         # size_a, size_b, rank
FACTOR = struct.Struct("<BBBBIf")    # encoding, quantizer, scale_mode, reserved, group_size, scale


@dataclass
class FactorCodec:
    """How one factor is stored: as floats of `dtype`, or quantized (levels + scales)."""

    encoding: int = ENC_FLOAT
    dtype: str = "float32"                 # ENC_FLOAT only (stream dtype)
    quantizer: int = Q.QUANTIZER_UNIFORM   # ENC_QUANTIZED only
    layout: Q.ScaleLayout = field(default_factory=Q.ScaleLayout)
    scale: float = 0.0                     # the per-tensor scale (layout mode 0)
    bits: int = 8                          # encoder only: levels within ±(2^(bits-1) - 1)


@dataclass
class FactorParams:
    factorization: int
    modes: list[tuple[int, int, int]]      # (size_a, size_b, rank) per mode entry
    factors: list[FactorCodec]
    residual: int = RESIDUAL_NONE
    residual_shift: int = 0
    residual_quantizer: int = 0
    residual_layout: Q.ScaleLayout = field(default_factory=Q.ScaleLayout)
    residual_scale: float = 0.0
    approx_error: dict = field(default_factory=lambda: dict(
        max_abs_error=0.0, mean_squared_error=0.0, signal_power=0.0))

    @property
    def order(self) -> int:
        return len(self.modes)

    def factor_shapes(self) -> list[tuple[int, ...]]:
        return factor_shapes(self.factorization, self.modes)

    def pack(self) -> bytes:
        e = self.approx_error
        out = [HEAD.pack(self.factorization, self.order, self.residual, self.residual_shift,
                         self.residual_quantizer, self.residual_layout.mode, 0,
                         self.residual_layout.group_size, self.residual_scale,
                         e["max_abs_error"], e["mean_squared_error"], e["signal_power"])]
        out += [MODE.pack(*m) for m in self.modes]
        for f in self.factors:
            if f.encoding == ENC_FLOAT:
                out.append(FACTOR.pack(ENC_FLOAT, 0, 0, 0, 0, 0.0))
            else:
                out.append(FACTOR.pack(ENC_QUANTIZED, f.quantizer, f.layout.mode, 0,
                                       f.layout.group_size, f.scale))
        return b"".join(out)

    @classmethod
    def unpack(cls, params: bytes, name: str | None = None) -> "FactorParams":
        def bad(msg):
            return MalformedRecord(msg, rule="FAC-01", tensor=name)
        if len(params) < HEAD.size:
            raise bad(f"factor params of {len(params)} bytes are shorter than their header")
        (fz, order, res, z, rq, rmode, r0, rg, rs, mae, mse, sp) = HEAD.unpack_from(params, 0)
        if fz not in FACTORIZATION_NAMES:
            raise bad(f"factorization {fz} is not 1, 2 or 3")
        lo, hi = (1, 1) if fz == LOW_RANK else (2, MAX_ORDER)
        if not lo <= order <= hi:
            raise bad(f"order {order} not in {lo}..{hi} for {FACTORIZATION_NAMES[fz]}")
        if res not in RESIDUAL_NAMES:
            raise bad(f"residual {res} is not 0, 1 or 2")
        if r0:
            raise MalformedRecord("factor params reserved field is not zero", rule="RSV-01",
                                  tensor=name)
        n_factors = factor_count(fz, order)
        size = HEAD.size + order * MODE.size + n_factors * FACTOR.size
        if len(params) != size:
            raise bad(f"factor params are {len(params)} bytes, {size} expected")
        if res != RESIDUAL_EXACT and z:
            raise bad("residual_shift is 0 unless the residual is exact")
        if res == RESIDUAL_QUANTIZED:
            rlayout = _layout(rq, rmode, rg, rs, params[12:16], bad)
        else:
            if rq or rmode or rg or params[12:16] != b"\0\0\0\0":
                raise bad("residual quantizer fields are zero unless the residual is quantized")
            rlayout = Q.ScaleLayout()
        pos = HEAD.size
        modes = []
        for _ in range(order):
            modes.append(MODE.unpack_from(params, pos))
            pos += MODE.size
        factors = []
        for _ in range(n_factors):
            enc, qz, mode, fr, g, s = FACTOR.unpack_from(params, pos)
            raw_scale = params[pos + 8:pos + 12]
            pos += FACTOR.size
            if fr:
                raise MalformedRecord("factor entry reserved byte is not zero", rule="RSV-01",
                                      tensor=name)
            if enc == ENC_FLOAT:
                if qz or mode or g or raw_scale != b"\0\0\0\0":
                    raise bad("a float factor has zero quantizer, scale_mode, group_size, scale")
                factors.append(FactorCodec(ENC_FLOAT))
            elif enc == ENC_QUANTIZED:
                lay = _layout(qz, mode, g, s, raw_scale, bad)
                factors.append(FactorCodec(ENC_QUANTIZED, "", qz, lay,
                                           float(s) if mode == Q.SCALE_TENSOR else 0.0))
            else:
                raise bad(f"factor encoding {enc} is not 0 or 1")
        return cls(fz, [tuple(int(v) for v in m) for m in modes], factors, res, z, rq, rlayout,
                   float(rs) if res == RESIDUAL_QUANTIZED and rmode == Q.SCALE_TENSOR else 0.0,
                   dict(max_abs_error=mae, mean_squared_error=mse, signal_power=sp))


def _layout(qz, mode, g, s, raw_scale, bad) -> Q.ScaleLayout:
    if qz not in Q.QUANTIZER_NAMES:
        raise bad(f"quantizer {qz} is not 0 or 1")
    if mode not in Q.SCALE_NAMES:
        raise bad(f"scale_mode {mode} is not 0, 1 or 2")
    if (mode == Q.SCALE_GROUP) != (g != 0) or g > Q.MAX_GROUP_SIZE:
        raise bad(f"group_size {g} with scale_mode {mode}")
    if mode == Q.SCALE_TENSOR:
        if not (np.isfinite(s) and s > 0):
            raise bad("the tensor scale is not a positive finite binary32")
    elif bytes(raw_scale) != b"\0\0\0\0":
        raise bad("scale must be +0.0 unless scale_mode is 0 (tensor)")
    return Q.ScaleLayout(mode, g)


def factor_count(fz: int, order: int) -> int:
    return {LOW_RANK: 2, TUCKER: order + 1, TENSOR_TRAIN: order}[fz]


def factor_shapes(fz: int, modes) -> list[tuple[int, ...]]:
    """The shape of every factor, in stream order (spec table *Factors*)."""
    if fz == LOW_RANK:
        rows, cols, r = modes[0]
        return [(rows, r), (r, cols)]
    if fz == TUCKER:
        return [tuple(m[2] for m in modes)] + [(m[0], m[2]) for m in modes]
    out, left = [], 1
    for m, n, r in modes:
        out.append((left, m, n, r))
        left = r
    return out


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def check_ranks(fz: int, modes, shape, name=None) -> None:
    """FAC-03 (the modes fit the tensor) and FAC-04 (every rank 1..its bound), before any
    allocation: every intermediate of the reconstruction then holds at most n elements."""
    rows, cols = Q.matrix_shape(shape)
    n = rows * cols
    if n == 0:
        raise MalformedRecord("a factor record holds a tensor of at least one element",
                              rule="FAC-03", tensor=name)

    def fit(msg):
        return MalformedRecord(msg, rule="FAC-03", tensor=name)

    def rank(msg):
        return MalformedRecord(msg, rule="FAC-04", tensor=name)
    if fz == LOW_RANK:
        a, b, r = modes[0]
        if (a, b) != (rows, cols):
            raise fit(f"low-rank modes {a} x {b} are not the matrix view {rows} x {cols}")
        if not 1 <= r <= min(rows, cols):
            raise rank(f"rank {r} not in 1..{min(rows, cols)}")
        return
    if fz == TUCKER:
        if any(m[1] != 0 for m in modes):
            raise fit("size_b of a Tucker mode is 0")
        if any(m[0] < 1 for m in modes) or _prod(m[0] for m in modes) != n:
            raise fit(f"Tucker mode sizes {[m[0] for m in modes]} do not multiply to {n}")
        for k, (nk, _, r) in enumerate(modes):
            if not 1 <= r <= nk:
                raise rank(f"Tucker rank r_{k + 1} = {r} not in 1..{nk}")
        return
    ms, ns = [m[0] for m in modes], [m[1] for m in modes]
    if min(ms + ns) < 1 or _prod(ms) != rows or _prod(ns) != cols:
        raise fit(f"tensor-train modes {ms} x {ns} do not multiply to {rows} x {cols}")
    p = [a * b for a, b in zip(ms, ns)]
    d = len(modes)
    for k in range(d):
        r = modes[k][2]
        bound = min(_prod(p[:k + 1]), _prod(p[k + 1:])) if k < d - 1 else 1
        if not 1 <= r <= bound:
            raise rank(f"tensor-train rank r_{k + 1} = {r} not in 1..{bound}")


# -- exact reconstruction (spec §Decoding; the encoder uses the same functions) -----------------
def mode_product(x: np.ndarray, u: np.ndarray, k: int) -> np.ndarray:
    """Y = X ×_k U: mode k of x (size r) becomes size n of u (n, r); for every output element
    Σ_a X[.., a, ..]·U[i, a], a increasing, first term the a = 0 product, one rounding per
    multiply and per add."""
    shape = x.shape
    pre, r, post = _prod(shape[:k]), shape[k], _prod(shape[k + 1:])
    x3 = x.reshape(pre, r, post)
    n = u.shape[0]
    out = x3[:, 0:1, :] * u[:, 0].reshape(1, n, 1)
    for a in range(1, r):
        out += x3[:, a:a + 1, :] * u[:, a].reshape(1, n, 1)
    return out.reshape(shape[:k] + (n,) + shape[k + 1:])


def reconstruct(fz: int, modes, values: list[np.ndarray]) -> np.ndarray:
    """The binary64 reconstruction R in the tensor's row-major order (1-D). An overflow gives
    non-finite values, which the caller rejects (FAC-09)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _reconstruct(fz, modes, values)


def _reconstruct(fz: int, modes, values: list[np.ndarray]) -> np.ndarray:
    if fz == LOW_RANK:
        u, v = values
        r = u.shape[1]
        out = u[:, 0:1] * v[0:1, :]
        for a in range(1, r):
            out += u[:, a:a + 1] * v[a:a + 1, :]
        return out.reshape(-1)
    if fz == TUCKER:
        x = values[0]
        for k in range(len(modes)):
            x = mode_product(x, values[k + 1], k)
        return x.reshape(-1)
    # tensor train: X_1 = G_1[0]; X_k[q, p, b] = Σ_a X_{k-1}[q, a]·G_k[a, p, b]
    d = len(modes)
    g = values[0]
    x = g.reshape(g.shape[1] * g.shape[2], g.shape[3])
    for k in range(1, d):
        gk = values[k]
        ra, m, n, rb = gk.shape
        g2 = gk.reshape(ra, m * n * rb)
        out = x[:, 0:1] * g2[0:1, :]
        for a in range(1, ra):
            out += x[:, a:a + 1] * g2[a:a + 1, :]
        x = out.reshape(-1, rb)
    # x[q, 0], q over (i_1, j_1, ..., i_d, j_d): regroup rows before columns (exact, no arithmetic)
    ms, ns = [m[0] for m in modes], [m[1] for m in modes]
    inter = x.reshape([v for pair in zip(ms, ns) for v in pair])
    perm = list(range(0, 2 * d, 2)) + list(range(1, 2 * d, 2))
    return np.ascontiguousarray(inter.transpose(perm)).reshape(-1)


def factor_values(codec: FactorCodec, shape, stream: np.ndarray, scale_stream, stream_dtype,
                  name=None) -> np.ndarray:
    """A factor as exact binary64 values (FAC-07, FAC-08)."""
    if codec.encoding == ENC_FLOAT:
        v = Q.to_float64(stream, stream_dtype)
        if not np.all(np.isfinite(v)):
            raise CorruptPayload("a factor value is not finite", rule="FAC-08", tensor=name)
        return v.reshape(shape)
    rows, cols = Q.matrix_shape(shape)
    m = _multipliers(stream, stream_dtype, codec.quantizer, rows, cols, name)
    s64 = _scales(codec.layout, codec.scale, scale_stream, rows, cols, name)
    return Q.dequantize(m, s64).reshape(shape)


def _multipliers(stream, stream_dtype, quantizer, rows, cols, name):
    k = Q.zigzag_decode(np.asarray(stream).view(stream_dtype.uint)).reshape(rows, cols)
    if k.size and int(np.abs(k).max()) > Q.MAX_BASE_LEVEL:
        raise CorruptPayload(f"a level exceeds 2^23 in magnitude", rule="FAC-07", tensor=name)
    return Q.multipliers(k, quantizer)


def _scales(layout, scale, scale_stream, rows, cols, name):
    if layout.mode == Q.SCALE_TENSOR:
        return layout.expand(scale, rows, cols)
    s = np.asarray(scale_stream).view("<f4")
    if not np.all(np.isfinite(s) & (s > 0)):
        raise CorruptPayload("a scale is not a positive finite binary32", rule="FAC-07",
                             tensor=name)
    return layout.expand(s, rows, cols)


# -- streams ----------------------------------------------------------------------------------
def stream_layout(p: FactorParams) -> list[tuple[str, int | None]]:
    """(role, factor index) of every stream in order: 'factor', 'scales', 'residual',
    'residual_scales'."""
    out = []
    for i, f in enumerate(p.factors):
        out.append(("factor", i))
        if f.encoding == ENC_QUANTIZED and f.layout.mode != Q.SCALE_TENSOR:
            out.append(("scales", i))
    if p.residual != RESIDUAL_NONE:
        out.append(("residual", None))
        if p.residual == RESIDUAL_QUANTIZED and p.residual_layout.mode != Q.SCALE_TENSOR:
            out.append(("residual_scales", None))
    return out


def _level_dtype(code: int):
    for d in Q.LEVEL_DTYPES:
        if d.code == code:
            return d
    return None


class Factors(RecordKind):
    kind_id = KIND_ID
    name = "factors"

    # -- validation -------------------------------------------------------------------------------
    @classmethod
    def check(cls, record, name):
        p = FactorParams.unpack(bytes(record.params), name)
        dtype = D.by_code(record.dtype)
        if dtype.name not in TENSOR_DTYPES:
            raise MalformedRecord(f"a factor record holds a float tensor, not {dtype.name}",
                                  rule="FAC-02", tensor=name)
        width = 8 * dtype.itemsize
        if p.residual_shift >= width:
            raise MalformedRecord(f"residual_shift {p.residual_shift} ≥ {width}",
                                  rule="FAC-02", tensor=name)
        check_ranks(p.factorization, p.modes, record.shape, name)
        rows, cols = Q.matrix_shape(record.shape)
        lay = stream_layout(p)
        if record.stream_count != len(lay):
            raise MalformedRecord(f"{record.stream_count} streams, the params call for "
                                  f"{len(lay)}", rule="FAC-05", tensor=name)
        shapes = p.factor_shapes()
        for s, (role, i) in zip(record.streams, lay):
            got = (s.stream_dtype, list(s.stream_shape))
            if role == "factor":
                want_shape = list(shapes[i])
                if p.factors[i].encoding == ENC_FLOAT:
                    ok = D.by_code(s.stream_dtype).name in FACTOR_DTYPES \
                        if s.stream_dtype in D.BY_CODE else False
                else:
                    ok = _level_dtype(s.stream_dtype) is not None
                if not ok or got[1] != want_shape:
                    raise MalformedRecord(f"factor {i} is not a stream of shape {want_shape} "
                                          "and a valid dtype", rule="FAC-05", tensor=name)
            elif role == "scales":
                fr, fc = Q.matrix_shape(shapes[i])
                want = [p.factors[i].layout.count(fr, fc)]
                if got != (D.BY_NAME["float32"].code, want):
                    raise MalformedRecord(f"factor {i}'s scales are a float32 stream of {want}",
                                          rule="FAC-05", tensor=name)
            elif role == "residual":
                n = rows * cols
                if p.residual == RESIDUAL_EXACT:
                    ok = s.stream_dtype == D.BY_NAME[f"uint{width}"].code
                else:
                    ok = _level_dtype(s.stream_dtype) is not None
                if not ok or got[1] != [n]:
                    raise MalformedRecord("the residual stream has the wrong dtype or shape",
                                          rule="FAC-05", tensor=name)
            else:
                want = [p.residual_layout.count(rows, cols)]
                if got != (D.BY_NAME["float32"].code, want):
                    raise MalformedRecord("the residual scales are a float32 stream of "
                                          f"{want}", rule="FAC-05", tensor=name)
        lossy = bool(record.record_flags & 0x02)
        if lossy == (p.residual == RESIDUAL_EXACT):
            raise MalformedRecord("a factor record is lossy exactly when its residual is not "
                                  "exact", rule="FAC-06", tensor=name)

    # -- decoder ----------------------------------------------------------------------------------
    @classmethod
    def assemble(cls, record, streams, out, ctx, **options):
        name = record.name.decode("utf-8", "replace")
        p = FactorParams.unpack(bytes(record.params), name)
        dtype = D.by_code(record.dtype)
        sdt = [D.by_code(s.stream_dtype) for s in record.streams]
        out[:] = decode_bits(p, dtype, record.shape, [streams[i] for i in range(len(sdt))],
                             sdt, name).view(np.uint8)

    @classmethod
    def describe(cls, record) -> dict:
        p = FactorParams.unpack(bytes(record.params))
        shapes = p.factor_shapes()
        return {
            "factorization": FACTORIZATION_NAMES[p.factorization],
            "modes": [list(m) for m in p.modes],
            "ranks": [m[2] for m in p.modes],
            "factor_shapes": [list(s) for s in shapes],
            "factor_params": sum(_prod(s) for s in shapes),
            "factor_encodings": [ENCODING_NAMES[f.encoding] for f in p.factors],
            "residual": RESIDUAL_NAMES[p.residual],
            "approx_error": dict(p.approx_error, snr_db=Q.snr_db(p.approx_error)),
        }

    # -- encoder ----------------------------------------------------------------------------------
    @classmethod
    def encode(cls, dtype, shape, elements, options, *, factorization=None,
               residual: str = "none", residual_step: float | None = None,
               residual_rel_step: float | None = None, residual_quantizer: str = "uniform",
               residual_scales: str = "tensor", values: np.ndarray | None = None,
               **decompose) -> EncodedRecord:
        """Encode one float tensor as a factor record.

        `factorization`: a `Factorization` (factor arrays and their codecs, e.g. from
        wcodec.factor_encoder); when None, `decompose` options go to
        wcodec.factor_encoder.decompose (method=, rank=, energy=, eps=, ...).
        `residual`: 'none' (lossy), 'exact' (lossless, bit-domain remainder) or 'quantized'
        (levels of `residual_step` or `residual_rel_step` × RMS, quantizer and scale layout as
        spec/quantization.md)."""
        if dtype.name not in TENSOR_DTYPES:
            raise InputError(f"factor records hold float tensors, not {dtype.name}")
        x = Q.to_float64(elements, dtype) if values is None else np.asarray(values, np.float64)
        if factorization is None:
            from ..factor_encoder import decompose as _decompose
            factorization = _decompose(x, shape, **decompose)
        res = {"none": RESIDUAL_NONE, "exact": RESIDUAL_EXACT,
               "quantized": RESIDUAL_QUANTIZED}.get(residual)
        if res is None:
            raise InputError(f"residual must be 'none', 'exact' or 'quantized', not {residual!r}")
        if res != RESIDUAL_EXACT and not np.all(np.isfinite(x)):
            raise InputError("a lossy factor record cannot hold NaN or infinite values")
        return build_record(dtype, shape, elements, x, factorization, options, res,
                            residual_step, residual_rel_step, residual_quantizer,
                            residual_scales)


@dataclass
class Factorization:
    """What the factor encoder hands the record: the factorization type, its mode entries and
    the factor arrays (binary64) with the codec of each."""

    factorization: int
    modes: list[tuple[int, int, int]]
    arrays: list[np.ndarray]
    codecs: list[FactorCodec]


def encode_factor(a: np.ndarray, codec: FactorCodec):
    """(stored codec, stream plans' (dtype, array) list, exact binary64 values)."""
    if codec.encoding == ENC_FLOAT:
        dt = D.BY_NAME[codec.dtype]
        bits = Q.round_to_dtype(a.reshape(-1), dt)
        return codec, [(dt, bits)], Q.to_float64(bits, dt).reshape(a.shape)
    rows, cols = Q.matrix_shape(a.shape)
    am = a.reshape(rows, cols)
    lay = codec.layout
    max_level = (1 << (max(2, int(codec.bits)) - 1)) - 1
    unit = 0.5 if codec.quantizer == Q.QUANTIZER_DEPENDENT else 1.0
    sc = Q.choose_scales(am, lay, rel_step=1e-9, max_level=max(1, int(max_level / unit)))
    s64 = lay.expand(sc, rows, cols)
    u = am / s64
    if codec.quantizer == Q.QUANTIZER_DEPENDENT:
        k = np.clip(Q.dependent_levels(u), -Q.MAX_BASE_LEVEL, Q.MAX_BASE_LEVEL)
    else:
        k = Q.quantize(u, Q.MAX_BASE_LEVEL)
    vals = Q.dequantize(Q.multipliers(k, codec.quantizer), s64).reshape(a.shape)
    ldt, z = Q.pack_levels(k)
    stored = FactorCodec(ENC_QUANTIZED, "", codec.quantizer, lay,
                         float(sc) if lay.mode == Q.SCALE_TENSOR else 0.0)
    plans = [(ldt, z.reshape(-1))]
    if lay.mode != Q.SCALE_TENSOR:
        plans.append((D.BY_NAME["float32"], np.asarray(sc, np.float32).reshape(-1)
                      .view(np.uint32)))
    return stored, plans, vals


def build_record(dtype, shape, elements, x, fz: Factorization, options, res, residual_step,
                 residual_rel_step, residual_quantizer, residual_scales) -> EncodedRecord:
    check_ranks(fz.factorization, fz.modes, shape)
    shapes = factor_shapes(fz.factorization, fz.modes)
    if [tuple(a.shape) for a in fz.arrays] != [tuple(s) for s in shapes]:
        raise InputError(f"factor shapes {[a.shape for a in fz.arrays]} are not {shapes}")
    plans, vals, codecs = [], [], []
    for a, c in zip(fz.arrays, fz.codecs):
        stored, ps, v = encode_factor(np.asarray(a, np.float64), c)
        codecs.append(stored)
        plans += ps
        vals.append(v)
    r = reconstruct(fz.factorization, fz.modes, vals)
    if not np.all(np.isfinite(r)):
        raise InputError("the factors' product overflows binary64")
    approx_bits = Q.round_to_dtype(r, dtype)
    approx_error = Q.error_stats(x, Q.to_float64(approx_bits, dtype))
    p = FactorParams(fz.factorization, [tuple(int(v) for v in m) for m in fz.modes], codecs,
                     res, approx_error=approx_error)
    rows, cols = Q.matrix_shape(shape)
    decoded_bits = approx_bits
    if res == RESIDUAL_EXACT:
        width = 8 * dtype.itemsize
        xb = np.asarray(elements).view(dtype.uint).reshape(-1)
        z = trailing_zero_bits(xb, width)
        rem = remainder_encode(xb, approx_bits, width, z)
        order = remainder_order(approx_bits, dtype)
        rdt = D.BY_NAME[f"uint{width}"]
        plans.append((rdt, rem[order].astype(rdt.uint)))
        p.residual_shift = z
        decoded_bits = xb
    elif res == RESIDUAL_QUANTIZED:
        lay = Q.ScaleLayout.parse(residual_scales)
        qz = Q.QUANTIZER_CODES.get(residual_quantizer, residual_quantizer)
        if qz not in Q.QUANTIZER_NAMES:
            raise InputError(f"residual_quantizer must be 'uniform' or 'dependent'")
        e = (x - r).reshape(rows, cols)
        unit = 0.5 if qz == Q.QUANTIZER_DEPENDENT else 1.0
        if (residual_step is None) == (residual_rel_step is None):
            raise InputError("a quantized residual needs one of residual_step= and "
                             "residual_rel_step=")
        sc = Q.choose_scales(e, lay, step=None if residual_step is None else residual_step * unit,
                             rel_step=None if residual_rel_step is None
                             else residual_rel_step * unit)
        s64 = lay.expand(sc, rows, cols)
        u = e / s64
        k = np.clip(Q.dependent_levels(u), -Q.MAX_BASE_LEVEL, Q.MAX_BASE_LEVEL) \
            if qz == Q.QUANTIZER_DEPENDENT else Q.quantize(u, Q.MAX_BASE_LEVEL)
        ldt, zz = Q.pack_levels(k)
        plans.append((ldt, zz.reshape(-1)))
        if lay.mode != Q.SCALE_TENSOR:
            plans.append((D.BY_NAME["float32"], np.asarray(sc, np.float32).reshape(-1)
                          .view(np.uint32)))
        p.residual_quantizer, p.residual_layout = qz, lay
        p.residual_scale = float(sc) if lay.mode == Q.SCALE_TENSOR else 0.0
        d = Q.dequantize(Q.multipliers(k, qz), s64).reshape(-1)
        y = r + d
        if not np.all(np.isfinite(y)):
            raise InputError("the residual overflows binary64")
        decoded_bits = Q.round_to_dtype(y, dtype)
    streams = []
    for (sdt, arr), (role, i) in zip(plans, stream_layout(p)):
        shp = tuple(shapes[i]) if role == "factor" else (arr.size,)
        streams.append(StreamPlan(sdt, shp, np.ascontiguousarray(arr).reshape(-1),
                                  options.chain_for(sdt), options.chunk_elements))
    lossless = res == RESIDUAL_EXACT
    error = None if lossless else Q.error_stats(x, Q.to_float64(decoded_bits, dtype))
    return EncodedRecord(params=p.pack(), streams=streams, lossy=not lossless, error=error,
                         decoded=None if lossless else
                         decoded_bits.astype(dtype.uint).view(np.uint8))


def decode_bits(p: FactorParams, dtype, shape, streams: list, stream_dtypes: list,
                name=None) -> np.ndarray:
    """The tensor's bit patterns (dtype.uint, 1-D) from its decoded stream bytes."""
    check_ranks(p.factorization, p.modes, shape, name)
    shapes = p.factor_shapes()
    lay = stream_layout(p)
    by_role = {(role, i): j for j, (role, i) in enumerate(lay)}
    vals = []
    for i, (c, shp) in enumerate(zip(p.factors, shapes)):
        j = by_role[("factor", i)]
        sj = by_role.get(("scales", i))
        vals.append(factor_values(c, shp, streams[j], None if sj is None else streams[sj],
                                  stream_dtypes[j], name))
    r = reconstruct(p.factorization, p.modes, vals)
    if not np.all(np.isfinite(r)):
        raise CorruptPayload("the reconstruction is not finite", rule="FAC-09", tensor=name)
    if p.residual == RESIDUAL_QUANTIZED:
        rows, cols = Q.matrix_shape(shape)
        j = by_role[("residual", None)]
        sj = by_role.get(("residual_scales", None))
        m = _multipliers(streams[j], stream_dtypes[j], p.residual_quantizer, rows, cols, name)
        s64 = _scales(p.residual_layout, p.residual_scale, None if sj is None else streams[sj],
                      rows, cols, name)
        r = r + Q.dequantize(m, s64).reshape(-1)
        if not np.all(np.isfinite(r)):
            raise CorruptPayload("the reconstruction is not finite", rule="FAC-09",
                                 tensor=name)
    bits = Q.round_to_dtype(r, dtype)
    if p.residual == RESIDUAL_EXACT:
        bits = apply_remainder(bits, streams[by_role[("residual", None)]], dtype,
                               p.residual_shift, rule="FAC-10", tensor=name)
    return bits


__all__ = ["Factors", "FactorParams", "FactorCodec", "Factorization", "reconstruct",
           "mode_product", "decode_bits", "check_ranks", "factor_shapes", "LOW_RANK", "TUCKER",
           "TENSOR_TRAIN"]
