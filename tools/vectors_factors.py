"""Conformance vectors for record kind 5 `factors` (spec/records/factors.md): batch `factors-1.0`
of tools/gen_vectors.py.

Written from the spec, not from wcodec: factors are small random arrays (float values of the
stream's dtype, or random levels and scales), and the expected bytes come from a scalar evaluation
of spec §4 with Python floats (every `*` and `+` on Python floats is one IEEE binary64 operation,
rounded to nearest even; no fused multiply-add), in the spec's order: rank index increasing,
starting from the a = 0 term. The final rounding to the dtype uses exact rationals
(quantization.md §4.2); the exact residual uses the integer formulas of bands.md.
"""

from __future__ import annotations

import hashlib
import struct
from fractions import Fraction

import numpy as np

import vectorlib as V
from vectorlib import Block, File, chain, rng_for

FMT = {"float64": (11, 52), "float32": (8, 23), "float16": (5, 10), "bfloat16": (8, 7)}
HEAD = struct.Struct("<BBBBBBHIfddd")
MODE = struct.Struct("<III")
FENTRY = struct.Struct("<BBBBIf")
LOW_RANK, TUCKER, TT = 1, 2, 3
FZ_NAME = {LOW_RANK: "low_rank", TUCKER: "tucker", TT: "tensor_train"}
RES_NAME = {0: "none", 1: "exact", 2: "quantized"}


# -- numbers ---------------------------------------------------------------------------------------
def max_finite(dtype: str) -> Fraction:
    E, M = FMT[dtype]
    return Fraction(2 ** (M + 1) - 1, 2 ** M) * Fraction(2) ** ((1 << (E - 1)) - 1)


def _floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e - 1 if Fraction(2) ** e > a else e


def rnd(y: float, dtype: str) -> int:
    """quantization.md §4.2: binary64 y (finite) rounded once to dtype, nearest even, saturating."""
    if dtype == "float64":
        return struct.unpack("<Q", struct.pack("<d", y))[0]
    E, M = FMT[dtype]
    bias = (1 << (E - 1)) - 1
    emin = 1 - bias
    sign = 1 if (y < 0 or (y == 0 and str(y).startswith("-"))) else 0
    a = abs(Fraction(y))
    if a == 0:
        return sign << (E + M)
    ulp = Fraction(2) ** (max(_floor_log2(a), emin) - M)
    q = a / ulp
    n = q.numerator // q.denominator
    r = q - n
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and n % 2):
        n += 1
    res = min(n * ulp, max_finite(dtype))
    if res == 0:
        return sign << (E + M)
    if res >= Fraction(2) ** emin:
        e2 = _floor_log2(res)
        mant, fe = res / Fraction(2) ** (e2 - M) - 2 ** M, e2 + bias
    else:
        mant, fe = res / Fraction(2) ** (emin - M), 0
    return (sign << (E + M)) | (fe << M) | int(mant)


def val(bits: int, dtype: str) -> float:
    if dtype == "float64":
        return struct.unpack("<d", struct.pack("<Q", bits))[0]
    if dtype == "float32":
        return struct.unpack("<f", struct.pack("<I", bits))[0]
    if dtype == "float16":
        return struct.unpack("<e", struct.pack("<H", bits))[0]
    return struct.unpack("<f", struct.pack("<I", bits << 16))[0]


def zig(k: int) -> int:
    return 2 * k if k >= 0 else -2 * k - 1


def matrix_view(shape) -> tuple:
    n = V.count(shape)
    return (shape[0], n // shape[0]) if len(shape) >= 2 and shape[0] > 0 else (1, n)


def multipliers(k: list, rows: int, cols: int, quantizer: int) -> list:
    """quantization.md §3, row by row; the dependent state starts at 0 in every row."""
    if quantizer == 0:
        return list(k)
    out = []
    for i in range(rows):
        state = 0
        for j in range(cols):
            kk = k[i * cols + j]
            a, b = state >> 1, state & 1
            out.append(2 * kk - a * ((kk > 0) - (kk < 0)))
            state = ((b ^ (kk & 1)) << 1) | a
    return out


def o_map(p: int, w: int) -> int:
    return p ^ ((p >> (w - 1)) * ((1 << (w - 1)) - 1))


def remainder(x: int, c: int, width: int, z: int) -> int:
    w = width - z
    mask = (1 << w) - 1
    d = (o_map(x >> z, w) - o_map(c >> z, w)) & mask
    return ((d << 1) & mask) ^ (mask if d >> (w - 1) else 0)


# -- the factorization: shapes and the scalar reconstruction (spec §2, §4) -----------------------
def factor_shapes(fz: int, modes) -> list:
    if fz == LOW_RANK:
        rows, cols, r = modes[0]
        return [[rows, r], [r, cols]]
    if fz == TUCKER:
        return [[m[2] for m in modes]] + [[m[0], m[2]] for m in modes]
    return [[1 if k == 0 else modes[k - 1][2], m, n, r] for k, (m, n, r) in enumerate(modes)]


def reconstruct(fz: int, modes, F: list) -> list:
    """R (binary64, row-major) from factor values F (flat lists), scalar and in the spec's order."""
    shapes = factor_shapes(fz, modes)
    if fz == LOW_RANK:
        rows, cols, r = modes[0]
        U, W = F
        out = []
        for i in range(rows):
            for j in range(cols):
                s = U[i * r] * W[j]
                for a in range(1, r):
                    s = s + U[i * r + a] * W[a * cols + j]
                out.append(s)
        return out
    if fz == TUCKER:
        X, shape = list(F[0]), list(shapes[0])
        for k in range(len(modes)):
            U, (nk, rk) = F[k + 1], shapes[k + 1]
            pre, post = V.count(shape[:k]), V.count(shape[k + 1:])
            Y = []
            for p in range(pre):
                for i in range(nk):
                    for q in range(post):
                        s = X[(p * rk) * post + q] * U[i * rk]
                        for a in range(1, rk):
                            s = s + X[(p * rk + a) * post + q] * U[i * rk + a]
                        Y.append(s)
            X, shape[k] = Y, nk
        return X
    ms, ns = [m[0] for m in modes], [m[1] for m in modes]
    rows, cols = V.count(ms), V.count(ns)
    out = []
    for i in range(rows):
        di = np.unravel_index(i, ms)
        for j in range(cols):
            dj = np.unravel_index(j, ns)
            vec = None
            for k, (m, n, r) in enumerate(modes):
                rl = shapes[k][0]
                base = lambda a, b: ((a * m + di[k]) * n + dj[k]) * r + b  # noqa: E731
                if vec is None:
                    vec = [F[k][base(0, b)] for b in range(r)]
                    continue
                new = []
                for b in range(r):
                    s = vec[0] * F[k][base(0, b)]
                    for a in range(1, rl):
                        s = s + vec[a] * F[k][base(a, b)]
                    new.append(s)
                vec = new
            out.append(vec[0])
    return out


# -- one record --------------------------------------------------------------------------------------
def add_factors(f: File, name: str, dtype: str, shape, fz: int, modes, codecs, *, residual=0,
                seed="", chain_spec="planes+lanes", chunk_elements=None, specials=False,
                z_from_bf16=False, rq=(0, 0, 0), expect=True, big=None, tweak=None):
    """A factor record. `codecs`: per factor ("float", stream dtype) or ("q", quantizer,
    scale_mode, group_size). `rq`: residual (quantizer, scale_mode, group_size). Returns
    (record dict, parts) where parts are the streams' (dtype, shape, bytes) before chunking."""
    rng = rng_for("factors", seed or name)
    shapes = factor_shapes(fz, modes)
    rows, cols = matrix_view(shape)
    n = rows * cols
    parts, fentries, F = [], [], []
    for shp, c in zip(shapes, codecs):
        cnt = V.count(shp)
        if c[0] == "float":
            sd = c[1]
            vals = rng.standard_normal(cnt) * (0.5 if big is None else big)
            bits = [rnd(float(v), sd) for v in vals]
            F.append([val(b, sd) for b in bits])
            parts.append((sd, shp, np.array(bits, np.uint64).astype(f"<u{V.itemsize(sd)}")
                          .tobytes()))
            fentries.append(FENTRY.pack(0, 0, 0, 0, 0, 0.0))
        else:
            _, qz, mode, g = c
            fr, fc = matrix_view(shp)
            k = [int(v) for v in rng.integers(-20, 21, cnt)]
            S, scale, sparts = scales_for(rng, mode, g, fr, fc)
            m = multipliers(k, fr, fc, qz)
            F.append([float(m[i]) * S[i] for i in range(cnt)])       # exact
            zz = [zig(v) for v in k]
            parts.append((level_dtype(zz), shp, level_bytes(zz)))
            parts += sparts
            fentries.append(FENTRY.pack(1, qz, mode, 0, g, scale))
    R = reconstruct(fz, modes, F)
    width = 8 * V.itemsize(dtype)
    noise = rng.standard_normal(n) * 0.01
    orig = [rnd(R[i] + float(noise[i]), dtype) for i in range(n)]       # the "original" tensor
    if specials:
        sp = V.special_bits(dtype)
        orig[:len(sp)] = sp
    if z_from_bf16:                                                       # low 16 bits zero
        orig = [rnd(val(b, "float32"), "bfloat16") << 16 for b in orig]
    res_scale, z = 0.0, 0
    approx = [rnd(v, dtype) for v in R]
    if residual == 0:
        out = approx
    elif residual == 2:
        qz, mode, g = rq
        k = [int(v) for v in rng.integers(-3, 4, n)]
        S, res_scale, sparts = scales_for(rng, mode, g, rows, cols, small=True)
        m = multipliers(k, rows, cols, qz)
        out = [rnd(R[i] + float(m[i]) * S[i], dtype) for i in range(n)]
        zz = [zig(v) for v in k]
        parts.append((level_dtype(zz), [n], level_bytes(zz)))
        parts += sparts
    else:
        if z_from_bf16:
            z = 16
        rv = [remainder(orig[i], approx[i], width, z) for i in range(n)]
        E, M = FMT[dtype]
        order = sorted(range(n), key=lambda i: (approx[i] >> M) & ((1 << E) - 1))
        stored = [rv[i] for i in order]
        if tweak is not None:
            tweak(stored)
        parts.append((f"uint{width}", [n], np.array(stored, np.uint64)
                      .astype(f"<u{width // 8}").tobytes()))
        out = orig
    ub = f"<u{width // 8}"
    out_bytes = np.array(out, np.uint64).astype(ub).tobytes()

    def stats(bits):
        xs = [val(b, dtype) for b in orig]
        ys = [val(b, dtype) for b in bits]
        pairs = [(x, y) for x, y in zip(xs, ys) if np.isfinite(x)]
        if not pairs:
            return (0.0, 0.0, 0.0)
        d = [x - y for x, y in pairs]
        return (max(abs(v) for v in d), sum(v * v for v in d) / len(pairs),
                sum(x * x for x, _ in pairs) / len(pairs))
    head = HEAD.pack(fz, len(modes), residual, z, *(rq[:2] if residual == 2 else (0, 0)), 0,
                     rq[2] if residual == 2 else 0, res_scale, *stats(approx))
    params = head + b"".join(MODE.pack(*m) for m in modes) + b"".join(fentries)
    t = len(f.records)
    streams = []
    for sid, (sd, shp, data) in enumerate(parts):
        ch = chain(chain_spec, sd)
        cnt = V.count(shp)
        ce = chunk_elements or max(cnt, 1)
        size = V.itemsize(sd)
        blocks = []
        for ci in range(-(-cnt // ce)):
            part = data[ci * ce * size:min((ci + 1) * ce, cnt) * size]
            blocks.append(f.add_block(Block(V.CHUNK, ch.encode(part, sd, ci), t, sid, ci)))
        streams.append(dict(stream_dtype=V.DTYPES[sd][0], stream_rank=len(shp),
                            stream_shape=list(shp), chunk_elements=ce,
                            codec_count=len(ch.specs()), codecs=ch.specs(),
                            chunk_count=len(blocks), chunk_blocks=blocks))
    lossless = residual == 1
    err = None if lossless else dict(zip(("max_abs_error", "mean_squared_error",
                                          "signal_power"), stats(out)))
    nb = name.encode()
    rec = dict(name_length=len(nb), name=nb, dtype=V.DTYPES[dtype][0], record_kind=5,
               record_flags=1 | (0 if lossless else 2), rank=len(shape), shape=list(shape),
               sha256=hashlib.sha256(out_bytes).digest(), error=err, params_length=len(params),
               params=params, stream_count=len(streams), streams=streams)
    f.records.append(rec)
    if expect:
        f.expect.append(V.Expect(name, dtype, list(shape), V.sha256(out_bytes)))
    return rec, parts


def scales_for(rng, mode, g, rows, cols, small=False):
    """(binary64 scale of every element, the params scale, the scale stream part(s))."""
    unit = 1e-3 if small else 0.02
    if mode == 0:
        s = float(np.float32(unit * (1 + rng.random())))
        return [s] * (rows * cols), s, []
    count = rows if mode == 1 else rows * -(-cols // g)
    sc = (unit * (1 + rng.random(count))).astype(np.float32)
    S = []
    for i in range(rows):
        for j in range(cols):
            S.append(float(sc[i] if mode == 1 else sc[i * -(-cols // g) + j // g]))
    return S, 0.0, [("float32", [count], sc.astype("<f4").tobytes())]


def level_dtype(zz) -> str:
    top = max(zz) if zz else 0
    return "uint8" if top < 256 else "uint16" if top < 65536 else "uint32"


def level_bytes(zz) -> bytes:
    d = level_dtype(zz)
    return np.array(zz, np.uint64).astype(f"<u{V.itemsize(d)}").tobytes()


def set_params(rec: dict, params: bytes) -> None:
    rec["params"] = params
    rec["params_length"] = len(params)


def rebuild_stream(f: File, rec: dict, sid: int, sd: str, shp, data: bytes, spec="bytes"):
    """Replace stream `sid`'s single chunk with `data` (one chunk, given chain)."""
    s = rec["streams"][sid]
    ch = chain(spec, sd)
    f.blocks[s["chunk_blocks"][0]].payload = ch.encode(data, sd, 0)
    s.update(stream_dtype=V.DTYPES[sd][0], stream_rank=len(shp), stream_shape=list(shp),
             chunk_elements=max(V.count(shp), 1), codec_count=len(ch.specs()), codecs=ch.specs())


# -- the batch -------------------------------------------------------------------------------------
VALID_RULES = ["FAC-01", "FAC-02", "FAC-03", "FAC-04", "FAC-05", "FAC-06", "FAC-07", "FAC-08",
               "FAC-09", "QZ-01", "QZ-03", "REC-09"]


def batch_factors_1_0(s) -> None:
    s.batch = "factors-1.0"
    feats = ["record:factors"]
    structures = {
        LOW_RANK: ([6, 8], [(6, 8, 3)]),
        TUCKER: ([4, 3, 6], [(4, 0, 3), (3, 0, 2), (6, 0, 4)]),
        TT: ([6, 8], [(3, 2, 4), (2, 4, 1)]),
    }
    codec_sets = {   # rotate factor codecs so that every encoding, quantizer and layout occurs
        "float32": [("float", "float32"), ("q", 0, 1, 0), ("float", "float16"), ("q", 1, 2, 2)],
        "float16": [("q", 1, 0, 0), ("float", "bfloat16"), ("q", 0, 2, 3), ("float", "float64")],
        "bfloat16": [("float", "float16"), ("q", 1, 1, 0), ("float", "float32"), ("q", 0, 0, 0)],
    }
    rqs = {"float32": (1, 1, 0), "float16": (0, 2, 5), "bfloat16": (1, 0, 0)}
    for fz, (shape, modes) in structures.items():
        for residual in (0, 1, 2):
            for dtype in ("float32", "float16", "bfloat16"):
                f = File(6)
                nf = len(factor_shapes(fz, modes))
                codecs = (codec_sets[dtype] * 2)[residual:residual + nf]
                add_factors(f, "w", dtype, shape, fz, modes, codecs, residual=residual,
                            rq=rqs[dtype], seed=f"{fz}/{residual}/{dtype}")
                vid = f"v_factors_{FZ_NAME[fz]}_{RES_NAME[residual]}_{dtype}"
                rules = VALID_RULES + (["FAC-10"] if residual == 1 else [])
                enc = ", ".join(c[1] if c[0] == "float" else
                                f"levels ({['uniform', 'dependent'][c[1]]}, "
                                f"{['tensor', 'channel', 'group'][c[2]]} scales)"
                                for c in codecs)
                s.valid(vid, f, rules, feats + [f"dtype:{dtype}", f"factors:{FZ_NAME[fz]}",
                                                f"factors:residual_{RES_NAME[residual]}"],
                        f"A {dtype} {shape} {FZ_NAME[fz]} factor record, modes {modes}, "
                        f"factors stored as {enc}; residual {RES_NAME[residual]}.")
    # specials through the exact residual; float64 tensor; shapes, chunks and the bytes codec
    for dtype in ("float32", "bfloat16"):
        f = File(6)
        add_factors(f, "w", dtype, [5, 8], LOW_RANK, [(5, 8, 2)],
                    [("float", "float32"), ("float", "float32")], residual=1, specials=True,
                    seed=f"specials/{dtype}")
        s.valid(f"v_factors_specials_{dtype}", f, VALID_RULES + ["FAC-10"],
                feats + [f"dtype:{dtype}", "factors:residual_exact", "factors:specials"],
                f"A lossless low-rank {dtype} record whose first elements are -0.0, ±inf, NaNs "
                "with payloads, subnormals and the largest finite value: the exact residual "
                "restores every bit pattern.")
    f = File(6)
    add_factors(f, "w", "float32", [6, 8], TT, [(3, 2, 4), (2, 4, 1)],
                [("float", "bfloat16"), ("float", "bfloat16")], residual=1, z_from_bf16=True,
                seed="shift16")
    s.valid("v_factors_residual_shift_16", f, VALID_RULES + ["FAC-10"],
            feats + ["dtype:float32", "factors:residual_exact", "factors:residual_shift"],
            "A float32 tensor-train record of bfloat16 values (low 16 bits zero): residual_shift "
            "16, the remainders are 16-bit values in a uint32 stream.")
    f = File(6)
    add_factors(f, "f64", "float64", [4, 9], LOW_RANK, [(4, 9, 4)],
                [("float", "float64"), ("q", 1, 1, 0)], residual=2, rq=(0, 0, 0), seed="f64")
    add_factors(f, "tt4", "float16", [8, 8], TT, [(2, 2, 4), (2, 2, 4), (2, 2, 1), (1, 1, 1)],
                [("float", "float32")] * 4, residual=0, seed="tt4")
    add_factors(f, "chunked", "float32", [10, 12], LOW_RANK, [(10, 12, 4)],
                [("q", 0, 2, 3), ("float", "float16")], residual=1, chunk_elements=16,
                seed="chunked")
    add_factors(f, "bytes", "bfloat16", [4, 2, 3], TUCKER, [(4, 0, 2), (6, 0, 3)],
                [("float", "float32")] * 3, residual=2, rq=(1, 1, 0), chain_spec="bytes",
                seed="bytes")
    s.valid("v_factors_shapes_chunks", f, VALID_RULES + ["FAC-10"],
            feats + ["dtype:float64", "dtype:float16", "shape", "chunking", "codec:bytes"],
            "Factor records: a float64 low-rank record with a quantized residual, a 4-core "
            "tensor-train record (one core of size 1 x 1), a lossless record whose streams are "
            "cut into chunks of 16 elements, and a rank-3 bfloat16 tensor as a Tucker record "
            "over modes [4, 6] through the bytes codec only.")

    # -- invalid: one defect each -----------------------------------------------------------------
    def one(fz=LOW_RANK, residual=1, dtype="float32", codecs=None, modes=None, shape=None, **kw):
        f = File(6)
        shape = shape or [6, 8]
        modes = modes or [(6, 8, 3)]
        codecs = codecs or [("float", "float32"), ("q", 0, 1, 0)]
        rec, parts = add_factors(f, "w", dtype, shape, fz, modes, codecs, residual=residual,
                                 seed="invalid", expect=False, **kw)
        return f, rec, parts

    def params_with(rec, at, fmt, value):
        p = bytearray(rec["params"])
        struct.pack_into(fmt, p, at, value)
        set_params(rec, bytes(p))

    def bad(vid, f, cls, rules, desc, also=()):
        s.invalid(vid, f, cls, rules, feats, desc, also=also)

    f, rec, _ = one()
    params_with(rec, 0, "<B", 4)
    bad("x_FAC-01_factorization_4", f, "MalformedRecord", ["FAC-01"],
        "factorization = 4 (only 1, 2 and 3 are defined).")
    f, rec, _ = one()
    set_params(rec, rec["params"] + b"\0")
    bad("x_FAC-01_params_length", f, "MalformedRecord", ["FAC-01"],
        "The params are one byte longer than 40 + 12 x order + 12 x F.")
    f, rec, _ = one()
    p = rec["params"]
    set_params(rec, p[:1] + b"\x02" + p[2:40] + p[40:52] * 2 + p[52:])
    bad("x_FAC-01_low_rank_order_2", f, "MalformedRecord", ["FAC-01"],
        "A low-rank record with order = 2 (low-rank has exactly one ModeEntry); the params "
        "length matches the order.")
    f, rec, _ = one()
    params_with(rec, 2, "<B", 3)
    bad("x_FAC-01_residual_3", f, "MalformedRecord", ["FAC-01"], "residual = 3.")
    f, rec, _ = one(residual=0)
    params_with(rec, 3, "<B", 4)
    bad("x_FAC-01_shift_without_exact_residual", f, "MalformedRecord", ["FAC-01"],
        "residual_shift = 4 in a record whose residual is 0 (none).")
    f, rec, _ = one()
    params_with(rec, 40 + 12 + 8, "<f", 0.5)
    bad("x_FAC-01_float_factor_scale", f, "MalformedRecord", ["FAC-01"],
        "A float factor (encoding 0) whose FactorEntry has scale 0.5 (must be all zero).")
    f, rec, _ = one()
    params_with(rec, 40 + 12 + 12, "<B", 2)
    bad("x_FAC-01_encoding_2", f, "MalformedRecord", ["FAC-01"], "A FactorEntry encoding 2.")
    f, rec, _ = one(codecs=[("q", 0, 0, 0), ("float", "float32")])
    params_with(rec, 40 + 12 + 8, "<f", 0.0)
    bad("x_FAC-01_zero_factor_scale", f, "MalformedRecord", ["FAC-01"],
        "A quantized factor with scale_mode 0 (tensor) and scale +0.0.")
    f, rec, _ = one()
    params_with(rec, 6, "<H", 1)
    bad("x_RSV-01_factors_reserved", f, "MalformedRecord", ["RSV-01", "FAC-01"],
        "The FactorHeader's reserved u16 is 1.")
    f, rec, _ = one(residual=0)
    rec["dtype"] = V.DTYPES["int32"][0]
    bad("x_FAC-02_int32_tensor", f, "MalformedRecord", ["FAC-02"],
        "A factor record whose tensor dtype is int32.")
    f, rec, _ = one(dtype="float16")
    params_with(rec, 3, "<B", 16)
    bad("x_FAC-02_residual_shift_width", f, "MalformedRecord", ["FAC-02"],
        "A float16 record with residual_shift 16 (must be < 16).")
    f, rec, _ = one()
    p = bytearray(rec["params"])
    struct.pack_into("<II", p, 40, 8, 6)
    set_params(rec, bytes(p))
    bad("x_FAC-03_low_rank_modes_swapped", f, "MalformedRecord", ["FAC-03"],
        "A [6, 8] low-rank record whose ModeEntry says 8 x 6.")
    f, rec, _ = one(fz=TT, modes=[(3, 2, 4), (2, 4, 1)],
                    codecs=[("float", "float32"), ("float", "float32")])
    p = bytearray(rec["params"])
    struct.pack_into("<I", p, 40 + 12 + 4, 3)      # n_2 = 3: columns multiply to 6, not 8
    set_params(rec, bytes(p))
    bad("x_FAC-03_tt_modes_product", f, "MalformedRecord", ["FAC-03"],
        "A [6, 8] tensor-train record whose column sizes n_k multiply to 6.")
    f, rec, _ = one(fz=TUCKER, shape=[4, 3, 6], modes=[(4, 0, 3), (3, 0, 2), (6, 0, 4)],
                    codecs=[("float", "float32")] * 4)
    p = bytearray(rec["params"])
    struct.pack_into("<I", p, 40 + 4, 1)
    set_params(rec, bytes(p))
    bad("x_FAC-03_tucker_size_b", f, "MalformedRecord", ["FAC-03"],
        "A Tucker ModeEntry with size_b = 1 (must be 0).")
    f, rec, _ = one()
    p = bytearray(rec["params"])
    struct.pack_into("<I", p, 48, 0)
    set_params(rec, bytes(p))
    bad("x_FAC-04_rank_0", f, "MalformedRecord", ["FAC-04"], "A low-rank record of rank 0.")
    f, rec, _ = one()
    p = bytearray(rec["params"])
    struct.pack_into("<I", p, 48, 0xFFFFFFFF)
    set_params(rec, bytes(p))
    bad("x_FAC-04_rank_above_limit", f, "MalformedRecord", ["FAC-04"],
        "A [6, 8] low-rank record of rank 2^32 - 1 (at most min(6, 8)); a decoder that "
        "allocates U [6, r] before checking would ask for 190 GB.")
    f, rec, _ = one(fz=TT, modes=[(3, 2, 4), (2, 4, 1)],
                    codecs=[("float", "float32"), ("float", "float32")])
    p = bytearray(rec["params"])
    struct.pack_into("<I", p, 40 + 12 + 8, 2)
    set_params(rec, bytes(p))
    bad("x_FAC-04_tt_last_rank", f, "MalformedRecord", ["FAC-04"],
        "A tensor-train record whose last bond r_d is 2 (must be 1).")
    f, rec, _ = one(fz=TT, modes=[(3, 2, 4), (2, 4, 1)],
                    codecs=[("float", "float32"), ("float", "float32")])
    p = bytearray(rec["params"])
    struct.pack_into("<I", p, 40 + 8, 9)           # r_1 = 9 > min(P_1 = 6, P_2 = 8)
    set_params(rec, bytes(p))
    bad("x_FAC-04_tt_rank_above_bound", f, "MalformedRecord", ["FAC-04"],
        "A tensor-train record with r_1 = 9 > min(m_1 n_1, m_2 n_2) = 6.")
    f, rec, parts = one()
    rebuild_stream(f, rec, 0, "float32", [6, 4], parts[0][2] + bytes(6 * 4))
    bad("x_FAC-05_factor_shape", f, "MalformedRecord", ["FAC-05"],
        "Factor U is stored as [6, 4] while the rank is 3 ([6, 3] expected).")
    f, rec, _ = one()
    last = rec["streams"].pop()
    for b in sorted(last["chunk_blocks"], reverse=True):
        f.remove_block(b)
    rec["stream_count"] -= 1
    bad("x_FAC-05_missing_residual_stream", f, "MalformedRecord", ["FAC-05"],
        "A record with residual = 1 (exact) and no residual stream.")
    f, rec, parts = one()
    data = np.frombuffer(parts[-1][2], "<u4").astype("<u2").tobytes()
    rebuild_stream(f, rec, len(parts) - 1, "uint16", [48], data)
    bad("x_FAC-05_residual_dtype", f, "MalformedRecord", ["FAC-05"],
        "The exact residual of a float32 tensor stored as uint16 (uint32 expected).")
    f, rec, _ = one()
    rec["record_flags"] |= 2
    rec["error"] = dict(max_abs_error=0.0, mean_squared_error=0.0, signal_power=1.0)
    bad("x_FAC-06_lossy_with_exact_residual", f, "MalformedRecord", ["FAC-06"],
        "A record with an exact residual whose lossy flag is set.")
    f, rec, parts = one()
    zz = list(np.frombuffer(parts[1][2], "<u1").astype(np.int64))
    zz[5] = zig((1 << 23) + 1)
    rebuild_stream(f, rec, 1, "uint32", parts[1][1], np.array(zz, "<u4").tobytes())
    bad("x_FAC-07_level_range", f, "CorruptPayload", ["FAC-07"],
        "A level of factor V is 2^23 + 1 (|k| ≤ 2^23).")
    f, rec, parts = one()
    sc = bytearray(parts[2][2])
    sc[0:4] = b"\0\0\0\0"
    rebuild_stream(f, rec, 2, "float32", parts[2][1], bytes(sc))
    bad("x_FAC-07_scale_zero", f, "CorruptPayload", ["FAC-07"],
        "The first channel scale of factor V is +0.0.")
    f, rec, parts = one()
    u = bytearray(parts[0][2])
    u[4:8] = struct.pack("<I", 0x7FC00000)
    rebuild_stream(f, rec, 0, "float32", parts[0][1], bytes(u))
    bad("x_FAC-08_factor_nan", f, "CorruptPayload", ["FAC-08"],
        "Factor U holds a NaN.")
    f, rec, parts = one(residual=0, codecs=[("float", "float64"), ("float", "float64")],
                        big=1.0)
    for sid in (0, 1):
        u = bytearray(parts[sid][2])
        u[0:8] = struct.pack("<d", 1e200)
        rebuild_stream(f, rec, sid, "float64", parts[sid][1], bytes(u))
    bad("x_FAC-09_overflow", f, "CorruptPayload", ["FAC-09"],
        "U[0, 0] = V[0, 0] = 1e200 in float64 factors: R[0, 0] overflows binary64.")

    def widen(stored):
        stored[3] = 1 << 16
    f, rec, _ = one(fz=TT, modes=[(3, 2, 4), (2, 4, 1)],
                    codecs=[("float", "bfloat16"), ("float", "bfloat16")], z_from_bf16=True,
                    tweak=widen)
    bad("x_FAC-10_remainder_width", f, "CorruptPayload", ["FAC-10"],
        "residual_shift 16 and a remainder of 2^16 (must be < 2^(32 - 16)).")
