"""Conformance vectors for record kind 4 `predicted` (spec/records/predicted.md): batch
`predicted-1.0` of tools/gen_vectors.py.

Written from the spec, not from wcodec: predictions are evaluated one element at a time with
Python floats (each `*` and `+` is one IEEE binary64 operation, rounded to nearest even; no fused
multiply-add) and rounded to the dtype with exact rationals (round_T of §4: nearest even, overflow
to infinity, canonical NaN). Lossless residuals are computed against that prediction, so a
decoder that predicts differently decodes other bytes and fails the SHA-256 comparison.

Parent files: a `source` 2 record names its parent by the SHA-256 of the whole file. The parent of
the archive vectors is the published v_base.wcd of batch 1.0, which sits in the same folder
(conformance/vectors/); the manifest lists it in the entry's optional `parents` field (a
compatible extension of schema wcodec.conformance.manifest/1: older harnesses ignore it, and the
decoder contract is unchanged, since the decoder finds the parent next to its input).
"""

from __future__ import annotations

import hashlib
import math
import struct
from fractions import Fraction

import numpy as np

import vectorlib as V
from vectorlib import Block, File, chain, rng_for

HEAD = struct.Struct("<BBBBBBHddfI32s")
FMT = {"float64": (11, 52), "float32": (8, 23), "float16": (5, 10), "bfloat16": (8, 7)}
CANON = {"float64": 0x7FF8000000000000, "float32": 0x7FC00000, "float16": 0x7E00,
         "bfloat16": 0x7FC0}
UINT = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}


# -- §4 numbers --------------------------------------------------------------------------------
def value(p: int, dtype: str) -> float:
    """float64(p): the exact binary64 value of a bit pattern."""
    if dtype == "float64":
        return struct.unpack("<d", struct.pack("<Q", p))[0]
    if dtype == "bfloat16":
        p, dtype = p << 16, "float32"
    if dtype == "float32":
        return struct.unpack("<f", struct.pack("<I", p))[0]
    return struct.unpack("<e", struct.pack("<H", p))[0]


def round_t(y: float, dtype: str) -> int:
    """round_T: one rounding to nearest even from binary64; overflow to ±inf; canonical NaN."""
    if math.isnan(y):
        return CANON[dtype]
    if dtype == "float64":
        return struct.unpack("<Q", struct.pack("<d", y))[0]
    E, M = FMT[dtype]
    bias = (1 << (E - 1)) - 1
    sign = 1 if math.copysign(1.0, y) < 0 else 0
    inf = (sign << (E + M)) | (((1 << E) - 1) << M)
    if math.isinf(y):
        return inf
    a = abs(Fraction(y))
    if a == 0:
        return sign << (E + M)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    e = max(e, 1 - bias)
    ulp = Fraction(2) ** (e - M)
    q = a / ulp
    n = q.numerator // q.denominator
    r = q - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2):
        n += 1
    v = n * ulp
    if v >= Fraction(2) ** (bias + 1):
        return inf
    if v < Fraction(2) ** (1 - bias):   # subnormal
        return (sign << (E + M)) | int(v / Fraction(2) ** (1 - bias - M))
    e2 = v.numerator.bit_length() - v.denominator.bit_length()
    if Fraction(2) ** e2 > v:
        e2 -= 1
    mant = int(v / Fraction(2) ** (e2 - M)) - (1 << M)
    return (sign << (E + M)) | ((e2 + bias) << M) | mant


def scalar_affine(p: int, dtype: str, a: float, b: float, repeat: int) -> int:
    for _ in range(repeat):
        y = value(p, dtype) * a
        if b != 0:
            y = y + b
        p = round_t(y, dtype)
    return p


def channel_affine(p: int, dtype: str, alpha: float, beta: float) -> int:
    y = value(p, dtype) * alpha
    if beta != 0:
        y = y + beta
    return round_t(y, dtype)


def zz(d: int, w: int) -> int:
    d &= (1 << w) - 1
    neg = d >> (w - 1)
    return ((d << 1) ^ (((1 << w) - 1) if neg else 0)) & ((1 << w) - 1)


def unzz(z: int, w: int) -> int:
    return ((z >> 1) ^ (-(z & 1))) & ((1 << w) - 1)


def exp_order(pred: list, dtype: str) -> list:
    E, M = FMT[dtype]
    return sorted(range(len(pred)), key=lambda i: ((pred[i] >> M) & ((1 << E) - 1), i))


# -- building a record ----------------------------------------------------------------------------
def params(*, source=1, predictor=0, permutation=0, residual=1, order=0, repeat=0, a=0.0, b=0.0,
           step=0.0, parent=bytes(32), ref="w0", hint="", reserved=0) -> bytes:
    rn, hn = ref.encode(), hint.encode()
    return (HEAD.pack(source, predictor, permutation, residual, order, reserved, repeat, a, b,
                      step, 0, parent)
            + struct.pack("<H", len(rn)) + rn + struct.pack("<H", len(hn)) + hn)


def set_params(rec: dict, p: bytes) -> None:
    rec["params"], rec["params_length"] = p, len(p)


def patterns(data: bytes, dtype: str) -> list:
    return [int(v) for v in np.frombuffer(data, UINT[V.itemsize(dtype)])]


def to_bytes(pats, dtype: str) -> bytes:
    return np.array(pats, dtype=np.uint64).astype(UINT[V.itemsize(dtype)]).tobytes()


def add_predicted(f: File, name: str, dtype: str, shape, ref_bytes: bytes, *, x: bytes = None,
                  levels=None, predictor=0, permutation=0, perm=None, residual=1, order=0,
                  repeat=0, a=0.0, b=0.0, coeffs=None, step=0.0, ref="w0", source=1,
                  parent=bytes(32), hint="", record_flags=None, expect=True, chain_spec="bytes",
                  perm_dtype="uint16", raw_params=None) -> dict:
    """A predicted record of tensor `name` from a reference with bytes `ref_bytes` (as decoded).
    Lossless (residual 1, 2): stores x. Quantized (3): stores `levels`; the expected bytes follow
    §5.3. Returns the record; registers the expected decoded bytes."""
    shape = list(shape)
    n = V.count(shape)
    w = 8 * V.itemsize(dtype)
    P = patterns(ref_bytes, dtype)
    if permutation:
        d = shape[0] if permutation == 1 else shape[-1]
        inner = n // shape[0] if permutation == 1 else 1
        outer = n // (shape[0] * inner) if permutation == 1 else n // d
        Q = list(P)
        for i in range(n):
            if permutation == 1:
                r, rest = divmod(i, inner)
                Q[i] = P[perm[r] * inner + rest] if perm[r] < d else 0
            else:
                o, j = divmod(i, d)
                Q[i] = P[o * d + perm[j]] if perm[j] < d else 0
        P = Q
        del outer
    if predictor == 1:
        pred = [scalar_affine(p, dtype, a, b, repeat) for p in P]
    elif predictor == 2:
        per = n // shape[0]
        pred = [channel_affine(p, dtype, float(np.float32(coeffs[0][i // per])),
                               float(np.float32(coeffs[1][i // per]))) for i, p in enumerate(P)]
    else:
        pred = list(P)
    if residual in (1, 2):
        X = patterns(x, dtype)
        z = [zz(xi - pi, w) if residual == 1 else xi ^ pi for xi, pi in zip(X, pred)]
        decoded = x
        sd = {8: "uint8", 16: "uint16", 32: "uint32", 64: "uint64"}[w]
    else:
        s = float(np.float32(step))
        out = []
        for pi, q in zip(pred, levels):
            out.append(pi if q == 0 else round_t(value(pi, dtype) + float(q) * s, dtype))
        decoded = to_bytes(out, dtype)
        z = [((int(q) << 1) ^ (-1 if q < 0 else 0)) & 0xFFFFFFFF for q in levels]
        sd = "uint8" if max(z, default=0) < 256 else "uint16" if max(z) < 65536 else "uint32"
    if order == 1:
        z = [z[i] for i in exp_order(pred, dtype)]
    parts = [(sd, np.array(z, dtype=np.uint64).astype(UINT[V.itemsize(sd)]).tobytes(), [n])]
    if permutation:
        parts.append((perm_dtype, np.array(perm, dtype=UINT[V.itemsize(perm_dtype)]).tobytes(),
                      [len(perm)]))
    if predictor == 2:
        parts.append(("float32", np.asarray(coeffs, "<f4").tobytes(), [2, shape[0]]))
    t = len(f.records)
    streams = []
    for sid, (sdt, data, sshape) in enumerate(parts):
        ch = chain(chain_spec, sdt)
        cnt = V.count(sshape)
        blocks = [f.add_block(Block(V.CHUNK, ch.encode(data, sdt, 0), t, sid, 0))] if cnt else []
        streams.append(dict(stream_dtype=V.DTYPES[sdt][0], stream_rank=len(sshape),
                            stream_shape=list(sshape), chunk_elements=max(cnt, 1),
                            codec_count=len(ch.specs()), codecs=ch.specs(),
                            chunk_count=len(blocks), chunk_blocks=blocks))
    prm = raw_params if raw_params is not None else params(
        source=source, predictor=predictor, permutation=permutation, residual=residual,
        order=order, repeat=repeat, a=a, b=b, step=step, parent=parent, ref=ref, hint=hint)
    lossy = residual == 3
    flags = record_flags if record_flags is not None else (1 | (2 if lossy else 0))
    error = dict(max_abs_error=0.0, mean_squared_error=0.0, signal_power=0.0) if flags & 2 \
        else None
    nb = name.encode()
    rec = dict(name_length=len(nb), name=nb, dtype=V.DTYPES[dtype][0], record_kind=4,
               record_flags=flags, rank=len(shape), shape=shape,
               sha256=hashlib.sha256(decoded).digest() if flags & 1 else None, error=error,
               params_length=len(prm), params=prm, stream_count=len(streams), streams=streams)
    f.records.append(rec)
    if expect:
        f.expect.append(V.Expect(name, dtype, shape, V.sha256(decoded)))
    return rec


def near(ref: bytes, dtype: str, rng, scale=1e-3) -> bytes:
    """A tensor near `ref` (finite values moved a little; specials kept)."""
    if dtype == "bfloat16":
        P = patterns(ref, dtype)
        return to_bytes([(p + int(rng.integers(-3, 4))) & 0xFFFF for p in P], dtype)
    npd = {"float64": "<f8", "float32": "<f4", "float16": "<f2"}.get(dtype)
    if npd is None:
        P = np.frombuffer(ref, UINT[V.itemsize(dtype)])
        return (P + rng.integers(0, 3, P.size).astype(P.dtype)).astype(P.dtype).tobytes()
    with np.errstate(invalid="ignore", over="ignore"):
        x = np.frombuffer(ref, npd).astype(np.float64)
        y = np.where(np.isfinite(x), x * 0.999 + rng.standard_normal(x.size) * scale, x)
        out = y.astype(npd)
    bits = out.view(UINT[V.itemsize(dtype)]).copy()
    orig = np.frombuffer(ref, UINT[V.itemsize(dtype)])
    fin = np.isfinite(x)
    bits[~fin] = orig[~fin]   # NaN payloads and infinities exactly as in the reference
    return bits.tobytes()


FEAT = ["record:predicted"]


def v_base_bytes() -> bytes:
    """The bytes of v_base.wcd, built as gen_vectors.base() builds them (batch 1.0, write-once),
    and checked against the published file when it is there."""
    import os
    f = File(6)
    f.meta_str("note", "conformance base file")
    f.add_plain("w", "float32", [4, 8], rng=rng_for("base", "w"),
                chain_=chain("planes+lanes", "float32"), chunk_elements=16)
    f.add_plain("b", "int8", [5], rng=rng_for("base", "b"), chain_=chain("bytes"))
    data = f.build()
    published = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "conformance",
                             "vectors", "v_base.wcd")
    if os.path.exists(published):
        with open(published, "rb") as fh:
            assert fh.read() == data, "v_base.wcd differs from its rebuild"
    return data


def batch_predicted_1_0(s) -> None:
    s.batch = "predicted-1.0"

    def base_file(dtype, shape, key, chain_spec="planes+lanes"):
        f = File(6)
        rng = rng_for("predicted", key)
        data = V.sample(dtype, V.count(shape), rng)
        f.add_plain("w0", dtype, shape, data, chain_=chain(chain_spec, dtype))
        return f, data, rng

    # -- valid: each residual, order, predictor, permutation ------------------------------------
    for dtype, residual, order, spec in (("float32", 1, 1, "planes+lanes"),
                                         ("float32", 2, 0, "bytes"),
                                         ("float64", 1, 1, "bytes"),
                                         ("float16", 2, 1, "bytes"),
                                         ("bfloat16", 1, 0, "bytes"),
                                         ("int16", 1, 0, "bytes"),
                                         ("uint8", 2, 0, "bytes")):
        rn = {1: "sub", 2: "xor"}[residual]
        on = {0: "natural", 1: "exponent"}[order]
        vid = f"v_pred_identity_{rn}_{on}_{dtype}"
        f, data, rng = base_file(dtype, [6, 5], vid)
        x = near(data, dtype, rng)
        add_predicted(f, "w1", dtype, [6, 5], data, x=x, residual=residual, order=order,
                      chain_spec=spec)
        s.valid(vid, f, ["PRD-01", "PRD-02", "PRD-06", "PRD-07", "PRD-11", "REC-09"],
                FEAT + [f"dtype:{dtype}", f"predicted:{rn}", f"predicted:order-{on}"],
                f"`w1` predicted from `w0` of the same file by identity, residual `{rn}` "
                f"({on} order); {dtype} with special values (NaN payloads, −0.0, infinities, "
                f"subnormals) carried exactly.")

    # scalar affine with repeat (AdamW decay), float32
    vid = "v_pred_scalar_repeat_float32"
    f, data, rng = base_file("float32", [8, 4], vid)
    a = float(np.float32(1 - 3e-7))
    x = near(data, "float32", rng, 1e-6)
    add_predicted(f, "w1", "float32", [8, 4], data, x=x, predictor=1, a=a, b=0.0, repeat=20,
                  order=1)
    s.valid(vid, f, ["PRD-01", "PRD-11"], FEAT + ["dtype:float32", "predicted:scalar"],
            "Scalar affine predictor a = 1 − 3e-7 (a binary32 value), b = 0, repeat 20 (AdamW's "
            "decoupled weight decay for 20 steps), sub residual in exponent order; −0.0 × a keeps "
            "its sign because b = 0 is not added.")
    # scalar affine with offset, bfloat16 and float16 (rounding straight from binary64)
    for dtype in ("bfloat16", "float16"):
        vid = f"v_pred_scalar_offset_{dtype}"
        f, data, rng = base_file(dtype, [5, 6], vid)
        x = near(data, dtype, rng)
        add_predicted(f, "w1", dtype, [5, 6], data, x=x, predictor=1, a=0.7109375 + 2 ** -20,
                      b=-0.003, repeat=3, order=1)
        s.valid(vid, f, ["PRD-11"], FEAT + [f"dtype:{dtype}", "predicted:scalar"],
                f"Scalar affine y = a·x + b three times on {dtype}, each step rounded once from "
                "binary64 to the dtype (ties to even, overflow to infinity, canonical NaN).")
    # channel affine + row permutation, float16; channel affine with a zero beta, float32
    vid = "v_pred_channel_rows_float16"
    f, data, rng = base_file("float16", [4, 6], vid)
    perm = [2, 0, 3, 1]
    coeffs = np.array([[0.5, 1.25, -2.0, 1.0], [0.0, 0.125, -0.0, 3.0]], np.float32)
    x = near(data, "float16", rng)
    add_predicted(f, "w1", "float16", [4, 6], data, x=x, predictor=2, coeffs=coeffs,
                  permutation=1, perm=perm, order=1)
    s.valid(vid, f, ["PRD-02", "PRD-05", "PRD-11"],
            FEAT + ["dtype:float16", "predicted:channel", "predicted:perm-rows"],
            "Rows of the reference permuted by π = [2, 0, 3, 1], then channel affine α, β per "
            "row (β = ±0.0 rows add nothing), sub residual in exponent order.")
    vid = "v_pred_perm_columns_int8"
    f, data, rng = base_file("int8", [3, 7], vid, "bytes")
    perm = [6, 5, 4, 3, 2, 1, 0]
    x = near(data, "int8", rng)
    add_predicted(f, "w1", "int8", [3, 7], data, x=x, permutation=2, perm=perm,
                  perm_dtype="uint32")
    s.valid(vid, f, ["PRD-02", "PRD-04", "PRD-05"],
            FEAT + ["dtype:int8", "predicted:perm-columns"],
            "int8: identity after reversing the columns (permutation stream as uint32), sub "
            "residual, natural order.")
    # quantized residual
    vid = "v_pred_quantized_float32"
    f, data, rng = base_file("float32", [6, 6], vid)
    levels = [int(v) for v in rng.integers(-40, 41, 36)]
    levels[:6] = [0, 0, 0, 0, 0, 0]   # the specials at the start of the reference stay as they are
    levels[6] = 2 ** 28
    add_predicted(f, "w1", "float32", [6, 6], data, levels=levels, residual=3, step=2 ** -10,
                  order=1)
    s.valid(vid, f, ["PRD-03", "PRD-11", "PRD-12"], FEAT + ["dtype:float32", "predicted:quantized"],
            "Quantized residual (lossy): levels with |q| ≤ 2^28 (one at the bound) times step "
            "2^-10 added to the prediction in binary64 and rounded once; zero levels keep the "
            "prediction's bit pattern (NaN payloads, −0.0).")
    # a chain of depth 16 in one file
    vid = "v_pred_chain_depth16"
    f, data, rng = base_file("float32", [9], vid)
    prev = data
    for i in range(1, 17):
        x = near(prev, "float32", rng)
        add_predicted(f, f"w{i}", "float32", [9], prev, x=x, ref=f"w{i - 1}", order=1)
        prev = x
    s.valid(vid, f, ["PRD-08", "PRD-09"], FEAT + ["predicted:chain"],
            "w1 … w16 each predicted from the one before: w16's chain holds 16 predicted records, "
            "the most PRD-09 allows.")

    # -- an archive across two files: the parent is v_base.wcd (batch 1.0) ------------------------
    parent_bytes = v_base_bytes()
    parent_sha = hashlib.sha256(parent_bytes).digest()
    ref_w = V.sample("float32", 32, rng_for("base", "w"))
    vid = "v_pred_parent_file"
    f = File(6)
    rng = rng_for("predicted", vid)
    x = near(ref_w, "float32", rng)
    add_predicted(f, "w", "float32", [4, 8], ref_w, x=x, ref="w", source=2, parent=parent_sha,
                  hint="v_base.wcd", order=1, predictor=1, a=float(np.float32(1 - 1e-4)),
                  repeat=2)
    s.valid(vid, f, ["PRD-10", "PRD-06", "PRD-07"],
            FEAT + ["predicted:parent", "predicted:scalar"],
            "A checkpoint coded against its parent file: `w` predicted (scalar affine, repeat 2) "
            "from tensor `w` of the file whose SHA-256 is that of v_base.wcd (hint "
            "'v_base.wcd'), found next to this file.")
    s.vectors[-1].parents = ["v_base.wcd"]

    # -- invalid -------------------------------------------------------------------------------
    def one(vid, mutate, error, rules, desc, **kw):
        f, data, rng = base_file("float32", [4, 4], vid)
        x = near(data, "float32", rng)
        opts = dict(x=x)
        opts.update(kw)
        rec = add_predicted(f, "w1", "float32", [4, 4], data, expect=False, **opts)
        if mutate:
            mutate(f, rec, data, x)
        s.invalid(vid, f, error, rules, FEAT, desc)

    missing_sha = hashlib.sha256(b"a parent file that is not in the folder").digest()
    vid = "x_PRD-10_missing_parent"
    f = File(6)
    add_predicted(f, "w", "float32", [4, 8], ref_w, x=near(ref_w, "float32", rng_for(vid)),
                  ref="w", source=2, parent=missing_sha, hint="v_pred_gone.wcd", expect=False)
    s.invalid(vid, f, "UnresolvedReference", ["PRD-10"], FEAT + ["predicted:parent"],
              "The parent file (hint 'v_pred_gone.wcd') is in no candidate place: no file has its "
              "SHA-256.")
    changed = bytearray(parent_bytes)
    changed[-40] ^= 1   # the parent as it was before one bit of v_base changed
    vid = "x_PRD-10_changed_parent"
    f = File(6)
    add_predicted(f, "w", "float32", [4, 8], ref_w, x=near(ref_w, "float32", rng_for(vid)),
                  ref="w", source=2, parent=hashlib.sha256(bytes(changed)).digest(),
                  hint="v_base.wcd", expect=False)
    s.invalid(vid, f, "UnresolvedReference", ["PRD-10"], FEAT + ["predicted:parent"],
              "The hint names v_base.wcd, which exists, but its SHA-256 is not the one the "
              "record names (the parent changed): the decoder must not decode against it.")
    s.vectors[-1].parents = ["v_base.wcd"]

    def self_ref(f, rec, data, x):
        set_params(rec, params(ref="w1"))
    one("x_PRD-08_self_reference", self_ref, "MalformedRecord", ["PRD-08"],
        "`w1` names itself as its reference.")

    vid = "x_PRD-08_cycle"
    f, data, rng = base_file("float32", [4], vid)
    add_predicted(f, "a", "float32", [4], data, x=data, ref="b", expect=False)
    add_predicted(f, "b", "float32", [4], data, x=data, ref="a", expect=False)
    s.invalid(vid, f, "MalformedRecord", ["PRD-08"], FEAT,
              "`a` is predicted from `b` and `b` from `a`: a reference cycle.")

    vid = "x_PRD-09_depth_17"
    f, data, rng = base_file("float32", [3], vid)
    prev = data
    for i in range(1, 18):
        x = near(prev, "float32", rng)
        add_predicted(f, f"w{i}", "float32", [3], prev, x=x, ref=f"w{i - 1}", expect=False)
        prev = x
    s.invalid(vid, f, "LimitExceeded", ["PRD-09"], FEAT,
              "w17's reference chain holds 17 predicted records, one more than PRD-09 allows.")

    one("x_PRD-05_bad_permutation", None, "CorruptPayload", ["PRD-05"],
        "The row permutation [0, 1, 1, 3] repeats 1 (not a permutation).",
        permutation=1, perm=[0, 1, 1, 3])
    one("x_PRD-05_permutation_range", None, "CorruptPayload", ["PRD-05"],
        "The column permutation holds 4 for a dimension of 4 (out of range).",
        permutation=2, perm=[0, 1, 2, 4])
    one("x_PRD-06_missing_reference", None, "MalformedRecord", ["PRD-06"],
        "The reference `ghost` is not a tensor of the file.", ref="ghost")

    vid = "x_PRD-07_reference_shape"
    f, data, rng = base_file("float32", [16], vid)
    add_predicted(f, "w1", "float32", [4, 4], data, x=near(data, "float32", rng), expect=False)
    s.invalid(vid, f, "MalformedRecord", ["PRD-07"], FEAT,
              "The reference `w0` has shape [16]; the record [4, 4].")

    def repeat0(f, rec, data, x):
        set_params(rec, params(predictor=1, a=0.5, repeat=0))
    one("x_PRD-01_repeat_zero", repeat0, "MalformedRecord", ["PRD-01"],
        "A scalar affine predictor with repeat 0.")

    def hint_path(f, rec, data, x):
        set_params(rec, params(source=2, parent=b"\x01" * 32, hint="../v_base.wcd"))
    one("x_PRD-01_hint_path", hint_path, "MalformedRecord", ["PRD-01"],
        "The hint '../v_base.wcd' is a path, not a base name.")
    one("x_PRD-03_lossy_flag", None, "MalformedRecord", ["PRD-03"],
        "A lossless (sub) residual with the lossy flag set.", record_flags=3)
    one("x_PRD-12_level", None, "CorruptPayload", ["PRD-12"],
        "A quantized level of 2^28 + 1.", x=None, residual=3, step=0.5,
        levels=[2 ** 28 + 1] + [0] * 15)

    one("x_PRD-02_stream_count", None, "MalformedRecord", ["PRD-02"],
        "An identity predictor without permutation needs one stream; the record declares a "
        "permutation stream in its params but stores none.", raw_params=params(permutation=1))
