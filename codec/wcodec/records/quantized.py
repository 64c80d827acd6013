"""Record kind 2, `quantized`: spec/records/quantized.md.

A float tensor stored as integer levels and binary32 scales. Decoding is exact integer arithmetic
followed by one IEEE multiplication in binary64 and one rounding to the tensor's dtype
(spec/quantization.md §4, shared with wcodec.quant), so every decoder produces the same bytes
(QNT-09). Two quantizers:

- uniform: value = k × s;
- dependent (trellis-coded, 4 states driven by the parity of the levels, as in MPEG NNC / VVC):
  value = (2k − a·sgn(k)) × s, where a ∈ {0, 1} is the high bit of the state, reset to 0 at the start
  of every row. a is a prefix XOR of level parities, so decoding is vectorised (no per-element loop).

Rows (the first dimension) can be split into `class_count` classes, each class's levels in its own
stream, so that the entropy coder of each stream sees rows of similar spread.

The encoder half (`quantize_levels`) picks levels: plain rounding for the uniform quantizer, a
Viterbi search over the 4-state trellis (distortion + λ·rate) for the dependent one. The search uses
numba when it is installed (`pip install wcodec[fast]`), and a numpy version otherwise.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from .. import dtypes as D
from .. import quant as Q
from ..errors import CorruptPayload, InputError, MalformedRecord
from .base import EncodedRecord, RecordKind, StreamPlan

KIND_ID = 2

QUANTIZER_UNIFORM = Q.QUANTIZER_UNIFORM
QUANTIZER_DEPENDENT = Q.QUANTIZER_DEPENDENT
QUANTIZER_NAMES = Q.QUANTIZER_NAMES

SCALE_TENSOR = Q.SCALE_TENSOR
SCALE_CHANNEL = Q.SCALE_CHANNEL
SCALE_GROUP = Q.SCALE_GROUP
SCALE_NAMES = Q.SCALE_NAMES

MAX_CLASSES = 16
MAX_GROUP_SIZE = Q.MAX_GROUP_SIZE
MAX_LEVEL = 1 << 28          # |k| ≤ 2^28, so |m| ≤ 2^29 and m × s is exact in binary64 (QNT-06)
LEVEL_DTYPES = Q.LEVEL_DTYPES
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
        """Parse and check params on their own (QNT-01); checks against the shape are in check()."""
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
        if (mode == SCALE_GROUP and not 1 <= g <= MAX_GROUP_SIZE) or (mode != SCALE_GROUP and g):
            raise MalformedRecord(f"group_size {g} with scale_mode {mode}", rule="QNT-01",
                                  tensor=name)
        if mode == SCALE_TENSOR:
            if not (np.isfinite(s) and s > 0):
                raise MalformedRecord(f"the tensor scale {s!r} is not finite and > 0",
                                      rule="QNT-01", tensor=name)
        elif params[8:12] != b"\0\0\0\0":
            raise MalformedRecord("scale must be +0.0 (all bits zero) unless scale_mode is 0",
                                  rule="QNT-01", tensor=name)
        return cls(q, mode, k, g, s)


def rows_cols(shape) -> tuple[int, int]:
    """The matrix view of a tensor (spec/quantization.md §1.1)."""
    return Q.matrix_shape(shape)


def scale_count(p: QuantParams, rows: int, cols: int) -> int:
    return Q.ScaleLayout(p.scale_mode, p.group_size).count(rows, cols)


# -- exact reconstruction (decoder and encoder share it) -------------------------------------------
zigzag_decode = Q.zigzag_decode
zigzag_encode = Q.zigzag_encode
dependent_selector = Q.dependent_selector
multipliers = Q.multipliers
error_stats = Q.error_stats


def element_scales(p: QuantParams, rows: int, cols: int, scales: np.ndarray | None) -> np.ndarray:
    """The binary64 scale of every element, broadcastable to (rows, cols). Group scales are picked
    by index (c div group_size), never expanded by group_size, so memory stays rows × cols."""
    if p.scale_mode == SCALE_TENSOR:
        return np.float64(np.float32(p.scale))
    s = np.asarray(scales).view("<f4").astype(np.float64)
    if p.scale_mode == SCALE_CHANNEL:
        return s.reshape(rows, 1)
    per_row = -(-cols // p.group_size)
    return s.reshape(rows, per_row)[:, np.arange(cols) // p.group_size]


def unzigzag(z: np.ndarray) -> np.ndarray:
    """Zigzag values (uint8/16/32) to signed levels as int32: k = (z >> 1) XOR −(z AND 1).
    Callers check z ≤ 2^29 (|k| ≤ 2^28, QNT-06) first, so int32 holds every k and 2k."""
    h = (z >> 1).astype(np.int32)
    return h ^ -(z & 1).astype(np.int32)


def fast_multipliers(k: np.ndarray, quantizer: int) -> np.ndarray:
    """The same integers as quant.multipliers, in k's own integer type (int32 on decode)."""
    if quantizer == QUANTIZER_UNIFORM:
        return k
    a = dependent_selector(k)
    m = k * 2
    m -= a * np.sign(k)
    return m


def reconstruct(levels: np.ndarray, p: QuantParams, shape, dtype: D.DType,
                scales: np.ndarray | None) -> np.ndarray:
    """Levels in tensor order (int32 or int64, n) to the tensor's bit patterns (QNT-08):
    y = float64(m) × float64(s), then one rounding to the dtype (spec/quantization.md §4)."""
    rows, cols = rows_cols(shape)
    m = fast_multipliers(np.asarray(levels).reshape(rows, cols), p.quantizer)
    y = m * element_scales(p, rows, cols, scales)      # int × binary64: one rounding each
    return Q.round_to_dtype(y.reshape(-1), dtype)


def to_float64(elements: np.ndarray, dtype: D.DType) -> np.ndarray:
    """A tensor's bit patterns (1-D unsigned) as binary64 values."""
    if dtype.name not in FLOAT_DTYPES:
        raise InputError(f"quantized records hold float tensors, not {dtype.name}")
    return Q.to_float64(elements, dtype)


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
               lam: float = 0.0, values: np.ndarray | None = None,
               peak: float | None = None) -> EncodedRecord:
        """Quantize one float tensor. `step` is the scale s of a per-tensor record (raised where a
        level would exceed 2^28: nothing is clipped); channel and group records get
        s = rel_step × RMS of the channel/group (1.0 for an all-zero one). A group_size beyond the
        row length is cut to the row length (QNT-03). `lam` is the trellis' rate weight (in units
        of s², bits). `values` may pass the tensor as binary64 already; `peak` its max |x| when
        the caller knows it and that every value is finite (the float32 fast path skips a pass)."""
        if dtype.name not in FLOAT_DTYPES:
            raise InputError(f"quantized records hold float tensors, not {dtype.name}")
        rows, cols = rows_cols(shape)
        q = quantizer_code(quantizer)
        if dtype.name == "float32" and q == QUANTIZER_DEPENDENT and scale_mode in ("tensor", 0) \
                and step is not None:
            fast = _encode_f32_fused(elements, shape, rows, cols, step, classes, lam, options,
                                     peak)
            if fast is not None:
                return fast
        x = to_float64(elements, dtype) if values is None else np.asarray(values, np.float64)
        if not np.all(np.isfinite(x)):
            raise InputError("a tensor with NaN or infinite values cannot be quantized")
        try:
            mode = Q.SCALE_CODES[scale_mode] if isinstance(scale_mode, str) else int(scale_mode)
        except KeyError:
            raise InputError(f"scale_mode must be tensor, channel or group, not {scale_mode!r}") \
                from None
        g = 0
        if mode == SCALE_GROUP:
            if not 1 <= int(group_size) <= MAX_GROUP_SIZE:
                raise InputError(f"group_size must be 1..{MAX_GROUP_SIZE}")
            g = min(int(group_size), max(cols, 1))
        layout = Q.ScaleLayout(mode, g)
        xm = x.reshape(rows, cols)
        if mode == SCALE_TENSOR:
            if step is None:
                raise InputError("a per-tensor quantized record needs step=")
            s32 = Q.choose_scales(xm, layout, step=step, max_level=MAX_LEVEL)
            scales = None
            p = QuantParams(q, mode, 1, 0, float(s32))
        else:
            if rel_step is None:
                raise InputError("channel and group records need rel_step=")
            scales = Q.choose_scales(xm, layout, rel_step=rel_step, max_level=MAX_LEVEL)
            p = QuantParams(q, mode, 1, g, 0.0)
        smat = element_scales(p, rows, cols, None if scales is None else scales.view(np.uint32))
        k = quantize_levels(xm, smat, q, lam=lam)
        # row classes for the entropy coder: equal-count classes by row RMS
        cls_of_row = None
        if classes > 1 and rows >= 2 * classes:
            cls_of_row = row_classes(xm, min(int(classes), MAX_CLASSES))
            p = QuantParams(p.quantizer, p.scale_mode, min(int(classes), MAX_CLASSES),
                            p.group_size, p.scale)
        decoded = reconstruct(k.reshape(-1), p, shape, dtype,
                              None if scales is None else scales.view(np.uint32))
        y = Q.to_float64(decoded, dtype)
        error = error_stats(x, y)
        streams = level_streams(k, cls_of_row, p.class_count, options)
        if cls_of_row is not None:
            cm = cls_of_row.astype(np.uint8)
            streams.append(StreamPlan(D.BY_NAME["uint8"], (rows,), cm,
                                      options.chain_for(D.BY_NAME["uint8"]),
                                      options.chunk_elements))
        if scales is not None:
            f32 = D.BY_NAME["float32"]
            sc = np.ascontiguousarray(scales, np.float32).reshape(-1)
            streams.append(StreamPlan(f32, (sc.size,), sc.view(np.uint32),
                                      options.chain_for(f32), options.chunk_elements))
        return EncodedRecord(params=p.pack(), streams=streams, lossy=True, error=error,
                             decoded=decoded.view(np.uint8))

    @classmethod
    def check(cls, record, name):
        """QNT-01 to QNT-04: everything that can be checked before a byte is decoded."""
        p = QuantParams.unpack(bytes(record.params), name)
        dtype = D.by_code(record.dtype)
        if dtype.name not in FLOAT_DTYPES:
            raise MalformedRecord(f"a quantized record holds a float tensor, not {dtype.name}",
                                  rule="QNT-02", tensor=name)
        if not record.record_flags & 0x02:
            raise MalformedRecord("a quantized record must have the lossy flag set",
                                  rule="QNT-02", tensor=name)
        rows, cols = rows_cols(record.shape)
        n = rows * cols
        if p.scale_mode == SCALE_GROUP and p.group_size > max(cols, 1):
            # also what keeps the scale count (and any memory sized by it) bounded by the shape
            raise MalformedRecord(f"group_size {p.group_size} exceeds the row length {cols}",
                                  rule="QNT-03", tensor=name)
        expect = p.class_count + (1 if p.class_count > 1 else 0) + \
            (1 if p.scale_mode != SCALE_TENSOR else 0)
        if record.stream_count != expect:
            raise MalformedRecord(f"{record.stream_count} streams, the params call for {expect}",
                                  rule="QNT-04", tensor=name)
        s = record.streams
        total = 0
        for c in range(p.class_count):
            if _level_dtype(s[c].stream_dtype) is None or s[c].stream_rank != 1:
                raise MalformedRecord(f"level stream {c} is not a rank-1 uint8/16/32 stream",
                                      rule="QNT-04", tensor=name)
            if cols and s[c].stream_shape[0] % cols:
                raise MalformedRecord(f"level stream {c} does not hold whole rows",
                                      rule="QNT-04", tensor=name)
            total += s[c].stream_shape[0]
        if total != n:
            raise MalformedRecord(f"level streams hold {total} levels for {n} elements",
                                  rule="QNT-04", tensor=name)
        i = p.class_count
        if p.class_count > 1:
            if s[i].stream_dtype != D.BY_NAME["uint8"].code or list(s[i].stream_shape) != [rows]:
                raise MalformedRecord("the class map is a uint8 stream of one entry per row",
                                      rule="QNT-04", tensor=name)
            i += 1
        if p.scale_mode != SCALE_TENSOR:
            if s[i].stream_dtype != D.BY_NAME["float32"].code or \
                    list(s[i].stream_shape) != [scale_count(p, rows, cols)]:
                raise MalformedRecord("the scale stream is float32 with one entry per "
                                      "channel or group", rule="QNT-04", tensor=name)

    @classmethod
    def assemble(cls, record, streams, out, ctx, **options):
        name = record.name.decode("utf-8", "replace")
        p = QuantParams.unpack(bytes(record.params), name)
        dtype = D.by_code(record.dtype)
        rows, cols = rows_cols(record.shape)
        if dtype.name == "float32" and p.scale_mode == SCALE_TENSOR and \
                _assemble_f32_fused(record, streams, out, p, rows, cols, name):
            return
        per_class = []
        for c in range(p.class_count):
            sd = _level_dtype(record.streams[c].stream_dtype)
            z = streams[c].view(sd.uint)
            if z.size and int(z.max()) > 2 * MAX_LEVEL:     # z ≤ 2^29 ⟺ |k| ≤ 2^28
                raise CorruptPayload("a level exceeds 2^28 in magnitude", rule="QNT-06",
                                     tensor=name)
            per_class.append(unzigzag(z))
        i = p.class_count
        if p.class_count > 1:
            cmap = streams[i].view(np.uint8)
            i += 1
            if cmap.size and int(cmap.max()) >= p.class_count:
                raise CorruptPayload("class map names a class ≥ class_count", rule="QNT-05",
                                     tensor=name)
            counts = np.bincount(cmap, minlength=p.class_count)
            for c in range(p.class_count):
                if counts[c] * cols != per_class[c].size:
                    raise CorruptPayload(f"class {c} has {counts[c]} rows, its stream "
                                         f"{per_class[c].size} levels", rule="QNT-05",
                                         tensor=name)
            k = np.empty((rows, cols), np.int32)
            for c in range(p.class_count):
                k[cmap == c] = per_class[c].reshape(-1, cols)
            levels = k.reshape(-1)
        else:
            levels = per_class[0]
        scales = None
        if p.scale_mode != SCALE_TENSOR:
            scales = streams[i].view("<f4")
            if not np.all(np.isfinite(scales) & (scales > 0)):
                raise CorruptPayload("a scale is not finite and > 0", rule="QNT-07",
                                     tensor=name)
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


def _assemble_f32_fused(record, streams, out, p, rows, cols, name) -> bool:
    """assemble() for a float32 record with one scale in one native pass per level stream
    (_trellis_nb.decode_rows_f32): the same checks (QNT-05, QNT-06) and the same bytes as the
    numpy path. False (nothing decided) when numba is missing or a value needs saturation."""
    fn = _numba_fused()
    if fn is None or rows * cols == 0:
        return False
    y = out.view(np.float32).reshape(rows, cols)
    if p.class_count > 1:
        cmap = streams[p.class_count].view(np.uint8)
        if cmap.size and int(cmap.max()) >= p.class_count:
            raise CorruptPayload("class map names a class ≥ class_count", rule="QNT-05",
                                 tensor=name)
        row_lists = [np.flatnonzero(cmap == c) for c in range(p.class_count)]
        for c in range(p.class_count):
            sd = _level_dtype(record.streams[c].stream_dtype)
            if row_lists[c].size * cols != streams[c].view(sd.uint).size:
                raise CorruptPayload(f"class {c} has {row_lists[c].size} rows, its stream "
                                     f"{streams[c].view(sd.uint).size} levels", rule="QNT-05",
                                     tensor=name)
    else:
        row_lists = [np.arange(rows)]
    S = float(np.float64(np.float32(p.scale)))
    for c in range(p.class_count):
        sd = _level_dtype(record.streams[c].stream_dtype)
        status = fn.decode_rows_f32(streams[c].view(sd.uint), row_lists[c].astype(np.int64),
                                    cols, S, p.quantizer == QUANTIZER_DEPENDENT, y)
        if status == 1:
            raise CorruptPayload("a level exceeds 2^28 in magnitude", rule="QNT-06", tensor=name)
        if status == 2:
            return False
    return True


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
    parts = [k] if cls_of_row is None else [k[cls_of_row == c] for c in range(class_count)]
    out = []
    for part in parts:
        sd, z = Q.pack_levels(part.reshape(-1))
        out.append(StreamPlan(sd, (z.size,), z, options.chain_for(sd), options.chunk_elements))
    return out


def _encode_f32_fused(elements, shape, rows, cols, step, classes, lam, options, peak=None):
    """Quantized.encode for a float32 tensor, one scale, the dependent quantizer: the trellis
    search, the exact reconstruction, ErrorStats and zigzag levels (written straight into their
    class streams) in one native pass over blocks of rows on threads
    (_trellis_nb.encode_rows_f32). Same levels and decoded bytes as the general path
    (tests/test_quantized.py); None when numba is missing or a case needs the general path.
    `peak`: max |x| when the caller knows it (and knows every value is finite)."""
    fn = _numba_fused()
    n = rows * cols
    if fn is None or n == 0 or not 0 <= lam < 1e200:
        return None
    if not (np.isfinite(step) and step > 0):
        raise InputError(f"step must be a positive finite number, not {step}")
    x = np.ascontiguousarray(np.asarray(elements).view(np.float32).reshape(rows, cols))
    if peak is None:
        _, peak, finite = fn.stats_f32(x.reshape(-1))
        if not finite:
            raise InputError("a tensor with NaN or infinite values cannot be quantized")
    # choose_scales for one scale, without a pass over a binary64 copy: the step, raised until
    # max |x| / s <= MAX_LEVEL (nothing is clipped)
    s32 = Q.choose_scales(np.array([[peak]]), Q.ScaleLayout(SCALE_TENSOR, 0), step=step,
                          max_level=MAX_LEVEL)
    S = float(np.float64(np.float32(s32)))
    p = QuantParams(QUANTIZER_DEPENDENT, SCALE_TENSOR, 1, 0, float(s32))
    if lam:
        # the rate table of trellis_levels(u) from the same subsample of u = x / s
        sub = x.reshape(-1)[:: max(1, n // 65536)].astype(np.float64) / S
        bits = default_rate_table(sub)
    else:
        bits = np.zeros(3)
    table, K, clamp = fn.padded_rate_table(bits, peak / S)
    # row classes: rows grouped by class, each class's rows in increasing order (§2)
    cls_of_row, counts = None, [rows]
    dest = np.arange(rows, dtype=np.int64)
    if classes > 1 and rows >= 2 * classes:
        kk = min(int(classes), MAX_CLASSES)
        sq = np.empty(rows)
        fn.row_sumsq(x, sq)
        cls_of_row = _classes_by_rms(np.sqrt(sq / cols) if cols else sq, kk)
        order = np.argsort(cls_of_row, kind="stable")
        dest[order] = np.arange(rows)
        counts = np.bincount(cls_of_row, minlength=kk).tolist()
        p = QuantParams(p.quantizer, p.scale_mode, kk, p.group_size, p.scale)
    # |m| ≤ |u| + 1 and z ≤ |m| + 1 (dependent quantizer): the zigzag dtype from the peak
    guess = Q.level_dtype(int(peak / S) + 4)
    zig = np.empty((rows, cols), guess.uint)
    dec = np.empty((rows, cols), np.float32)
    spans = _row_spans(rows, cols, options.threads)
    acc = np.zeros((len(spans), 4))

    def run(i):
        r0, r1 = spans[i]
        fn.encode_rows_f32(x[r0:r1], S, float(lam), table, K, clamp, dest[r0:r1], zig,
                           dec[r0:r1], acc[i])
    _map_rows(run, len(spans), options.threads)
    if not np.isfinite(acc[:, 1]).all():      # a decoded value beyond binary32: saturation rules
        return None
    zmax = int(acc[:, 3].max())
    if zmax > 2 * MAX_LEVEL:
        raise InputError("step too small for this tensor: a level exceeds 2^28")
    error = dict(max_abs_error=float(acc[:, 1].max()),
                 mean_squared_error=float(acc[:, 0].sum()) / n,
                 signal_power=float(acc[:, 2].sum()) / n)
    streams, r0 = [], 0
    flat = zig.reshape(-1)
    for c in counts:
        part = flat[r0 * cols:(r0 + c) * cols]
        # each stream in the narrowest dtype of its own levels (as level_streams does)
        sd = Q.level_dtype(zmax if len(counts) == 1 else int(part.max()) if part.size else 0)
        if sd.itemsize < guess.itemsize:
            part = part.astype(sd.uint)
        streams.append(StreamPlan(sd, (part.size,), part, options.chain_for(sd),
                                  options.chunk_elements))
        r0 += c
    if cls_of_row is not None:
        streams.append(StreamPlan(D.BY_NAME["uint8"], (rows,), cls_of_row.astype(np.uint8),
                                  options.chain_for(D.BY_NAME["uint8"]), options.chunk_elements))
    return EncodedRecord(params=p.pack(), streams=streams, lossy=True, error=error,
                         decoded=dec.reshape(-1).view(np.uint8))


def _classes_by_rms(rms: np.ndarray, classes: int) -> np.ndarray:
    order = np.argsort(rms, kind="stable")
    cls = np.empty(rms.shape[0], np.int64)
    cls[order] = (np.arange(rms.shape[0]) * classes) // rms.shape[0]
    return cls


def row_classes(xm: np.ndarray, classes: int) -> np.ndarray:
    """Equal-count classes of rows by RMS (class 0 the smallest)."""
    rms = np.sqrt(np.mean(xm * xm, axis=1)) if xm.shape[1] else np.zeros(xm.shape[0])
    return _classes_by_rms(rms, classes)


# -- encoder: choosing levels ----------------------------------------------------------------------
def quantize_levels(xm: np.ndarray, smat, quantizer: int, *, lam: float = 0.0,
                    bits: np.ndarray | None = None) -> np.ndarray:
    """Levels (rows, cols) int64 for values xm and scales smat (scalar or (rows, cols))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(smat != 0, xm / smat, 0.0)
    if u.size and not np.abs(u).max() <= 2.0 * MAX_LEVEL:
        # (also what keeps every candidate level of the trellis search within int32)
        raise InputError("step too small for this tensor: a level exceeds 2^28")
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
    peak = float(np.abs(u).max())
    fn = _numba_fused()
    # the native search keeps levels in int32: beyond |u| = 2^30 (a caller that clips the
    # levels afterwards, as bands does) the numpy search, in int64, gives the same levels
    if fn is not None and peak <= 2.0 ** 30:
        table, Kt, clamp = fn.padded_rate_table(np.asarray(bits, np.float64), peak)
        spans = _row_spans(u.shape[0], u.shape[1], None)

        def run(i):
            r0, r1 = spans[i]
            fn.trellis_rows(u[r0:r1], float(lam), table, Kt, clamp, out[r0:r1])
        _map_rows(run, len(spans), None)
    else:
        _numpy_trellis(u, float(lam), bits, K, out)
    return out


BLOCK_ELEMENTS = 1 << 17
_POOLS: dict = {}


def _row_spans(rows: int, cols: int, threads) -> list[tuple[int, int]]:
    """Blocks of whole rows for the native kernels, about BLOCK_ELEMENTS each (one for a small
    tensor), at most 4 per thread."""
    from ..writer import default_threads
    t = threads or default_threads()
    n = rows * max(cols, 1)
    count = max(1, min(rows, 4 * t, n // BLOCK_ELEMENTS))
    edges = [rows * i // count for i in range(count + 1)]
    return [(edges[i], edges[i + 1]) for i in range(count)]


def _map_rows(run, count: int, threads) -> None:
    """run(0..count-1), on a thread pool when there is more than one block (the kernels release
    the GIL)."""
    if count == 1:
        run(0)
        return
    from concurrent.futures import ThreadPoolExecutor

    from ..writer import default_threads
    t = threads or default_threads()
    pool = _POOLS.get(t)
    if pool is None:
        pool = _POOLS[t] = ThreadPoolExecutor(max_workers=t, thread_name_prefix="wcodec-q")
    list(pool.map(run, range(count)))


_FUSED = None


def _numba_fused():
    """The _trellis_nb module when numba is usable, else None."""
    global _FUSED
    if _FUSED is None:
        try:
            from . import _trellis_nb
            _FUSED = _trellis_nb
        except Exception:
            _FUSED = False
    return _FUSED or None


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
